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
    Check, Context, Decision, DecisionInput, DecisionPoint, Device, Outcome, RegoPolicy, Request,
    Risk, Subject,
};
use umbra_policy::rego::{PolicySetBuilder, RegoVersion};
use umbra_policy::rules::PolicyConfig;
use umbra_proto::PostureReport;
use umbra_proto::control::{Grant, PolicyBundle};
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
        let point = Arc::new(point(&compiled, grants));
        Self {
            compiled,
            point,
            revision: bundle.revision,
        }
    }

    /// The same policy with other grants.
    pub fn with_grants(&self, grants: &BTreeMap<String, Grant>) -> Self {
        Self {
            compiled: self.compiled.clone(),
            point: Arc::new(point(&self.compiled, grants)),
            revision: self.revision,
        }
    }

    /// The coarse check for an SPA knock, which carries no request.
    pub fn may_allow(&self, user: &str, groups: &[String], service: &str) -> bool {
        self.compiled.unusable.is_none() && self.point.may_allow(user, groups, service)
    }

    /// Decides one access by a session.
    pub fn decide(&self, ask: &Ask<'_>, posture: Option<&PostureReport>) -> Decision {
        let c = ask.claims;
        let age = |t: i64| u64::try_from(ask.now.saturating_sub(t)).ok();
        self.run(DecisionInput {
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
                score: c.risk,
                factors: Vec::new(),
            },
        })
    }

    /// Decides one access by a browser session (the controller's login
    /// cookie): a user with no device, so rules that ask for a posture or
    /// a SPIFFE ID find none.
    pub fn decide_browser(&self, claims: &BrowserClaims, ask: &BrowserAsk<'_>) -> Decision {
        let age = |t: i64| u64::try_from(ask.now.saturating_sub(t)).ok();
        self.run(DecisionInput {
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
                score: claims.risk,
                factors: Vec::new(),
            },
        })
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
        assert!(p.decide(&ask(&c, "wiki"), None).allowed());
        let d = p.decide(&ask(&c, "payroll"), None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(explain(&d).contains("no rule grants user alice access to payroll"));
        assert!(p.may_allow("alice", &["eng".into()], "wiki"));
        assert!(!p.may_allow("alice", &[], "wiki"));
        let none = p.with_grants(&BTreeMap::new());
        assert!(!none.decide(&ask(&c, "wiki"), None).allowed());
    }

    #[test]
    fn a_stale_mfa_at_the_step_up_band_asks_for_a_step_up() {
        let p = GatewayPolicy::new(&PolicyBundle::default(), &grants());
        let stale = claims(35, Some(NOW - 3600));
        let d = p.decide(&ask(&stale, "wiki"), None);
        assert!(d.needs_step_up(), "{d:?}");
        let fresh = claims(35, Some(NOW - 5));
        assert!(p.decide(&ask(&fresh, "wiki"), None).allowed());
        let never = claims(35, None);
        assert!(p.decide(&ask(&never, "wiki"), None).needs_step_up());
        // A token from the future (skew) is fresh, not an error.
        let ahead = claims(35, Some(NOW + 30));
        assert!(p.decide(&ask(&ahead, "wiki"), None).allowed());
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
        let d = p.decide(&admin, None);
        assert!(d.needs_step_up(), "{d:?}");
        assert_eq!(d.matched_rule.as_deref(), Some("wiki-admin"));
        // Elsewhere on the wiki the grant is enough.
        assert!(p.decide(&ask(&c, "wiki"), None).allowed());

        let broken = PolicyBundle {
            native: "[[rule]]\nname = 1".into(),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&broken, &grants());
        let d = p.decide(&ask(&c, "wiki"), None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.failing_checks[0].name, "policy_unusable");
        assert!(!p.may_allow("alice", &["eng".into()], "wiki"));
        let bad_rego = PolicyBundle {
            modules: BTreeMap::from([("u".into(), "package umbra.authz\ndecision := {".into())]),
            ..PolicyBundle::default()
        };
        let p = GatewayPolicy::new(&bad_rego, &grants());
        assert!(!p.decide(&ask(&c, "wiki"), None).allowed());
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
        assert!(p.decide(&ask(&c, "wiki"), None).allowed());
        let mut post = ask(&c, "wiki");
        post.method = Some("POST");
        let d = p.decide(&post, None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(explain(&d).contains("writes are off"), "{}", explain(&d));
        // Both must allow: Rego cannot grant what no rule grants.
        assert!(!p.decide(&ask(&c, "payroll"), None).allowed());
    }
}
