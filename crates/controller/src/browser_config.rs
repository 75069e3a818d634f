//! `[browser]`: the controller's login page and its `GET /auth/verify`
//! for reverse proxies (nginx `auth_request`, Traefik `forwardAuth`,
//! Envoy `ext_authz`).
//!
//! Three things are configured here because they cannot be guessed
//! safely: which proxies' forwarded headers are believed (none by
//! default), which hosts the login page may send a user back to (the `rd`
//! return URL; none by default, so no open redirect), and which service a
//! forwarded host is (policy decides per service).

use std::collections::BTreeMap;

use serde::Deserialize;
use umbra_policy::rules::matchers::Cidr;

use crate::config::ConfigError;

/// Trusted proxy networks at most (a list this long is a mistake).
pub const MAX_TRUSTED_PROXIES: usize = 256;
/// How recent a TOTP a dashboard action needs, by default.
pub const DEFAULT_ACTION_MFA_SECONDS: u32 = 300;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBrowser {
    /// Networks whose `X-Original-*` / `X-Forwarded-*` headers are
    /// believed (`"127.0.0.1/32"`); from anyone else they are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Hosts the login page may redirect to after a login (`rd`).
    #[serde(default)]
    pub return_hosts: Vec<String>,
    /// Forwarded host → the service `/auth/verify` decides for.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// A dashboard action needs a TOTP entered within this many seconds.
    pub action_mfa_seconds: Option<u32>,
}

/// The validated `[browser]`.
#[derive(Clone, Debug)]
pub struct BrowserConfig {
    pub trusted_proxies: Vec<Cidr>,
    /// Lowercase host names, without ports.
    pub return_hosts: Vec<String>,
    /// Lowercase host (without port) → service.
    pub services: BTreeMap<String, String>,
    /// How old the session's last TOTP (login or step-up) may be for a
    /// dashboard action: a stolen cookie alone cannot act for long.
    pub action_mfa_seconds: u32,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            return_hosts: Vec::new(),
            services: BTreeMap::new(),
            action_mfa_seconds: DEFAULT_ACTION_MFA_SECONDS,
        }
    }
}

impl BrowserConfig {
    /// Whether `ip` is one of the configured proxies.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    pub fn service_for(&self, host: &str) -> Option<&str> {
        self.services.get(host).map(String::as_str)
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A host name as configured: letters, digits, `.` and `-`, lowercase.
fn host_name(key: &'static str, text: &str) -> Result<String, ConfigError> {
    let h = text.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        return Err(invalid(
            key,
            format!("{text:?}: a host name (no scheme, port or path)"),
        ));
    }
    Ok(h)
}

impl RawBrowser {
    pub fn validate(self) -> Result<BrowserConfig, ConfigError> {
        if self.trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            return Err(invalid(
                "browser.trusted_proxies",
                format!("at most {MAX_TRUSTED_PROXIES} networks"),
            ));
        }
        let trusted_proxies = self
            .trusted_proxies
            .into_iter()
            .map(|s| Cidr::try_from(s).map_err(|m| invalid("browser.trusted_proxies", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let return_hosts = self
            .return_hosts
            .iter()
            .map(|h| host_name("browser.return_hosts", h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut services = BTreeMap::new();
        for (host, service) in self.services {
            let host = host_name("browser.services", &host)?;
            if !crate::api::valid_name(&service) {
                return Err(invalid(
                    "browser.services",
                    format!("{service:?}: not a service name"),
                ));
            }
            services.insert(host, service);
        }
        let action_mfa_seconds = self
            .action_mfa_seconds
            .unwrap_or(DEFAULT_ACTION_MFA_SECONDS);
        if !(30..=86_400).contains(&action_mfa_seconds) {
            return Err(invalid(
                "browser.action_mfa_seconds",
                format!("{action_mfa_seconds}: must be 30..=86400 seconds"),
            ));
        }
        Ok(BrowserConfig {
            trusted_proxies,
            return_hosts,
            services,
            action_mfa_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_parsed_and_checked() {
        let raw: RawBrowser = toml::from_str(
            "trusted_proxies = [\"127.0.0.1/32\"]\nreturn_hosts = [\"App.Example\"]\n\
             [services]\n\"app.example\" = \"wiki\"\n",
        )
        .expect("toml");
        let c = raw.validate().expect("valid");
        assert!(c.trusts("127.0.0.1".parse().expect("ip")));
        assert!(!c.trusts("127.0.0.2".parse().expect("ip")));
        assert_eq!(c.return_hosts, vec!["app.example".to_owned()]);
        assert_eq!(c.service_for("app.example"), Some("wiki"));
        assert_eq!(c.action_mfa_seconds, DEFAULT_ACTION_MFA_SECONDS);
        let raw: RawBrowser = toml::from_str("action_mfa_seconds = 60").expect("toml");
        assert_eq!(raw.validate().expect("valid").action_mfa_seconds, 60);
        for bad in [
            "action_mfa_seconds = 29",
            "action_mfa_seconds = 86401",
            "return_hosts = [\"https://app\"]",
            "return_hosts = [\"app:443\"]",
            "trusted_proxies = [\"10.0.0.1/8\"]",
            "[services]\n\"app\" = \"no spaces\"",
            "return_host = []",
        ] {
            let parsed: Result<RawBrowser, _> = toml::from_str(bad);
            assert!(
                parsed
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.validate().map(drop).map_err(|e| e.to_string()))
                    .is_err(),
                "{bad}"
            );
        }
    }
}
