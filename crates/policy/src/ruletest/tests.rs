#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;
use crate::rules::PolicyConfig;

const POLICY: &str = r#"
[[rule]]
name = "wiki"
priority = 100
effect = "allow"
groups = ["eng"]
services = ["wiki"]
methods = ["GET"]
paths = ["/api"]
device_compliance = "standard"

[[rule]]
name = "payroll"
priority = 100
effect = "allow"
users = ["carol"]
services = ["payroll"]
max_mfa_age_seconds = 300
"#;

const PASSING: &str = r#"
policy = "rules.toml"

[defaults]
subject = { user = "bob", groups = ["eng"] }
context = { now_s = 1767603600, mfa_age_s = 60 }
request = { service = "wiki", method = "GET", path = "/api/pages/1" }
device.posture = { device_id = "d1", hostname = "laptop", os_version = "12", patch_level = "2026-01-04", antivirus_status = true, firewall_enabled = true, disk_encryption = true, last_scan = "" }

[[case]]
name = "eng reads the wiki"
outcome = "allow"
rule = "wiki"
conditions = []

[[case]]
name = "traversal out of /api is denied"
input.request = { service = "wiki", method = "GET", path = "/api/../admin" }
outcome = "deny"
rule = "wiki"
failing_checks = ["path"]

[[case]]
name = "climbing above the root is refused"
input.request = { service = "wiki", method = "GET", path = "/api/%2e%2e/%2e%2e/etc/passwd" }
outcome = "deny"
failing_checks = ["path"]

[[case]]
name = "no posture, no wiki"
input.device = {}
outcome = "deny"
failing_checks = ["compliance.standard"]

[[case]]
name = "carol with an old MFA steps up"
input.subject = { user = "carol" }
input.request = { service = "payroll" }
input.context = { now_s = 1767603600, mfa_age_s = 4000 }
outcome = "conditional"
rule = "payroll"
conditions = ["step_up_mfa"]

[[case]]
name = "high risk is denied"
input.risk = { score = 85 }
outcome = "deny"
failing_checks = ["risk"]
"#;

fn point() -> DecisionPoint {
    DecisionPoint::new(PolicyConfig::from_toml(POLICY).unwrap())
}

fn err(text: &str) -> ConfigError {
    TestFile::from_toml(text).unwrap_err()
}

/// One case with `expectations` (TOML lines) on a wiki request for `path`.
fn one_case(path: &str, expectations: &str) -> String {
    format!(
        "policy = \"../rules.toml\"\n\n[[case]]\nname = \"x\"\n\
         input.subject = {{ user = \"bob\", groups = [\"eng\"] }}\n\
         input.request = {{ service = \"wiki\", method = \"GET\", path = \"{path}\" }}\n\
         input.context = {{ now_s = 0 }}\n{expectations}\n"
    )
}

#[test]
fn a_test_file_parses_into_inputs_and_expectations() {
    let file = TestFile::from_toml(PASSING).unwrap();
    assert_eq!(file.policy, "rules.toml");
    assert_eq!(file.policy_at, (2, 10));
    assert_eq!(file.cases.len(), 6);
    let first = &file.cases[0];
    assert_eq!(first.name, "eng reads the wiki");
    assert_eq!(first.line, 10);
    assert_eq!(first.input.subject.user.as_deref(), Some("bob"));
    assert_eq!(first.input.context.mfa_age_s, Some(60));
    assert!(first.input.device.as_ref().unwrap().posture.is_some());
    assert_eq!(first.expect.conditions, Some(vec![]));
    // A case's section replaces the default's whole: carol has no groups.
    let carol = &file.cases[4];
    assert!(carol.input.subject.groups.is_empty());
    assert_eq!(carol.input.request.method, None);
    assert_eq!(
        carol.expect.conditions,
        Some(vec![Condition::StepUpMfa]),
        "{carol:?}"
    );
    assert!(
        file.cases[3]
            .input
            .device
            .as_ref()
            .unwrap()
            .posture
            .is_none()
    );
    assert_eq!(file.cases[5].input.risk.score, 85);
}

#[test]
fn passing_cases_pass() {
    let file = TestFile::from_toml(PASSING).unwrap();
    for (case, result) in file.cases.iter().zip(file.run(&point())) {
        assert!(
            result.passed(),
            "{}: {:?}",
            case.name,
            result.explain(&case.expect)
        );
    }
}

#[test]
fn a_failing_case_says_what_was_expected_and_what_was_decided() {
    // The engine normalizes /api/../admin to /admin: a test that expects
    // the traversal to get through fails, and says why.
    let file = TestFile::from_toml(&one_case(
        "/api/../admin",
        "outcome = \"allow\"\nrule = \"payroll\"\nconditions = [\"step_up_mfa\"]\nfailing_checks = [\"max_risk\", \"path\"]",
    ))
    .unwrap();
    let case = &file.cases[0];
    let result = case.run(&point());
    assert!(!result.passed());
    assert_eq!(result.decision.outcome, Outcome::Deny);
    assert_eq!(
        result.mismatches,
        [
            Mismatch::Outcome {
                expected: Outcome::Allow,
                decided: Outcome::Deny
            },
            Mismatch::Rule {
                expected: "payroll".into(),
                decided: Some("wiki".into())
            },
            Mismatch::Conditions {
                expected: vec![Condition::StepUpMfa],
                decided: vec![]
            },
            Mismatch::FailingChecks {
                missing: vec!["max_risk".into()],
                decided: vec!["path".into()]
            },
        ]
    );
    let text = result.explain(&case.expect).join("\n");
    for needle in [
        "expected outcome allow, decided deny",
        "expected rule payroll, decided wiki",
        "expected conditions [step_up_mfa], decided []",
        "expected failing checks [max_risk] among the failing, which are [path]",
        "expected: allow, rule payroll, conditions [step_up_mfa], failing checks including [max_risk, path]",
        "decision: deny, rule wiki",
        "  failing path: path /admin is not under /api of rule wiki",
        "  reason: no rule applies; the closest is wiki",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    // The failing check's message is not repeated as a reason.
    assert_eq!(text.matches("is not under /api").count(), 1, "{text}");
}

#[test]
fn refused_paths_fail_an_allow_expectation() {
    for path in [
        "/api/%2e%2e/%2e%2e/etc/passwd",
        "/api%2fadmin",
        "/api/\\u0000",
    ] {
        let file = TestFile::from_toml(&one_case(path, "outcome = \"allow\"")).unwrap();
        let result = file.cases[0].run(&point());
        assert_eq!(result.decision.outcome, Outcome::Deny, "{path}");
        assert_eq!(result.decision.failing_checks[0].name, "path", "{path}");
        assert!(!result.passed(), "{path}");
    }
}

#[test]
fn no_rule_is_reported_as_such() {
    let file = TestFile::from_toml(
        "policy = \"p.toml\"\n[[case]]\nname = \"n\"\ninput.subject = { user = \"eve\" }\n\
         input.request = { service = \"wiki\" }\ninput.context = { now_s = 0 }\n\
         outcome = \"deny\"\nrule = \"wiki\"\n",
    )
    .unwrap();
    let result = file.cases[0].run(&point());
    assert_eq!(
        result.mismatches,
        [Mismatch::Rule {
            expected: "wiki".into(),
            decided: None
        }]
    );
    assert_eq!(
        result.mismatches[0].to_string(),
        "expected rule wiki, decided (no rule)"
    );
    let text = result.explain(&file.cases[0].expect).join("\n");
    assert!(text.contains("failing no_rule: no rule grants user eve access to wiki"));
}

#[test]
fn bad_toml_is_reported_at_its_line_and_column() {
    let e = err("policy = \"p.toml\"\n[[case]]\nname = \"x\"\noutcome = \n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.column > 0);
    let e = err("policy = \"p.toml\"\n[[case]\n");
    assert_eq!(e.line, 2, "{e}");
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    // In the case.
    let e = err(&one_case(
        "/api",
        "outcome = \"allow\"\nexpect_rule = \"wiki\"",
    ));
    assert_eq!(e.line, 9, "{e}");
    assert!(e.message.contains("unknown field `expect_rule`"), "{e}");
    // In the input: the DecisionInput types refuse it.
    let e = err(&one_case("/api", "outcome = \"allow\"").replace("user =", "usr ="));
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("unknown field `usr`"), "{e}");
    let e = err(&one_case(
        "/api",
        "outcome = \"allow\"\ninput.requests = {}",
    ));
    assert!(e.message.contains("unknown field `requests`"), "{e}");
    // At the top, and in [defaults].
    let e = err("policies = \"p.toml\"\n");
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    let e = err("policy = \"p.toml\"\n[defaults]\ncontext = { now = 1 }\n");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("unknown field `now`"), "{e}");
    // A posture report with a key the agent never sends.
    let e = err("policy = \"p\"\n[defaults]\ndevice.posture = { firewall = true }\n");
    assert!(e.message.contains("unknown field `firewall`"), "{e}");
}

#[test]
fn bad_values_are_refused() {
    for (expectations, says) in [
        ("outcome = \"permit\"", "unknown variant `permit`"),
        (
            "outcome = \"allow\"\nconditions = [\"mfa\"]",
            "unknown variant `mfa`",
        ),
        ("rule = \"wiki\"", "missing field `outcome`"),
    ] {
        let e = err(&one_case("/api", expectations));
        assert!(e.message.contains(says), "{expectations}: {e}");
        assert!(e.line > 0, "{e}");
    }
    let e = err(&one_case("/api", "outcome = \"allow\"").replace("now_s = 0", "now_s = \"noon\""));
    assert_eq!(e.line, 7, "{e}");
}

#[test]
fn file_level_mistakes_are_refused() {
    let e = err("[[case]]\nname = \"x\"\noutcome = \"deny\"\n");
    assert!(e.message.contains("missing field `policy`"), "{e}");
    let e = err("policy = \"p.toml\"\n");
    assert!(e.message.contains("no [[case]]"), "{e}");
    let e = err("policy = \" \"\n[[case]]\nname = \"x\"\noutcome = \"deny\"\n");
    assert_eq!((e.line, e.column), (1, 10), "{e}");
    let twice = format!(
        "{}\n[[case]]\nname = \"x\"\noutcome = \"deny\"\ninput.subject = {{}}\ninput.request = {{ service = \"s\" }}\ninput.context = {{ now_s = 0 }}\n",
        one_case("/api", "outcome = \"allow\"")
    );
    let e = err(&twice);
    assert!(e.message.contains("\"x\" is used twice"), "{e}");
    assert_eq!(e.line, 10, "{e}");
    let e = err("policy = \"p.toml\"\n\n[[case]]\nname = \"x\"\noutcome = \"deny\"\n");
    assert!(e.message.contains("input has no subject"), "{e}");
    assert_eq!(e.line, 3, "{e}");
    let e = err(
        "policy = \"p.toml\"\n[[case]]\nname = \"x\"\noutcome = \"deny\"\ninput.subject = {}\ninput.request = { service = \"s\" }\n",
    );
    assert!(e.message.contains("input has no context"), "{e}");
    let e = err("policy = \"p\"\n[[case]]\nname = \"\"\noutcome = \"deny\"\n");
    assert!(e.message.contains("not empty"), "{e}");
    let big = format!("# {}\n", "x".repeat(MAX_TEST_FILE_BYTES));
    assert_eq!(err(&big).line, 0);
}

#[test]
fn garbage_never_panics() {
    // Every prefix of a valid file is either a file or an error.
    for end in 0..PASSING.len() {
        if let Some(prefix) = PASSING.get(..end) {
            let _ = TestFile::from_toml(prefix);
        }
    }
}
