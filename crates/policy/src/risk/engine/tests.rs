#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;
use crate::rules::PolicyConfig;

/// Monday 2026-01-05 10:00:00 UTC.
const NOW: i64 = 1_767_607_200;
const DAY: i64 = 86_400;

fn posture(ok: bool) -> PostureReport {
    PostureReport {
        device_id: "d".into(),
        hostname: "h".into(),
        os_version: "12".into(),
        patch_level: "2026-01-04".into(),
        antivirus_status: ok,
        firewall_enabled: ok,
        disk_encryption: ok,
        last_scan: String::new(),
        measured: None,
    }
}

/// Thirty working days of a user reaching the wiki from the office at
/// 08:00–10:00 UTC, plus one denied 03:00 probe from elsewhere.
fn history() -> Vec<AccessEvent> {
    let mut events = Vec::new();
    for day in 0..30 {
        for hour in [8, 9] {
            events.push(AccessEvent {
                at: NOW - day * DAY - 10 * 3600 + hour * 3600,
                source: Some(format!("10.1.2.{}", day).parse().unwrap()),
                service: "wiki".into(),
                allowed: true,
            });
        }
    }
    events.push(AccessEvent {
        at: NOW - 2 * DAY - 7 * 3600,
        source: Some("203.0.113.50".parse().unwrap()),
        service: "payroll".into(),
        allowed: false,
    });
    // Outside the window: too old, and in the future.
    for at in [NOW - 40 * DAY, NOW + 60] {
        events.push(AccessEvent {
            at,
            source: Some("198.51.100.1".parse().unwrap()),
            service: "old".into(),
            allowed: true,
        });
    }
    events
}

fn config() -> RiskEngineConfig {
    let p = PolicyConfig::from_toml(
        r#"
[risk.engine]
trusted_networks = ["10.0.0.0/8"]
business_hours = [{ days = "mon-fri", start = "07:00", end = "19:00" }]
"#,
    )
    .unwrap();
    p.risk.engine
}

fn signals<'a>(baseline: &'a Baseline, posture: &'a PostureReport) -> RiskSignals<'a> {
    RiskSignals {
        now: NOW,
        source: Some("10.1.2.200".parse().unwrap()),
        posture: Some(posture),
        last_scan: Some(NOW - DAY),
        service: Some("wiki"),
        sensitivity: None,
        recent_failures: 0,
        baseline: Some(baseline),
    }
}

fn factors(r: &Risk) -> Vec<(&str, u8)> {
    r.factors
        .iter()
        .map(|f| (f.name.as_str(), f.points))
        .collect()
}

#[test]
fn the_baseline_learns_only_recent_allowed_accesses() {
    let c = config();
    let b = Baseline::learn(&history(), NOW, &c);
    assert_eq!(b.events, 60);
    assert_eq!((b.hours[8], b.hours[9], b.hours[3]), (30, 30, 0));
    assert_eq!(b.services.iter().collect::<Vec<_>>(), ["wiki"]);
    assert_eq!(b.networks.len(), 1, "one /24: {:?}", b.networks);
}

#[test]
fn a_usual_access_scores_zero() {
    let c = config();
    let b = Baseline::learn(&history(), NOW, &c);
    let p = posture(true);
    let r = c.assess(&signals(&b, &p));
    assert_eq!((r.score, factors(&r)), (0, vec![]));
}

#[test]
fn each_factor_is_named_with_its_points() {
    let c = config();
    let b = Baseline::learn(&history(), NOW, &c);
    let p = posture(false);
    let mut s = signals(&b, &p);
    s.now = NOW - 7 * 3600 + 5 * DAY; // Saturday 03:00
    s.source = Some("203.0.113.9".parse().unwrap());
    s.service = Some("payroll");
    s.sensitivity = Some(Sensitivity::Medium);
    s.recent_failures = 2;
    let r = c.assess(&s);
    assert_eq!(
        factors(&r),
        [
            ("untrusted_network", 20),
            ("device_posture", 25),
            ("unusual_hour", 10),
            ("new_network", 10),
            ("new_service", 10),
            ("outside_business_hours", 20),
            ("sensitive_resource", 10),
            ("recent_failed_logins", 10),
        ]
    );
    assert_eq!(r.score, 100, "capped");
}

#[test]
fn weights_are_configurable_and_unknowns_cost_half() {
    let mut c = config();
    c.weights = RiskWeights {
        network: 40,
        device: 10,
        behaviour: 0,
        time: 0,
        sensitivity: 0,
        failed_logins: 0,
    };
    let empty = Baseline::default();
    let s = RiskSignals {
        now: NOW,
        source: None,
        posture: None,
        last_scan: None,
        service: None,
        sensitivity: None,
        recent_failures: 0,
        baseline: Some(&empty),
    };
    let r = c.assess(&s);
    assert_eq!(
        factors(&r),
        [("network_unknown", 20), ("device_unknown", 5)]
    );
    assert_eq!(r.score, 25);
    // No history yet: half the behaviour weight.
    let r = config().assess(&RiskSignals {
        baseline: None,
        ..s
    });
    assert!(factors(&r).contains(&("no_baseline", 15)), "{r:?}");
}

#[test]
fn the_same_history_and_time_give_the_same_score() {
    let c = config();
    let events = history();
    let p = posture(true);
    let scores: Vec<Risk> = (0..3)
        .map(|_| {
            let b = Baseline::learn(&events, NOW + 3 * 3600, &c);
            let mut s = signals(&b, &p);
            s.now = NOW + 3 * 3600; // 13:00, two hours past the usual
            c.assess(&s)
        })
        .collect();
    assert_eq!(scores[0], scores[1]);
    assert_eq!(scores[1], scores[2]);
    assert_eq!(factors(&scores[0]), [("unusual_hour", 10)]);
}

#[test]
fn engine_configuration_is_strict() {
    for (text, needle) in [
        ("[risk.engine]\nweights = { network = 300 }\n", "300"),
        ("[risk.engine]\nweights = { networks = 3 }\n", "networks"),
        (
            "[risk.engine]\ntrusted_networks = [\"10/8\"]\n",
            "invalid network",
        ),
        (
            "[risk.engine]\nbaseline_timezone = \"Nowhere\"\n",
            "Nowhere",
        ),
    ] {
        let e = PolicyConfig::from_toml(text).unwrap_err();
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}
