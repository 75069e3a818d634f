//! The gateway's TOML configuration, parsed in two phases: [`RawConfig`]
//! (exactly the file, unknown keys refused) into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub controller_url: String,
    pub listen: String,
    pub public_url: Option<String>,
    pub state_dir: PathBuf,
    /// The one-time gateway token (`ug1.…`), or a file holding it; used on
    /// the first start only.
    pub enrollment_token: Option<String>,
    pub enrollment_token_file: Option<PathBuf>,
    pub max_staleness_seconds: Option<u64>,
    pub resync_interval_seconds: Option<u64>,
    pub assertion_ttl_seconds: Option<u64>,
    /// Connection worker threads; 0 or absent: one per CPU.
    pub workers: Option<usize>,
    #[serde(default)]
    pub limits: RawLimits,
    /// Present: the gateway is dark (SPA). See `spa_config`.
    pub spa: Option<crate::spa_config::RawSpa>,
    /// The pinhole backend of a dark gateway (default nftables).
    pub firewall: Option<umbra_firewall::FirewallConfig>,
    /// Present: answer `/auth/verify` for a fronting proxy. See
    /// `forward_auth_config`.
    pub forward_auth: Option<crate::forward_auth_config::RawForwardAuth>,
    /// Present: serve Prometheus metrics on a plain listener.
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[metrics]`: where `GET /metrics` is served (plain HTTP, no client
/// certificate: bind it to loopback or a management network).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

/// Validated `[metrics]`.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[limits]`: what one client may hold or send.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_timeout_seconds: Option<u64>,
    pub handshake_timeout_seconds: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub max_connections_per_source: Option<usize>,
}

/// Validated `[limits]`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A client gets this long to send a request's headers (slowloris).
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Request line and headers together.
    pub max_header_bytes: usize,
    /// Request bodies; larger ones get 413 (declared) or are cut (chunked).
    pub max_body_bytes: u64,
    /// Open connections from one source address.
    pub max_connections_per_source: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub service: String,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// `http` (default) or `tcp`.
    pub protocol: Option<String>,
    /// Speak HTTP/2 (cleartext, prior knowledge) to this HTTP upstream.
    pub upstream_http2: Option<bool>,
}

/// A validated route: requests for `host` whose normalized path is under
/// `path_prefix` (whole segments) go to `upstream` and belong to `service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub protocol: umbra_proto::control::Protocol,
    /// HTTP/2 without TLS to the upstream (the upstream speaks h2c).
    pub upstream_http2: bool,
    /// Lowercase, without port.
    pub host: String,
    pub path_prefix: String,
    /// `host:port` of an `http://` upstream (HTTP routes) or of a
    /// `tcp://` one (TCP routes).
    pub upstream: http::uri::Authority,
}

pub enum TokenSource {
    Inline(zeroize::Zeroizing<String>),
    File(PathBuf),
}

impl TokenSource {
    pub fn read(&self) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        match self {
            Self::Inline(t) => Ok(t.clone()),
            Self::File(p) => std::fs::read_to_string(p)
                .map(|t| zeroize::Zeroizing::new(t.trim().to_owned()))
                .map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

pub struct Config {
    pub controller_url: String,
    pub listen: SocketAddr,
    pub public_url: String,
    pub state_dir: PathBuf,
    /// Where the one-time token comes from; read only when enrolling, so a
    /// spent token file may be deleted afterwards.
    pub enrollment_token: Option<TokenSource>,
    /// How long the gateway keeps deciding on its own when the control
    /// channel is down; after that it refuses everything (fail closed).
    pub max_staleness: Duration,
    /// Full resynchronization period, on top of pushed events.
    pub resync_interval: Duration,
    pub assertion_ttl_secs: i64,
    /// Connection workers, each a single-threaded runtime (at least 1).
    pub workers: usize,
    pub limits: Limits,
    /// `Some` when the gateway is dark.
    pub spa: Option<crate::spa_config::SpaConfig>,
    /// `Some` when the gateway answers forward-auth requests.
    pub forward_auth: Option<crate::forward_auth_config::ForwardAuthConfig>,
    /// `Some` when the gateway serves Prometheus metrics.
    pub metrics: Option<MetricsConfig>,
    pub routes: Vec<Route>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("controller_url", &self.controller_url)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("state_dir", &self.state_dir)
            .field(
                "enrollment_token",
                &self.enrollment_token.as_ref().map(|_| "***"),
            )
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        raw.validate()
    }
}

const MAX_WORKERS: usize = 1024;

fn service_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        if !self.controller_url.starts_with("https://") {
            return Err(invalid("controller_url", "must start with https://"));
        }
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{:?}: {e}", self.listen)))?;
        let public_url = self
            .public_url
            .unwrap_or_else(|| format!("https://{listen}"));
        if !public_url.starts_with("https://") {
            return Err(invalid("public_url", "must start with https://"));
        }
        let enrollment_token = match (self.enrollment_token, self.enrollment_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "enrollment_token",
                    "set enrollment_token or enrollment_token_file, not both",
                ));
            }
            (Some(t), None) => Some(TokenSource::Inline(zeroize::Zeroizing::new(
                t.trim().to_owned(),
            ))),
            (None, Some(p)) => Some(TokenSource::File(p)),
            (None, None) => None,
        };
        let max_staleness = self.max_staleness_seconds.unwrap_or(60);
        if !(5..=3600).contains(&max_staleness) {
            return Err(invalid("max_staleness_seconds", "must be 5..=3600"));
        }
        let resync = self.resync_interval_seconds.unwrap_or(300);
        if !(60..=86400).contains(&resync) {
            return Err(invalid("resync_interval_seconds", "must be 60..=86400"));
        }
        let assertion_ttl = self.assertion_ttl_seconds.unwrap_or(60);
        if !(5..=600).contains(&assertion_ttl) {
            return Err(invalid("assertion_ttl_seconds", "must be 5..=600"));
        }
        let limits = self.limits.validate()?;
        let spa = match self.spa {
            Some(spa) => Some(spa.validate(self.firewall)?),
            None if self.firewall.is_some() => {
                return Err(invalid("firewall", "only with [spa] (a dark gateway)"));
            }
            None => None,
        };
        let forward_auth = self
            .forward_auth
            .map(crate::forward_auth_config::RawForwardAuth::validate)
            .transpose()?;
        let metrics = match self.metrics {
            None => None,
            Some(m) => {
                let addr: SocketAddr = m
                    .listen
                    .parse()
                    .map_err(|e| invalid("metrics.listen", format!("{:?}: {e}", m.listen)))?;
                if addr.port() != 0 && addr == listen {
                    return Err(invalid("metrics.listen", "must differ from listen"));
                }
                Some(MetricsConfig { listen: addr })
            }
        };
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            if !service_name_ok(&r.service) {
                return Err(invalid(key("service"), "1-64 of [A-Za-z0-9._@-]"));
            }
            let host = r
                .host
                .unwrap_or_else(|| r.service.clone())
                .to_ascii_lowercase();
            if host.is_empty()
                || host.len() > 253
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
            {
                return Err(invalid(key("host"), "a host name without port"));
            }
            let protocol = match r.protocol.as_deref().unwrap_or("http") {
                "http" => umbra_proto::control::Protocol::Http,
                "tcp" => umbra_proto::control::Protocol::Tcp,
                other => {
                    return Err(invalid(key("protocol"), format!("{other:?}: http or tcp")));
                }
            };
            let prefix = path::normalize_prefix(r.path_prefix.as_deref().unwrap_or("/"))
                .map_err(|e| invalid(key("path_prefix"), e.to_string()))?;
            let upstream = match protocol {
                umbra_proto::control::Protocol::Http => parse_upstream(&r.upstream),
                umbra_proto::control::Protocol::Tcp => {
                    if prefix != "/" {
                        return Err(invalid(key("path_prefix"), "TCP routes have no path"));
                    }
                    if routes.iter().any(|o: &Route| o.service == r.service) {
                        return Err(invalid(
                            key("service"),
                            "a TCP service has one route per gateway",
                        ));
                    }
                    parse_tcp_upstream(&r.upstream)
                }
            }
            .map_err(|m| invalid(key("upstream"), m))?;
            // TCP routes are not routed by host: only HTTP ones can clash.
            let http = protocol == umbra_proto::control::Protocol::Http;
            if http
                && routes.iter().any(|o: &Route| {
                    o.protocol == umbra_proto::control::Protocol::Http
                        && o.host == host
                        && o.path_prefix == prefix
                })
            {
                return Err(invalid(
                    key("path_prefix"),
                    format!("{host}{prefix} is already routed by an earlier route"),
                ));
            }
            // A service is either HTTP or TCP: login tells the agent which.
            if http
                && routes.iter().any(|o: &Route| {
                    o.service == r.service && o.protocol == umbra_proto::control::Protocol::Tcp
                })
            {
                return Err(invalid(
                    key("service"),
                    "already a TCP service; a service is HTTP or TCP",
                ));
            }
            if r.upstream_http2 == Some(true) && protocol != umbra_proto::control::Protocol::Http {
                return Err(invalid(key("upstream_http2"), "only for HTTP routes"));
            }
            routes.push(Route {
                upstream_http2: r.upstream_http2.unwrap_or(false),
                protocol,
                service: r.service,
                host,
                path_prefix: prefix,
                upstream,
            });
        }
        let workers = match self.workers.unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n if n <= MAX_WORKERS => n,
            _ => return Err(invalid("workers", format!("at most {MAX_WORKERS}"))),
        };
        Ok(Config {
            controller_url: self.controller_url.trim_end_matches('/').to_owned(),
            listen,
            public_url: public_url.trim_end_matches('/').to_owned(),
            state_dir: self.state_dir,
            enrollment_token,
            max_staleness: Duration::from_secs(max_staleness),
            resync_interval: Duration::from_secs(resync),
            assertion_ttl_secs: assertion_ttl as i64,
            workers,
            limits,
            spa,
            forward_auth,
            metrics,
            routes,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        let secs = |key: &str, v: Option<u64>, default: u64| {
            let v = v.unwrap_or(default);
            if (1..=300).contains(&v) {
                Ok(Duration::from_secs(v))
            } else {
                Err(invalid(format!("limits.{key}"), "must be 1..=300"))
            }
        };
        // hyper needs at least 8 KiB of read buffer.
        let max_header_bytes = self.max_header_bytes.unwrap_or(32 * 1024);
        if !(8192..=1024 * 1024).contains(&max_header_bytes) {
            return Err(invalid("limits.max_header_bytes", "must be 8192..=1048576"));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(100 * 1024 * 1024);
        if max_body_bytes == 0 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1"));
        }
        let per_source = self.max_connections_per_source.unwrap_or(256);
        if !(1..=1_000_000).contains(&per_source) {
            return Err(invalid(
                "limits.max_connections_per_source",
                "must be 1..=1000000",
            ));
        }
        Ok(Limits {
            header_timeout: secs("header_timeout_seconds", self.header_timeout_seconds, 10)?,
            handshake_timeout: secs(
                "handshake_timeout_seconds",
                self.handshake_timeout_seconds,
                10,
            )?,
            max_header_bytes,
            max_body_bytes,
            max_connections_per_source: per_source,
        })
    }
}

/// TCP upstreams are `tcp://host:port`.
fn parse_tcp_upstream(text: &str) -> Result<http::uri::Authority, String> {
    let rest = text
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("{text:?}: a TCP upstream is tcp://host:port"))?;
    let authority: http::uri::Authority = rest.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if authority.port_u16().is_none() || rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "{text:?}: tcp://host:port, with a port, no user and nothing after it"
        ));
    }
    Ok(authority)
}

/// Upstreams are `http://host:port` (a service on the gateway's private
/// side); a path or query would silently rewrite every request, so none.
fn parse_upstream(text: &str) -> Result<http::uri::Authority, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{text:?}: only http:// upstreams are supported"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!("{text:?}: no path or query"));
    }
    uri.authority()
        .cloned()
        .ok_or_else(|| format!("{text:?}: no host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
controller_url = "https://127.0.0.1:8443"
listen = "127.0.0.1:9443"
state_dir = "/tmp/x"
[[routes]]
service = "billing"
path_prefix = "/v1/charges/"
upstream = "http://127.0.0.1:8081"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(BASE, Path::new("g.toml")).expect("valid");
        assert_eq!(c.public_url, "https://127.0.0.1:9443");
        assert_eq!(c.routes[0].host, "billing");
        assert_eq!(c.routes[0].path_prefix, "/v1/charges");
        assert_eq!(c.routes[0].upstream.as_str(), "127.0.0.1:8081");
        assert_eq!(c.max_staleness, Duration::from_secs(60));
        assert!(c.metrics.is_none(), "no metrics listener unless asked");
        let with = BASE.replace(
            "[[routes]]",
            "[metrics]\nlisten = \"127.0.0.1:9100\"\n[[routes]]",
        );
        let c = Config::parse(&with, Path::new("g.toml")).expect("valid");
        assert_eq!(c.metrics.map(|m| m.listen.port()), Some(9100));
    }

    #[test]
    fn refuses_bad_input_with_the_key() {
        let cases = [
            ("listen = \"127.0.0.1:9443\"", "listen = \"nope\"", "listen"),
            (
                "\"http://127.0.0.1:8081\"",
                "\"https://x:1\"",
                "routes[0].upstream",
            ),
            (
                "\"http://127.0.0.1:8081\"",
                "\"http://x:1/admin\"",
                "routes[0].upstream",
            ),
            (
                "\"/v1/charges/\"",
                "\"/v1/../../x\"",
                "routes[0].path_prefix",
            ),
            ("state_dir", "bogus = 1\nstate_dir", "unknown field"),
            (
                "[[routes]]",
                "[metrics]\nlisten = \"nope\"\n[[routes]]",
                "metrics.listen",
            ),
            (
                "[[routes]]",
                "[metrics]\nlisten = \"127.0.0.1:9443\"\n[[routes]]",
                "metrics.listen",
            ),
            (
                "[[routes]]",
                "[[routes]]\nservice = \"other\"\npath_prefix = \"/v1/charges\"\nhost = \"billing\"\nupstream = \"http://127.0.0.1:1\"\n[[routes]]",
                "routes[1].path_prefix",
            ),
            (
                "[[routes]]",
                "[[routes]]\nservice = \"billing\"\nprotocol = \"tcp\"\nupstream = \"tcp://127.0.0.1:5432\"\n[[routes]]",
                "routes[1].service",
            ),
            (
                "\"http://127.0.0.1:8081\"",
                "\"http://127.0.0.1:8081\"\n[[routes]]\nservice = \"pg\"\nprotocol = \"tcp\"\nupstream = \"tcp://u@10.0.0.5:5432\"",
                "routes[1].upstream",
            ),
        ];
        for (from, to, expect) in cases {
            let text = BASE.replace(from, to);
            let err = Config::parse(&text, Path::new("g.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(expect), "{to}: {err}");
        }
    }
}
