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
}

/// The validated `[browser]`.
#[derive(Clone, Debug, Default)]
pub struct BrowserConfig {
    pub trusted_proxies: Vec<Cidr>,
    /// Lowercase host names, without ports.
    pub return_hosts: Vec<String>,
    /// Lowercase host (without port) → service.
    pub services: BTreeMap<String, String>,
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
        Ok(BrowserConfig {
            trusted_proxies,
            return_hosts,
            services,
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
        for bad in [
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
