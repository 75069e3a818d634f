//! Grants — the admin API's per-service allow lists — as native rules.
//!
//! `umbra admin service create NAME --allow-user U --allow-group G` says
//! "U and members of G may reach NAME". The decision point reads each grant
//! as an allow rule named `grant:NAME` at [`GRANT_PRIORITY`], after the
//! native policy file's rules: a file rule with a lower number (a deny, or
//! an allow with conditions such as a compliance level) is tried first, and
//! a grant only lets through what no earlier rule decided. Default deny
//! stays: a service without a grant or a rule is refused.

use umbra_proto::control::Grant;

use crate::rules::{Effect, Names, PolicyConfig, Rule, Subjects};

/// Where grants sit among the rules (lower numbers are tried first).
pub const GRANT_PRIORITY: i64 = 1_000_000;

/// The allow rule a grant stands for. Names are exact: a `*` in a grant is
/// a user called `*`, not a wildcard.
pub fn grant_rule(g: &Grant) -> Rule {
    Rule {
        name: format!("grant:{}", g.service),
        priority: GRANT_PRIORITY,
        effect: Effect::Allow,
        subjects: Subjects::Users {
            users: Some(Names::List(g.allow_users.clone())),
            groups: g.allow_groups.clone(),
            spiffe_ids: Vec::new(),
        },
        services: Names::List(vec![g.service.clone()]),
        methods: None,
        paths: None,
        ports: None,
        device_compliance: None,
        max_risk: None,
        max_mfa_age_seconds: None,
        time_windows: None,
        source_networks: None,
    }
}

/// `config` with `grants` added as rules.
pub fn with_grants<'a>(
    config: &PolicyConfig,
    grants: impl IntoIterator<Item = &'a Grant>,
) -> PolicyConfig {
    let mut out = config.clone();
    out.rules.extend(grants.into_iter().map(grant_rule));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Context, DecisionInput, DecisionPoint, Outcome, Request, Subject};

    fn input(user: &str, groups: &[&str], service: &str) -> DecisionInput {
        DecisionInput {
            subject: Subject {
                user: Some(user.into()),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..Subject::default()
            },
            request: Request {
                service: service.into(),
                method: Some("GET".into()),
                path: Some("/".into()),
                ..Request::default()
            },
            context: Context {
                now_s: 1_700_000_000,
                mfa_age_s: Some(0),
                ..Context::default()
            },
            ..DecisionInput::default()
        }
    }

    fn billing() -> Grant {
        Grant {
            service: "billing".into(),
            allow_users: vec!["alice".into()],
            allow_groups: vec!["finance".into()],
        }
    }

    #[test]
    fn users_and_groups_are_granted_and_everything_else_denied() {
        let point = DecisionPoint::new(with_grants(&PolicyConfig::default(), [&billing()]));
        let decide = |u, g: &[&str], s| point.decide(&input(u, g, s));
        let d = decide("alice", &[], "billing");
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.matched_rule.as_deref(), Some("grant:billing"));
        assert!(decide("bob", &["eng", "finance"], "billing").allowed());
        assert!(!decide("bob", &[], "billing").allowed());
        assert!(!decide("alice", &[], "payroll").allowed());
        // Names are exact: no prefix, case or wildcard games.
        assert!(!decide("Alice", &[], "billing").allowed());
        assert!(!decide("alice2", &[], "billing").allowed());
        let star = Grant {
            service: "s".into(),
            allow_users: vec!["*".into()],
            allow_groups: vec![],
        };
        let point = DecisionPoint::new(with_grants(&PolicyConfig::default(), [&star]));
        assert!(!point.decide(&input("mallory", &[], "s")).allowed());
        assert!(point.may_allow("*", &[], "s"));
        assert!(!point.may_allow("mallory", &[], "s"));
    }

    #[test]
    fn a_file_rule_before_the_grants_decides_first() {
        let file = PolicyConfig::from_toml(
            r#"
            [[rule]]
            name = "no-billing-at-night"
            priority = 10
            effect = "deny"
            groups = ["finance"]
            services = ["billing"]
            source_networks = ["10.0.0.0/8"]
            "#,
        )
        .expect("policy");
        let point = DecisionPoint::new(with_grants(&file, [&billing()]));
        let mut from_vpn = input("bob", &["finance"], "billing");
        from_vpn.context.source_address = Some("10.1.2.3".parse().expect("ip"));
        let d = point.decide(&from_vpn);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.matched_rule.as_deref(), Some("no-billing-at-night"));
        let mut elsewhere = from_vpn;
        elsewhere.context.source_address = Some("192.0.2.1".parse().expect("ip"));
        assert!(point.decide(&elsewhere).allowed());
        // The deny rule is conditional, so the grant still says "may".
        assert!(point.may_allow("bob", &["finance".into()], "billing"));
    }
}
