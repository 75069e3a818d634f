//! Continuous verification: every live session is judged again for as long
//! as it lives — on the interval its risk sets (`[risk] reevaluate`, seed
//! 000's 60/180/300/600 s) and at once when something it rests on changes
//! (a posture report, a policy change, a threat alert, …).
//!
//! A judgement ([`judge`], pure) reads the facts afresh from the store: the
//! user, the device, the certificate, the device's last posture and the
//! risk scored now on the user's history. Its outcome:
//! - **terminate**: the session is revoked and `session_revoked` pushed, so
//!   every gateway cuts its live connections at once;
//! - **step up**: a `session_verdict` tells the gateways to hold the
//!   session's requests until its subject passes a fresh MFA;
//! - **continue**, at the risk found now: gateways decide with that score
//!   instead of the token's login-time one.
//!
//! Every judgement is audited (`session.reevaluate`) with its trigger, its
//! outcome and the reason.
//!
//! Each controller sharing a store runs this loop over all sessions; two
//! judging the same session at once both reach the same outcome from the
//! same facts, and the store keeps the newer verdict.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use umbra_policy::compliance::OnFailure;
use umbra_policy::decision::Risk;
use umbra_policy::risk::Baseline;
use umbra_policy::rules::PolicyConfig;
use umbra_proto::PostureReport;
use umbra_proto::api::{DeviceStatus, UserStatus};
use umbra_proto::control::{Event, SessionVerdict};
use umbra_store::{
    CertificateRecord, DeviceRecord, Outcome, SessionRecord, StoredVerdict, UserRecord,
};

use crate::Controller;
use crate::error::Failure;

/// How often the loop looks for sessions that are due, and the longest a
/// new session goes unseen by it (a new session is due no sooner than
/// the shortest interval, 60 s by default).
const LIST_EVERY_SECS: i64 = 30;

/// How often the loop looks at the clock for sessions that are due.
pub const TICK: Duration = Duration::from_secs(1);

/// What asks for a re-evaluation before its time.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// Every live session (the policy changed).
    All,
    /// The sessions of one user, by user id.
    User(String),
    /// The sessions on one device, by device id.
    Device(String),
    Session(String),
}

#[derive(Default)]
struct Pending {
    all: Option<String>,
    users: HashMap<String, String>,
    devices: HashMap<String, String>,
    sessions: HashMap<String, String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.all.is_none()
            && self.users.is_empty()
            && self.devices.is_empty()
            && self.sessions.is_empty()
    }

    /// Why `s` is to be judged now, if an event asked.
    fn reason_for(&self, s: &SessionRecord) -> Option<&str> {
        self.sessions
            .get(&s.id)
            .or_else(|| self.devices.get(&s.device_id))
            .or_else(|| self.users.get(&s.user_id))
            .or(self.all.as_ref())
            .map(String::as_str)
    }
}

/// Requests for re-evaluation, taken by the loop.
#[derive(Default)]
pub struct Reevaluation {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl std::fmt::Debug for Reevaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reevaluation").finish_non_exhaustive()
    }
}

impl Reevaluation {
    /// Asks for the matching live sessions to be judged now; `why` goes
    /// into their audit records.
    pub fn trigger(&self, trigger: Trigger, why: &str) {
        {
            let mut p = self.lock();
            let why = why.to_owned();
            match trigger {
                Trigger::All => {
                    p.all.get_or_insert(why);
                }
                Trigger::User(id) => {
                    p.users.entry(id).or_insert(why);
                }
                Trigger::Device(id) => {
                    p.devices.entry(id).or_insert(why);
                }
                Trigger::Session(id) => {
                    p.sessions.entry(id).or_insert(why);
                }
            }
        }
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }
}

/// What a judgement decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Continue,
    StepUp(String),
    Terminate(String),
}

/// What a session rests on, read afresh.
#[derive(Debug)]
pub struct Facts<'a> {
    pub session: &'a SessionRecord,
    pub user: Option<&'a UserRecord>,
    pub device: Option<&'a DeviceRecord>,
    pub certificate: Option<&'a CertificateRecord>,
    /// The device's last posture report; `None` when it does not parse.
    pub posture: Option<&'a PostureReport>,
    /// The risk scored now.
    pub risk: &'a Risk,
    pub now: i64,
}

/// Judges one live session. The hard facts first (who and what it runs
/// as must still be valid), then the policy: the terminate band, the
/// required compliance policy, and a risk that rose into a higher band
/// than the one the session was opened in.
pub fn judge(policy: &PolicyConfig, f: &Facts<'_>) -> Judgement {
    use Judgement::{Continue, StepUp, Terminate};
    let terminate = |why: &str| Terminate(why.to_owned());
    match f.user {
        None => return terminate("user_deleted"),
        Some(u) if u.status != UserStatus::Active => return terminate("user_suspended"),
        Some(_) => {}
    }
    match f.device {
        None => return terminate("device_unknown"),
        Some(d) if d.status != DeviceStatus::Approved => return terminate("device_revoked"),
        Some(_) => {}
    }
    match f.certificate {
        None => return terminate("certificate_unknown"),
        Some(c) if c.revoked_at.is_some() => return terminate("certificate_revoked"),
        Some(c) if c.not_after <= f.now => return terminate("certificate_expired"),
        Some(_) => {}
    }
    let bands = &policy.risk.bands;
    let score = f.risk.score;
    if score >= bands.terminate {
        return Terminate(format!(
            "risk {score} is at or above the terminate band ({})",
            bands.terminate
        ));
    }
    let compliance = &policy.compliance;
    if let Some(name) = &compliance.required
        && !compliance.report_only
        && let Some(required) = compliance.policies.get(name)
    {
        let findings: Vec<String> = match f.posture {
            None => vec!["the device's posture report is unreadable".to_owned()],
            Some(p) => {
                let report = required.check(p, f.now);
                report
                    .blocking(required)
                    .map(|x| x.message.clone())
                    .collect()
            }
        };
        if !findings.is_empty() {
            let why = format!(
                "device fails compliance policy {name}: {}",
                findings.join(", ")
            );
            return match compliance.on_failure {
                OnFailure::Terminate => Terminate(why),
                OnFailure::StepUp => StepUp(why),
            };
        }
    }
    let band = |s: u8| {
        [bands.step_up, bands.reverify, bands.restricted, bands.deny]
            .iter()
            .filter(|b| s >= **b)
            .count()
    };
    if score >= bands.step_up && band(score) > band(f.session.risk) {
        return StepUp(format!(
            "risk rose from {} at login to {score}",
            f.session.risk
        ));
    }
    Continue
}

/// When `s` is next due by the clock.
fn due_at(policy: &PolicyConfig, s: &SessionRecord) -> i64 {
    let (from, risk) = s.verdict.map_or((s.created_at, s.risk), |v| (v.at, v.risk));
    from + i64::from(policy.risk.reevaluate_after(risk))
}

/// Judges live sessions until the controller stops: those an event asked
/// for at once, the others when their interval is up. `tick` is how often
/// the clock is looked at.
pub async fn run(c: Arc<Controller>, tick: Duration) {
    let mut next_list = i64::MIN;
    loop {
        tokio::select! {
            () = c.events.stopped() => return,
            () = c.reevaluation.wake.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
        let now = c.now();
        let pending = c.reevaluation.take();
        if pending.is_empty() && now < next_list {
            continue;
        }
        match pass(&c, &pending, now).await {
            Ok(next_due) => next_list = next_due.min(now + LIST_EVERY_SECS),
            Err(e) => {
                tracing::warn!(error = %e.message, "session re-evaluation failed; retrying");
                // What the events asked for is not lost.
                for (why, t) in pending.triggers() {
                    c.reevaluation.trigger(t, &why);
                }
                next_list = now;
            }
        }
    }
}

impl Pending {
    fn triggers(self) -> Vec<(String, Trigger)> {
        let mut out: Vec<(String, Trigger)> = Vec::new();
        out.extend(self.all.map(|w| (w, Trigger::All)));
        out.extend(self.users.into_iter().map(|(k, w)| (w, Trigger::User(k))));
        out.extend(
            self.devices
                .into_iter()
                .map(|(k, w)| (w, Trigger::Device(k))),
        );
        out.extend(
            self.sessions
                .into_iter()
                .map(|(k, w)| (w, Trigger::Session(k))),
        );
        out
    }
}

/// One look at the live sessions: judges those that are due or asked for.
/// Returns when the earliest remaining one is due.
async fn pass(c: &Controller, pending: &Pending, now: i64) -> Result<i64, Failure> {
    let policy = &c.config.policy.config;
    let sessions = c.store.list_sessions(Some(now)).await?;
    let mut users = Users::default();
    let mut next_due = i64::MAX;
    // A browser session has no device to judge; it ends with its user's
    // suspension or an admin's revocation, and every `/auth/verify`
    // checks it against the revocation lists.
    for s in sessions
        .iter()
        .filter(|s| s.kind == umbra_store::SessionKind::Device)
    {
        let due = due_at(policy, s);
        let why = match pending.reason_for(s) {
            Some(why) => why,
            None if due <= now => "periodic",
            None => {
                next_due = next_due.min(due);
                continue;
            }
        };
        let v = evaluate(c, &mut users, s, why, now).await?;
        let risk = v.map_or(s.risk, |v| v.risk);
        next_due = next_due.min(now + i64::from(policy.risk.reevaluate_after(risk)));
    }
    Ok(next_due)
}

/// Users and their baselines, read once per pass: a user's sessions share
/// them, and learning a baseline reads up to a month of audit records.
#[derive(Default)]
pub struct Users {
    known: HashMap<String, Option<(UserRecord, Option<Baseline>)>>,
}

impl Users {
    async fn get(
        &mut self,
        c: &Controller,
        id: &str,
        now: i64,
    ) -> Result<Option<&(UserRecord, Option<Baseline>)>, Failure> {
        if !self.known.contains_key(id) {
            let user = c.store.user_by_id(id).await?;
            self.known.insert(id.to_owned(), user.map(|u| (u, None)));
        }
        let Some(Some(entry)) = self.known.get_mut(id) else {
            return Ok(None);
        };
        if entry.1.is_none() {
            entry.1 = Some(crate::risk::baseline(c, &entry.0, now).await?);
        }
        Ok(self.known.get(id).and_then(Option::as_ref))
    }
}

/// Judges one session now and carries the outcome out. Returns the verdict
/// recorded, if it goes on.
pub async fn evaluate(
    c: &Controller,
    users: &mut Users,
    s: &SessionRecord,
    why: &str,
    now: i64,
) -> Result<Option<StoredVerdict>, Failure> {
    let policy = &c.config.policy.config;
    let known = users.get(c, &s.user_id, now).await?;
    let user = known.map(|(u, _)| u.clone());
    let baseline = known.and_then(|(_, b)| b.clone());
    let device = c.store.device(&s.device_id).await?;
    let certificate = c.store.certificate(&s.cert_serial).await?;
    let posture: Option<PostureReport> = device
        .as_ref()
        .and_then(|d| serde_json::from_str(&d.posture).ok());
    let source: IpAddr = s
        .source_ip
        .parse()
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let risk = match (&user, &posture, &baseline) {
        (Some(u), Some(p), Some(b)) => crate::risk::assess(c, u, Some(p), source, b, now),
        // The judgement ends it on the facts alone; no score is needed.
        _ => Risk {
            score: s.verdict.map_or(s.risk, |v| v.risk),
            factors: Vec::new(),
        },
    };
    let judgement = judge(
        policy,
        &Facts {
            session: s,
            user: user.as_ref(),
            device: device.as_ref(),
            certificate: certificate.as_ref(),
            posture: posture.as_ref(),
            risk: &risk,
            now,
        },
    );
    let actor = format!("user:{}", s.user_name);
    let resource = format!("session:{}", s.id);
    let factors = crate::risk::describe(&risk);
    let score = risk.score;
    let (outcome, verdict, reason) = match &judgement {
        Judgement::Terminate(why_end) => {
            if c.store
                .revoke_session(&s.id, now, &format!("reevaluation: {why_end}"))
                .await?
            {
                c.publish(&Event::SessionRevoked {
                    session: s.id.clone(),
                })
                .await?;
            }
            (Outcome::Deny, None, format!("terminate: {why_end}"))
        }
        Judgement::StepUp(why_step) => {
            // A condition that lasts asks once; the step-up it asked for
            // (an MFA after then) satisfies it.
            let since = s.verdict.and_then(|v| v.step_up_at).unwrap_or(now);
            let v = StoredVerdict {
                risk: score,
                at: now,
                step_up_at: Some(since),
            };
            (Outcome::Allow, Some(v), format!("step_up: {why_step}"))
        }
        Judgement::Continue => {
            // A step-up asked for (by an earlier judgement or a threat
            // alert) stays owed until paid, even if its cause has cleared.
            let owed = s
                .verdict
                .and_then(|v| v.step_up_at)
                .filter(|since| s.mfa_at.is_none_or(|at| at <= *since));
            let v = StoredVerdict {
                risk: score,
                at: now,
                step_up_at: owed,
            };
            (Outcome::Allow, Some(v), "continue".to_owned())
        }
    };
    if let Some(v) = verdict {
        let before = s
            .verdict
            .map_or((s.risk, None), |old| (old.risk, old.step_up_at));
        let recorded = c.store.record_session_verdict(&s.id, &v).await?;
        if recorded && before != (v.risk, v.step_up_at) {
            c.publish(&Event::SessionVerdict(SessionVerdict {
                session: s.id.clone(),
                risk: v.risk,
                step_up_at: v.step_up_at,
            }))
            .await?;
        }
    }
    c.metrics.reevaluated(match judgement {
        Judgement::Continue => crate::metrics::Reevaluated::Continue,
        Judgement::StepUp(_) => crate::metrics::Reevaluated::StepUp,
        Judgement::Terminate(_) => crate::metrics::Reevaluated::Terminate,
    });
    c.audit_event(
        &actor,
        None,
        "session.reevaluate",
        &resource,
        outcome,
        &format!("{reason}; trigger: {why}; risk {score} ({factors})"),
        "",
    )
    .await?;
    Ok(verdict)
}

/// Asks every live session of the user for a step-up now (a threat
/// alert's response), keeping each session's current risk. Returns the
/// sessions asked.
pub async fn require_step_up(
    c: &Controller,
    user_id: &str,
    now: i64,
) -> Result<Vec<String>, Failure> {
    let mut asked = Vec::new();
    for s in c.store.list_sessions(Some(now)).await? {
        if s.user_id != user_id || s.kind != umbra_store::SessionKind::Device {
            continue;
        }
        let v = StoredVerdict {
            risk: s.verdict.map_or(s.risk, |v| v.risk),
            at: now,
            step_up_at: Some(now),
        };
        if c.store.record_session_verdict(&s.id, &v).await? {
            c.publish(&Event::SessionVerdict(SessionVerdict {
                session: s.id.clone(),
                risk: v.risk,
                step_up_at: v.step_up_at,
            }))
            .await?;
            asked.push(s.id);
        }
    }
    Ok(asked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_policy::decision::RiskFactor;

    const NOW: i64 = 1_700_000_000;

    fn session(risk: u8) -> SessionRecord {
        SessionRecord {
            id: "s1".into(),
            kind: umbra_store::SessionKind::Device,
            user_id: "u1".into(),
            user_name: "alice".into(),
            device_id: "d1".into(),
            cert_serial: "c1".into(),
            source_ip: "10.0.0.1".into(),
            risk,
            created_at: NOW - 100,
            expires_at: NOW + 3600,
            revoked_at: None,
            revoked_reason: None,
            mfa_at: Some(NOW - 100),
            verdict: None,
        }
    }

    fn user(status: UserStatus) -> UserRecord {
        UserRecord {
            id: "u1".into(),
            name: "alice".into(),
            role: umbra_proto::api::Role::User,
            status,
            groups: vec![],
            password_hash: String::new(),
            sealed_totp_secret: String::new(),
            totp_last_step: None,
            failed_logins: 0,
            locked_until: None,
            created_at: NOW - 1000,
            updated_at: NOW - 1000,
        }
    }

    fn device(status: DeviceStatus) -> DeviceRecord {
        DeviceRecord {
            id: "d1".into(),
            user_id: "u1".into(),
            user_name: "alice".into(),
            status,
            hostname: "h".into(),
            posture: String::new(),
            created_at: NOW - 1000,
            updated_at: NOW - 1000,
        }
    }

    fn cert(not_after: i64, revoked: bool) -> CertificateRecord {
        CertificateRecord {
            serial: "c1".into(),
            device_id: "d1".into(),
            not_before: NOW - 1000,
            not_after,
            created_at: NOW - 1000,
            revoked_at: revoked.then_some(NOW - 1),
            revoked_reason: None,
        }
    }

    fn posture(firewall: bool) -> PostureReport {
        PostureReport {
            device_id: "d1".into(),
            hostname: "h".into(),
            os_version: "10.0.22000".into(),
            patch_level: "2023-11-01".into(),
            antivirus_status: true,
            firewall_enabled: firewall,
            disk_encryption: true,
            last_scan: "2023-11-14T00:00:00Z".into(),
            measured: None,
        }
    }

    struct World {
        session: SessionRecord,
        user: Option<UserRecord>,
        device: Option<DeviceRecord>,
        cert: Option<CertificateRecord>,
        posture: Option<PostureReport>,
        risk: Risk,
    }

    fn healthy() -> World {
        World {
            session: session(10),
            user: Some(user(UserStatus::Active)),
            device: Some(device(DeviceStatus::Approved)),
            cert: Some(cert(NOW + 3600, false)),
            posture: Some(posture(true)),
            risk: Risk {
                score: 10,
                factors: vec![RiskFactor {
                    name: "new_network".into(),
                    points: 10,
                }],
            },
        }
    }

    fn judge_in(policy: &PolicyConfig, w: &World) -> Judgement {
        judge(
            policy,
            &Facts {
                session: &w.session,
                user: w.user.as_ref(),
                device: w.device.as_ref(),
                certificate: w.cert.as_ref(),
                posture: w.posture.as_ref(),
                risk: &w.risk,
                now: NOW,
            },
        )
    }

    fn ends(j: Judgement, needle: &str) {
        match j {
            Judgement::Terminate(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected terminate ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_session_continues() {
        assert_eq!(
            judge_in(&PolicyConfig::default(), &healthy()),
            Judgement::Continue
        );
    }

    #[test]
    fn lost_identities_terminate() {
        let p = PolicyConfig::default();
        let mut w = healthy();
        w.user = Some(user(UserStatus::Suspended));
        ends(judge_in(&p, &w), "user_suspended");
        w = healthy();
        w.user = None;
        ends(judge_in(&p, &w), "user_deleted");
        w = healthy();
        w.device = Some(device(DeviceStatus::Revoked));
        ends(judge_in(&p, &w), "device_revoked");
        w = healthy();
        w.cert = Some(cert(NOW, false));
        ends(judge_in(&p, &w), "certificate_expired");
        w = healthy();
        w.cert = Some(cert(NOW + 10, true));
        ends(judge_in(&p, &w), "certificate_revoked");
        w = healthy();
        w.cert = None;
        ends(judge_in(&p, &w), "certificate_unknown");
    }

    #[test]
    fn the_terminate_band_ends_and_a_rise_into_a_higher_band_steps_up() {
        let p = PolicyConfig::default();
        let mut w = healthy();
        w.risk.score = 95;
        ends(judge_in(&p, &w), "terminate band");
        w.risk.score = 35;
        assert!(matches!(judge_in(&p, &w), Judgement::StepUp(why) if why.contains("from 10")));
        // Opened in that band already (its login passed MFA for it).
        w.session = session(32);
        assert_eq!(judge_in(&p, &w), Judgement::Continue);
        w.risk.score = 55;
        assert!(matches!(judge_in(&p, &w), Judgement::StepUp(_)));
    }

    fn required_firewall(on_failure: &str, report_only: bool) -> PolicyConfig {
        PolicyConfig::from_toml(&format!(
            "[compliance]\nrequired = \"fw\"\non_failure = \"{on_failure}\"\n\
             report_only = {report_only}\n\
             [compliance.policies.fw]\nrequire_firewall = true\n"
        ))
        .expect("policy")
    }

    #[test]
    fn a_device_out_of_compliance_ends_or_steps_up_as_the_policy_says() {
        let mut w = healthy();
        assert_eq!(
            judge_in(&required_firewall("terminate", false), &w),
            Judgement::Continue
        );
        w.posture = Some(posture(false));
        ends(
            judge_in(&required_firewall("terminate", false), &w),
            "Firewall is disabled",
        );
        assert!(matches!(
            judge_in(&required_firewall("step_up", false), &w),
            Judgement::StepUp(why) if why.contains("compliance policy fw")
        ));
        assert_eq!(
            judge_in(&required_firewall("terminate", true), &w),
            Judgement::Continue,
            "report-only never ends a session"
        );
        w.posture = None;
        ends(
            judge_in(&required_firewall("terminate", false), &w),
            "unreadable",
        );
    }

    #[test]
    fn sessions_fall_due_on_their_risk_interval() {
        let p = PolicyConfig::default();
        let mut s = session(10);
        assert_eq!(due_at(&p, &s), s.created_at + 600);
        s.verdict = Some(StoredVerdict {
            risk: 85,
            at: NOW,
            step_up_at: None,
        });
        assert_eq!(due_at(&p, &s), NOW + 60);
        s.verdict = Some(StoredVerdict {
            risk: 65,
            at: NOW,
            step_up_at: None,
        });
        assert_eq!(due_at(&p, &s), NOW + 180);
        s.verdict = Some(StoredVerdict {
            risk: 30,
            at: NOW,
            step_up_at: None,
        });
        assert_eq!(due_at(&p, &s), NOW + 300);
    }
}
