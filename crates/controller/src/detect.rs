//! Threat detection and automatic response (seed 003's `SecurityMonitor`).
//!
//! Every audit record this controller stores (its own decisions and the
//! gateways' uploaded batches) is offered to a detector task through a
//! bounded queue: offering never waits, so the request path is never held
//! up; a full queue drops the record from analysis (counted and logged),
//! never from the audit trail.
//!
//! The detector scores each record on the seed's rules, on the user's own
//! history read from the audit trail:
//!
//! | factor | points | when |
//! |---|---|---|
//! | `failed_logins` | 0.8 | ≥ 5 failed logins or step-ups in 15 minutes |
//! | `unusual_resources` | 0.6 | > 3 services reached in the last hour that the 7 days before never saw |
//! | `data_exfiltration` | 0.9 | > 100 MB moved in one session through a gateway |
//! | `new_network` | 0.5 | a source network (/24, /64) the last 30 days never saw |
//! | `unusual_hour` | 0.3 | an hour of the day (UTC) the last 30 days never saw |
//!
//! The two anomaly factors count only against a baseline of at least
//! `min_baseline_events` allowed events (a new user is not an anomaly).
//! The threat level is the sum, at most 1. At `alert_threshold` (0.7) an
//! alert goes to the audit trail (`threat.alert`), the JSON log and the
//! webhooks, with the seed's recommended actions, and the user's live
//! sessions must step up; at `suspend_threshold` (0.9) the user is also
//! suspended for `suspend_seconds` (which ends their sessions everywhere).
//! Every automatic action is audited and an admin can undo it (`resume`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use umbra_proto::api::UserStatus;
use umbra_store::{AuditEvent, AuditRecord, Outcome};

use crate::Controller;
use crate::config::ConfigError;
use crate::error::Failure;

/// `[detection]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetection {
    pub enabled: Option<bool>,
    pub failed_logins: Option<u32>,
    pub failed_login_window_seconds: Option<u64>,
    pub unusual_resources: Option<u32>,
    pub resource_baseline_days: Option<u32>,
    pub transfer_bytes: Option<u64>,
    pub network_baseline_days: Option<u32>,
    pub min_baseline_events: Option<u32>,
    pub alert_threshold: Option<f64>,
    pub suspend_threshold: Option<f64>,
    pub suspend_seconds: Option<u64>,
    pub block_seconds: Option<u64>,
    /// An alert for the same user and factors is not raised again within
    /// this many seconds.
    pub cooldown_seconds: Option<u64>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    /// A file holding the HMAC secret (its first line).
    pub secret_file: std::path::PathBuf,
}

/// The validated `[detection]`.
#[derive(Clone, Debug)]
pub struct DetectionConfig {
    pub enabled: bool,
    pub failed_logins: u32,
    pub failed_login_window_secs: i64,
    pub unusual_resources: u32,
    pub resource_baseline_secs: i64,
    pub transfer_bytes: u64,
    pub network_baseline_secs: i64,
    pub min_baseline_events: u32,
    pub alert_threshold: f64,
    pub suspend_threshold: f64,
    pub suspend_secs: u64,
    pub block_secs: u64,
    pub cooldown_secs: i64,
    pub webhooks: Vec<Webhook>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        RawDetection::default()
            .validate()
            .expect("the defaults are valid")
    }
}

/// Where alerts are POSTed, and the key that signs them.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl RawDetection {
    pub fn validate(self) -> Result<DetectionConfig, ConfigError> {
        let level = |key: &'static str, v: Option<f64>, default: f64| {
            let v = v.unwrap_or(default);
            if (0.0..=1.0).contains(&v) && v > 0.0 {
                Ok(v)
            } else {
                Err(invalid(key, format!("{v} is outside (0, 1]")))
            }
        };
        let alert_threshold = level("detection.alert_threshold", self.alert_threshold, 0.7)?;
        let suspend_threshold = level("detection.suspend_threshold", self.suspend_threshold, 0.9)?;
        if suspend_threshold < alert_threshold {
            return Err(invalid(
                "detection.suspend_threshold",
                "must not be below alert_threshold",
            ));
        }
        let days = |key: &'static str, v: Option<u32>, default: u32| {
            let v = v.unwrap_or(default);
            if (1..=365).contains(&v) {
                Ok(i64::from(v) * 86_400)
            } else {
                Err(invalid(key, format!("{v} is outside 1..=365 days")))
            }
        };
        let count = |key: &'static str, v: Option<u32>, default: u32| {
            let v = v.unwrap_or(default);
            if v >= 1 {
                Ok(v)
            } else {
                Err(invalid(key, "must be at least 1"))
            }
        };
        let seconds = |key: &'static str, v: Option<u64>, default: u64| {
            let v = v.unwrap_or(default);
            if (1..=30 * 86_400).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(key, format!("{v} is outside 1..=2592000 seconds")))
            }
        };
        let webhooks = self
            .webhook
            .into_iter()
            .map(|w| {
                let url: reqwest::Url = w
                    .url
                    .parse()
                    .map_err(|e| invalid("detection.webhook.url", format!("{}: {e}", w.url)))?;
                if !matches!(url.scheme(), "https" | "http") {
                    return Err(invalid("detection.webhook.url", "must be http(s)"));
                }
                let text = std::fs::read_to_string(&w.secret_file).map_err(|e| {
                    invalid(
                        "detection.webhook.secret_file",
                        format!("{}: {e}", w.secret_file.display()),
                    )
                })?;
                let secret = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .as_bytes()
                    .to_vec();
                if secret.len() < 16 {
                    return Err(invalid(
                        "detection.webhook.secret_file",
                        "the secret must be at least 16 bytes",
                    ));
                }
                Ok(Webhook {
                    url: w.url,
                    secret: zeroize::Zeroizing::new(secret),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DetectionConfig {
            enabled: self.enabled.unwrap_or(true),
            failed_logins: count("detection.failed_logins", self.failed_logins, 5)?,
            failed_login_window_secs: seconds(
                "detection.failed_login_window_seconds",
                self.failed_login_window_seconds,
                900,
            )?
            .try_into()
            .unwrap_or(900),
            unusual_resources: count("detection.unusual_resources", self.unusual_resources, 3)?,
            resource_baseline_secs: days(
                "detection.resource_baseline_days",
                self.resource_baseline_days,
                7,
            )?,
            transfer_bytes: match self.transfer_bytes.unwrap_or(100 * 1_000_000) {
                0 => return Err(invalid("detection.transfer_bytes", "must be at least 1")),
                b => b,
            },
            network_baseline_secs: days(
                "detection.network_baseline_days",
                self.network_baseline_days,
                30,
            )?,
            min_baseline_events: count(
                "detection.min_baseline_events",
                self.min_baseline_events,
                10,
            )?,
            alert_threshold,
            suspend_threshold,
            suspend_secs: seconds("detection.suspend_seconds", self.suspend_seconds, 3600)?,
            block_secs: seconds("detection.block_seconds", self.block_seconds, 1800)?,
            cooldown_secs: seconds("detection.cooldown_seconds", self.cooldown_seconds, 900)?
                .try_into()
                .unwrap_or(900),
            webhooks,
        })
    }
}

/// How many records may wait for analysis.
const QUEUE: usize = 4096;
/// Most audit records read to learn one user's history.
const HISTORY_LIMIT: u32 = 10_000;

/// What the detector is offered: an audit record, and for a gateway's
/// transfer report the session and its byte count.
#[derive(Clone, Debug)]
pub struct Observed {
    pub event: AuditEvent,
    pub transfer: Option<(String, u64)>,
}

/// The queue into the detector task.
pub struct Detector {
    tx: mpsc::Sender<Observed>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Observed>>>,
    pub dropped: AtomicU64,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").finish_non_exhaustive()
    }
}

impl Default for Detector {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Detector {
    /// Offers a record for analysis, without waiting.
    pub fn offer(&self, observed: Observed) {
        if self.tx.try_send(observed).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "threat detection is behind; records skipped");
            }
        }
    }
}

/// A factor of a threat, with its points (0–1) and what was seen.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Factor {
    pub name: &'static str,
    pub points: f64,
    pub detail: String,
}

/// The seed's recommended actions for a threat level.
pub fn recommended_actions(level: f64, config: &DetectionConfig) -> Vec<&'static str> {
    if level >= config.suspend_threshold {
        vec![
            "Immediately suspend user account",
            "Force password reset",
            "Review recent user activities",
            "Contact user for verification",
        ]
    } else if level >= config.alert_threshold {
        vec![
            "Require additional MFA verification",
            "Monitor user activities closely",
            "Review access permissions",
        ]
    } else {
        vec![
            "Monitor for additional suspicious activities",
            "Log event for investigation",
        ]
    }
}

/// The user a record is about, if it names one (`user:NAME`).
fn user_of(e: &AuditEvent) -> Option<&str> {
    e.actor.strip_prefix("user:")
}

/// A failed authentication by the user (a wrong password, code or
/// recovery code), as the login and step-up audit it.
fn is_failed_auth(action: &str, outcome: &str, reason: &str) -> bool {
    matches!(action, "auth.login" | "auth.step_up")
        && outcome == "deny"
        && (reason.starts_with("bad_") || reason.starts_with("deny: bad_"))
}

/// The network a source belongs to, for the anomaly: /24 or /64.
fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The service an allowed gateway record reached.
fn service_of(r: &AuditRecord) -> Option<&str> {
    if !matches!(r.action.as_str(), "gateway.access" | "gateway.tunnel") || r.outcome != "allow" {
        return None;
    }
    r.resource.strip_prefix("service:")?.split(' ').next()
}

/// Scores one record against the user's history (`history`: their audit
/// records, newest first, including this one). Pure.
pub fn score(
    config: &DetectionConfig,
    e: &AuditEvent,
    history: &[AuditRecord],
    session_bytes: Option<u64>,
) -> Vec<Factor> {
    let mut factors = Vec::new();
    let now = e.ts;
    let outcome = e.outcome.as_str();
    if is_failed_auth(&e.action, outcome, &e.reason) {
        let since = now - config.failed_login_window_secs;
        let failures = history
            .iter()
            .filter(|r| r.ts >= since && is_failed_auth(&r.action, &r.outcome, &r.reason))
            .count();
        if failures >= config.failed_logins as usize {
            factors.push(Factor {
                name: "failed_logins",
                points: 0.8,
                detail: format!(
                    "{failures} failed logins in {} minutes",
                    config.failed_login_window_secs / 60
                ),
            });
        }
    }
    if matches!(e.action.as_str(), "gateway.access" | "gateway.tunnel") && outcome == "allow" {
        let hour_ago = now - 3600;
        let baseline_from = hour_ago - config.resource_baseline_secs;
        let usual: BTreeSet<&str> = history
            .iter()
            .filter(|r| r.ts >= baseline_from && r.ts < hour_ago)
            .filter_map(service_of)
            .collect();
        let recent: BTreeSet<&str> = history
            .iter()
            .filter(|r| r.ts >= hour_ago)
            .filter_map(service_of)
            .collect();
        let new: Vec<&str> = recent.difference(&usual).copied().collect();
        if new.len() > config.unusual_resources as usize {
            factors.push(Factor {
                name: "unusual_resources",
                points: 0.6,
                detail: format!(
                    "{} services new against the {}-day baseline: {}",
                    new.len(),
                    config.resource_baseline_secs / 86_400,
                    new.join(", ")
                ),
            });
        }
    }
    if let Some(bytes) = session_bytes
        && bytes > config.transfer_bytes
    {
        factors.push(Factor {
            name: "data_exfiltration",
            points: 0.9,
            detail: format!(
                "{} MB moved in one session (limit {} MB)",
                bytes / 1_000_000,
                config.transfer_bytes / 1_000_000
            ),
        });
    }
    // The anomalies, against what the user's allowed events (before this
    // one) make usual.
    let baseline: Vec<&AuditRecord> = history
        .iter()
        .filter(|r| r.outcome == "allow" && r.ts >= now - config.network_baseline_secs)
        .filter(|r| r.ts < now || r.action != e.action)
        .filter(|r| {
            matches!(
                r.action.as_str(),
                "auth.login" | "gateway.access" | "gateway.tunnel"
            )
        })
        .collect();
    if baseline.len() >= config.min_baseline_events as usize {
        if let Ok(ip) = e.source_ip.parse::<IpAddr>() {
            let here = network(ip);
            let known = baseline
                .iter()
                .filter_map(|r| r.source_ip.parse::<IpAddr>().ok())
                .any(|ip| network(ip) == here);
            if !known {
                factors.push(Factor {
                    name: "new_network",
                    points: 0.5,
                    detail: format!(
                        "{here} is new against the {}-day baseline",
                        config.network_baseline_secs / 86_400
                    ),
                });
            }
        }
        let hour = (now.rem_euclid(86_400)) / 3600;
        if !baseline
            .iter()
            .any(|r| r.ts.rem_euclid(86_400) / 3600 == hour)
        {
            factors.push(Factor {
                name: "unusual_hour",
                points: 0.3,
                detail: format!("{hour:02}:00 UTC is outside the user's usual hours"),
            });
        }
    }
    factors
}

/// The threat level of some factors: their sum, at most 1.
pub fn level(factors: &[Factor]) -> f64 {
    factors.iter().map(|f| f.points).sum::<f64>().min(1.0)
}

/// Analyzes offered records until the controller stops.
pub async fn run(c: Arc<Controller>) {
    let Some(mut rx) = c
        .detector
        .rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let webhooks = crate::webhook::Sender::start(c.clone());
    let mut state = State::default();
    loop {
        let observed = tokio::select! {
            () = c.events.stopped() => return,
            o = rx.recv() => match o {
                Some(o) => o,
                None => return,
            },
        };
        if !c.config.detection.enabled {
            continue;
        }
        if let Err(e) = analyze(&c, &mut state, &webhooks, observed).await {
            tracing::warn!(error = %e.message, "threat analysis failed for one record");
        }
    }
}

/// How many sessions' byte counts and alert times are kept at most.
const STATE_LIMIT: usize = 100_000;

#[derive(Default)]
struct State {
    /// Bytes moved per session, as the gateways report them.
    session_bytes: HashMap<String, u64>,
    /// When each (user, factors) last raised an alert.
    alerted: HashMap<(String, String), i64>,
}

impl State {
    /// Forgets alert times past their cooldown, and bounds the byte
    /// tallies (ended sessions leave theirs behind): memory stays bounded
    /// however long the controller runs.
    fn prune(&mut self, now: i64, cooldown: i64) {
        if self.alerted.len() > STATE_LIMIT {
            self.alerted.retain(|_, at| now - *at < cooldown);
        }
        if self.session_bytes.len() > STATE_LIMIT {
            // Tallies restart: a session then needs its threshold again.
            tracing::warn!(
                "threat detection forgets the byte counts of {} sessions",
                self.session_bytes.len()
            );
            self.session_bytes.clear();
        }
    }
}

async fn analyze(
    c: &Arc<Controller>,
    state: &mut State,
    webhooks: &crate::webhook::Sender,
    o: Observed,
) -> Result<(), Failure> {
    let config = &c.config.detection;
    let e = &o.event;
    let Some(user_name) = user_of(e) else {
        return Ok(());
    };
    let interesting = matches!(
        e.action.as_str(),
        "auth.login" | "auth.step_up" | "gateway.access" | "gateway.tunnel" | "gateway.transfer"
    );
    if !interesting {
        return Ok(());
    }
    state.prune(e.ts, config.cooldown_secs);
    let session_bytes = o.transfer.as_ref().map(|(session, bytes)| {
        let total = state.session_bytes.entry(session.clone()).or_insert(0);
        *total = total.saturating_add(*bytes);
        *total
    });
    let since = e.ts
        - config
            .network_baseline_secs
            .max(config.resource_baseline_secs + 3600);
    let history = c
        .store
        .audit_by_actor(&e.actor, since, HISTORY_LIMIT)
        .await?;
    let factors = score(config, e, &history, session_bytes);
    let threat = level(&factors);
    if threat < config.alert_threshold {
        return Ok(());
    }
    let names: Vec<&str> = factors.iter().map(|f| f.name).collect();
    let key = (user_name.to_owned(), names.join(","));
    if state
        .alerted
        .get(&key)
        .is_some_and(|at| e.ts - at < config.cooldown_secs)
    {
        return Ok(());
    }
    state.alerted.insert(key, e.ts);
    if let Some((session, _)) = &o.transfer {
        // One alert per session for its volume.
        state.session_bytes.remove(session);
    }
    raise(c, webhooks, e, user_name, &factors, threat).await
}

/// Raises an alert and carries out the automatic response.
async fn raise(
    c: &Arc<Controller>,
    webhooks: &crate::webhook::Sender,
    e: &AuditEvent,
    user_name: &str,
    factors: &[Factor],
    threat: f64,
) -> Result<(), Failure> {
    let config = &c.config.detection;
    let id = uuid::Uuid::new_v4().to_string();
    let now = c.now();
    let mut actions: Vec<String> = Vec::new();
    let user = c.store.user_by_name(user_name).await?;
    if let Some(user) = &user {
        if threat >= config.suspend_threshold && user.status == UserStatus::Active {
            c.suspend_user(user).await?;
            actions.push(format!("user suspended for {} s", config.suspend_secs));
            if let Ok(ip) = e.source_ip.parse::<IpAddr>() {
                c.block_source(
                    ip,
                    config.block_secs,
                    &format!("alert {id}: threat {threat:.2}"),
                )
                .await?;
                actions.push(format!("source {ip} blocked for {} s", config.block_secs));
            }
            c.audit_event(
                "controller",
                e.source_ip.parse().ok(),
                "threat.suspend",
                &format!("user:{user_name}"),
                Outcome::Deny,
                &format!(
                    "alert {id}: threat {threat:.2}; for {} s",
                    config.suspend_secs
                ),
                "",
            )
            .await?;
            schedule_resume(c.clone(), user.id.clone(), id.clone(), config.suspend_secs);
        } else if threat < config.suspend_threshold {
            let asked = crate::reevaluate::require_step_up(c, &user.id, now).await?;
            if !asked.is_empty() {
                actions.push(format!("step-up required of {} session(s)", asked.len()));
                c.audit_event(
                    "controller",
                    e.source_ip.parse().ok(),
                    "threat.step_up",
                    &format!("user:{user_name}"),
                    Outcome::Allow,
                    &format!(
                        "alert {id}: threat {threat:.2}; sessions {}",
                        asked.join(",")
                    ),
                    "",
                )
                .await?;
            }
        }
    }
    let alert = serde_json::json!({
        "id": id,
        "timestamp": crate::clock::rfc3339(now),
        "threat_level": (threat * 100.0).round() / 100.0,
        "user": user_name,
        "source_ip": e.source_ip,
        "event": {
            "action": e.action,
            "resource": e.resource,
            "outcome": e.outcome.as_str(),
            "reason": e.reason,
            "timestamp": crate::clock::rfc3339(e.ts),
        },
        "factors": factors,
        "recommended_actions": recommended_actions(threat, config),
        "actions_taken": actions,
    });
    c.metrics.alert(if threat >= config.suspend_threshold {
        "suspend"
    } else {
        "step_up"
    });
    tracing::error!(
        alert = %alert,
        threat = threat,
        user = user_name,
        "SECURITY ALERT"
    );
    let reason = format!(
        "alert {id}: threat {threat:.2} ({}); actions: {}",
        factors
            .iter()
            .map(|f| format!("{} {:.1}: {}", f.name, f.points, f.detail))
            .collect::<Vec<_>>()
            .join("; "),
        if actions.is_empty() {
            "none".to_owned()
        } else {
            actions.join(", ")
        }
    );
    c.audit_event(
        &format!("user:{user_name}"),
        e.source_ip.parse().ok(),
        "threat.alert",
        &format!("user:{user_name}"),
        Outcome::Deny,
        &reason,
        "",
    )
    .await?;
    webhooks.send(alert);
    Ok(())
}

/// Resumes a user the detector suspended once the suspension is over,
/// unless an admin acted in between (the user is then left as they are).
/// Held in memory: a controller restart leaves the user suspended until an
/// admin resumes them (failing closed).
fn schedule_resume(c: Arc<Controller>, user_id: String, alert: String, secs: u64) {
    tokio::spawn(async move {
        let until = c.now() + i64::try_from(secs).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                () = c.events.stopped() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if c.now() >= until {
                break;
            }
        }
        let Ok(Some(user)) = c.store.user_by_id(&user_id).await else {
            return;
        };
        if user.status != UserStatus::Suspended
            || user.updated_at > until - i64::try_from(secs).unwrap_or(0)
        {
            // Resumed by an admin already, or suspended again since.
            return;
        }
        if c.resume_user(&user).await.is_ok() {
            let _ = c
                .audit_event(
                    "controller",
                    None,
                    "threat.resume",
                    &format!("user:{}", user.name),
                    Outcome::Allow,
                    &format!("alert {alert}: suspension over"),
                    "",
                )
                .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn record(ts: i64, action: &str, outcome: &str, reason: &str, ip: &str) -> AuditRecord {
        AuditRecord {
            id: 1,
            ts,
            actor: "user:alice".into(),
            source_ip: ip.into(),
            action: action.into(),
            resource: "device:d1".into(),
            outcome: outcome.into(),
            reason: reason.into(),
            request_id: String::new(),
            count: 1,
            link: None,
        }
    }

    fn event(r: &AuditRecord) -> AuditEvent {
        AuditEvent {
            ts: r.ts,
            actor: r.actor.clone(),
            source_ip: r.source_ip.clone(),
            action: r.action.clone(),
            resource: r.resource.clone(),
            outcome: match r.outcome.as_str() {
                "allow" => Outcome::Allow,
                _ => Outcome::Deny,
            },
            reason: r.reason.clone(),
            request_id: String::new(),
            count: 1,
        }
    }

    fn access(ts: i64, service: &str, ip: &str) -> AuditRecord {
        let mut r = record(ts, "gateway.access", "allow", "grant", ip);
        r.resource = format!("service:{service} GET / via gateway:gw1");
        r
    }

    fn names(f: &[Factor]) -> Vec<&str> {
        f.iter().map(|f| f.name).collect()
    }

    #[test]
    fn five_failures_in_the_window_are_a_brute_force() {
        let c = DetectionConfig::default();
        let mut history: Vec<AuditRecord> = (0..4)
            .map(|i| {
                record(
                    NOW - 60 * i,
                    "auth.login",
                    "deny",
                    "bad_totp; failure 1 of 5",
                    "10.0.0.9",
                )
            })
            .collect();
        let last = event(&history[0]);
        assert!(
            score(&c, &last, &history, None).is_empty(),
            "four is not five"
        );
        history.insert(
            0,
            record(NOW, "auth.login", "deny", "bad_password", "10.0.0.9"),
        );
        let f = score(&c, &event(&history[0]), &history, None);
        assert_eq!(names(&f), ["failed_logins"]);
        assert!((level(&f) - 0.8).abs() < 1e-9);
        // Old failures fall out of the window.
        let old: Vec<AuditRecord> = (0..5)
            .map(|i| record(NOW - 1000 - i, "auth.login", "deny", "bad_totp", "10.0.0.9"))
            .collect();
        let mut h = old.clone();
        h.insert(0, record(NOW, "auth.login", "deny", "bad_totp", "10.0.0.9"));
        assert!(score(&c, &event(&h[0]), &h, None).is_empty());
        // Refusals that are not a wrong credential do not count.
        let locked: Vec<AuditRecord> = (0..6)
            .map(|i| record(NOW - i, "auth.login", "deny", "account_locked", "10.0.0.9"))
            .collect();
        assert!(score(&c, &event(&locked[0]), &locked, None).is_empty());
    }

    #[test]
    fn anomalies_count_only_against_a_baseline() {
        let c = DetectionConfig::default();
        // A new user: nothing is unusual yet.
        let first = access(NOW, "wiki", "192.0.2.7");
        assert!(score(&c, &event(&first), std::slice::from_ref(&first), None).is_empty());
        // Twelve accesses from 10.1.1.x at 09:00 UTC over the month.
        let nine = NOW - NOW.rem_euclid(86_400) + 9 * 3600;
        let mut history: Vec<AuditRecord> = (1..=12)
            .map(|d| access(nine - d * 86_400, "wiki", "10.1.1.5"))
            .collect();
        let usual = access(nine, "wiki", "10.1.1.77");
        history.insert(0, usual.clone());
        assert!(score(&c, &event(&usual), &history, None).is_empty());
        let odd = access(nine + 5 * 3600, "wiki", "203.0.113.9");
        history[0] = odd.clone();
        let f = score(&c, &event(&odd), &history, None);
        assert_eq!(names(&f), ["new_network", "unusual_hour"]);
        assert!((level(&f) - 0.8).abs() < 1e-9);
    }

    #[test]
    fn many_new_services_and_a_large_transfer_are_flagged() {
        let c = DetectionConfig::default();
        let mut history: Vec<AuditRecord> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| access(NOW - 60, s, "10.0.0.1"))
            .collect();
        history.push(access(NOW - 2 * 86_400, "a", "10.0.0.1"));
        let e = event(&history[0]);
        assert!(
            score(&c, &e, &history, None).is_empty(),
            "three new is the limit"
        );
        history.insert(0, access(NOW, "e", "10.0.0.1"));
        let f = score(&c, &event(&history[0]), &history, None);
        assert_eq!(names(&f), ["unusual_resources"]);
        assert!(f[0].detail.starts_with("4 services new"), "{}", f[0].detail);

        let transfer = record(NOW, "gateway.transfer", "allow", "bytes", "10.0.0.1");
        let f = score(&c, &event(&transfer), &[], Some(100_000_001));
        assert_eq!(names(&f), ["data_exfiltration"]);
        assert!(score(&c, &event(&transfer), &[], Some(100_000_000)).is_empty());
    }

    #[test]
    fn the_level_is_capped_and_actions_follow_it() {
        let c = DetectionConfig::default();
        let f = vec![
            Factor {
                name: "failed_logins",
                points: 0.8,
                detail: String::new(),
            },
            Factor {
                name: "new_network",
                points: 0.5,
                detail: String::new(),
            },
        ];
        assert!((level(&f) - 1.0).abs() < 1e-9);
        assert_eq!(
            recommended_actions(1.0, &c)[0],
            "Immediately suspend user account"
        );
        assert_eq!(
            recommended_actions(0.8, &c)[0],
            "Require additional MFA verification"
        );
        assert_eq!(recommended_actions(0.3, &c).len(), 2);
    }

    #[test]
    fn configuration_is_checked() {
        let bad = RawDetection {
            alert_threshold: Some(0.95),
            ..RawDetection::default()
        };
        assert!(bad.validate().is_err(), "suspend below alert");
        let bad = RawDetection {
            failed_logins: Some(0),
            ..RawDetection::default()
        };
        assert!(bad.validate().is_err());
        let c = DetectionConfig::default();
        assert_eq!(c.failed_logins, 5);
        assert_eq!(c.transfer_bytes, 100_000_000);
        assert_eq!(c.suspend_secs, 3600);
    }
}
