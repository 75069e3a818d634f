//! The access decision point.
//!
//! Every request the gateway proxies, and every service list the controller
//! hands out at login, is decided by an [`Authorizer`]: it takes the facts
//! about one request ([`AccessRequest`]) and returns a [`Decision`] with its
//! reasons. Today's implementation is [`AllowLists`] (per-service lists of
//! users and groups, set by the admin API); the Rego engine implements the
//! same trait when the policy issue lands, so callers do not change.
//!
//! Default deny: a service without a grant, or a request that matches no
//! entry, is refused.

use std::collections::{HashMap, HashSet};

use umbra_proto::control::Grant;

/// The facts about one access, as the gateway knows them after it has
/// authenticated the device and the session.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub device: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    /// Normalized path.
    pub path: &'a str,
    pub risk: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// Why, for the audit trail (never for the peer).
    pub reason: String,
}

impl Decision {
    fn deny(reason: impl Into<String>) -> Self {
        Self {
            allow: false,
            reason: reason.into(),
        }
    }
}

pub trait Authorizer: Send + Sync {
    fn decide(&self, request: &AccessRequest<'_>) -> Decision;
}

#[derive(Debug, Default)]
struct Entry {
    users: HashSet<String>,
    groups: HashSet<String>,
}

/// Per-service allow lists of users and groups.
#[derive(Debug, Default)]
pub struct AllowLists {
    services: HashMap<String, Entry>,
}

impl AllowLists {
    pub fn new(grants: &[Grant]) -> Self {
        let mut lists = Self::default();
        for g in grants {
            lists.set(g);
        }
        lists
    }

    pub fn set(&mut self, grant: &Grant) {
        self.services.insert(
            grant.service.clone(),
            Entry {
                users: grant.allow_users.iter().cloned().collect(),
                groups: grant.allow_groups.iter().cloned().collect(),
            },
        );
    }

    pub fn remove(&mut self, service: &str) {
        self.services.remove(service);
    }
}

impl Authorizer for AllowLists {
    fn decide(&self, r: &AccessRequest<'_>) -> Decision {
        let Some(entry) = self.services.get(r.service) else {
            return Decision::deny(format!("no grant for service {}", r.service));
        };
        if entry.users.contains(r.user) {
            return Decision {
                allow: true,
                reason: format!("user {} is allowed {}", r.user, r.service),
            };
        }
        if let Some(g) = r.groups.iter().find(|g| entry.groups.contains(*g)) {
            return Decision {
                allow: true,
                reason: format!("group {g} is allowed {}", r.service),
            };
        }
        Decision::deny(format!("{} is not granted {}", r.user, r.service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(user: &'a str, groups: &'a [String], service: &'a str) -> AccessRequest<'a> {
        AccessRequest {
            user,
            groups,
            device: "d1",
            service,
            method: "GET",
            path: "/",
            risk: 0,
        }
    }

    #[test]
    fn users_and_groups_are_granted_and_everything_else_denied() {
        let lists = AllowLists::new(&[Grant {
            service: "billing".into(),
            allow_users: vec!["alice".into()],
            allow_groups: vec!["finance".into()],
        }]);
        let none: Vec<String> = vec![];
        let finance = vec!["eng".to_owned(), "finance".to_owned()];
        assert!(lists.decide(&request("alice", &none, "billing")).allow);
        assert!(lists.decide(&request("bob", &finance, "billing")).allow);
        assert!(!lists.decide(&request("bob", &none, "billing")).allow);
        assert!(!lists.decide(&request("alice", &none, "payroll")).allow);
        // Names are exact: no prefix or case games.
        assert!(!lists.decide(&request("Alice", &none, "billing")).allow);
        assert!(!lists.decide(&request("alice2", &none, "billing")).allow);
    }

    #[test]
    fn removing_a_grant_denies() {
        let mut lists = AllowLists::new(&[Grant {
            service: "s".into(),
            allow_users: vec!["u".into()],
            allow_groups: vec![],
        }]);
        lists.remove("s");
        assert!(!lists.decide(&request("u", &[], "s")).allow);
    }
}
