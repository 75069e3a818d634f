//! The risk of a login, from the policy's risk engine (`[risk.engine]` of
//! the native policy file) on the user's own history: their allowed logins
//! and gateway accesses of the last `baseline_days`, read from the audit
//! trail. The score sets the session's lifetime and goes into its token,
//! where the gateways' policy reads it on every request.

use std::net::IpAddr;

use umbra_policy::decision::Risk;
use umbra_policy::risk::{AccessEvent, Baseline, RiskSignals};
use umbra_proto::PostureReport;
use umbra_store::{AuditRecord, UserRecord};

use crate::Controller;
use crate::clock::parse_rfc3339;
use crate::error::Failure;

/// Most audit records read to learn one user's baseline (newest first):
/// enough for a month of a busy user, bounded for one that is not.
const HISTORY_LIMIT: u32 = 10_000;

/// Scores a login by `user` from `source` on a device reporting `posture`
/// (`None`: a browser, whose device is unknown).
pub async fn at_login(
    c: &Controller,
    user: &UserRecord,
    posture: Option<&PostureReport>,
    source: IpAddr,
    now: i64,
) -> Result<Risk, Failure> {
    let baseline = baseline(c, user, now).await?;
    Ok(assess(c, user, posture, source, &baseline, now))
}

/// What is usual for `user`: learned from their allowed logins and
/// accesses of the last `baseline_days`.
pub async fn baseline(c: &Controller, user: &UserRecord, now: i64) -> Result<Baseline, Failure> {
    let engine = &c.config.policy.config.risk.engine;
    let since = now.saturating_sub(i64::from(engine.baseline_days) * 86_400);
    let history = c
        .store
        .audit_by_actor(&format!("user:{}", user.name), since, HISTORY_LIMIT)
        .await?;
    let events: Vec<AccessEvent> = history.iter().filter_map(access_event).collect();
    Ok(Baseline::learn(&events, now, engine))
}

/// Scores `user` from `source` on a device reporting `posture` (`None`: a
/// browser), against a baseline already learned.
pub fn assess(
    c: &Controller,
    user: &UserRecord,
    posture: Option<&PostureReport>,
    source: IpAddr,
    baseline: &Baseline,
    now: i64,
) -> Risk {
    let engine = &c.config.policy.config.risk.engine;
    engine.assess(&RiskSignals {
        now,
        source: Some(source),
        posture,
        last_scan: posture.and_then(|p| parse_rfc3339(&p.last_scan)),
        service: None,
        sensitivity: None,
        recent_failures: user.failed_logins,
        baseline: Some(baseline),
    })
}

/// An allowed login or gateway access, as the baseline learns it.
/// Denials never count: an attacker's probing must not become "usual".
fn access_event(r: &AuditRecord) -> Option<AccessEvent> {
    if r.outcome != "allow" {
        return None;
    }
    let service = match r.action.as_str() {
        // "service:NAME [METHOD PATH] via gateway:GW"
        "gateway.access" | "gateway.tunnel" => r
            .resource
            .strip_prefix("service:")?
            .split(' ')
            .next()?
            .to_owned(),
        // Hours and networks; a login reaches no service.
        "auth.login" => String::new(),
        _ => return None,
    };
    Some(AccessEvent {
        at: r.ts,
        source: r.source_ip.parse().ok(),
        service,
        allowed: true,
    })
}

/// `name:points,…` for the audit trail.
pub fn describe(risk: &Risk) -> String {
    risk.factors
        .iter()
        .map(|f| format!("{}:{}", f.name, f.points))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, resource: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            id: 1,
            ts: 100,
            actor: "user:alice".into(),
            source_ip: "10.1.2.3".into(),
            action: action.into(),
            resource: resource.into(),
            outcome: outcome.into(),
            reason: String::new(),
            request_id: String::new(),
            count: 1,
            link: None,
        }
    }

    #[test]
    fn allowed_accesses_and_logins_teach_the_baseline_and_nothing_else_does() {
        let e = access_event(&record(
            "gateway.access",
            "service:wiki GET /a via gateway:gw1",
            "allow",
        ))
        .expect("an access");
        assert_eq!(e.service, "wiki");
        assert_eq!(e.source, Some("10.1.2.3".parse().expect("ip")));
        let t = access_event(&record(
            "gateway.tunnel",
            "service:pg via gateway:gw1",
            "allow",
        ))
        .expect("a tunnel");
        assert_eq!(t.service, "pg");
        assert_eq!(
            access_event(&record("auth.login", "device:d1", "allow"))
                .expect("a login")
                .service,
            ""
        );
        assert!(access_event(&record("gateway.access", "service:wiki", "deny")).is_none());
        assert!(access_event(&record("auth.login", "device:d1", "deny")).is_none());
        assert!(access_event(&record("device.posture", "device:d1", "allow")).is_none());
        assert!(access_event(&record("gateway.access", "-", "allow")).is_none());
    }
}
