//! Decision latency on the seeds' policies and the native rules, in-process.
//!
//! `cargo run --release -p umbra-policy --example policy_bench`
//! (bench/policy.sh runs this side by side with OPA's engine).

use std::time::{Duration, Instant};

use umbra_policy::decision::{Context, DecisionInput, DecisionPoint, Request, Risk, Subject};
use umbra_policy::rego::{PolicySetBuilder, RegoVersion};
use umbra_policy::rules::PolicyConfig;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn measure(label: &str, n: usize, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    println!(
        "{label:<40} p50 {:>8.2} µs  p99 {:>8.2} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/");
    let read = |p: &str| std::fs::read_to_string(format!("{root}{p}"));
    let mut b = PolicySetBuilder::default();
    b.add_module(
        "service_auth.rego",
        &read("seeds/service_auth.rego")?,
        RegoVersion::Auto,
    )?;
    b.add_data_json(
        "service_auth.data.json",
        &read("seeds/service_auth.data.json")?,
    )?;
    b.add_module(
        "zerotrust.rego",
        &read("seeds/zerotrust.rego")?,
        RegoVersion::Auto,
    )?;
    b.add_module(
        "compliance.rego",
        &read("seeds/compliance.rego")?,
        RegoVersion::Auto,
    )?;
    b.add_data_json("compliance.data.json", &read("seeds/compliance.data.json")?)?;
    b.add_module(
        "umbra/authz.rego",
        &read("umbra/authz.rego")?,
        RegoVersion::Auto,
    )?;
    b.add_data_json("umbra/data.json", &read("umbra/data.json")?)?;
    b.add_module(
        "bench.rego",
        "package bench\nt := true\n",
        RegoVersion::Auto,
    )?;
    let set = b.build()?;
    let n = 20_000;
    measure("rego trivial rule (fixed cost)", n, || {
        let _ = set.eval_path("bench/t", None);
    });

    let input = set.input_from_json(
        r#"{"source_service":"api-gateway","target_service":"payment-service","method":"POST","path":"/v1/charges"}"#,
    )?;
    measure("rego service_auth.allow", n, || {
        let _ = set.eval_path("service_auth/allow", Some(&input));
    });
    measure("rego service_auth.allow (parse input)", n, || {
        let i = set.input_from_json(
            r#"{"source_service":"api-gateway","target_service":"payment-service","method":"POST","path":"/v1/charges"}"#,
        );
        let _ = i.map(|i| set.eval_path("service_auth/allow", Some(&i)));
    });
    let zt = set.input_from_json(
        r#"{"now_s":1767261600,"headers":{"authorization":"Bearer x"},"claims":{"exp":1767262200,"risk_score":0.2,"allowed_resources":[{"name":"payroll"}],"clearance_level":"confidential"},"resource":"payroll","data_classification":"internal","source":{"namespace":"prod","service":"web-service"},"target":{"namespace":"prod","service":"api-service"}}"#,
    )?;
    measure("rego zerotrust.decision", n, || {
        let _ = set.eval_path("zerotrust/decision", Some(&zt));
    });
    let comp = set.input_from_json(
        r#"{"operation":"signup","data":{"type":"pii","retention_days":365,"fields":["email","name"],"encrypted_at_rest":true,"encrypted_in_transit":true},"user":{"consent_given":true,"consent_date":"2025-06-01"},"security":{"mfa_enabled":true,"rbac_enabled":true},"logging":{"audit_enabled":true,"retention_days":365}}"#,
    )?;
    measure("rego compliance.result", n, || {
        let _ = set.eval_path("compliance/result", Some(&comp));
    });

    let native = PolicyConfig::from_toml(
        r#"
[[service_rule]]
name = "charges"
priority = 10
effect = "allow"
source = "api-gateway"
target = "payment-service"
methods = ["POST"]
paths = ["/v1/charges", "/v1/refunds"]

[[rule]]
name = "wiki"
priority = 100
effect = "allow"
groups = ["eng"]
services = ["wiki"]
methods = ["GET"]
paths = ["/api"]
"#,
    )?;
    let dp = DecisionPoint::new(native);
    let input = DecisionInput {
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
        context: Context {
            now_s: 1_767_261_600,
            mfa_age_s: Some(10),
            ..Context::default()
        },
        risk: Risk::default(),
    };
    measure("native decide (service rule)", n * 5, || {
        let _ = dp.decide(&input);
    });
    Ok(())
}
