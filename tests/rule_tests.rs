//! `umbra policy test` on native-rule tests (`*_test.toml`) beside Rego
//! tests, with the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::umbra_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn policy_test(args: &[&Path]) -> Output {
    Command::new(umbra_bin())
        .args(["policy", "test"])
        .args(args)
        .current_dir(repo())
        .env("UMBRA_LOG", "warn")
        .output()
        .expect("run umbra")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn write(path: &Path, contents: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
}

const RULES: &str = r#"
[[rule]]
name = "wiki"
priority = 100
effect = "allow"
groups = ["eng"]
services = ["wiki"]
methods = ["GET"]
paths = ["/api"]
"#;

const PASSING: &str = r#"policy = "rules.toml"

[defaults]
subject = { user = "bob", groups = ["eng"] }
context = { now_s = 1767603600 }

[[case]]
name = "eng reads the wiki"
input.request = { service = "wiki", method = "GET", path = "/api/pages/1" }
outcome = "allow"
rule = "wiki"

[[case]]
name = "traversal is denied"
input.request = { service = "wiki", method = "GET", path = "/api/../admin" }
outcome = "deny"
failing_checks = ["path"]
"#;

/// What an attacker hopes: the traversal gets through.
const FAILING: &str = r#"
[[case]]
name = "traversal gets through"
input.request = { service = "wiki", method = "GET", path = "/api/%2e%2e/admin" }
outcome = "allow"
rule = "wiki"
"#;

const REGO_TEST: &str = "package svc_test\n\nimport data.service_auth\n\n\
    test_charges_allowed if {\n\tservice_auth.allow with input as {\"source_service\": \"api-gateway\", \
    \"target_service\": \"payment-service\", \"method\": \"POST\", \"path\": \"/v1/charges\"}\n}\n";

/// A directory with a native policy and its tests, and a Rego module with
/// its data and one test.
fn tree(root: &Path, native_tests: &str) {
    let seeds = repo().join("policies/seeds");
    let read = |f: &str| std::fs::read_to_string(seeds.join(f)).expect("seed policy");
    write(&root.join("authz.rego"), &read("service_auth.rego"));
    write(&root.join("data.json"), &read("service_auth.data.json"));
    write(&root.join("authz_test.rego"), REGO_TEST);
    write(&root.join("native/rules.toml"), RULES);
    write(&root.join("native/rules_test.toml"), native_tests);
}

#[test]
fn policy_test_runs_native_cases_beside_rego_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    tree(root, &format!("{PASSING}{FAILING}"));
    let out = policy_test(&[root]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    let file = root.join("native/rules_test.toml").display().to_string();
    assert!(
        stdout.starts_with(&format!("{file}:\ntraversal gets through: FAIL (")),
        "{stdout}"
    );
    // What was expected, and the decision with its reasons.
    for needle in [
        &format!("  at {file}:19\n"),
        "  expected outcome allow, decided deny\n",
        "  expected: allow, rule wiki\n",
        "  decision: deny, rule wiki\n",
        "    failing path: path /admin is not under /api of rule wiki\n",
        "    reason: no rule applies; the closest is wiki\n",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in\n{stdout}");
    }
    assert!(!stdout.contains(": PASS ("), "{stdout}");
    assert!(
        stdout.ends_with(&format!("{}\nPASS: 3/4\nFAIL: 1/4\n", "-".repeat(80))),
        "{stdout}"
    );

    // -v: every test of both kinds.
    let out = policy_test(&[Path::new("-v"), root]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("data.svc_test.test_charges_allowed: PASS ("),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{file}:\neng reads the wiki: PASS (")),
        "{stdout}"
    );
    assert!(stdout.contains("\ntraversal is denied: PASS ("), "{stdout}");

    // All passing: the summary alone, as opa test prints it.
    tree(root, PASSING);
    let out = policy_test(&[root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "PASS: 3/3\n");

    // A test file named alone runs alone, without the Rego.
    let out = policy_test(&[&root.join("native/rules_test.toml")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "PASS: 2/2\n");
}

#[test]
fn files_that_do_not_load_are_named_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    tree(root, PASSING);
    // `../` to a policy that exists is fine.
    write(
        &root.join("native/more/up_test.toml"),
        &PASSING.replace("\"rules.toml\"", "\"../rules.toml\""),
    );
    // `../` to one that does not is an error at the `policy` key.
    let missing = root.join("native/more/missing_test.toml");
    write(
        &missing,
        &PASSING.replace("\"rules.toml\"", "\"../../../nowhere.toml\""),
    );
    // A misspelt key in an input.
    let unknown = root.join("native/unknown_test.toml");
    write(
        &unknown,
        &PASSING.replace("user = \"bob\"", "usr = \"bob\""),
    );
    // A policy file that does not parse.
    write(
        &root.join("native/broken.toml"),
        "[[rule]]\nname = \"x\"\npriority = \"high\"\n",
    );
    write(
        &root.join("native/broken_test.toml"),
        &PASSING.replace("\"rules.toml\"", "\"broken.toml\""),
    );
    let out = policy_test(&[root]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let shown = |p: &str| root.join(p).display().to_string();
    for needle in [
        format!(
            "{}:1:10: policy file \"../../../nowhere.toml\" ({}) cannot be read: ",
            missing.display(),
            root.join("native/more/../../../nowhere.toml").display()
        ),
        format!("{}:4:13: unknown field `usr`", unknown.display()),
        format!(
            "{}:3:12: invalid type: string \"high\", expected i64 (the policy {} tests)",
            shown("native/broken.toml"),
            shown("native/broken_test.toml")
        ),
        "3 file(s) did not load; their tests did not run".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} in\n{stderr}");
    }
    // The files that load still run: the Rego test, rules_test and up_test.
    assert_eq!(stdout, "PASS: 5/5\n", "{stderr}");

    // Nothing but a broken file: exit 1, no summary.
    let out = policy_test(&[&unknown]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn the_repository_policies_pass_their_tests() {
    let out = policy_test(&[Path::new("-v"), Path::new("policies")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("policies/umbra/rules_test.toml:\neng reads the wiki: PASS ("),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
