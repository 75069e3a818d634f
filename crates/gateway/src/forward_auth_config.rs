//! `[forward_auth]`: the gateway answers `GET /auth/verify` for a reverse
//! proxy in front of services (nginx `auth_request`, Traefik
//! `forwardAuth`), on a listener of its own.
//!
//! The listener speaks plain HTTP: the proxy is expected beside the gateway
//! (loopback or a private interface), and only the addresses in
//! `trusted_proxies` are answered at all. Everything the proxy forwards —
//! the original method and URI, the user's address, the client certificate
//! it verified — is believed only because the proxy is trusted, so the
//! list is mandatory and there is no "trust everyone" value.

use std::net::SocketAddr;

use serde::Deserialize;
use umbra_policy::rules::matchers::Cidr;

use crate::config::ConfigError;

/// Trusted proxy networks at most (a list this long is a mistake).
pub const MAX_TRUSTED_PROXIES: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    /// Address of the verify listener (plain HTTP), e.g. `127.0.0.1:9444`.
    pub listen: String,
    /// Networks whose requests are answered (`"127.0.0.1/32"`, `"10.0.0.5"`).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where a user without a session logs in; sent in `Location` with
    /// 401, with the user's URL added as `rd`.
    pub login_url: Option<String>,
    /// Where a browser steps up (a fresh one-time code). Default: the
    /// login URL with its `/auth/login` path replaced by `/auth/step-up`.
    #[serde(default)]
    pub step_up_url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ForwardAuthConfig {
    pub listen: SocketAddr,
    pub trusted_proxies: Vec<Cidr>,
    pub login_url: Option<http::HeaderValue>,
    pub step_up_url: Option<http::HeaderValue>,
}

impl ForwardAuthConfig {
    /// Whether `ip` is one of the configured proxies (IPv4-mapped IPv6
    /// addresses match as IPv4).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("forward_auth.{key}"),
        message: message.into(),
    }
}

impl RawForwardAuth {
    pub fn validate(self) -> Result<ForwardAuthConfig, ConfigError> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{:?}: {e}", self.listen)))?;
        if self.trusted_proxies.is_empty() {
            return Err(invalid(
                "trusted_proxies",
                "list the proxies' addresses (e.g. [\"127.0.0.1/32\"]); \
                 forwarded headers are believed from them only",
            ));
        }
        if self.trusted_proxies.len() > MAX_TRUSTED_PROXIES {
            return Err(invalid(
                "trusted_proxies",
                format!("at most {MAX_TRUSTED_PROXIES} networks"),
            ));
        }
        let trusted_proxies = self
            .trusted_proxies
            .into_iter()
            .map(|s| Cidr::try_from(s).map_err(|m| invalid("trusted_proxies", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let url = |key: &str, u: Option<String>| match u {
            None => Ok(None),
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                http::HeaderValue::from_str(&u)
                    .map(Some)
                    .map_err(|_| invalid(key, "not a valid header value"))
            }
            Some(u) => Err(invalid(key, format!("{u:?}: an http(s) URL"))),
        };
        let step_up = self.step_up_url.or_else(|| {
            let login = self.login_url.as_deref()?;
            let (base, rest) = login.split_once("/auth/login")?;
            (rest.is_empty() || rest.starts_with('?')).then(|| format!("{base}/auth/step-up{rest}"))
        });
        let login_url = url("login_url", self.login_url)?;
        let step_up_url = url("step_up_url", step_up)?;
        Ok(ForwardAuthConfig {
            listen,
            trusted_proxies,
            login_url,
            step_up_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(proxies: &[&str]) -> RawForwardAuth {
        RawForwardAuth {
            listen: "127.0.0.1:9444".into(),
            trusted_proxies: proxies.iter().map(|s| (*s).to_owned()).collect(),
            login_url: None,
            step_up_url: None,
        }
    }

    #[test]
    fn trusted_proxies_are_required_and_parsed() {
        assert!(raw(&[]).validate().is_err());
        assert!(raw(&["10.0.0.1/8"]).validate().is_err(), "host bits set");
        assert!(raw(&["nonsense"]).validate().is_err());
        let c = raw(&["127.0.0.1/32", "10.0.0.0/8"])
            .validate()
            .expect("valid");
        assert!(c.trusts("127.0.0.1".parse().expect("ip")));
        assert!(c.trusts("::ffff:10.2.3.4".parse().expect("ip")));
        assert!(!c.trusts("127.0.0.2".parse().expect("ip")));
        assert!(!c.trusts("192.168.1.1".parse().expect("ip")));
    }

    fn parse(section: &str) -> Result<crate::Config, ConfigError> {
        let text = format!(
            "controller_url = \"https://127.0.0.1:8443\"\nlisten = \"127.0.0.1:9443\"\n\
             state_dir = \"/tmp/x\"\n{section}"
        );
        crate::Config::parse(&text, std::path::Path::new("g.toml"))
    }

    #[test]
    fn the_section_is_optional_and_checked_in_the_gateway_file() {
        assert!(parse("").expect("valid").forward_auth.is_none());
        let c = parse(
            "[forward_auth]\nlisten = \"127.0.0.1:9444\"\n\
             trusted_proxies = [\"127.0.0.1/32\"]\nlogin_url = \"https://login.example/\"\n",
        )
        .expect("valid");
        let fa = c.forward_auth.expect("forward_auth");
        assert_eq!(fa.listen.port(), 9444);
        assert_eq!(fa.login_url.expect("url"), "https://login.example/");
        // No proxies listed: refused, naming the key.
        let e = parse("[forward_auth]\nlisten = \"127.0.0.1:9444\"\n").expect_err("no proxies");
        assert!(
            e.to_string().starts_with("forward_auth.trusted_proxies"),
            "{e}"
        );
        // A typo is an error, not a setting silently ignored.
        assert!(
            parse("[forward_auth]\nlisten = \"127.0.0.1:9444\"\ntrusted_proxy = [\"127.0.0.1\"]\n")
                .is_err()
        );
    }

    #[test]
    fn login_url_must_be_a_url() {
        let mut r = raw(&["127.0.0.1"]);
        r.login_url = Some("javascript:alert(1)".into());
        assert!(r.validate().is_err());
        let mut r = raw(&["127.0.0.1"]);
        r.login_url = Some("https://login.example/\r\nX: y".into());
        assert!(r.validate().is_err());
        let mut r = raw(&["127.0.0.1"]);
        r.login_url = Some("https://app.example/auth/login".into());
        let c = r.validate().expect("valid");
        assert_eq!(
            c.step_up_url.expect("derived"),
            "https://app.example/auth/step-up"
        );
    }
}
