//! policybench: Umbra's policy engine and OPA's, side by side, in one
//! process (see bench/policy.sh and bench/RESULTS.md, section "Policy").
//!
//! `policybench LIBOPABRIDGE POLICIES_DIR [SAMPLES] [PASSES]`
//!
//! OPA's Go engine comes as a c-shared library (`libopabridge.so`, from the
//! PyPI wheel `opa-golib-python-bindings`): `OpaNew`, `OpaAddPolicy`,
//! `OpaAddData`, `OpaEvalDocument`, `OpaFreeString`. Both engines get the
//! same modules, the same data and, per case, the same input as JSON text;
//! both answers must be equal or the run stops.
//!
//! What one sample is, for each engine (the same work: JSON text in, JSON
//! text out):
//! - `opa`: one `OpaEvalDocument(handle, "pkg.rule", input_json)` call,
//!   reading the returned envelope's length and freeing it;
//! - `umbra`: `PolicySet::input_from_json` + `eval_path` + serializing the
//!   value to a JSON string.
//!
//! Also measured: `umbra-parsed` (the input parsed once, as a caller that
//! evaluates one input against several queries would), `umbra-bytecode`
//! (as `umbra`, on a set built with `PolicySetBuilder::bytecode`: rules
//! compiled to regorus's VM, opt-in), and the native rules'
//! `DecisionPoint::decide`.
//!
//! Engines alternate within each pass, so both see the same machine. Every
//! figure is a `RESULT {json}` line; the summary at the end takes, per case
//! and engine, the median over passes of each pass's p50 and p99.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use umbra_policy::decision::{
    Context, DecisionInput, DecisionPoint, Request, Risk, RiskFactor, Subject,
};
use umbra_policy::rego::{PolicySet, PolicySetBuilder, RegoVersion};
use umbra_policy::rules::PolicyConfig;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// OPA's engine behind the bridge's C ABI.
struct Opa {
    _lib: libloading::Library,
    handle: u64,
    add_policy: unsafe extern "C" fn(u64, *const c_char, *const c_char) -> *mut c_char,
    add_data: unsafe extern "C" fn(u64, *const c_char, *const c_char) -> *mut c_char,
    eval_document:
        unsafe extern "C" fn(u64, *const c_char, *const c_char, c_int, c_int) -> *mut c_char,
    free_string: unsafe extern "C" fn(*mut c_char),
}

impl Opa {
    fn load(path: &str) -> Res<Self> {
        // SAFETY: loading the bridge runs the Go runtime's initializers,
        // which is what the library is for; the symbols' types are the
        // ones the wheel's own ctypes bindings declare (opa_bindings/_native.py).
        unsafe {
            let lib = libloading::Library::new(path)?;
            let new: libloading::Symbol<unsafe extern "C" fn() -> u64> = lib.get(b"OpaNew")?;
            let handle = new();
            let add_policy = *lib.get(b"OpaAddPolicy")?;
            let add_data = *lib.get(b"OpaAddData")?;
            let eval_document = *lib.get(b"OpaEvalDocument")?;
            let free_string = *lib.get(b"OpaFreeString")?;
            Ok(Self {
                _lib: lib,
                handle,
                add_policy,
                add_data,
                eval_document,
                free_string,
            })
        }
    }

    /// Takes ownership of a returned string: its text, then freed.
    fn take(&self, ptr: *mut c_char) -> Res<String> {
        if ptr.is_null() {
            return Err("the OPA bridge returned NULL".into());
        }
        // SAFETY: a non-null return is a NUL-terminated string the bridge
        // allocated and hands over; it is freed exactly once, here.
        let text = unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned();
        unsafe { (self.free_string)(ptr) };
        Ok(text)
    }

    fn checked(&self, ptr: *mut c_char) -> Res<serde_json::Value> {
        let envelope: serde_json::Value = serde_json::from_str(&self.take(ptr)?)?;
        match envelope.get("error") {
            Some(e) if !e.is_null() => Err(format!("OPA: {e}").into()),
            _ => Ok(envelope),
        }
    }

    fn add_policy(&self, name: &str, source: &str) -> Res<()> {
        let (n, s) = (CString::new(name)?, CString::new(source)?);
        // SAFETY: valid C strings for the call's duration.
        self.checked(unsafe { (self.add_policy)(self.handle, n.as_ptr(), s.as_ptr()) })?;
        Ok(())
    }

    fn add_data(&self, json: &str) -> Res<()> {
        let (p, d) = (CString::new("")?, CString::new(json)?);
        // SAFETY: as above.
        self.checked(unsafe { (self.add_data)(self.handle, p.as_ptr(), d.as_ptr()) })?;
        Ok(())
    }

    /// The value at `data.<dotted>` for `input`, or `None` when undefined.
    fn eval(&self, dotted: &CStr, input: &CStr) -> Res<Option<serde_json::Value>> {
        // SAFETY: as above.
        let envelope = self.checked(unsafe {
            (self.eval_document)(self.handle, dotted.as_ptr(), input.as_ptr(), 0, 0)
        })?;
        Ok(envelope
            .get("result")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("expressions"))
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("value"))
            .cloned())
    }

    /// One timed sample's work: the call, the answer's length, the free.
    fn eval_raw(&self, dotted: &CStr, input: &CStr) -> usize {
        // SAFETY: as above; the result is freed before returning.
        unsafe {
            let ptr = (self.eval_document)(self.handle, dotted.as_ptr(), input.as_ptr(), 0, 0);
            let n = if ptr.is_null() {
                0
            } else {
                CStr::from_ptr(ptr).to_bytes().len()
            };
            if !ptr.is_null() {
                (self.free_string)(ptr);
            }
            n
        }
    }
}

struct Case {
    name: &'static str,
    /// `pkg/rule` (Umbra's `eval_path`, the Data API's URL form).
    path: &'static str,
    input: String,
}

fn umbra_eval(set: &PolicySet, path: &str, input: &str) -> usize {
    let value = set
        .input_from_json(input)
        .ok()
        .and_then(|i| set.eval_path(path, Some(&i)).ok())
        .flatten();
    serde_json::to_string(&value).map_or(0, |s| s.len())
}

/// p50, p99 and mean of `samples` (ns), in µs.
fn stats(mut samples: Vec<u64>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)] as f64 / 1e3;
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1e3;
    (at(50), at(99), mean)
}

fn time(n: usize, mut f: impl FnMut() -> usize) -> Vec<u64> {
    for _ in 0..n / 10 {
        black_box(f());
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

fn read(dir: &str, file: &str) -> Res<String> {
    std::fs::read_to_string(format!("{dir}/{file}"))
        .map_err(|e| format!("{dir}/{file}: {e}").into())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policybench: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: policybench LIBOPABRIDGE POLICIES_DIR [SAMPLES] [PASSES]\n       \
                     policybench --profile POLICIES_DIR CASE [CALLS] [parsed|bytecode]";

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--profile") {
        return profile(&args[2..]);
    }
    let (Some(lib), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err(USAGE.into());
    };
    let samples: usize = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    let passes: usize = args.get(4).map_or(Ok(5), |s| s.parse())?;

    let opa = Opa::load(lib)?;
    let set = load(dir, Some(&opa), false)?;
    let fast = load(dir, None, true)?;
    let (point, decision_input) = decision_point()?;
    let cases = cases(&point, &decision_input)?;

    // Same answers, or no figures.
    for case in &cases {
        let dotted = CString::new(case.path.replace('/', "."))?;
        let input = CString::new(case.input.as_str())?;
        let theirs = opa.eval(&dotted, &input)?;
        let parsed = set.input_from_json(&case.input)?;
        let ours = set.eval_path(case.path, Some(&parsed))?;
        let compiled = fast.eval_path(case.path, Some(&parsed))?;
        if theirs != ours || theirs != compiled {
            return Err(format!(
                "{}: OPA says {theirs:?}, Umbra says {ours:?}, bytecode {compiled:?}",
                case.name
            )
            .into());
        }
        println!(
            "ANSWER {}",
            serde_json::json!({ "case": case.name, "value": ours })
        );
    }

    let mut all: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut record = |engine: &str, case: &str, pass: usize, samples: Vec<u64>| {
        let (p50, p99, mean) = stats(samples);
        println!(
            "RESULT {}",
            serde_json::json!({ "engine": engine, "case": case, "pass": pass,
                "p50_us": p50, "p99_us": p99, "mean_us": mean })
        );
        all.entry((case.to_owned(), engine.to_owned()))
            .or_default()
            .push((p50, p99));
    };
    let native_cases = native_inputs(&decision_input);
    for pass in 1..=passes {
        for case in &cases {
            let dotted = CString::new(case.path.replace('/', "."))?;
            let input = CString::new(case.input.as_str())?;
            record(
                "opa",
                case.name,
                pass,
                time(samples, || opa.eval_raw(&dotted, &input)),
            );
            record(
                "umbra",
                case.name,
                pass,
                time(samples, || umbra_eval(&set, case.path, &case.input)),
            );
            record(
                "umbra-bytecode",
                case.name,
                pass,
                time(samples, || umbra_eval(&fast, case.path, &case.input)),
            );
            let parsed = set.input_from_json(&case.input)?;
            record(
                "umbra-parsed",
                case.name,
                pass,
                time(samples, || {
                    set.eval_path(case.path, Some(&parsed))
                        .ok()
                        .flatten()
                        .map_or(0, |v| usize::from(v.is_object()))
                }),
            );
        }
        for (name, input) in &native_cases {
            record(
                "native",
                name,
                pass,
                time(samples * 5, || usize::from(point.decide(input).allowed())),
            );
        }
    }

    println!("\nSUMMARY (median over {passes} passes of each pass's figure; µs)");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7}  targets",
        "case",
        "opa p50",
        "umbra p50",
        "parsed",
        "opa p99",
        "umbra p99",
        "ratio",
        "bytecode",
        "ratio"
    );
    let median = |v: &[(f64, f64)], which: fn(&(f64, f64)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(which).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    for case in &cases {
        let get = |engine: &str| all.get(&(case.name.to_owned(), engine.to_owned()));
        let (Some(o), Some(u), Some(p)) = (get("opa"), get("umbra"), get("umbra-parsed")) else {
            continue;
        };
        let b50 = get("umbra-bytecode").map_or(f64::NAN, |b| median(b, |x| x.0));
        let (o50, u50, p50) = (median(o, |x| x.0), median(u, |x| x.0), median(p, |x| x.0));
        let ratio = o50 / u50;
        let verdict = format!(
            "p50 <= 10 us: {}; >= 5x OPA: {}",
            if u50 <= 10.0 { "met" } else { "SHORT" },
            if ratio >= 5.0 { "met" } else { "SHORT" }
        );
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.2}x {:>9.2} {:>6.2}x  {verdict}",
            case.name,
            o50,
            u50,
            p50,
            median(o, |x| x.1),
            median(u, |x| x.1),
            ratio,
            b50,
            o50 / b50
        );
    }
    for (name, _) in &native_cases {
        if let Some(n) = all.get(&(name.clone(), "native".to_owned())) {
            let n50 = median(n, |x| x.0);
            println!(
                "{:<34} {:>9} {:>9.3} {:>9} {:>9} {:>9.3} {:>7} {:>9} {:>7}  p50 <= 1 us: {}",
                name,
                "-",
                n50,
                "-",
                "-",
                median(n, |x| x.1),
                "-",
                "-",
                "-",
                if n50 <= 1.0 { "met" } else { "SHORT" }
            );
        }
    }
    Ok(())
}

/// The policies and data both engines load (OPA's too, when given).
fn load(dir: &str, opa: Option<&Opa>, bytecode: bool) -> Res<PolicySet> {
    let modules = [
        ("seeds/service_auth.rego", "service_auth.rego"),
        ("seeds/zerotrust.rego", "zerotrust.rego"),
        ("seeds/compliance.rego", "compliance.rego"),
        ("umbra/authz.rego", "umbra_authz.rego"),
    ];
    let data = [
        "seeds/service_auth.data.json",
        "seeds/compliance.data.json",
        "umbra/data.json",
    ];
    let mut builder = PolicySetBuilder::default().bytecode(bytecode);
    for (file, name) in modules {
        let source = read(dir, file)?;
        if let Some(opa) = opa {
            opa.add_policy(name, &source)?;
        }
        builder.add_module(name, &source, RegoVersion::Auto)?;
    }
    for file in data {
        let json = read(dir, file)?;
        if let Some(opa) = opa {
            opa.add_data(&json)?;
        }
        builder.add_data_json(file, &json)?;
    }
    Ok(builder.build()?)
}

/// The native rules' decision point and the user request whose Rego input
/// document the `umbra.authz.decision` case evaluates.
fn decision_point() -> Res<(DecisionPoint, DecisionInput)> {
    let native = PolicyConfig::from_toml(include_str!("../native.toml"))?;
    let point = DecisionPoint::new(native);
    let decision_input = DecisionInput {
        subject: Subject {
            user: Some("alice".into()),
            groups: vec!["eng".into()],
            device: Some("0b5e0c1e-7a43-4a4e-9f0e-2d5c0e0f6a01".into()),
            ..Subject::default()
        },
        device: None,
        request: Request {
            service: "wiki".into(),
            method: Some("GET".into()),
            path: Some("/api/pages/7".into()),
            ..Request::default()
        },
        context: Context {
            source_address: Some("10.1.2.3".parse()?),
            now_s: 1_767_261_600,
            session_age_s: Some(600),
            mfa_age_s: Some(600),
        },
        risk: Risk {
            score: 20,
            factors: vec![RiskFactor {
                name: "network".into(),
                points: 20,
            }],
        },
    };
    Ok((point, decision_input))
}

fn cases(point: &DecisionPoint, decision_input: &DecisionInput) -> Res<Vec<Case>> {
    Ok(vec![
        Case {
            name: "service_auth.allow (allowed)",
            path: "service_auth/allow",
            input: r#"{"source_service":"api-gateway","target_service":"payment-service","method":"POST","path":"/v1/charges"}"#.into(),
        },
        Case {
            name: "service_auth.allow (denied)",
            path: "service_auth/allow",
            input: r#"{"source_service":"web-frontend","target_service":"payment-service","method":"POST","path":"/v1/charges"}"#.into(),
        },
        Case {
            name: "zerotrust.decision",
            path: "zerotrust/decision",
            input: r#"{"now_s":1767261600,"headers":{"authorization":"Bearer x"},"claims":{"exp":1767262200,"risk_score":0.2,"allowed_resources":[{"name":"payroll"}],"clearance_level":"confidential"},"resource":"payroll","data_classification":"internal","source":{"namespace":"prod","service":"web-service"},"target":{"namespace":"prod","service":"api-service"}}"#.into(),
        },
        Case {
            name: "compliance.result",
            path: "compliance/result",
            input: r#"{"operation":"signup","data":{"type":"pii","retention_days":365,"fields":["email","name"],"encrypted_at_rest":true,"encrypted_in_transit":true},"user":{"consent_given":true,"consent_date":"2025-06-01"},"security":{"mfa_enabled":true,"rbac_enabled":true},"logging":{"audit_enabled":true,"retention_days":365}}"#.into(),
        },
        Case {
            name: "umbra.authz.decision",
            path: "umbra/authz/decision",
            input: serde_json::to_string(&point.rego_input(decision_input))?,
        },
    ])
}

/// Calls Umbra's engine on one case, for an instruction profile: run under
/// `valgrind --tool=callgrind --toggle-collect=*profile_loop*`, so only the
/// timed work counts, and divide by CALLS. `parsed` evaluates an input
/// parsed beforehand (the `umbra-parsed` figure) instead of JSON text;
/// `bytecode` runs the rules compiled (the `umbra-bytecode` figure).
/// CALLS 0 prints the case's input document instead.
fn profile(args: &[String]) -> Res<()> {
    let (Some(dir), Some(name)) = (args.first(), args.get(1)) else {
        return Err(USAGE.into());
    };
    let calls: usize = args.get(2).map_or(Ok(1000), |s| s.parse())?;
    let parsed = args.get(3).is_some_and(|a| a == "parsed");
    let bytecode = args.get(3).is_some_and(|a| a == "bytecode");
    let set = load(dir, None, bytecode)?;
    let (point, decision_input) = decision_point()?;
    let cases = cases(&point, &decision_input)?;
    let case = cases
        .iter()
        .find(|c| c.name.starts_with(name.as_str()))
        .ok_or_else(|| format!("no case named {name}"))?;
    if calls == 0 {
        // The case's input document, for trying it elsewhere.
        println!("{}", case.input);
        return Ok(());
    }
    let input = set.input_from_json(&case.input)?;
    // One call first, so pools and caches are warm as in a timed run.
    black_box(umbra_eval(&set, case.path, &case.input));
    let n = profile_loop(&set, case, parsed.then_some(&input), calls);
    println!("{}: {calls} calls, {n} bytes of answers", case.name);
    Ok(())
}

#[inline(never)]
fn profile_loop(
    set: &PolicySet,
    case: &Case,
    input: Option<&umbra_policy::rego::Input>,
    calls: usize,
) -> usize {
    (0..calls)
        .map(|_| match input {
            Some(i) => set
                .eval_path(case.path, Some(i))
                .ok()
                .flatten()
                .map_or(0, |v| usize::from(v.is_object())),
            None => umbra_eval(set, case.path, &case.input),
        })
        .map(black_box)
        .sum()
}

/// Native-rule decisions: a user rule, a service-to-service rule and a
/// default deny (every rule tried).
fn native_inputs(user: &DecisionInput) -> Vec<(String, DecisionInput)> {
    let service = DecisionInput {
        subject: Subject {
            service: Some("api-gateway".into()),
            ..Subject::default()
        },
        device: None,
        request: Request {
            service: "payment-service".into(),
            method: Some("POST".into()),
            path: Some("/v1/charges".into()),
            ..Request::default()
        },
        context: user.context.clone(),
        risk: Risk::default(),
    };
    let mut nobody = user.clone();
    nobody.subject.user = Some("mallory".into());
    nobody.subject.groups = vec!["guests".into()];
    vec![
        ("native: user rule (allowed)".into(), user.clone()),
        ("native: service rule (allowed)".into(), service),
        ("native: no rule (default deny)".into(), nobody),
    ]
}
