#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::json;
use umbra_proto::posture::MeasuredPosture;

use super::*;
use crate::rego::{PolicySetBuilder, RegoVersion};

/// Monday 2026-01-05 09:00:00 UTC (10:00 in Berlin).
const NOW: i64 = 1_767_603_600;

/// The native twin of policies/umbra/data.json.
const NATIVE: &str = r#"
[[rule]]
name = "wiki"
priority = 100
effect = "allow"
groups = ["eng", "support"]
services = ["wiki"]
methods = ["GET", "POST"]
paths = ["/api", "/docs"]
device_compliance = "standard"

[[rule]]
name = "payroll"
priority = 100
effect = "allow"
users = ["carol"]
groups = ["finance"]
services = ["payroll"]
device_compliance = "high_security"
max_risk = 49
max_mfa_age_seconds = 300
source_networks = ["10.0.0.0/8", "192.168.10.0/24"]
time_windows = [{ days = "mon-fri", start = "08:00", end = "18:00", timezone = "Europe/Berlin" }]

[[rule]]
name = "ssh"
priority = 100
effect = "allow"
users = ["alice"]
services = ["ssh"]
ports = [22]

[[service_rule]]
name = "charges"
priority = 10
effect = "allow"
source = "api-gateway"
target = "payment-service"
methods = ["POST"]
paths = ["/v1/charges", "/v1/refunds"]
"#;

fn posture(ok: bool) -> PostureReport {
    PostureReport {
        device_id: "d1".into(),
        hostname: "laptop".into(),
        os_version: "12".into(),
        patch_level: "2026-01-04".into(),
        antivirus_status: ok,
        firewall_enabled: ok,
        disk_encryption: ok,
        last_scan: String::new(),
        measured: None,
    }
}

fn input(user: &str, groups: &[&str], service: &str, method: &str, path: &str) -> DecisionInput {
    DecisionInput {
        subject: Subject {
            user: Some(user.into()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            device: Some("d1".into()),
            spiffe_id: Some("spiffe://umbra.local/device/d1".into()),
            service: None,
        },
        device: Some(Device {
            posture: Some(posture(true)),
        }),
        request: Request {
            service: service.into(),
            method: Some(method.into()),
            path: Some(path.into()),
            port: None,
            sensitivity: None,
        },
        context: Context {
            source_address: Some("10.1.2.3".parse().unwrap()),
            now_s: NOW,
            session_age_s: Some(600),
            mfa_age_s: Some(60),
        },
        risk: Risk {
            score: 10,
            factors: vec![RiskFactor {
                name: "new_network".into(),
                points: 10,
            }],
        },
    }
}

fn native() -> DecisionPoint {
    DecisionPoint::new(PolicyConfig::from_toml(NATIVE).unwrap())
}

fn umbra_rego() -> PolicySet {
    let mut b = PolicySetBuilder::default();
    b.add_module(
        "umbra/authz.rego",
        include_str!("../../../../policies/umbra/authz.rego"),
        RegoVersion::V1,
    )
    .unwrap();
    b.add_data_json(
        "umbra/data.json",
        include_str!("../../../../policies/umbra/data.json"),
    )
    .unwrap();
    b.build().unwrap()
}

fn with_rego(exclusive: bool) -> DecisionPoint {
    let mut dp = if exclusive {
        DecisionPoint::default()
    } else {
        native()
    };
    dp.rego = Some(RegoPolicy {
        set: umbra_rego(),
        query: DECISION_QUERY.into(),
        exclusive,
    });
    dp
}

fn checks(d: &Decision) -> Vec<&str> {
    d.failing_checks.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn allow_carries_the_rule_and_the_risk_factors() {
    let d = native().decide(&input("bob", &["eng"], "wiki", "GET", "/api/pages/1"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.allowed());
    assert_eq!(d.matched_rule.as_deref(), Some("wiki"));
    assert_eq!(d.reasons, ["rule wiki allows this request"]);
    assert_eq!(d.risk.factors[0].name, "new_network");
    assert!(d.conditions.is_empty() && d.failing_checks.is_empty());
}

#[test]
fn paths_are_normalized_before_any_rule_sees_them() {
    let dp = native();
    let outcome = |path: &str| dp.decide(&input("bob", &["eng"], "wiki", "GET", path));
    // Traversal is resolved, then matched: out of /api means out of reach.
    let d = outcome("/api/../admin");
    assert_eq!((d.outcome, checks(&d)), (Outcome::Deny, vec!["path"]));
    assert!(d.failing_checks[0].message.contains("/admin"), "{d:?}");
    assert_eq!(outcome("/api/%2e%2e/admin").outcome, Outcome::Deny);
    assert_eq!(outcome("/api/./pages//1").outcome, Outcome::Allow);
    assert_eq!(outcome("/docs/../api/x").outcome, Outcome::Allow);
    // Refused outright: encoded separators, climbing out of the root,
    // control characters, relative paths.
    for (path, reason) in [
        ("/api%2fadmin", "path_encoded_separator"),
        ("/api%2Fadmin", "path_encoded_separator"),
        ("/api\\admin", "path_encoded_separator"),
        ("/api/../../etc/passwd", "path_escapes_root"),
        ("/api/%00", "path_control_character"),
        ("api/pages", "path_not_absolute"),
        ("/api/%zz", "path_bad_encoding"),
    ] {
        let d = outcome(path);
        assert_eq!(
            (d.outcome, checks(&d)),
            (Outcome::Deny, vec!["path"]),
            "{path}"
        );
        assert!(
            d.failing_checks[0].message.contains(reason),
            "{path}: {d:?}"
        );
        assert_eq!(d.matched_rule, None, "no rule saw {path}");
    }
    // Case is significant: /API is not /api.
    assert_eq!(outcome("/API/pages").outcome, Outcome::Deny);
    // Methods must be uppercase tokens.
    let d = dp.decide(&input("bob", &["eng"], "wiki", "get", "/api"));
    assert_eq!(checks(&d), ["method"]);
    let d = dp.decide(&input("bob", &["eng"], "wiki", "GET /admin", "/api"));
    assert_eq!(checks(&d), ["method"]);
}

#[test]
fn risk_bands_follow_the_design_table() {
    let dp = native();
    let at = |score: u8, mfa: Option<u64>, sensitivity: Option<Sensitivity>| {
        let mut i = input("bob", &["eng"], "wiki", "GET", "/api");
        i.risk.score = score;
        i.context.mfa_age_s = mfa;
        i.request.sensitivity = sensitivity;
        dp.decide(&i)
    };
    let d = at(29, None, None);
    assert_eq!(
        (d.outcome, d.conditions.as_slice()),
        (Outcome::Allow, &[][..])
    );
    let d = at(30, Some(900), None);
    assert_eq!(d.outcome, Outcome::Allow);
    let d = at(30, Some(901), None);
    assert_eq!(
        (d.outcome, d.conditions.as_slice()),
        (Outcome::Conditional, &[Condition::StepUpMfa][..])
    );
    assert!(d.needs_step_up() && !d.allowed());
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("needs an MFA within 900 s")),
        "{d:?}"
    );
    let d = at(55, Some(10), None);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        d.conditions,
        [Condition::DeviceReverification, Condition::DetailedAudit]
    );
    let d = at(72, Some(10), None);
    assert_eq!(
        (d.outcome, checks(&d)),
        (Outcome::Deny, vec!["sensitivity"])
    );
    let d = at(72, Some(10), Some(Sensitivity::Low));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        d.conditions,
        [
            Condition::DeviceReverification,
            Condition::DetailedAudit,
            Condition::SessionRecording
        ]
    );
    let d = at(80, Some(10), Some(Sensitivity::Low));
    assert_eq!((d.outcome, checks(&d)), (Outcome::Deny, vec!["risk"]));
    assert!(d.conditions.is_empty(), "nothing helps a denied request");
}

#[test]
fn compliance_names_each_failing_check_and_report_only_keeps_them_aside() {
    let mut i = input("carol", &[], "payroll", "GET", "/");
    let mut p = posture(true);
    p.firewall_enabled = false;
    i.device = Some(Device { posture: Some(p) });
    let d = native().decide(&i);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(checks(&d), ["compliance.high_security.firewall"]);
    assert_eq!(d.failing_checks[0].message, "Firewall is disabled");
    assert_eq!(d.matched_rule.as_deref(), Some("payroll"));
    assert!(
        d.reasons
            .iter()
            .any(|r| r == "no rule applies; the closest is payroll")
    );

    let mut dp = native();
    dp.config.compliance.report_only = true;
    let d = dp.decide(&i);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.report_only[0].message, "Firewall is disabled");

    // No posture report at all: compliance cannot be shown.
    i.device = None;
    let d = native().decide(&i);
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(
        d.failing_checks[0].message.contains("no posture report"),
        "{d:?}"
    );
}

#[test]
fn a_required_compliance_level_applies_to_every_access() {
    let mut dp = native();
    dp.config.compliance.required = Some("standard".into());
    let mut i = input("alice", &[], "ssh", "GET", "/");
    i.request.method = None;
    i.request.path = None;
    i.request.port = Some(22);
    assert_eq!(dp.decide(&i).outcome, Outcome::Allow);
    i.device = Some(Device {
        posture: Some(posture(false)),
    });
    let d = dp.decide(&i);
    assert_eq!(
        checks(&d),
        [
            "compliance.standard.disk_encryption",
            "compliance.standard.antivirus"
        ]
    );
}

#[test]
fn the_default_rego_policy_and_the_native_rules_agree() {
    let native = native();
    let rego = with_rego(true);
    let both = with_rego(false);
    let mut cases = Vec::new();
    for (user, groups, service, method, path) in [
        ("bob", &["eng"][..], "wiki", "GET", "/api/pages"),
        ("bob", &["eng"], "wiki", "DELETE", "/api/pages"),
        ("bob", &["eng"], "wiki", "GET", "/apix"),
        ("bob", &["eng"], "wiki", "GET", "/api/../admin"),
        ("bob", &["sales"], "wiki", "GET", "/api"),
        ("carol", &[], "payroll", "GET", "/"),
        ("erin", &["finance"], "payroll", "POST", "/x"),
        ("mallory", &[], "payroll", "GET", "/"),
    ] {
        for risk in [0, 30, 45, 55, 75, 85] {
            for mfa in [Some(10), Some(600), None] {
                for ok in [true, false] {
                    let mut i = input(user, groups, service, method, path);
                    i.risk.score = risk;
                    i.context.mfa_age_s = mfa;
                    i.device = Some(Device {
                        posture: Some(posture(ok)),
                    });
                    cases.push(i);
                }
            }
        }
    }
    let mut i = input("x", &[], "payment-service", "POST", "/v1/charges/c1");
    i.subject.user = None;
    i.subject.service = Some("api-gateway".into());
    i.device = None;
    cases.push(i.clone());
    i.request.path = Some("/v1/charges-admin".into());
    cases.push(i);
    let mut i = input("carol", &[], "payroll", "GET", "/");
    i.context.source_address = Some("::ffff:192.168.10.5".parse().unwrap());
    cases.push(i.clone());
    i.context.source_address = Some("203.0.113.1".parse().unwrap());
    cases.push(i.clone());
    i.context.now_s = NOW + 9 * 3600;
    cases.push(i);
    let mut allowed = 0;
    for i in &cases {
        let (n, r, b) = (native.decide(i), rego.decide(i), both.decide(i));
        assert_eq!(
            (n.outcome, &n.conditions),
            (r.outcome, &r.conditions),
            "native {n:#?}\nrego {r:#?}\nfor {i:#?}"
        );
        assert_eq!((n.outcome, &n.conditions), (b.outcome, &b.conditions));
        allowed += usize::from(n.allowed());
    }
    assert!(
        allowed > 10 && allowed < cases.len() / 2,
        "{allowed} of {}",
        cases.len()
    );
}

#[test]
fn rego_reasons_and_errors_reach_the_decision() {
    let dp = with_rego(true);
    let d = dp.decide(&input("bob", &["eng"], "wiki", "DELETE", "/api"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.failing_checks[0].name, "rego");
    assert_eq!(
        d.failing_checks[0].message,
        "method DELETE is not allowed on wiki"
    );
    let d = dp.decide(&input("bob", &["eng"], "wiki", "GET", "/api"));
    assert_eq!(d.reasons, ["group eng is granted wiki"]);

    // A policy without the entry point: an error, so a deny that says so.
    let mut dp = DecisionPoint {
        rego: Some(RegoPolicy {
            set: PolicySet::empty(),
            query: DECISION_QUERY.into(),
            exclusive: true,
        }),
        ..DecisionPoint::default()
    };
    let d = dp.decide(&input("bob", &["eng"], "wiki", "GET", "/api"));
    assert_eq!(
        (d.outcome, checks(&d)),
        (Outcome::Deny, vec!["rego_not_a_decision"])
    );

    // A condition Umbra does not know cannot be met.
    let mut b = PolicySetBuilder::default();
    b.add_module(
        "x.rego",
        "package umbra.authz\nimport rego.v1\ndecision := {\"allow\": true, \"conditions\": [\"blood_sample\"]}\n",
        RegoVersion::V1,
    )
    .unwrap();
    dp.rego = Some(RegoPolicy {
        set: b.build().unwrap(),
        query: DECISION_QUERY.into(),
        exclusive: true,
    });
    let d = dp.decide(&input("bob", &["eng"], "wiki", "GET", "/api"));
    assert_eq!(
        (d.outcome, checks(&d)),
        (Outcome::Deny, vec!["rego_condition"])
    );
}

#[test]
fn nothing_configured_is_default_deny() {
    let d = DecisionPoint::default().decide(&input("bob", &["eng"], "wiki", "GET", "/api"));
    assert_eq!((d.outcome, checks(&d)), (Outcome::Deny, vec!["no_rule"]));
}

#[test]
fn the_input_document_is_stable_json() {
    let mut i = input("bob", &["eng"], "wiki", "GET", "/api/./x");
    i.context.source_address = Some("::ffff:10.1.2.3".parse().unwrap());
    let doc = native().rego_input(&i);
    assert_eq!(doc["subject"]["user"], "bob");
    assert_eq!(doc["request"]["path"], "/api/x", "normalized");
    assert_eq!(doc["context"]["source_address"], "10.1.2.3", "canonical");
    assert_eq!(doc["context"]["now_s"], NOW);
    assert_eq!(
        doc["risk"],
        json!({"score": 10, "factors": [{"name": "new_network", "points": 10}]})
    );
    let standard = &doc["device"]["compliance"]["standard"];
    assert_eq!(standard["compliant"], true);
    assert_eq!(standard["blocking"], json!([]));
    assert_eq!(doc["device"]["report_only"], false);
    assert_eq!(doc["device"]["posture"]["hostname"], "laptop");
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["context", "device", "request", "risk", "subject"]);

    // The Rust input round-trips through JSON (the CLI reads it with -i)
    // and refuses unknown fields.
    let text = serde_json::to_string(&i).unwrap();
    assert_eq!(serde_json::from_str::<DecisionInput>(&text).unwrap(), i);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["subject"]["admin"] = json!(true);
    assert!(serde_json::from_value::<DecisionInput>(v).is_err());

    let mut p = posture(true);
    p.measured = Some(MeasuredPosture {
        firewall: None,
        ..MeasuredPosture::default()
    });
    i.device = Some(Device { posture: Some(p) });
    let doc = native().rego_input(&i);
    let high = &doc["device"]["compliance"]["high_security"];
    assert_eq!(high["compliant"], false);
    assert!(
        high["blocking"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"] == "Firewall state is unknown"),
        "{high}"
    );
}
