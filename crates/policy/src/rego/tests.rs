#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;

use serde_json::json;

use super::*;

const ALLOW: &str =
    "package t\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n";

fn set(modules: &[(&str, &str)], data: Option<&str>) -> PolicySet {
    let mut b = PolicySetBuilder::default();
    for (file, src) in modules {
        b.add_module(file, src, RegoVersion::Auto).unwrap();
    }
    if let Some(d) = data {
        b.add_data_json("data.json", d).unwrap();
    }
    b.build().unwrap()
}

fn eval(set: &PolicySet, query: &str, input: serde_json::Value) -> QueryResults {
    let input = set.input_from(&input).unwrap();
    set.eval_query(query, Some(&input)).unwrap()
}

#[test]
fn results_have_opas_shape_and_undefined_prints_as_an_empty_object() {
    let s = set(&[("t.rego", ALLOW)], None);
    let r = eval(&s, "data.t.allow", json!({"user": "alice"}));
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"result": [{"expressions": [{"value": true, "text": "data.t.allow", "location": {"row": 1, "col": 1}}]}]})
    );
    let r = eval(&s, "data.t.nothing", json!({}));
    assert!(r.is_undefined());
    assert_eq!(serde_json::to_string(&r).unwrap(), "{}");
    // Bindings, as `opa eval 'x := …'` prints them.
    let r = eval(&s, "x := data.t.allow", json!({"user": "bob"}));
    assert_eq!(r.result[0].bindings["x"], json!(false));
    // Several results for a query with a loop.
    let r = s.eval_query("x := [1, 2, 3][_]", None).unwrap();
    assert_eq!(r.result.len(), 3);
    assert_eq!(r.single_value(), None);
}

#[test]
fn the_data_api_path_form() {
    let s = set(
        &[("t.rego", ALLOW)],
        Some(r#"{"roles": {"admin": ["alice"]}}"#),
    );
    let input = s.input_from_json(r#"{"user": "alice"}"#).unwrap();
    assert_eq!(
        s.eval_path("t/allow", Some(&input)).unwrap(),
        Some(json!(true))
    );
    assert_eq!(
        s.eval_path("t", Some(&input)).unwrap(),
        Some(json!({"allow": true}))
    );
    assert_eq!(
        s.eval_path("roles/admin", None).unwrap(),
        Some(json!(["alice"]))
    );
    assert_eq!(s.eval_path("t/missing", Some(&input)).unwrap(), None);
    assert_eq!(s.eval_path("nope/x", None).unwrap(), None);
    let all = s.eval_path("", None).unwrap().unwrap();
    assert_eq!(all["roles"], json!({"admin": ["alice"]}));
    assert_eq!(all["t"], json!({"allow": false}));
}

#[test]
fn path_segments_cannot_inject_rego() {
    assert_eq!(data_query("a/b"), r#"data["a"]["b"]"#);
    assert_eq!(data_query("/a//b/"), r#"data["a"]["b"]"#);
    let q = data_query(r#"t"] ; x := ["1"#);
    assert_eq!(q, r#"data["t\"] ; x := [\"1"]"#);
    let s = set(&[("t.rego", ALLOW)], None);
    assert_eq!(s.eval_path(r#"t"] ; x := ["1"#, None).unwrap(), None);
    assert_eq!(s.eval_path("t/allow\u{1}\\", None).unwrap(), None);
}

#[test]
fn load_errors_name_file_line_and_column() {
    let mut b = PolicySetBuilder::default();
    let err = b
        .add_module(
            "p/bad.rego",
            "package x\n\nallow if {\n  1 < \n}\n",
            RegoVersion::V1,
        )
        .unwrap_err();
    let p = err.position().unwrap();
    assert_eq!((p.file.as_str(), p.line), ("p/bad.rego", 5));
    assert!(err.to_string().starts_with("p/bad.rego:5:"), "{err}");

    // Compile errors, only visible once the set is built.
    let mut b = PolicySetBuilder::default();
    b.add_module(
        "u.rego",
        "package x\nimport rego.v1\nallow if {\n  y := 1\n  z\n}\n",
        RegoVersion::V1,
    )
    .unwrap();
    let err = b.build().unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }));
    let p = err.position().unwrap();
    assert_eq!((p.file.as_str(), p.line, p.column), ("u.rego", 5, 3));
    assert!(err.to_string().contains("unsafe"), "{err}");

    let mut b = PolicySetBuilder::default();
    let err = b.add_data_json("d.json", "{\n  \"a\": [1,\n}").unwrap_err();
    assert_eq!(err.position().unwrap().line, 3);
    assert!(err.to_string().starts_with("d.json:3:"), "{err}");
    let err = b.add_data_json("d.json", "[1, 2]").unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
    b.add_data_json("a.json", r#"{"a": {"b": 1}}"#).unwrap();
    let err = b.add_data_json("b.json", r#"{"a": {"b": 2}}"#).unwrap_err();
    assert!(matches!(err, LoadError::DataConflict { .. }), "{err}");

    b.add_module("m.rego", ALLOW, RegoVersion::Auto).unwrap();
    let err = b
        .add_module("m.rego", ALLOW, RegoVersion::Auto)
        .unwrap_err();
    assert!(matches!(err, LoadError::DuplicateModule { .. }));
}

#[test]
fn size_limits_refuse_before_parsing() {
    let limits = Limits {
        max_input_bytes: 64,
        max_query_bytes: 32,
        max_file_bytes: 128,
        max_modules: 1,
        ..Limits::default()
    };
    let mut b = PolicySetBuilder::new(limits);
    let big = format!("package t\n# {}\n", "x".repeat(200));
    assert!(matches!(
        b.add_module("big.rego", &big, RegoVersion::Auto),
        Err(LoadError::TooLarge {
            size: 213,
            max: 128,
            ..
        })
    ));
    b.add_module("t.rego", ALLOW, RegoVersion::Auto).unwrap();
    assert!(matches!(
        b.add_module("u.rego", "package u\n", RegoVersion::Auto),
        Err(LoadError::TooManyModules { .. })
    ));
    let s = b.build().unwrap();
    let huge = format!(r#"{{"user": "{}"}}"#, "a".repeat(100));
    assert!(matches!(
        s.input_from_json(&huge),
        Err(EvalError::InputTooLarge { max: 64, .. })
    ));
    assert!(matches!(
        s.input_from(&json!({"user": "a".repeat(100)})),
        Err(EvalError::InputTooLarge { .. })
    ));
    assert!(matches!(
        s.eval_query(&format!("data.t.allow == {}", "1".repeat(40)), None),
        Err(EvalError::QueryTooLarge { .. })
    ));
    let err = s.input_from_json("{\"user\": ").unwrap_err();
    assert!(matches!(err, EvalError::BadInput { line: 1, .. }), "{err}");
}

#[test]
fn evaluation_errors_are_errors_not_answers() {
    let s = set(
        &[(
            "c.rego",
            "package c\nimport rego.v1\na := 1 if input.x\na := 2 if input.y\njwt := io.jwt.decode(input.t)\n",
        )],
        None,
    );
    // A complete rule with two values is a conflict, in OPA as here.
    let input = s.input_from(&json!({"x": true, "y": true})).unwrap();
    let err = s.eval_query("data.c.a", Some(&input)).unwrap_err();
    assert_eq!(err.code(), "rego_eval_error");
    assert!(err.to_string().contains("conflict"), "{err}");
    // A builtin nobody provides (io.jwt.* is left out on purpose).
    let input = s.input_from(&json!({"t": "x.y.z"})).unwrap();
    let err = s.eval_query("data.c.jwt", Some(&input)).unwrap_err();
    assert!(err.to_string().contains("io.jwt.decode"), "{err}");
    // A query that does not parse.
    let err = s.eval_query("data.c.a ==", None).unwrap_err();
    match err {
        EvalError::Eval { position, .. } => assert_eq!(position.unwrap().file, "<query>"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_runaway_policy_is_stopped_by_the_time_limit() {
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let mut b = PolicySetBuilder::new(limits);
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
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_failed_build_leaves_the_set_in_force_untouched() {
    let in_force = Arc::new(set(&[("t.rego", ALLOW)], None));
    let mut b = PolicySetBuilder::default();
    b.add_module(
        "t.rego",
        "package t\nimport rego.v1\nallow := true\n",
        RegoVersion::V1,
    )
    .unwrap();
    assert!(
        b.add_module("broken.rego", "package t\nallow {", RegoVersion::Auto)
            .is_err()
    );
    drop(b);
    let input = in_force.input_from(&json!({"user": "bob"})).unwrap();
    assert_eq!(
        in_force.eval_path("t/allow", Some(&input)).unwrap(),
        Some(json!(false))
    );
}

#[test]
fn one_set_serves_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    let s = Arc::new(set(&[("t.rego", ALLOW)], None));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for j in 0..200 {
                    let user = if (i + j) % 2 == 0 { "alice" } else { "bob" };
                    let input = s.input_from(&json!({ "user": user })).unwrap();
                    let got = s.eval_path("t/allow", Some(&input)).unwrap();
                    assert_eq!(got, Some(json!(user == "alice")));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn missing_opa_builtins_are_provided_with_opas_answers() {
    let s = PolicySet::empty();
    let q = |query: &str| {
        s.eval_query(&format!("x := {query}"), None)
            .unwrap()
            .result
            .first()
            .map(|r| r.bindings["x"].clone())
    };
    // The answers OPA 1.x gives (opa_golib_python_bindings, see
    // tests/fixtures/opa_cases.py).
    assert_eq!(
        q(
            r#"net.cidr_contains_matches({["1.1.0.0/16", "foo"], "1.1.2.0/24"}, {"x": "1.1.1.128", "y": ["1.1.254.254", "bar"]})"#
        ),
        Some(json!([
            [["1.1.0.0/16", "foo"], "x"],
            [["1.1.0.0/16", "foo"], "y"]
        ]))
    );
    assert_eq!(
        q(r#"net.cidr_contains_matches(["10.0.0.0/8", "192.168.0.0/16"], "10.1.2.3")"#),
        Some(json!([[0, "10.1.2.3"]]))
    );
    assert_eq!(
        q(r#"net.cidr_contains_matches("10.0.0.0/8", ["10.1.2.3", "11.0.0.1", "10.0.0.0/9"])"#),
        Some(json!([["10.0.0.0/8", 0], ["10.0.0.0/8", 2]]))
    );
    assert_eq!(
        q(r#"net.cidr_contains_matches("10.0.0.0/8", "::ffff:10.1.2.3")"#),
        Some(json!([["10.0.0.0/8", "::ffff:10.1.2.3"]]))
    );
    assert_eq!(
        q(r#"net.cidr_contains_matches("2001:db8::/32", {"a": "2001:db8::1"})"#),
        Some(json!([["2001:db8::/32", "a"]]))
    );
    assert_eq!(
        q(r#"net.cidr_intersects("10.0.0.0/8", "10.2.0.0/16")"#),
        Some(json!(true))
    );
    assert_eq!(
        q(r#"net.cidr_intersects("10.0.0.0/16", "10.1.0.0/16")"#),
        Some(json!(false))
    );
    assert_eq!(
        q(r#"net.cidr_intersects("10.0.0.0/8", "fd00::/8")"#),
        Some(json!(false))
    );
    assert_eq!(
        q(r#"net.cidr_overlap("10.0.0.0/8", "10.1.2.3")"#),
        Some(json!(true))
    );
    // Bad operands: undefined by default (OPA without
    // --strict-builtin-errors), an error in strict mode.
    assert_eq!(q(r#"net.cidr_intersects("bad", "10.0.0.0/8")"#), None);
    assert_eq!(q(r#"net.cidr_contains_matches("10.0.0.0/8", [[]])"#), None);
    let strict = PolicySetBuilder::default()
        .strict_builtin_errors(true)
        .build()
        .unwrap();
    let err = strict
        .eval_query(r#"net.cidr_intersects("bad", "10.0.0.0/8")"#, None)
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid CIDR address: bad"),
        "{err}"
    );
    for name in builtins::EXTENSIONS {
        assert!(name.starts_with("net."));
    }
}

#[test]
fn an_umbra_decision_document_is_parsed_strictly() {
    let s = set(
        &[(
            "d.rego",
            r#"package umbra.authz
import rego.v1
decision := {"allow": true, "conditions": ["session_recording"], "reasons": ["ok"]} if input.k == 1
decision := {"allow": "yes"} if input.k == 2
decision := [true] if input.k == 3
decision := {"allow": false} if input.k == 4
"#,
        )],
        None,
    );
    let decide = |k: i32| {
        let input = s.input_from(&json!({ "k": k })).unwrap();
        s.decide(crate::decision::DECISION_QUERY, &input)
    };
    let d = decide(1).unwrap();
    assert!(d.allow);
    assert_eq!(d.conditions, ["session_recording"]);
    assert_eq!(d.reasons, ["ok"]);
    let d = decide(4).unwrap();
    assert!(!d.allow && d.conditions.is_empty());
    for k in [0, 2, 3] {
        let err = decide(k).unwrap_err();
        assert_eq!(err.code(), "rego_not_a_decision", "{k}: {err}");
    }
}

#[test]
fn rule_paths_are_spelled_as_regorus_registers_them() {
    for (query, canonical) in [
        (
            "data[\"service_auth\"][\"allow\"]",
            "data.service_auth.allow",
        ),
        (
            "data.umbra[\"authz\"].decision",
            "data.umbra.authz.decision",
        ),
        (
            "data[\"graph\"][\"1.0.0\"][\"deny\"]",
            "data.graph[\"1.0.0\"].deny",
        ),
        ("data[\"a b\"]._x1", "data[\"a b\"]._x1"),
        // Left to regorus's parser: it escapes control characters.
        ("data[\"a\tb\"]", "data[\"a\tb\"]"),
    ] {
        assert!(is_rule_path(query), "{query}");
        assert_eq!(canonical_rule_path(query), canonical, "{query}");
    }
    // Same answers through either spelling, including a literal package.
    let s = set(
        &[(
            "g.rego",
            "package graph[\"1.0.0\"]\nimport rego.v1\ndeny if input.x\n",
        )],
        None,
    );
    let input = s.input_from(&json!({"x": true})).unwrap();
    assert_eq!(
        s.eval_path("graph/1.0.0/deny", Some(&input)).unwrap(),
        Some(json!(true))
    );
}
