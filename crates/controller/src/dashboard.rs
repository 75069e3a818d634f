//! The dashboard's figures (`/ui/`), read from the store at each view.
//!
//! Nothing here is kept between views and nothing is sampled: the counts
//! are the store's sessions, devices and users as they are now, and the
//! audit trail's records of the last 24 hours (the success rate, the
//! access trend) and 7 days (alerts). Several controllers sharing a store
//! therefore show the same figures.
//!
//! [`figures`] is a pure function of what was read, so the arithmetic is
//! tested without a store; [`gather`] does the reading.

use umbra_policy::compliance::{CompliancePolicy, Finding};
use umbra_proto::PostureReport;
use umbra_proto::api::{DeviceStatus, Role, UserStatus};
use umbra_store::{
    AuditFilter, AuditRecord, AuditTally, BlockedSourceRecord, DeviceRecord, SessionRecord,
    UserRecord,
};

use crate::Controller;
use crate::clock::rfc3339;
use crate::error::Failure;

/// The access trend's span, in hourly buckets (the last one is the
/// current, partial hour).
pub const TREND_HOURS: usize = 24;
const HOUR: i64 = 3600;
/// How far back the alert list looks, and how many it shows.
const ALERT_WINDOW: i64 = 7 * 86_400;
const MAX_ALERTS: usize = 50;
/// Rows shown per table; the rest are counted, not listed.
pub const MAX_ROWS: usize = 500;

/// Authentication attempts: agent and browser logins and step-ups.
pub const AUTH_ACTIONS: [&str; 4] = [
    "auth.login",
    "auth.browser_login",
    "auth.step_up",
    "auth.browser_step_up",
];
/// Access decisions: gateways' HTTP requests, tunnels and forward-auth,
/// and the controller's forward-auth.
pub const ACCESS_ACTIONS: [&str; 4] = [
    "gateway.access",
    "gateway.tunnel",
    "gateway.verify",
    "auth.verify",
];
/// Seed 000's risk distribution bands (inclusive).
pub const RISK_BANDS: [(u8, u8); 5] = [(0, 20), (21, 40), (41, 60), (61, 80), (81, 100)];

/// `part` of `whole`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ratio {
    pub part: u64,
    pub whole: u64,
}

impl Ratio {
    /// The percentage, rounded to a whole number; `None` of nothing.
    pub fn percent(self) -> Option<u64> {
        (self.whole > 0).then(|| (self.part * 200 + self.whole) / (self.whole * 2))
    }
}

/// Access decisions in one hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourCount {
    /// Unix time of the hour's start.
    pub start: i64,
    pub allowed: u64,
    /// Denied or failed.
    pub refused: u64,
}

/// The headline figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// Live sessions (not revoked, not expired), of every kind.
    pub active_sessions: u64,
    /// Successful authentications of those attempted over the trend's
    /// span (the last 23 whole hours and the current one).
    pub auth: Ratio,
    /// The mean of the live sessions' current risk.
    pub average_risk: Option<f64>,
    /// Approved devices passing the reference compliance policy.
    pub compliant: Ratio,
    /// Live sessions per [`RISK_BANDS`] band, by current risk.
    pub risk_bands: [u64; 5],
    /// The last [`TREND_HOURS`] hours, oldest first.
    pub trend: Vec<HourCount>,
}

/// A session's current risk: the last re-evaluation's, else the login's.
pub fn current_risk(s: &SessionRecord) -> u8 {
    s.verdict.as_ref().map_or(s.risk, |v| v.risk)
}

/// Where a device stands against the reference compliance policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compliance {
    Compliant,
    /// The checks that fail, each with its reason.
    Failing(Vec<Finding>),
    /// Not judged: no policy, or no readable posture report.
    Unknown(&'static str),
}

pub fn compliance(
    policy: Option<&CompliancePolicy>,
    posture: Option<&PostureReport>,
    now: i64,
) -> Compliance {
    let Some(policy) = policy else {
        return Compliance::Unknown("no compliance policy");
    };
    let Some(posture) = posture else {
        return Compliance::Unknown("no posture report yet");
    };
    let report = policy.check(posture, now);
    let failing: Vec<Finding> = report.blocking(policy).cloned().collect();
    if failing.is_empty() {
        Compliance::Compliant
    } else {
        Compliance::Failing(failing)
    }
}

/// The first hour of the trend ending with the hour `now` is in.
pub fn trend_start(now: i64) -> i64 {
    (now.div_euclid(HOUR) - (TREND_HOURS as i64 - 1)) * HOUR
}

/// The figures from what the store holds. `tallies` are the audit trail's
/// counts from [`trend_start`] in hourly buckets; `sessions` the live ones.
pub fn figures(
    sessions: &[SessionRecord],
    devices: &[(DeviceRecord, Compliance)],
    tallies: &[AuditTally],
    now: i64,
) -> Figures {
    let risks: Vec<u8> = sessions.iter().map(current_risk).collect();
    let mut risk_bands = [0u64; 5];
    for &r in &risks {
        if let Some(i) = RISK_BANDS
            .iter()
            .position(|&(lo, hi)| (lo..=hi).contains(&r))
        {
            risk_bands[i] += 1;
        }
    }
    let average_risk = (!risks.is_empty())
        .then(|| risks.iter().map(|&r| f64::from(r)).sum::<f64>() / risks.len() as f64);
    let approved = devices
        .iter()
        .filter(|(d, _)| d.status == DeviceStatus::Approved);
    let compliant = approved.fold(Ratio::default(), |r, (_, c)| Ratio {
        part: r.part + u64::from(*c == Compliance::Compliant),
        whole: r.whole + 1,
    });
    let start = trend_start(now);
    let mut trend: Vec<HourCount> = (0..TREND_HOURS as i64)
        .map(|i| HourCount {
            start: start + i * HOUR,
            ..HourCount::default()
        })
        .collect();
    let mut auth = Ratio::default();
    for t in tallies {
        let n = u64::try_from(t.count).unwrap_or(0);
        let allowed = t.outcome == "allow";
        if AUTH_ACTIONS.contains(&t.action.as_str()) {
            auth.whole += n;
            auth.part += if allowed { n } else { 0 };
        }
        if ACCESS_ACTIONS.contains(&t.action.as_str())
            && let Some(h) = usize::try_from(t.bucket)
                .ok()
                .and_then(|b| trend.get_mut(b))
        {
            if allowed {
                h.allowed += n;
            } else {
                h.refused += n;
            }
        }
    }
    Figures {
        active_sessions: sessions.len() as u64,
        auth,
        average_risk,
        compliant,
        risk_bands,
        trend,
    }
}

/// One threat alert from the audit trail.
#[derive(Clone, Debug)]
pub struct Alert {
    pub at: i64,
    pub user: String,
    pub source: String,
    /// The score, as the alert's record states it.
    pub threat: String,
    /// The record's reason: factors and actions taken.
    pub detail: String,
}

impl Alert {
    fn from_record(r: &AuditRecord) -> Self {
        let threat = r
            .reason
            .split_once("threat ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("-")
            .to_owned();
        Self {
            at: r.ts,
            user: r
                .resource
                .strip_prefix("user:")
                .unwrap_or(&r.resource)
                .to_owned(),
            source: r.source_ip.clone(),
            threat,
            detail: r.reason.clone(),
        }
    }
}

/// Everything one view of the dashboard shows.
pub struct Dashboard {
    pub now: i64,
    pub figures: Figures,
    /// The reference compliance policy's name.
    pub policy: Option<String>,
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Live sessions, riskiest first; `sessions_total` counts all.
    pub sessions: Vec<SessionRecord>,
    pub sessions_total: usize,
    /// Devices not revoked, failing ones first.
    pub devices: Vec<(DeviceRecord, Compliance)>,
    pub devices_total: usize,
    pub users: Vec<UserRecord>,
    pub users_total: usize,
    pub blocks: Vec<BlockedSourceRecord>,
}

/// Reads the store and computes one view.
pub async fn gather(c: &Controller) -> Result<Dashboard, Failure> {
    let now = c.now();
    let store = &c.store;
    let mut sessions = store.list_sessions(Some(now)).await?;
    let reference = c.config.policy.config.compliance.reference_policy();
    let mut devices: Vec<(DeviceRecord, Compliance)> = store
        .list_devices()
        .await?
        .into_iter()
        .filter(|d| d.status != DeviceStatus::Revoked)
        .map(|d| {
            let posture = serde_json::from_str::<PostureReport>(&d.posture).ok();
            let judged = compliance(reference.map(|(_, p)| p), posture.as_ref(), now);
            (d, judged)
        })
        .collect();
    let tallies = store.audit_tally(trend_start(now), now + 1, HOUR).await?;
    let figures = figures(&sessions, &devices, &tallies, now);
    let alerts = recent_alerts(c, now).await?;
    let mut users = store.list_users().await?;
    let blocks = store.blocked_sources(now).await?;

    sessions.sort_by(|a, b| {
        current_risk(b)
            .cmp(&current_risk(a))
            .then(b.created_at.cmp(&a.created_at))
    });
    let sessions_total = sessions.len();
    sessions.truncate(MAX_ROWS);
    let rank = |c: &Compliance| match c {
        Compliance::Failing(_) => 0,
        Compliance::Unknown(_) => 1,
        Compliance::Compliant => 2,
    };
    devices.sort_by(|(da, ca), (db, cb)| {
        rank(ca)
            .cmp(&rank(cb))
            .then_with(|| da.user_name.cmp(&db.user_name))
            .then_with(|| da.hostname.cmp(&db.hostname))
    });
    let devices_total = devices.len();
    devices.truncate(MAX_ROWS);
    // Those needing attention first: suspended, then locked, then by name.
    users.sort_by_key(|u| {
        (
            u.status == UserStatus::Active,
            !u.is_locked(now),
            u.role != Role::Admin,
            u.name.clone(),
        )
    });
    let users_total = users.len();
    users.truncate(MAX_ROWS);
    Ok(Dashboard {
        now,
        figures,
        policy: reference.map(|(name, _)| name.to_owned()),
        alerts,
        sessions,
        sessions_total,
        devices,
        devices_total,
        users,
        users_total,
        blocks,
    })
}

/// The newest alerts of the last week. The audit query reads oldest
/// first; alerts are rare (the detector has a cooldown per user and rule),
/// so paging through the week keeps the newest cheaply.
async fn recent_alerts(c: &Controller, now: i64) -> Result<Vec<Alert>, Failure> {
    const PAGE: u32 = 1000;
    let mut newest: std::collections::VecDeque<Alert> = std::collections::VecDeque::new();
    let mut after = 0;
    // Bounded: at most 100 pages (100,000 alerts in a week is an attack on
    // the dashboard itself; the newest then are the last pages read).
    for _ in 0..100 {
        let page = c
            .store
            .audit_query(&AuditFilter {
                after,
                limit: PAGE,
                action: Some("threat.alert".into()),
                since: Some(now - ALERT_WINDOW),
                ..AuditFilter::default()
            })
            .await?;
        for r in &page {
            if newest.len() == MAX_ALERTS {
                newest.pop_front();
            }
            newest.push_back(Alert::from_record(r));
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = last.id,
            _ => break,
        }
    }
    Ok(newest.into_iter().rev().collect())
}

/// A time for people: `2026-11-24 10:03:07 UTC`.
pub fn when(unix: i64) -> String {
    let t = rfc3339(unix);
    match t.split_once('T') {
        Some((day, rest)) => format!("{day} {} UTC", rest.trim_end_matches('Z')),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use umbra_store::{SessionKind, StoredVerdict};

    use super::*;

    const NOW: i64 = 1_800_000_000 + 1234;

    fn session(risk: u8, verdict: Option<u8>) -> SessionRecord {
        SessionRecord {
            id: format!("s{risk}"),
            kind: SessionKind::Device,
            user_id: "u".into(),
            user_name: "ann".into(),
            device_id: "d".into(),
            cert_serial: "c".into(),
            source_ip: "10.0.0.1".into(),
            risk,
            created_at: NOW - 60,
            expires_at: NOW + 600,
            revoked_at: None,
            revoked_reason: None,
            mfa_at: Some(NOW - 60),
            verdict: verdict.map(|risk| StoredVerdict {
                risk,
                at: NOW,
                step_up_at: None,
            }),
        }
    }

    fn device(status: DeviceStatus, c: Compliance) -> (DeviceRecord, Compliance) {
        (
            DeviceRecord {
                id: "d".into(),
                user_id: "u".into(),
                user_name: "ann".into(),
                status,
                hostname: "h".into(),
                posture: String::new(),
                created_at: NOW,
                updated_at: NOW,
            },
            c,
        )
    }

    fn tally(action: &str, outcome: &str, bucket: i64, count: i64) -> AuditTally {
        AuditTally {
            action: action.into(),
            outcome: outcome.into(),
            bucket,
            count,
        }
    }

    #[test]
    fn the_figures_come_from_the_records() {
        // Login risks 10, 30 (now 85 after a re-evaluation) and 61.
        let sessions = [session(10, None), session(30, Some(85)), session(61, None)];
        let fail = Compliance::Failing(vec![]);
        let devices = [
            device(DeviceStatus::Approved, Compliance::Compliant),
            device(DeviceStatus::Approved, fail.clone()),
            device(DeviceStatus::Approved, Compliance::Unknown("no report")),
            device(DeviceStatus::Pending, Compliance::Compliant),
        ];
        let tallies = [
            tally("auth.login", "allow", 23, 3),
            tally("auth.login", "deny", 23, 1),
            tally("auth.browser_login", "allow", 0, 1),
            // Not an authentication.
            tally("admin.read", "allow", 23, 50),
            tally("gateway.access", "allow", 23, 40),
            tally("gateway.tunnel", "allow", 23, 2),
            tally("gateway.access", "deny", 22, 5),
            tally("auth.verify", "error", 0, 1),
            // Outside the trend (a clock step): ignored, not a panic.
            tally("gateway.access", "allow", 24, 9),
            tally("gateway.access", "allow", -1, 9),
        ];
        let f = figures(&sessions, &devices, &tallies, NOW);
        assert_eq!(f.active_sessions, 3);
        assert_eq!(f.average_risk, Some((10.0 + 85.0 + 61.0) / 3.0));
        assert_eq!(f.risk_bands, [1, 0, 0, 1, 1], "current risk, seed bands");
        assert_eq!(
            f.auth,
            Ratio { part: 4, whole: 5 },
            "logins, not admin reads"
        );
        assert_eq!(f.auth.percent(), Some(80));
        assert_eq!(
            f.compliant,
            Ratio { part: 1, whole: 3 },
            "approved only; unknown is not compliant"
        );
        assert_eq!(f.trend.len(), TREND_HOURS);
        assert_eq!(f.trend[0].start, trend_start(NOW));
        assert_eq!(f.trend[23].start, NOW / HOUR * HOUR, "ends with this hour");
        assert_eq!((f.trend[23].allowed, f.trend[23].refused), (42, 0));
        assert_eq!((f.trend[22].allowed, f.trend[22].refused), (0, 5));
        assert_eq!((f.trend[0].allowed, f.trend[0].refused), (0, 1));
    }

    #[test]
    fn empty_stores_have_no_rates_rather_than_zeros() {
        let f = figures(&[], &[], &[], NOW);
        assert_eq!(f.average_risk, None);
        assert_eq!(f.auth.percent(), None);
        assert_eq!(f.compliant.percent(), None);
        assert_eq!(Ratio { part: 2, whole: 3 }.percent(), Some(67));
        assert_eq!(
            Ratio {
                part: 1,
                whole: 200
            }
            .percent(),
            Some(1),
            "0.5 rounds up"
        );
    }

    #[test]
    fn alerts_read_their_score_and_user() {
        let a = Alert::from_record(&AuditRecord {
            id: 1,
            ts: NOW,
            actor: "user:ann".into(),
            source_ip: "10.1.2.3".into(),
            action: "threat.alert".into(),
            resource: "user:ann".into(),
            outcome: "deny".into(),
            reason: "alert 7: threat 0.90 (failed_logins 0.8: 6 in 900 s); actions: suspend".into(),
            request_id: String::new(),
            count: 1,
            link: None,
        });
        assert_eq!((a.user.as_str(), a.threat.as_str()), ("ann", "0.90"));
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
    }
}
