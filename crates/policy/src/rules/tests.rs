#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::IpAddr;

use super::*;

/// Monday 2026-01-05 10:00:00 UTC.
const MON_10: i64 = 1_767_607_200;
const HOUR: i64 = 3600;

const POLICY: &str = r#"
[[rule]]
name = "no-contractors-at-night"
priority = 10
effect = "deny"
groups = ["contractors"]
services = ["*"]
time_windows = [{ start = "20:00", end = "06:00" }]

[[rule]]
name = "eng-wiki"
priority = 100
effect = "allow"
groups = ["eng", "contractors"]
services = ["wiki"]
methods = ["GET", "POST"]
paths = ["/api", "/docs/"]
device_compliance = "standard"
max_risk = 49

[[rule]]
name = "wiki-admin-deny"
priority = 50
effect = "deny"
users = ["*"]
services = ["wiki"]
paths = ["/api/admin"]

[[rule]]
name = "payroll"
priority = 200
effect = "allow"
users = ["carol"]
services = ["payroll"]
device_compliance = "high_security"
max_mfa_age_seconds = 300
source_networks = ["10.0.0.0/8", "2001:db8::/32"]
time_windows = [{ days = "mon-fri", start = "08:00", end = "18:00", timezone = "Europe/Berlin" }]

[[rule]]
name = "ssh"
priority = 300
effect = "allow"
users = ["alice"]
spiffe_ids = ["spiffe://umbra.local/device/*"]
services = ["ssh"]
ports = [22, "2200-2299"]

[[service_rule]]
name = "gateway-charges"
priority = 20
effect = "allow"
source = "api-gateway"
target = "payment-service"
methods = ["POST"]
paths = ["/v1/charges", "/v1/refunds"]

[[service_rule]]
name = "payments-audit"
priority = 20
effect = "allow"
source = "spiffe://umbra.local/ns/prod/sa/payment-service"
target = "audit-service"
methods = ["POST"]
paths = ["/v1/events"]
"#;

fn policy() -> PolicyConfig {
    PolicyConfig::from_toml(POLICY).unwrap()
}

/// Compliance answered from a fixed table: absent levels are compliant.
struct Fixed(Vec<(&'static str, &'static str)>);

impl ComplianceSource for Fixed {
    fn status(&self, level: &str) -> ComplianceStatus {
        let failing: Vec<Check> = self
            .0
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(l, m)| Check::new(format!("compliance.{l}"), *m))
            .collect();
        if failing.is_empty() {
            ComplianceStatus::Compliant
        } else {
            ComplianceStatus::NonCompliant(failing)
        }
    }
}

const COMPLIANT: Fixed = Fixed(Vec::new());

fn facts<'a>(user: &'a str, groups: &'a [String], service: &'a str) -> Facts<'a> {
    Facts {
        user: Some(user),
        groups,
        spiffe_id: None,
        workload: None,
        service,
        method: Some("GET"),
        path: Some("/api/pages"),
        port: None,
        source: Some("10.1.2.3".parse().unwrap()),
        now: MON_10,
        mfa_age: Some(60),
        risk: 10,
    }
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| (*s).to_owned()).collect()
}

fn decide(f: &Facts<'_>) -> RuleDecision {
    policy().rules.evaluate(f, &COMPLIANT, false)
}

fn names(d: &RuleDecision) -> Vec<&str> {
    d.failing.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn rules_are_tried_lowest_priority_first_across_both_kinds() {
    let p = policy();
    let order: Vec<&str> = p.rules.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "no-contractors-at-night",
            "gateway-charges",
            "payments-audit",
            "wiki-admin-deny",
            "eng-wiki",
            "payroll",
            "ssh"
        ]
    );
}

#[test]
fn a_group_reaches_its_service_within_methods_and_segment_prefixes() {
    let eng = groups(&["eng"]);
    let mut f = facts("bob", &eng, "wiki");
    let d = decide(&f);
    assert_eq!(
        (d.effect, d.rule.as_deref(), d.matched),
        (RuleEffect::Allow, Some("eng-wiki"), true)
    );
    for (path, allowed) in [
        ("/api", true),
        ("/api/", true),
        ("/api/x/y", true),
        ("/docs", true),
        ("/docs/intro", true),
        ("/apix", false),
        ("/api-admin", false),
        ("/", false),
        ("/API/pages", false),
        ("/documents", false),
    ] {
        f.path = Some(path);
        assert_eq!(decide(&f).effect == RuleEffect::Allow, allowed, "{path}");
    }
    f.path = Some("/apix");
    let d = decide(&f);
    assert_eq!(d.rule.as_deref(), Some("eng-wiki"), "closest rule named");
    assert_eq!(names(&d), ["path"]);
    f.path = Some("/api");
    f.method = Some("DELETE");
    assert_eq!(names(&decide(&f)), ["method"]);
    f.method = Some("get");
    assert_eq!(
        decide(&f).effect,
        RuleEffect::Deny,
        "methods are case-sensitive"
    );
    f.method = None;
    assert_eq!(decide(&f).effect, RuleEffect::Deny, "a stream is not a GET");
}

#[test]
fn explicit_deny_rules_win_by_priority() {
    let eng = groups(&["eng"]);
    let mut f = facts("bob", &eng, "wiki");
    f.path = Some("/api/admin/users");
    let d = decide(&f);
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (RuleEffect::Deny, Some("wiki-admin-deny"))
    );
    assert!(d.matched);
    assert_eq!(names(&d), ["deny_rule"]);
    // Whole segments for deny rules too: /api/administrators is not /api/admin.
    f.path = Some("/api/administrators");
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
    // The time-window deny applies to contractors at night only.
    let contractors = groups(&["contractors"]);
    let mut f = facts("cy", &contractors, "wiki");
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
    f.now = MON_10 + 11 * HOUR; // 21:00 UTC
    let d = decide(&f);
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (RuleEffect::Deny, Some("no-contractors-at-night"))
    );
    f.now = MON_10 + 19 * HOUR + 59 * 60; // 05:59 the next day
    assert_eq!(decide(&f).rule.as_deref(), Some("no-contractors-at-night"));
    f.now = MON_10 + 20 * HOUR; // 06:00
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
}

#[test]
fn default_deny_names_the_subject_and_service() {
    let none: Vec<String> = vec![];
    let d = decide(&facts("mallory", &none, "wiki"));
    assert_eq!(
        (d.effect, d.rule.as_deref(), d.matched),
        (RuleEffect::Deny, None, false)
    );
    assert_eq!(
        d.failing[0].message,
        "no rule grants user mallory access to wiki"
    );
    let d = decide(&facts("bob", &groups(&["eng"]), "nope"));
    assert_eq!(d.effect, RuleEffect::Deny);
    let empty = RuleSet::default();
    assert_eq!(
        empty
            .evaluate(&facts("a", &none, "s"), &COMPLIANT, false)
            .effect,
        RuleEffect::Deny
    );
}

#[test]
fn conditions_fail_with_each_check_named() {
    let eng = groups(&["eng"]);
    let mut f = facts("bob", &eng, "wiki");
    f.risk = 62;
    let failing = Fixed(vec![("standard", "Antivirus is not active")]);
    let d = policy().rules.evaluate(&f, &failing, false);
    assert_eq!(
        (d.effect, d.rule.as_deref(), d.matched),
        (RuleEffect::Deny, Some("eng-wiki"), false)
    );
    assert_eq!(names(&d), ["compliance.standard", "max_risk"]);
    assert_eq!(d.failing[0].message, "Antivirus is not active");
    assert_eq!(
        d.failing[1].message,
        "risk 62 is above 49, the most rule eng-wiki allows"
    );
    // Report-only: compliance findings are kept aside and do not deny.
    f.risk = 10;
    let d = policy().rules.evaluate(&f, &failing, true);
    assert_eq!(d.effect, RuleEffect::Allow);
    assert_eq!(d.report_only[0].message, "Antivirus is not active");
}

#[test]
fn a_stale_mfa_is_a_step_up_not_a_deny() {
    let none: Vec<String> = vec![];
    let mut f = facts("carol", &none, "payroll");
    f.path = Some("/");
    let d = decide(&f);
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (RuleEffect::Allow, Some("payroll"))
    );
    f.mfa_age = Some(301);
    let d = decide(&f);
    assert_eq!(d.effect, RuleEffect::StepUp);
    assert_eq!(names(&d), ["mfa_age"]);
    f.mfa_age = None;
    assert_eq!(decide(&f).effect, RuleEffect::StepUp);
    // A step-up cannot fix a failing network check: deny, with both named.
    f.source = Some("203.0.113.9".parse().unwrap());
    let d = decide(&f);
    assert_eq!(d.effect, RuleEffect::Deny);
    assert_eq!(names(&d), ["source_network", "mfa_age"]);
}

#[test]
fn source_networks_match_v4_mapped_v6_and_fail_closed_without_an_address() {
    let none: Vec<String> = vec![];
    let mut f = facts("carol", &none, "payroll");
    for (addr, allowed) in [
        (Some("10.200.0.1"), true),
        (Some("::ffff:10.200.0.1"), true),
        (Some("2001:db8::42"), true),
        (Some("11.0.0.1"), false),
        (Some("::ffff:11.0.0.1"), false),
        (Some("::10.0.0.1"), false),
        (None, false),
    ] {
        f.source = addr.map(|a| a.parse::<IpAddr>().unwrap());
        assert_eq!(decide(&f).effect == RuleEffect::Allow, allowed, "{addr:?}");
    }
}

#[test]
fn time_windows_are_local_with_daylight_saving() {
    let none: Vec<String> = vec![];
    let mut f = facts("carol", &none, "payroll");
    // Berlin is UTC+1 in January: 08:00–18:00 local is 07:00–17:00 UTC.
    f.now = MON_10 - 3 * HOUR - 1; // 06:59:59 UTC = 07:59:59 Berlin
    assert_eq!(names(&decide(&f)), ["time_window"]);
    f.now = MON_10 - 3 * HOUR; // 07:00 UTC = 08:00 Berlin
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
    f.now = MON_10 + 7 * HOUR - 1; // 16:59:59 UTC = 17:59:59 Berlin
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
    f.now = MON_10 + 7 * HOUR; // 18:00 Berlin
    assert_eq!(names(&decide(&f)), ["time_window"]);
    f.now = MON_10 + 5 * 24 * HOUR; // Saturday
    assert_eq!(decide(&f).effect, RuleEffect::Deny);
    // In July Berlin is UTC+2: 06:30 UTC is 08:30 local.
    f.now = 1_783_319_400; // Monday 2026-07-06 06:30 UTC
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
}

#[test]
fn ports_and_spiffe_ids() {
    let none: Vec<String> = vec![];
    let mut f = facts("alice", &none, "ssh");
    f.method = None;
    f.path = None;
    for (port, allowed) in [
        (Some(22), true),
        (Some(2250), true),
        (Some(2300), false),
        (None, false),
    ] {
        f.port = port;
        assert_eq!(decide(&f).effect == RuleEffect::Allow, allowed, "{port:?}");
    }
    // A device's SPIFFE ID under the pattern, whoever the user.
    let mut f = facts("zed", &none, "ssh");
    f.port = Some(22);
    f.spiffe_id = Some("spiffe://umbra.local/device/d-42");
    assert_eq!(decide(&f).effect, RuleEffect::Allow);
    for id in [
        "spiffe://umbra.local/device",
        "spiffe://umbra.local/devices/d-42",
        "spiffe://umbra.local.evil/device/d-42",
        "spiffe://other/device/d-42",
    ] {
        f.spiffe_id = Some(id);
        assert_eq!(decide(&f).effect, RuleEffect::Deny, "{id}");
    }
}

#[test]
fn service_to_service_as_in_seed_001() {
    let none: Vec<String> = vec![];
    let call =
        |workload: Option<&'static str>, spiffe: Option<&'static str>, target, method, path| {
            let mut f = facts("x", &none, target);
            f.user = None;
            f.workload = workload;
            f.spiffe_id = spiffe;
            f.method = Some(method);
            f.path = Some(path);
            decide(&f)
        };
    let gw = Some("api-gateway");
    assert_eq!(
        call(gw, None, "payment-service", "POST", "/v1/charges").effect,
        RuleEffect::Allow
    );
    assert_eq!(
        call(gw, None, "payment-service", "POST", "/v1/refunds/r1").effect,
        RuleEffect::Allow
    );
    // Unlike the seed's startswith, whole segments only.
    assert_eq!(
        call(gw, None, "payment-service", "POST", "/v1/charges-admin").effect,
        RuleEffect::Deny
    );
    assert_eq!(
        call(gw, None, "payment-service", "GET", "/v1/charges").effect,
        RuleEffect::Deny
    );
    assert_eq!(
        call(gw, None, "audit-service", "POST", "/v1/events").effect,
        RuleEffect::Deny
    );
    let pay = Some("spiffe://umbra.local/ns/prod/sa/payment-service");
    assert_eq!(
        call(None, pay, "audit-service", "POST", "/v1/events").effect,
        RuleEffect::Allow
    );
    let d = call(
        Some("payment-service"),
        None,
        "audit-service",
        "POST",
        "/v1/events",
    );
    assert_eq!(
        d.effect,
        RuleEffect::Deny,
        "the name alone is not the SPIFFE ID"
    );
    assert_eq!(
        d.failing[0].message,
        "no rule grants workload payment-service access to audit-service"
    );
}

#[test]
fn case_insensitive_paths_when_asked() {
    let text = format!("[settings]\ncase_insensitive_paths = true\n{POLICY}");
    let p = PolicyConfig::from_toml(&text).unwrap();
    let eng = groups(&["eng"]);
    let mut f = facts("bob", &eng, "wiki");
    f.path = Some("/API/Admin/x");
    let d = p.rules.evaluate(&f, &COMPLIANT, false);
    assert_eq!(
        d.rule.as_deref(),
        Some("wiki-admin-deny"),
        "the deny rule is not dodged by case"
    );
    f.path = Some("/Docs");
    assert_eq!(
        p.rules.evaluate(&f, &COMPLIANT, false).effect,
        RuleEffect::Allow
    );
}

fn error(text: &str) -> ConfigError {
    PolicyConfig::from_toml(text).unwrap_err()
}

const HEAD: &str = "[[rule]]\nname = \"r\"\npriority = 1\neffect = \"allow\"\nusers = [\"a\"]\nservices = [\"s\"]\n";

#[test]
fn bad_files_are_refused_with_line_and_column() {
    let e = error(&format!("{HEAD}source_networks = [\"10.0.0/8\"]\n"));
    assert_eq!((e.line, e.column), (7, 19), "{e}");
    assert!(e.message.contains("invalid network \"10.0.0/8\""), "{e}");
    let e = error(&format!("{HEAD}source_networks = [\"10.1.2.3/8\"]\n"));
    assert!(e.message.contains("did you mean 10.0.0.0/8"), "{e}");
    let e = error(&format!("{HEAD}paths = [\"/api/%2Fadmin\"]\n"));
    assert_eq!(e.line, 7);
    assert!(e.message.contains("path_encoded_separator"), "{e}");
    let e = error(&format!("{HEAD}paths = [\"/../admin\"]\n"));
    assert!(e.message.contains("path_escapes_root"), "{e}");
    let e = error(&format!("{HEAD}methods = [\"get\"]\n"));
    assert!(e.message.contains("uppercase"), "{e}");
    let e = error(&format!("{HEAD}ports = [0]\n"));
    assert!(e.message.contains("1-65535"), "{e}");
    let e = error(&format!("{HEAD}ports = [\"90-80\"]\n"));
    assert!(e.message.contains("90 > 80"), "{e}");
    let e = error(&format!(
        "{HEAD}time_windows = [{{ start = \"8:00\", end = \"18:00\" }}]\n"
    ));
    assert!(e.message.contains("HH:MM"), "{e}");
    let e = error(&format!(
        "{HEAD}time_windows = [{{ start = \"08:00\", end = \"18:00\", timezone = \"Mars/Olympus\" }}]\n"
    ));
    assert!(e.message.contains("Mars/Olympus"), "{e}");
    let e = error(&format!(
        "{HEAD}time_windows = [{{ days = \"mon-fry\", start = \"08:00\", end = \"18:00\" }}]\n"
    ));
    assert!(e.message.contains("fry"), "{e}");
    let e = error(&format!("{HEAD}spiffe_ids = [\"spiffe://Umbra/x\"]\n"));
    assert!(e.message.contains("trust domain"), "{e}");
    let e = error(&format!("{HEAD}spiffe_ids = [\"spiffe://umbra/a/../b\"]\n"));
    assert!(e.message.contains("'..'"), "{e}");
    let e = error(&format!("{HEAD}max_risk = 101\n"));
    assert!(e.message.contains("above 100"), "{e}");
    let e = error(&format!("{HEAD}device_compliance = \"gold\"\n"));
    assert_eq!(e.line, 1);
    assert!(
        e.message.contains("\"gold\" is not a compliance policy"),
        "{e}"
    );
    let e = error(&format!("{HEAD}servcies = [\"x\"]\n"));
    assert!(e.message.contains("servcies"), "{e}");
    assert_eq!(e.line, 7);
    let e = error(&format!("{HEAD}methods = []\n"));
    assert!(e.message.contains("methods = [] matches nothing"), "{e}");
    let e = error(&HEAD.replace("users = [\"a\"]\n", ""));
    assert!(e.message.contains("names no subject"), "{e}");
    let e = error(&format!("{HEAD}\n{HEAD}"));
    assert!(e.message.contains("used twice"), "{e}");
    assert_eq!(e.line, 8);
    let e = error(
        &HEAD
            .replace("\"allow\"", "\"deny\"")
            .replace("services", "max_mfa_age_seconds = 5\nservices"),
    );
    assert!(
        e.message
            .contains("deny rule cannot have max_mfa_age_seconds"),
        "{e}"
    );
    let e = error(
        "[[service_rule]]\nname = \"s\"\npriority = 1\neffect = \"allow\"\nsource = \"*\"\ntarget = \"t\"\n",
    );
    assert!(e.message.contains("must name one workload"), "{e}");
    let e = error("[risk]\nstep_up = 60\nreverify = 50\n");
    assert!(
        e.message
            .contains("risk.step_up (60) must not be above risk.reverify (50)"),
        "{e}"
    );
    let e = error("[compliance]\nrequired = \"gold\"\n");
    assert!(e.message.contains("gold"), "{e}");
    let e = error("[compliance]\non_failure = \"shrug\"\n");
    assert!(e.message.contains("unknown variant"), "{e}");
    for (steps, message) in [
        ("{ min_risk = 50, seconds = 60 }", "min_risk = 0"),
        (
            "{ min_risk = 0, seconds = 60 }, { min_risk = 0, seconds = 90 }",
            "listed twice",
        ),
        ("{ min_risk = 0, seconds = 1 }", "5..=86400"),
        (
            "{ min_risk = 101, seconds = 60 }, { min_risk = 0, seconds = 60 }",
            "above 100",
        ),
    ] {
        let e = error(&format!("[risk]\nreevaluate = [{steps}]\n"));
        assert!(e.message.contains(message), "{steps}: {e}");
    }
    let e = error("[[rule]\n");
    assert_eq!(e.line, 1);
    let e = PolicyConfig::from_toml(&"#".repeat(MAX_POLICY_FILE_BYTES + 1)).unwrap_err();
    assert!(e.message.contains("over the limit"), "{e}");
}

#[test]
fn an_empty_file_is_default_deny_with_the_seeds_compliance_policies() {
    let p = PolicyConfig::from_toml("").unwrap();
    assert!(p.rules.is_empty());
    assert_eq!(p.compliance.policies.len(), 2);
    assert_eq!(p.risk, RiskPolicy::default());
}

#[test]
fn sensitivity_lists_name_services_once_and_feed_the_restricted_band() {
    use crate::decision::{Context, DecisionInput, DecisionPoint, Request, Risk, Sensitivity};
    let config = PolicyConfig::from_toml(&format!(
        "[sensitivity]\nlow = [\"s\"]\nhigh = [\"payroll\"]\n{HEAD}"
    ))
    .expect("policy");
    assert_eq!(config.sensitivity.get("s"), Some(&Sensitivity::Low));
    assert_eq!(config.sensitivity.get("payroll"), Some(&Sensitivity::High));
    let e = error("[sensitivity]\nlow = [\"s\"]\nhigh = [\"s\"]\n");
    assert!(
        e.message
            .contains("\"s\" is listed under sensitivity low and high"),
        "{e}"
    );
    assert!(
        error("[sensitivity]\nsecret = [\"s\"]\n").line > 0,
        "unknown level"
    );

    // Risk 75 (restricted band): only low-sensitivity services.
    let input = |service: &str| DecisionInput {
        subject: crate::decision::Subject {
            user: Some("a".into()),
            ..Default::default()
        },
        request: Request {
            service: service.into(),
            ..Default::default()
        },
        context: Context {
            now_s: 1_700_000_000,
            mfa_age_s: Some(0),
            ..Default::default()
        },
        risk: Risk {
            score: 75,
            factors: Vec::new(),
        },
        ..Default::default()
    };
    let mut with_other = config.clone();
    with_other.rules.extend(
        crate::access::with_grants(
            &PolicyConfig::default(),
            [&umbra_proto::control::Grant {
                service: "t".into(),
                allow_users: vec!["a".into()],
                allow_groups: vec![],
            }],
        )
        .rules
        .rules()
        .iter()
        .cloned(),
    );
    let point = DecisionPoint::new(with_other);
    let low = point.decide(&input("s"));
    assert!(
        !low.failing_checks.iter().any(|c| c.name == "sensitivity"),
        "{low:?}"
    );
    let unlisted = point.decide(&input("t"));
    assert!(
        unlisted
            .failing_checks
            .iter()
            .any(|c| c.name == "sensitivity" && c.message.contains("t is unclassified")),
        "{unlisted:?}"
    );
}

#[test]
fn live_sessions_are_reevaluated_on_the_seeds_intervals_unless_configured() {
    let risk = PolicyConfig::default().risk;
    let after: Vec<u32> = [95, 80, 79, 60, 59, 30, 29, 0]
        .iter()
        .map(|r| risk.reevaluate_after(*r))
        .collect();
    assert_eq!(after, [60, 60, 180, 180, 300, 300, 600, 600]);
    let custom = PolicyConfig::from_toml(
        "[risk]\nreevaluate = [{ min_risk = 0, seconds = 900 }, { min_risk = 50, seconds = 30 }]\n",
    )
    .expect("policy")
    .risk;
    assert_eq!(custom.reevaluate_after(49), 900);
    assert_eq!(custom.reevaluate_after(50), 30, "sorted highest first");
}
