#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use umbra_proto::posture::MeasuredPosture;

use super::*;

const NOW: i64 = 1_767_261_600; // 2026-01-01T10:00:00Z

fn legacy(ok: bool) -> PostureReport {
    PostureReport {
        device_id: "d1".into(),
        hostname: "laptop".into(),
        os_version: "10.0.19045".into(),
        patch_level: "2025-12-30".into(),
        antivirus_status: ok,
        firewall_enabled: ok,
        disk_encryption: ok,
        last_scan: String::new(),
        measured: None,
    }
}

fn measured(state: Option<bool>, patched_days_ago: Option<i64>) -> PostureReport {
    let mut p = legacy(state == Some(true));
    p.os_version = "12".into();
    p.patch_level = "unknown".into();
    p.measured = Some(MeasuredPosture {
        os_id: Some("debian".into()),
        kernel: None,
        last_patch_unix: patched_days_ago.map(|d| NOW - d * DAY),
        disk_encryption: state,
        firewall: state,
        antivirus: state,
        av_signatures_unix: None,
    });
    p
}

fn messages(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.message.as_str()).collect()
}

#[test]
fn a_healthy_device_passes_both_seed_policies() {
    let c = ComplianceConfig::default();
    for (name, report) in c.check_all(&legacy(true), NOW) {
        assert!(report.compliant, "{name}: {report:?}");
        assert!(report.failures.is_empty() && report.unknown.is_empty());
    }
}

#[test]
fn every_failing_check_is_named_in_the_seeds_words() {
    let mut p = legacy(false);
    p.os_version = "10.0.9200".into();
    p.patch_level = "2025-12-01".into();
    let r = CompliancePolicy::high_security().check(&p, NOW);
    assert!(!r.compliant);
    assert_eq!(
        messages(&r.failures),
        [
            "Disk encryption is not enabled",
            "Antivirus is not active",
            "Firewall is disabled",
            "Device hasn't been patched in 31 days (at most 7 allowed)",
            "OS version 10.0.9200 is below minimum required 10.0.19041",
        ]
    );
    let kinds: Vec<_> = r.failures.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "disk_encryption",
            "antivirus",
            "firewall",
            "patch_age",
            "os_version"
        ]
    );
    // `standard` does not require a firewall and allows 30 days... but 31 is
    // over, and 10.0.9200 is below 10.0.18362 too.
    let r = CompliancePolicy::standard().check(&p, NOW);
    assert_eq!(r.failures.len(), 4);
    assert!(!messages(&r.failures).contains(&"Firewall is disabled"));
}

#[test]
fn standard_does_not_need_a_firewall_but_high_security_does() {
    let mut p = legacy(true);
    p.firewall_enabled = false;
    let c = ComplianceConfig::default();
    let all = c.check_all(&p, NOW);
    assert!(all["standard"].compliant);
    assert!(!all["high_security"].compliant);
    assert_eq!(
        messages(&all["high_security"].failures),
        ["Firewall is disabled"]
    );
}

#[test]
fn versions_compare_as_versions_not_strings() {
    let v = |s| Version::parse(s).unwrap();
    // As strings "10.0.9" > "10.0.19041"; as versions it is lower.
    assert!(v("10.0.9") < v("10.0.19041"));
    assert!(v("9") < v("10"));
    assert!(v("12") == v("12.0.0"));
    assert!(v("22.04.3 LTS") > v("22.04"));
    assert!(v("6.1.0-18-amd64") == v("6.1"));
    assert!(v("10.0.19041") > v("10.0.18362"));
    for bad in [
        "",
        "unknown",
        "bookworm/sid",
        ".1",
        "99999999999999999999999",
    ] {
        assert_eq!(Version::parse(bad), None, "{bad:?}");
    }
    let mut p = legacy(true);
    p.os_version = "10.0.9".into();
    let r = CompliancePolicy::standard().check(&p, NOW);
    assert_eq!(
        messages(&r.failures),
        ["OS version 10.0.9 is below minimum required 10.0.18362"]
    );
}

#[test]
fn unknown_is_explicit_and_fails_closed_by_default() {
    let p = measured(None, None);
    let strict = CompliancePolicy::high_security();
    let r = strict.check(&p, NOW);
    assert!(r.failures.is_empty());
    assert_eq!(
        messages(&r.unknown),
        [
            "Disk encryption state is unknown",
            "Antivirus state is unknown",
            "Firewall state is unknown",
            "Patch age is unknown",
        ]
    );
    assert!(!r.compliant);
    let lenient = CompliancePolicy {
        unknown: UnknownIs::Pass,
        ..strict
    };
    let r = lenient.check(&p, NOW);
    assert!(r.compliant, "{r:?}");
    assert_eq!(r.unknown.len(), 4, "still reported");
    // A failure is a failure whatever unknown counts as.
    let r = lenient.check(&measured(Some(false), Some(1)), NOW);
    assert!(!r.compliant);
}

#[test]
fn a_measured_report_uses_its_measurements() {
    let r = CompliancePolicy::high_security().check(&measured(Some(true), Some(3)), NOW);
    assert!(r.compliant, "{r:?}");
    let r = CompliancePolicy::high_security().check(&measured(Some(true), Some(8)), NOW);
    assert_eq!(
        messages(&r.failures),
        ["Device hasn't been patched in 8 days (at most 7 allowed)"]
    );
}

#[test]
fn per_os_minimum_versions() {
    let policy: CompliancePolicy = toml::from_str(
        r#"
        min_os_version = { debian = "12", ubuntu = "22.04" }
        "#,
    )
    .unwrap();
    let mut p = measured(Some(true), Some(1));
    assert!(policy.check(&p, NOW).compliant);
    p.os_version = "11".into();
    assert_eq!(
        messages(&policy.check(&p, NOW).failures),
        ["OS version 11 is below minimum required 12"]
    );
    if let Some(m) = p.measured.as_mut() {
        m.os_id = Some("arch".into());
    }
    let r = policy.check(&p, NOW);
    assert_eq!(
        messages(&r.unknown),
        ["No minimum OS version is configured for OS arch"]
    );
    assert!(!r.compliant);
    p.os_version = "unknown".into();
    let policy: CompliancePolicy = toml::from_str(r#"min_os_version = "10""#).unwrap();
    assert_eq!(
        messages(&policy.check(&p, NOW).unknown),
        ["OS version \"unknown\" is unknown"]
    );
}

#[test]
fn absurd_times_neither_panic_nor_pass_stale_devices() {
    let policy = CompliancePolicy::standard();
    let mut p = measured(Some(true), None);
    if let Some(m) = p.measured.as_mut() {
        m.last_patch_unix = Some(i64::MIN);
    }
    assert!(!policy.check(&p, NOW).compliant);
    if let Some(m) = p.measured.as_mut() {
        m.last_patch_unix = Some(i64::MAX);
    }
    assert!(
        policy.check(&p, NOW).compliant,
        "future patch time counts as fresh"
    );
}

#[test]
fn configuration_is_parsed_strictly() {
    let c: ComplianceConfig = toml::from_str(
        r#"
        report_only = true
        required = "corp"
        [policies.corp]
        require_encryption = true
        max_patch_age_days = 14
        unknown = "pass"
        "#,
    )
    .unwrap();
    assert!(c.report_only);
    assert_eq!(
        c.policies.len(),
        1,
        "a configured table replaces the seed's"
    );
    c.validate().unwrap();

    let err = toml::from_str::<ComplianceConfig>("[policies.x]\nrequire_firewal = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("require_firewal") && err.contains("line 2"),
        "{err}"
    );
    let err = toml::from_str::<ComplianceConfig>("[policies.x]\nmin_os_version = \"ten\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid version"), "{err}");
    let err = toml::from_str::<ComplianceConfig>("[policies.x]\nunknown = \"maybe\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("maybe"), "{err}");
    let c: ComplianceConfig = toml::from_str("required = \"gold\"").unwrap();
    assert!(c.validate().unwrap_err().contains("gold"));
}
