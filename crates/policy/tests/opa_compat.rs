//! Every case in fixtures/opa_cases.json (queries on the seeds' policies and
//! Umbra's own, answered by OPA's Go engine; see opa_cases.py) must get the
//! same answer from Umbra's Rego engine: the same value, or undefined where
//! OPA's is undefined.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use umbra_policy::rego::{PolicySet, PolicySetBuilder, RegoVersion};

const CASES: &str = include_str!("fixtures/opa_cases.json");

macro_rules! policy_file {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../policies/", $path)))
    };
}

/// The policy files of the repository, by path under `policies/`.
pub const FILES: &[(&str, &str)] = &[
    policy_file!("seeds/service_auth.rego"),
    policy_file!("seeds/service_auth.data.json"),
    policy_file!("seeds/zerotrust.rego"),
    policy_file!("seeds/compliance.rego"),
    policy_file!("seeds/compliance.data.json"),
    policy_file!("seeds/v0/service_auth.rego"),
    policy_file!("umbra/authz.rego"),
    policy_file!("umbra/data.json"),
];

fn file(path: &str) -> &'static str {
    FILES.iter().find(|(p, _)| *p == path).unwrap().1
}

/// Builds a set from files, each module loaded with automatic v0/v1
/// detection, as `umbra policy eval -d` does.
pub fn set_of(paths: &[&str]) -> PolicySet {
    let mut b = PolicySetBuilder::default();
    for p in paths {
        if p.ends_with(".rego") {
            b.add_module(p, file(p), RegoVersion::Auto).unwrap();
        } else {
            b.add_data_json(p, file(p)).unwrap();
        }
    }
    b.build().unwrap()
}

fn named_set(name: &str) -> PolicySet {
    match name {
        "seeds" => set_of(&[
            "seeds/service_auth.rego",
            "seeds/zerotrust.rego",
            "seeds/compliance.rego",
            "seeds/service_auth.data.json",
            "seeds/compliance.data.json",
        ]),
        "seeds_v0" => set_of(&["seeds/v0/service_auth.rego", "seeds/service_auth.data.json"]),
        "umbra" => set_of(&["umbra/authz.rego", "umbra/data.json"]),
        other => panic!("unknown set {other}"),
    }
}

#[test]
fn regorus_answers_as_opa_does() {
    let cases: Vec<Value> = serde_json::from_str(CASES).unwrap();
    assert!(cases.len() >= 70, "{} cases", cases.len());
    let mut sets = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let set = sets
            .entry(case["set"].as_str().unwrap().to_owned())
            .or_insert_with_key(|k| named_set(k));
        let input = match &case["input"] {
            Value::Null => None,
            v => Some(set.input_from(v).unwrap()),
        };
        let got = match set.eval_path(case["query"].as_str().unwrap(), input.as_ref()) {
            Ok(Some(v)) => serde_json::json!({ "result": v }),
            Ok(None) => serde_json::json!({}),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        if got != case["expected"] {
            failures.push(format!("{name}: OPA {} but Umbra {got}", case["expected"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_v0_module_is_detected_and_the_v1_ones_are_not() {
    let mut b = PolicySetBuilder::default();
    let info = b
        .add_module(
            "v0.rego",
            file("seeds/v0/service_auth.rego"),
            RegoVersion::Auto,
        )
        .unwrap();
    assert!(info.v0);
    assert_eq!(info.package, "data.service_auth");
    for p in [
        "seeds/service_auth.rego",
        "seeds/zerotrust.rego",
        "seeds/compliance.rego",
    ] {
        let info = b.add_module(p, file(p), RegoVersion::Auto).unwrap();
        assert!(!info.v0, "{p}");
    }
    // Forced v1, the seed's module is refused with its position.
    let err = PolicySetBuilder::default()
        .add_module(
            "v0.rego",
            file("seeds/v0/service_auth.rego"),
            RegoVersion::V1,
        )
        .unwrap_err();
    let pos = err.position().unwrap();
    assert_eq!((pos.file.as_str(), pos.line, pos.column), ("v0.rego", 3, 7));
    assert!(err.to_string().starts_with("v0.rego:3:7: "), "{err}");
}
