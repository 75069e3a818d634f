#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::{Value as Json, json};

// The repository's policy files, as the OPA comparison loads them.
use crate::opa_compat::FILES;
use crate::rego::{PolicySet, PolicySetBuilder, RegoVersion};

/// OPA's answers on the repository's policies (see tests/opa_compat.rs).
const CASES: &str = include_str!("../../../tests/fixtures/opa_cases.json");

fn set_of(paths: &[&str], bytecode: bool) -> PolicySet {
    let mut b = PolicySetBuilder::default().bytecode(bytecode);
    for p in paths {
        let (_, text) = FILES.iter().find(|(f, _)| f == p).unwrap();
        if p.ends_with(".rego") {
            b.add_module(p, text, RegoVersion::Auto).unwrap();
        } else {
            b.add_data_json(p, text).unwrap();
        }
    }
    b.build().unwrap()
}

fn named_set(name: &str) -> PolicySet {
    let paths: &[&str] = match name {
        "seeds" => &[
            "seeds/service_auth.rego",
            "seeds/zerotrust.rego",
            "seeds/compliance.rego",
            "seeds/service_auth.data.json",
            "seeds/compliance.data.json",
        ],
        "seeds_v0" => &["seeds/v0/service_auth.rego", "seeds/service_auth.data.json"],
        "umbra" => &["umbra/authz.rego", "umbra/data.json"],
        other => panic!("unknown set {other}"),
    };
    set_of(paths, true)
}

fn answer(set: &PolicySet, query: &str, input: &Json) -> Json {
    let input = (!input.is_null()).then(|| set.input_from(input).unwrap());
    match set.eval_path(query, input.as_ref()) {
        Ok(Some(v)) => json!({ "result": v }),
        Ok(None) => json!({}),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[test]
fn compiled_rules_answer_as_opa_does() {
    let cases: Vec<Json> = serde_json::from_str(CASES).unwrap();
    let mut sets = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let set = sets
            .entry(case["set"].as_str().unwrap().to_owned())
            .or_insert_with_key(|k| named_set(k));
        // Twice: the first call compiles, the second runs a pooled machine.
        for _ in 0..2 {
            let got = answer(set, case["query"].as_str().unwrap(), &case["input"]);
            if got != case["expected"] {
                failures.push(format!(
                    "{}: OPA {} but {got}",
                    case["name"], case["expected"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The seeds' rules ran as programs; Umbra's own, which calls an
    // extension, fell back to the interpreter.
    let seeds = &sets["seeds"];
    let rules = seeds.programs.as_ref().unwrap().compiled();
    assert!(
        rules.contains(&"data.zerotrust.decision".to_owned()),
        "{rules:?}"
    );
    let umbra = sets["umbra"].programs.as_ref().unwrap().compiled();
    assert!(umbra.is_empty(), "{umbra:?}");
}

#[test]
fn where_the_vm_is_lenient_and_opa_is_not() {
    let module = r#"package c
import rego.v1
two_values := v if { some v in [1, 2] }
conflict := 1 if input.x
conflict := 2 if input.x
f(a) := 1 if a > 0
f(a) := 2 if a > 0
function := f(5)
keys := {k: v | some v in [1, 2]; k := "a"}
"#;
    let build = |bytecode| {
        let mut b = PolicySetBuilder::default().bytecode(bytecode);
        b.add_module("c.rego", module, RegoVersion::V1).unwrap();
        b.build().unwrap()
    };
    let (interpreted, compiled) = (build(false), build(true));
    let input = json!({"x": true});
    for (rule, vm_answer) in [
        ("c/two_values", json!({"result": 2})),
        ("c/conflict", json!({})),
        ("c/function", json!({})),
        ("c/keys", json!({"result": {"a": 2}})),
    ] {
        let opa = answer(&interpreted, rule, &input);
        assert!(opa.get("error").is_some(), "{rule}: {opa}");
        assert_eq!(answer(&compiled, rule, &input), vm_answer, "{rule}");
    }
}

#[test]
fn a_runaway_compiled_rule_is_stopped_by_the_time_limit() {
    let limits = crate::rego::Limits {
        timeout: std::time::Duration::from_millis(50),
        ..crate::rego::Limits::default()
    };
    let mut b = PolicySetBuilder::new(limits).bytecode(true);
    b.add_module(
        "slow.rego",
        "package slow\nimport rego.v1\nn := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i != j])\n",
        RegoVersion::V1,
    )
    .unwrap();
    let s = b.build().unwrap();
    let started = std::time::Instant::now();
    let err = s.eval_query("data.slow.n", None).unwrap_err();
    assert_eq!(err.code(), "rego_timeout", "{err}");
    // Stopped once, by the program: not run again on the interpreter.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.programs.as_ref().unwrap().compiled(), vec!["data.slow.n"]);
}
