//! The controller's Prometheus metrics, served on `GET /metrics` (public,
//! like `/healthz`: counts and gauges, nothing secret).
//!
//! The names are seed 000's (`ztna_auth_attempts_total{result, method}`,
//! `ztna_risk_scores`, `ztna_active_sessions{zone}`,
//! `ztna_device_compliance{status}`) plus the controller's own under
//! `umbra_controller_`. Counters are bumped where the event happens; the
//! gauges that describe the store (sessions, device compliance) and the
//! open control channels are computed at scrape time, so they are never
//! stale and cost nothing between scrapes.
//!
//! Why the `prometheus` crate (tikv) with its `TextEncoder`: it renders the
//! Prometheus text exposition format 0.0.4 that `promtool check metrics`
//! and every Prometheus server read (`prometheus-client` renders
//! OpenMetrics, which Debian's promtool rejects), and its [`Registry`] is
//! an ordinary value: each controller owns one, so several controllers in
//! one process (the tests) never share a global recorder, as they would
//! with the `metrics` facade.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use umbra_policy::compliance::CompliancePolicy;
use umbra_proto::PostureReport;
use umbra_proto::api::DeviceStatus;

use crate::Controller;

/// `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How an authentication attempt ended (`result` of
/// `ztna_auth_attempts_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthResult {
    Success,
    /// Wrong credentials: password, second factor, unknown user.
    Failure,
    /// Refused because the account is locked.
    Locked,
    RateLimited,
    /// Refused for the device, certificate, account or risk, before or
    /// whatever the credentials.
    Denied,
    /// An internal failure (store, signing).
    Error,
}

impl AuthResult {
    pub const ALL: [Self; 6] = [
        Self::Success,
        Self::Failure,
        Self::Locked,
        Self::RateLimited,
        Self::Denied,
        Self::Error,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Locked => "locked",
            Self::RateLimited => "rate_limited",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// Which credential an attempt presented (`method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Login with password and TOTP.
    PasswordTotp,
    /// Login with password and a one-time recovery code.
    RecoveryCode,
    /// A fresh TOTP for a live session.
    StepUp,
}

impl AuthMethod {
    pub const ALL: [Self; 3] = [Self::PasswordTotp, Self::RecoveryCode, Self::StepUp];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PasswordTotp => "password_totp",
            Self::RecoveryCode => "recovery_code",
            Self::StepUp => "step_up",
        }
    }
}

/// What a session's re-evaluation came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reevaluated {
    Continue,
    StepUp,
    Terminate,
}

impl Reevaluated {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::StepUp => "step_up",
            Self::Terminate => "terminate",
        }
    }
}

/// A dark controller's SPA listener, by outcome.
pub struct SpaPackets {
    pub accepted: IntCounter,
    pub refused: IntCounter,
    /// Dropped by the cheap checks (size, MAC, replay, rate), unanswered.
    pub dropped: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    auth_attempts: IntCounterVec,
    risk_scores: Histogram,
    active_sessions: IntGaugeVec,
    device_compliance: IntGaugeVec,
    gateways_connected: IntGauge,
    events_published: IntCounterVec,
    reevaluations: IntCounterVec,
    threat_alerts: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registers `c` and hands it back. The names and label sets are
/// constants of this file: a failure is a programming error that the
/// unit test below catches, so the `expect`s here cannot fire at run time.
fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique constants");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric constants");
    register(r, v)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric constants");
    register(r, v)
}

impl Metrics {
    /// The metrics and the SPA counters, which the knock listener keeps.
    pub fn new() -> (Self, SpaPackets) {
        let r = Registry::new();
        let auth_attempts = counter_vec(
            &r,
            "ztna_auth_attempts_total",
            "Authentication attempts (logins and step-ups) by result and method",
            &["result", "method"],
        );
        // Every combination from zero, so rate() and ratios work from the
        // first scrape.
        for method in AuthMethod::ALL {
            for result in AuthResult::ALL {
                auth_attempts.with_label_values(&[result.as_str(), method.as_str()]);
            }
        }
        let risk_scores = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ztna_risk_scores",
                    "Risk score (0-100) of each login that got as far as scoring",
                )
                .buckets((1..=10).map(|b| f64::from(b) * 10.0).collect()),
            )
            .expect("valid metric constants"),
        );
        let active_sessions = gauge_vec(
            &r,
            "ztna_active_sessions",
            "Live sessions (not revoked, not expired) at scrape time; zone is \"all\": \
             sessions are not tied to one gateway",
            &["zone"],
        );
        let device_compliance = gauge_vec(
            &r,
            "ztna_device_compliance",
            "Approved devices by their last posture report against the required compliance \
             policy (standard when none is required), at scrape time",
            &["status"],
        );
        let gateways_connected = register(
            &r,
            IntGauge::new(
                "umbra_controller_gateways_connected",
                "Gateway control channels open on this controller",
            )
            .expect("valid metric constants"),
        );
        let events_published = counter_vec(
            &r,
            "umbra_controller_events_published_total",
            "Events this controller stored for the gateways, by kind",
            &["kind"],
        );
        let reevaluations = counter_vec(
            &r,
            "umbra_controller_reevaluations_total",
            "Live-session re-evaluations by outcome",
            &["outcome"],
        );
        for o in [
            Reevaluated::Continue,
            Reevaluated::StepUp,
            Reevaluated::Terminate,
        ] {
            reevaluations.with_label_values(&[o.as_str()]);
        }
        let threat_alerts = counter_vec(
            &r,
            "umbra_controller_threat_alerts_total",
            "Threat detection's alerts by response (step_up: at the alert threshold; \
             suspend: at the suspension threshold)",
            &["response"],
        );
        for response in ["step_up", "suspend"] {
            threat_alerts.with_label_values(&[response]);
        }
        let spa = counter_vec(
            &r,
            "umbra_controller_spa_packets_total",
            "SPA packets at a dark controller's knock listener by outcome (dropped: failed \
             the cheap checks before any decryption)",
            &["outcome"],
        );
        let packets = SpaPackets {
            accepted: spa.with_label_values(&["accepted"]),
            refused: spa.with_label_values(&["refused"]),
            dropped: spa.with_label_values(&["dropped"]),
        };
        let metrics = Self {
            registry: r,
            auth_attempts,
            risk_scores,
            active_sessions,
            device_compliance,
            gateways_connected,
            events_published,
            reevaluations,
            threat_alerts,
        };
        (metrics, packets)
    }

    pub fn auth(&self, method: AuthMethod, result: AuthResult) {
        self.auth_attempts
            .with_label_values(&[result.as_str(), method.as_str()])
            .inc();
    }

    pub fn risk_score(&self, score: u8) {
        self.risk_scores.observe(f64::from(score));
    }

    pub fn published(&self, kind: &'static str) {
        self.events_published.with_label_values(&[kind]).inc();
    }

    /// An alert raised, by the response it brought (`step_up` or `suspend`).
    pub fn alert(&self, response: &'static str) {
        self.threat_alerts.with_label_values(&[response]).inc();
    }

    pub fn reevaluated(&self, outcome: Reevaluated) {
        self.reevaluations
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// The scrape: gauges from the store and the event hub, then every
    /// metric as Prometheus text. A gauge the store cannot answer for is
    /// left out (not left at an old value); the counters are served anyway.
    pub async fn render(&self, c: &Controller) -> String {
        let now = c.now();
        self.gateways_connected
            .set(i64::try_from(c.events.channels()).unwrap_or(i64::MAX));
        match c.store.list_sessions(Some(now)).await {
            Ok(sessions) => self
                .active_sessions
                .with_label_values(&["all"])
                .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX)),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: sessions unavailable");
                self.active_sessions.reset();
            }
        }
        match c.store.list_devices().await {
            Ok(devices) => {
                let policy = c
                    .config
                    .policy
                    .config
                    .compliance
                    .reference_policy()
                    .map(|(_, p)| p);
                let mut counts = [0i64; 3];
                for d in devices
                    .iter()
                    .filter(|d| d.status == DeviceStatus::Approved)
                {
                    let posture = serde_json::from_str::<PostureReport>(&d.posture).ok();
                    counts[compliance_index(policy, posture.as_ref(), now)] += 1;
                }
                for (status, n) in COMPLIANCE_STATUSES.iter().zip(counts) {
                    self.device_compliance.with_label_values(&[status]).set(n);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: devices unavailable");
                self.device_compliance.reset();
            }
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics could not be encoded");
                String::new()
            })
    }
}

const COMPLIANCE_STATUSES: [&str; 3] = ["compliant", "non_compliant", "unknown"];

/// Index into [`COMPLIANCE_STATUSES`]: unknown without a policy to judge
/// by or a readable report.
fn compliance_index(
    policy: Option<&CompliancePolicy>,
    posture: Option<&PostureReport>,
    now: i64,
) -> usize {
    match (policy, posture) {
        (Some(policy), Some(posture)) => {
            let report = policy.check(posture, now);
            if report.blocking(policy).next().is_none() {
                0
            } else {
                1
            }
        }
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_seed_names_in_the_text_format() {
        let (m, spa) = Metrics::new();
        m.auth(AuthMethod::PasswordTotp, AuthResult::Failure);
        m.risk_score(35);
        spa.dropped.inc();
        let text = TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .expect("encode");
        assert!(
            text.contains("# TYPE ztna_auth_attempts_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"ztna_auth_attempts_total{method="password_totp",result="failure"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ztna_risk_scores_bucket{le="40"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ztna_risk_scores_bucket{le="30"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"umbra_controller_spa_packets_total{outcome="dropped"} 1"#),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "not OpenMetrics");
    }

    #[test]
    fn compliance_is_unknown_without_a_policy_or_a_report() {
        let standard = CompliancePolicy::standard();
        assert_eq!(compliance_index(None, None, 0), 2);
        assert_eq!(compliance_index(Some(&standard), None, 0), 2);
    }
}
