//! The gateway's decision point: the controller's policy, decided here on
//! every request and stream without a round trip.
//!
//! Built from the snapshot's [`PolicyBundle`] (the native policy file and,
//! when Umbra's own package is stored, the Rego modules and data) plus the
//! grants, which read as allow rules (`umbra_policy::access`). A bundle that
//! does not parse or compile here — it did at the controller, so this means
//! a version skew or corruption — fails closed: every decision denies, and
//! says why in the audit trail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use umbra_policy::access::with_grants;
use umbra_policy::decision::{
    Check, Condition, Context, Decision, DecisionInput, DecisionPoint, Device, Outcome, RegoPolicy,
    Request, Risk, Subject,
};
use umbra_policy::rego::{PolicySetBuilder, RegoVersion};
use umbra_policy::rules::PolicyConfig;
use umbra_proto::PostureReport;
use umbra_proto::control::{Grant, PolicyBundle, SessionVerdict};
use umbra_proto::token::{BrowserClaims, SessionClaims};

/// What the peer is told when a fresh MFA would let the request through
/// (with the code `step_up_required`); the audit record says which rule
/// or risk band asked.
pub const STEP_UP_MESSAGE: &str =
    "this request needs a fresh MFA: run `umbra agent step-up`, then retry";

/// The `WWW-Authenticate` challenge on a step-up answer.
pub const STEP_UP_CHALLENGE: &str = "Umbra error=\"step_up_required\"";

/// What the bundle compiled to, kept to rebuild the decision point when a
/// grant changes (compiling Rego again for that would be waste).
#[derive(Debug, Default)]
struct Compiled {
    native: PolicyConfig,
    rego: Option<RegoPolicy>,
    /// Why the bundle is unusable; `Some` denies everything.
    unusable: Option<String>,
}

/// The decision point in force and what it was built from.
#[derive(Debug, Default)]
pub struct GatewayPolicy {
    compiled: Arc<Compiled>,
    pub point: Arc<DecisionPoint>,
    /// With `[compliance] on_failure = "step_up"`: the same policy without
    /// the required compliance policy, which decides for a device that
    /// fails it (and the step-up is then asked on top).
    excused: Option<Arc<DecisionPoint>>,
    /// The store revision of the Rego part.
    pub revision: i64,
}

fn compile(bundle: &PolicyBundle) -> Compiled {
    let native = if bundle.native.is_empty() {
        PolicyConfig::default()
    } else {
        match PolicyConfig::from_toml(&bundle.native) {
            Ok(c) => c,
            Err(e) => return unusable(format!("the native policy does not parse here: {e}")),
        }
    };
    let rego = if bundle.modules.is_empty() {
        None
    } else {
        let mut b = PolicySetBuilder::default();
        let built = bundle
            .modules
            .iter()
            .try_for_each(|(id, raw)| b.add_module(id, raw, RegoVersion::Auto).map(drop))
            .and_then(|()| {
                if bundle.data.is_object() {
                    b.add_data("data", bundle.data.clone())
                } else {
                    Ok(())
                }
            })
            .and_then(|()| b.build());
        match built {
            Ok(set) => Some(RegoPolicy {
                set,
                query: umbra_policy::decision::DECISION_QUERY.to_owned(),
                exclusive: false,
            }),
            Err(e) => return unusable(format!("the Rego policy does not compile here: {e}")),
        }
    };
    Compiled {
        native,
        rego,
        unusable: None,
    }
}

fn unusable(reason: String) -> Compiled {
    tracing::error!(%reason, "policy unusable: every request is denied until the next snapshot");
    Compiled {
        unusable: Some(reason),
        ..Compiled::default()
    }
}

impl GatewayPolicy {
    pub fn new(bundle: &PolicyBundle, grants: &BTreeMap<String, Grant>) -> Self {
        let compiled = Arc::new(compile(bundle));
        Self {
            point: Arc::new(point(&compiled, grants)),
            excused: excused_point(&compiled, grants).map(Arc::new),
            compiled,
            revision: bundle.revision,
        }
    }

    /// The same policy with other grants.
    pub fn with_grants(&self, grants: &BTreeMap<String, Grant>) -> Self {
        Self {
            compiled: self.compiled.clone(),
            point: Arc::new(point(&self.compiled, grants)),
            excused: excused_point(&self.compiled, grants).map(Arc::new),
            revision: self.revision,
        }
    }

    /// The coarse check for an SPA knock, which carries no request.
    pub fn may_allow(&self, user: &str, groups: &[String], service: &str) -> bool {
        self.compiled.unusable.is_none() && self.point.may_allow(user, groups, service)
    }

    /// Decides one access by a session, with its device's last posture and
    /// the controller's latest verdict on it: the verdict's risk replaces
    /// the token's login-time score, and a step-up it owes holds every
    /// access until the token shows an MFA since.
    pub fn decide(
        &self,
        ask: &Ask<'_>,
        posture: Option<&PostureReport>,
        verdict: Option<&SessionVerdict>,
    ) -> Decision {
        let mut d = self.decide_policy(ask, posture, verdict);
        hold_for_step_up(&mut d, step_up_owed(ask.claims, verdict));
        d
    }

    fn decide_policy(
        &self,
        ask: &Ask<'_>,
        posture: Option<&PostureReport>,
        verdict: Option<&SessionVerdict>,
    ) -> Decision {
        let risk_now = verdict.map(|v| v.risk);
        let c = ask.claims;
        let age = |t: i64| u64::try_from(ask.now.saturating_sub(t)).ok();
        let input = DecisionInput {
            subject: Subject {
                user: Some(c.sub.clone()),
                groups: c.groups.clone(),
                device: Some(c.device.clone()),
                spiffe_id: Some(ask.spiffe_id.to_owned()),
                service: None,
            },
            device: Some(Device {
                posture: posture.cloned(),
            }),
            request: Request {
                service: ask.service.to_owned(),
                method: ask.method.map(str::to_owned),
                path: ask.path.map(str::to_owned),
                port: ask.port,
                sensitivity: None,
            },
            context: Context {
                source_address: Some(ask.source),
                now_s: ask.now,
                session_age_s: age(c.iat),
                // A time in the future (clock skew) counts as just now.
                mfa_age_s: c.mfa_at.map(|t| age(t).unwrap_or(0)),
            },
            risk: Risk {
                score: risk_now.unwrap_or(c.risk),
                factors: Vec::new(),
            },
        };
        // A device failing the required compliance policy, where the policy
        // says its sessions step up rather than end: decided without that
        // policy, then held until the step-up the controller's verdict asks
        // for is paid (before the verdict arrives, held all the same).
        if let Some(excused) = &self.excused
            && self.compiled.unusable.is_none()
            && let Some(findings) = self.fails_required(posture, ask.now)
        {
            let mut d = excused.decide(&input);
            let paid = verdict
                .and_then(|v| v.step_up_at)
                .is_some_and(|since| c.mfa_at.is_some_and(|at| at > since));
            if d.outcome != Outcome::Deny && !paid {
                d.outcome = Outcome::Conditional;
                if !d.conditions.contains(&Condition::StepUpMfa) {
                    d.conditions.insert(0, Condition::StepUpMfa);
                }
                d.failing_checks.extend(findings);
                d.reasons.push(
                    "the device fails the required compliance policy: a fresh MFA is owed"
                        .to_owned(),
                );
            }
            return d;
        }
        self.run(input)
    }

    /// Decides one access by a browser session (the controller's login
    /// cookie): a user with no device, so rules that ask for a posture or
    /// a SPIFFE ID find none. The controller's verdict on the session
    /// counts as for an agent's.
    pub fn decide_browser(
        &self,
        claims: &BrowserClaims,
        ask: &BrowserAsk<'_>,
        verdict: Option<&SessionVerdict>,
    ) -> Decision {
        let age = |t: i64| u64::try_from(ask.now.saturating_sub(t)).ok();
        let mut d = self.run(DecisionInput {
            subject: Subject {
                user: Some(claims.sub.clone()),
                groups: claims.groups.clone(),
                ..Subject::default()
            },
            device: None,
            request: Request {
                service: ask.service.to_owned(),
                method: Some(ask.method.to_owned()),
                path: Some(ask.path.to_owned()),
                port: None,
                sensitivity: None,
            },
            context: Context {
                source_address: Some(ask.source),
                now_s: ask.now,
                session_age_s: age(claims.iat),
                mfa_age_s: Some(age(claims.mfa_at).unwrap_or(0)),
            },
            risk: Risk {
                score: verdict.map_or(claims.risk, |v| v.risk),
                factors: Vec::new(),
            },
        });
        hold_for_step_up(&mut d, owed_since(Some(claims.mfa_at), verdict));
        d
    }

    fn run(&self, input: DecisionInput) -> Decision {
        if let Some(reason) = &self.compiled.unusable {
            return Decision {
                outcome: Outcome::Deny,
                conditions: Vec::new(),
                matched_rule: None,
                failing_checks: vec![Check::new("policy_unusable", reason.clone())],
                report_only: Vec::new(),
                risk: input.risk,
                reasons: vec![reason.clone()],
            };
        }
        self.point.decide(&input)
    }

    /// The required policy's blocking findings for `posture`, if it fails.
    fn fails_required(&self, posture: Option<&PostureReport>, now: i64) -> Option<Vec<Check>> {
        let compliance = &self.compiled.native.compliance;
        let name = compliance.required.as_ref()?;
        let policy = compliance.policies.get(name)?;
        let Some(posture) = posture else {
            return Some(vec![Check::new(
                format!("compliance.{name}"),
                "no posture report from this device",
            )]);
        };
        let report = policy.check(posture, now);
        let findings: Vec<Check> = report
            .blocking(policy)
            .map(|f| {
                Check::new(
                    format!("compliance.{name}.{}", f.check.as_str()),
                    f.message.clone(),
                )
            })
            .collect();
        (!findings.is_empty()).then_some(findings)
    }
}

/// When the controller's verdict owes a step-up this token has not yet
/// paid (no MFA after the time it names): that time.
pub fn step_up_owed(claims: &SessionClaims, verdict: Option<&SessionVerdict>) -> Option<i64> {
    owed_since(claims.mfa_at, verdict)
}

/// [`step_up_owed`] for a token's MFA time.
pub fn owed_since(mfa_at: Option<i64>, verdict: Option<&SessionVerdict>) -> Option<i64> {
    let since = verdict?.step_up_at?;
    match mfa_at {
        // Strictly after: an MFA in the very second the condition arose
        // may have come before it.
        Some(at) if at > since => None,
        _ => Some(since),
    }
}

/// Holds an access that is not denied until the step-up the controller
/// owes `since` is paid.
fn hold_for_step_up(d: &mut Decision, since: Option<i64>) {
    let Some(since) = since else {
        return;
    };
    if d.outcome == Outcome::Deny {
        return;
    }
    d.outcome = Outcome::Conditional;
    if !d.conditions.contains(&Condition::StepUpMfa) {
        d.conditions.insert(0, Condition::StepUpMfa);
    }
    d.failing_checks.push(Check::new(
        "session_step_up",
        format!("the controller's re-evaluation asks for an MFA since {since}"),
    ));
    d.reasons
        .push("re-evaluation: a fresh MFA is owed".to_owned());
}

/// The decision point without the required compliance policy, when a
/// device failing it steps up instead of being refused.
fn excused_point(compiled: &Compiled, grants: &BTreeMap<String, Grant>) -> Option<DecisionPoint> {
    let compliance = &compiled.native.compliance;
    if compliance.required.is_none()
        || compliance.report_only
        || compliance.on_failure != umbra_policy::compliance::OnFailure::StepUp
    {
        return None;
    }
    let mut native = compiled.native.clone();
    native.compliance.required = None;
    Some(DecisionPoint {
        config: with_grants(&native, grants.values()),
        rego: compiled.rego.clone(),
    })
}

/// One HTTP access by a browser session.
#[derive(Clone, Copy, Debug)]
pub struct BrowserAsk<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub source: IpAddr,
    pub now: i64,
}

fn point(compiled: &Compiled, grants: &BTreeMap<String, Grant>) -> DecisionPoint {
    DecisionPoint {
        config: with_grants(&compiled.native, grants.values()),
        rego: compiled.rego.clone(),
    }
}

/// What a live connection was opened for, to decide it again while it
/// lasts (a WebSocket, a TCP tunnel).
#[derive(Clone, Debug)]
pub struct Target {
    pub service: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub port: Option<u16>,
}

impl Target {
    pub fn ask<'a>(
        &'a self,
        claims: &'a SessionClaims,
        spiffe_id: &'a str,
        source: IpAddr,
        now: i64,
    ) -> Ask<'a> {
        Ask {
            claims,
            spiffe_id,
            service: &self.service,
            method: self.method.as_deref(),
            path: self.path.as_deref(),
            port: self.port,
            source,
            now,
        }
    }
}

/// One access to decide.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    pub claims: &'a SessionClaims,
    /// The device certificate's SPIFFE ID.
    pub spiffe_id: &'a str,
    pub service: &'a str,
    /// `None` for a TCP stream.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub port: Option<u16>,
    pub source: IpAddr,
    pub now: i64,
}

/// The decision as one audit line: why, what was only reported, what
/// comes with it, and the risk.
pub fn explain(d: &Decision) -> String {
    let mut parts: Vec<String> = d.reasons.clone();
    if !d.report_only.is_empty() {
        let findings: Vec<&str> = d.report_only.iter().map(|c| c.message.as_str()).collect();
        parts.push(format!("report-only: {}", findings.join(", ")));
    }
    if !d.conditions.is_empty() {
        let conditions: Vec<&str> = d.conditions.iter().map(|c| c.as_str()).collect();
        parts.push(format!("conditions: {}", conditions.join(", ")));
    }
    parts.push(format!("risk {}", d.risk.score));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_proto::token::Confirmation;

    const NOW: i64 = 1_700_000_000;

    fn claims(risk: u8, mfa_at: Option<i64>) -> SessionClaims {
        SessionClaims {
            iss: "umbra".into(),
            sub: "alice".into(),
            sid: "s1".into(),
            device: "d1".into(),
            groups: vec!["eng".into()],
            risk,
            iat: NOW - 100,
            nbf: NOW - 100,
            exp: NOW + 3600,
            cnf: Confirmation {
                x5t_s256: "x".into(),
            },
            mfa_at,
        }
    }

    fn ask<'a>(c: &'a SessionClaims, service: &'a str) -> Ask<'a> {
        Ask {
            claims: c,
            spiffe_id: "spiffe://umbra.local/device/d1",
            service,
            method: Some("GET"),
            path: Some("/"),
            port: None,
            source: "127.0.0.1".parse().expect("ip"),
            now: NOW,
        }
    }

    fn grants() -> BTreeMap<String, Grant> {
        let g = Grant {
            service: "wiki".into(),
            allow_users: vec![],
            allow_groups: vec!["eng".into()],
        };
        BTreeMap::from([(g.service.clone(), g)])
    }

    #[test]
    fn grants_alone_allow_and_default_deny() {
        let p = GatewayPolicy::new(&PolicyBundle::default(), &grants());
        let c = claims(5, Some(NOW - 10));
        assert!(p.decide(&ask(&c, "wiki"), None, None).allowed());
        let d = p.decide(&ask(&c, "payroll"), None, None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(explain(&d).contains("no rule grants user alice access to payroll"));
        assert!(p.may_allow("alice", &["eng".into()], "wiki"));
        assert!(!p.may_allow("alice", &[], "wiki"));
        let none = p.with_grants(&BTreeMap::new());
        assert!(!none.decide(&ask(&c, "wiki"), None, None).allowed());
    }

    #[test]
    fn a_stale_mfa_at_the_step_up_band_asks_for_a_step_up() {
        let p = GatewayPolicy::new(&PolicyBundle::default(), &grants());
        let stale = claims(35, Some(NOW - 3600));
        let d = p.decide(&ask(&stale, "wiki"), None, None);
        assert!(d.needs_step_up(), "{d:?}");
        let fresh = claims(35, Some(NOW - 5));
        assert!(p.decide(&ask(&fresh, "wiki"), None, None).allowed());
        let never = claims(35, None);
        assert!(p.decide(&ask(&never, "wiki"), None, None).needs_step_up());
        // A token from the future (skew) is fresh, not an error.
        let ahead = claims(35, Some(NOW + 30));
        assert!(p.decide(&ask(&ahead, "wiki"), None, None).allowed());
    }

    #[test]
    fn a_native_rule_with_an_mfa_window_steps_up_and_a_bad_bundle_denies() {
        let bundle = PolicyBundle {
            native: r#"
                [[rule]]
                name = "wiki-admin"
                priority = 10
                effect = "allow"
                groups = ["eng"]
                services = ["wiki"]
                paths = ["/admin"]
                max_mfa_age_seconds = 60
                "#
            .into(),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&bundle, &grants());
        let c = claims(5, Some(NOW - 600));
        let mut admin = ask(&c, "wiki");
        admin.path = Some("/admin/users");
        let d = p.decide(&admin, None, None);
        assert!(d.needs_step_up(), "{d:?}");
        assert_eq!(d.matched_rule.as_deref(), Some("wiki-admin"));
        // Elsewhere on the wiki the grant is enough.
        assert!(p.decide(&ask(&c, "wiki"), None, None).allowed());

        let broken = PolicyBundle {
            native: "[[rule]]\nname = 1".into(),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&broken, &grants());
        let d = p.decide(&ask(&c, "wiki"), None, None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.failing_checks[0].name, "policy_unusable");
        assert!(!p.may_allow("alice", &["eng".into()], "wiki"));
        let bad_rego = PolicyBundle {
            modules: BTreeMap::from([("u".into(), "package umbra.authz\ndecision := {".into())]),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&bad_rego, &grants());
        assert!(!p.decide(&ask(&c, "wiki"), None, None).allowed());
    }

    #[test]
    fn umbras_rego_decides_beside_the_grants() {
        let bundle = PolicyBundle {
            modules: BTreeMap::from([(
                "umbra".into(),
                r#"package umbra.authz
import rego.v1
decision := {"allow": true, "reasons": ["read only"]} if input.request.method == "GET"
decision := {"allow": false, "reasons": ["writes are off"]} if input.request.method != "GET"
"#
                .into(),
            )]),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&bundle, &grants());
        let c = claims(5, Some(NOW));
        assert!(p.decide(&ask(&c, "wiki"), None, None).allowed());
        let mut post = ask(&c, "wiki");
        post.method = Some("POST");
        let d = p.decide(&post, None, None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(explain(&d).contains("writes are off"), "{}", explain(&d));
        // Both must allow: Rego cannot grant what no rule grants.
        assert!(!p.decide(&ask(&c, "payroll"), None, None).allowed());
    }

    #[test]
    fn the_controllers_verdict_sets_the_risk_and_holds_access_until_a_step_up() {
        let p = GatewayPolicy::new(&PolicyBundle::default(), &grants());
        let c = claims(5, Some(NOW - 50));
        let verdict = |risk, step_up_at| SessionVerdict {
            session: "s1".into(),
            risk,
            step_up_at,
        };
        // The verdict's risk replaces the token's: at 85, new access is denied.
        let high = verdict(85, None);
        let d = p.decide(&ask(&c, "wiki"), None, Some(&high));
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.risk.score, 85);
        // A step-up owed since after the token's MFA holds the access ...
        let owed = verdict(5, Some(NOW - 10));
        let d = p.decide(&ask(&c, "wiki"), None, Some(&owed));
        assert!(d.needs_step_up(), "{d:?}");
        assert!(d.failing_checks.iter().any(|c| c.name == "session_step_up"));
        // ... and a token whose MFA is after it passes.
        let stepped = claims(5, Some(NOW - 9));
        assert!(
            p.decide(&ask(&stepped, "wiki"), None, Some(&owed))
                .allowed()
        );
        // A denial stays a denial: a step-up cannot grant a service.
        assert_eq!(
            p.decide(&ask(&c, "payroll"), None, Some(&owed)).outcome,
            Outcome::Deny
        );
        assert_eq!(step_up_owed(&c, Some(&owed)), Some(NOW - 10));
        assert_eq!(step_up_owed(&stepped, Some(&owed)), None);
        assert_eq!(step_up_owed(&c, None), None);
    }

    #[test]
    fn a_device_failing_required_compliance_steps_up_when_the_policy_says_so() {
        let bundle = |on_failure: &str| PolicyBundle {
            native: format!(
                "[compliance]\nrequired = \"fw\"\non_failure = \"{on_failure}\"\n\
                 [compliance.policies.fw]\nrequire_firewall = true\n"
            ),
            ..PolicyBundle::default()
        };
        let posture = |firewall: bool| PostureReport {
            device_id: "d1".into(),
            hostname: "h".into(),
            os_version: "10.0.22000".into(),
            patch_level: "2023-11-01".into(),
            antivirus_status: true,
            firewall_enabled: firewall,
            disk_encryption: true,
            last_scan: "2023-11-14T00:00:00Z".into(),
            measured: None,
        };
        let c = claims(5, Some(NOW - 50));
        let terminate = GatewayPolicy::new(&bundle("terminate"), &grants());
        assert!(
            terminate
                .decide(&ask(&c, "wiki"), Some(&posture(true)), None)
                .allowed()
        );
        assert_eq!(
            terminate
                .decide(&ask(&c, "wiki"), Some(&posture(false)), None)
                .outcome,
            Outcome::Deny
        );
        let step_up = GatewayPolicy::new(&bundle("step_up"), &grants());
        assert!(
            step_up
                .decide(&ask(&c, "wiki"), Some(&posture(true)), None)
                .allowed()
        );
        // Held before the controller's verdict, and while it is unpaid.
        let d = step_up.decide(&ask(&c, "wiki"), Some(&posture(false)), None);
        assert!(d.needs_step_up(), "{d:?}");
        assert!(
            d.failing_checks
                .iter()
                .any(|x| x.name == "compliance.fw.firewall"),
            "{d:?}"
        );
        let owed = SessionVerdict {
            session: "s1".into(),
            risk: 5,
            step_up_at: Some(NOW - 10),
        };
        assert!(
            step_up
                .decide(&ask(&c, "wiki"), Some(&posture(false)), Some(&owed))
                .needs_step_up()
        );
        // Paid: the failing device goes on; an ungranted service stays denied.
        let stepped = claims(5, Some(NOW - 5));
        assert!(
            step_up
                .decide(&ask(&stepped, "wiki"), Some(&posture(false)), Some(&owed))
                .allowed()
        );
        assert_eq!(
            step_up
                .decide(
                    &ask(&stepped, "payroll"),
                    Some(&posture(false)),
                    Some(&owed)
                )
                .outcome,
            Outcome::Deny
        );
    }
}
