//! Controller configuration, parsed in two phases (ripgrep's habit): the raw
//! TOML document with `deny_unknown_fields` (a misspelt key is an error that
//! names it), then a validated [`Config`] with every default applied.
//! Every key is documented in `docs/config.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use umbra_pki::{Kek, TrustDomain};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(
        "no key-encryption key: set `kek_file` in the config or the UMBRA_KEK environment \
         variable (32 random bytes, base64; e.g. `head -c32 /dev/urandom | base64`)"
    )]
    MissingKek,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub trust_domain: Option<String>,
    pub server_names: Option<Vec<String>>,
    pub kek_file: Option<PathBuf>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub devices: RawDevices,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub api: RawApi,
    /// Present: the controller is dark (see [`RawSpa`]).
    pub spa: Option<RawSpa>,
    /// The pinhole backend of a dark controller (as the gateway's).
    pub firewall: Option<umbra_firewall::FirewallConfig>,
    #[serde(default)]
    pub policy: RawPolicy,
    /// `[detection]`: threat detection and automatic response.
    #[serde(default)]
    pub detection: crate::detect::RawDetection,
    #[serde(default)]
    pub browser: crate::browser_config::RawBrowser,
    #[serde(default)]
    pub audit: RawAudit,
}

/// `[audit]`: the tamper-evident audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// How often the controller signs the chain's head (default 60 s): the
    /// longest a record stays covered by the hash chain alone, which
    /// someone with write access to the database could recompute.
    pub checkpoint_interval_seconds: Option<u64>,
}

/// `[policy]`: the native access rules, compliance policies and risk
/// bands (`docs/policy.md`), besides the admin API's grants. Gateways are
/// sent the file's text with every snapshot; several controllers sharing a
/// store must be given the same file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub file: Option<PathBuf>,
}

/// The validated native policy.
#[derive(Clone, Debug, Default)]
pub struct NativePolicy {
    pub file: Option<PathBuf>,
    /// The file as read (sent to gateways); empty without a file.
    pub text: String,
    pub config: umbra_policy::rules::PolicyConfig,
}

impl RawPolicy {
    fn validate(self) -> Result<NativePolicy, ConfigError> {
        let Some(path) = self.file else {
            return Ok(NativePolicy::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
            key: "policy.file",
            message: format!("{}: {e}", path.display()),
        })?;
        let config = umbra_policy::rules::PolicyConfig::from_toml(&text).map_err(|e| {
            ConfigError::Invalid {
                key: "policy.file",
                message: format!("{}: {e}", path.display()),
            }
        })?;
        Ok(NativePolicy {
            file: Some(path),
            text,
            config,
        })
    }
}

/// `[spa]`: a dark controller. Login, renewal, posture reports, the
/// gateways' control channel and the admin API stay on `listen`, which no
/// source reaches until a valid knock (or `exempt`) lets it in; the public
/// endpoints (health, JWKS, the CA, OpenAPI, enrollment) move to
/// `public_listen`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpa {
    /// UDP address for knocks; default `0.0.0.0:62201`.
    pub listen: Option<String>,
    /// HTTPS address of the public endpoints. Required.
    pub public_listen: Option<String>,
    /// Accepted clock difference of knocks, seconds (default 30).
    pub window_seconds: Option<u64>,
    /// How long a knock's pinhole stays open (default 30 s).
    pub pinhole_seconds: Option<u64>,
    /// Addresses that reach `listen` without knocking: the gateways (their
    /// control channel) and the admins' hosts. Default none.
    #[serde(default)]
    pub exempt: Vec<String>,
}

/// A validated `[spa]`.
#[derive(Clone, Debug)]
pub struct SpaConfig {
    pub listen: SocketAddr,
    pub public_listen: SocketAddr,
    pub window_secs: u64,
    pub pinhole_ttl: std::time::Duration,
    pub exempt: Vec<std::net::IpAddr>,
    pub firewall: umbra_firewall::FirewallSettings,
}

impl RawSpa {
    fn validate(
        self,
        listen: SocketAddr,
        firewall: Option<umbra_firewall::FirewallConfig>,
    ) -> Result<SpaConfig, ConfigError> {
        let addr = |key: &'static str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid {
                    key,
                    message: format!("{text:?}: {e}"),
                })
        };
        let spa_listen = addr(
            "spa.listen",
            self.listen.as_deref().unwrap_or("0.0.0.0:62201"),
        )?;
        let public_listen = addr(
            "spa.public_listen",
            self.public_listen.as_deref().ok_or(ConfigError::Invalid {
                key: "spa.public_listen",
                message: "required with [spa]: the public endpoints need a listener \
                              that is not dark"
                    .into(),
            })?,
        )?;
        if public_listen.port() != 0 && public_listen == listen {
            return Err(ConfigError::Invalid {
                key: "spa.public_listen",
                message: "must differ from `listen`".into(),
            });
        }
        let window_secs = self.window_seconds.unwrap_or(30);
        if !(5..=600).contains(&window_secs) {
            return Err(ConfigError::Invalid {
                key: "spa.window_seconds",
                message: "must be 5..=600".into(),
            });
        }
        let pinhole = self.pinhole_seconds.unwrap_or(30);
        if !(1..=3600).contains(&pinhole) {
            return Err(ConfigError::Invalid {
                key: "spa.pinhole_seconds",
                message: "must be 1..=3600".into(),
            });
        }
        let exempt = self
            .exempt
            .iter()
            .map(|a| {
                a.parse::<std::net::IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|e| ConfigError::Invalid {
                        key: "spa.exempt",
                        message: format!("{a:?}: {e} (one address per entry)"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let firewall =
            firewall
                .unwrap_or_default()
                .validate()
                .map_err(|e| ConfigError::Invalid {
                    key: "firewall",
                    message: format!("{}: {}", e.key, e.message),
                })?;
        Ok(SpaConfig {
            listen: spa_listen,
            public_listen,
            window_secs,
            pinhole_ttl: std::time::Duration::from_secs(pinhole),
            exempt,
            firewall,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: Option<String>,
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub max_connections: Option<u32>,
}

/// Which store the controller uses.
#[derive(Debug)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres { url: Redacted, max_connections: u32 },
}

/// A string that may hold a secret (a database password): `Debug` hides it.
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub lockout_threshold: Option<u32>,
    pub lockout_seconds: Option<u64>,
    pub totp_issuer: Option<String>,
    pub login_rate_per_minute: Option<u32>,
    pub login_burst: Option<u32>,
    pub password_min_length: Option<usize>,
    pub argon2_memory_kib: Option<u32>,
    pub argon2_iterations: Option<u32>,
    pub argon2_parallelism: Option<u32>,
    pub token_issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    pub certificate_lifetime_seconds: Option<u64>,
    pub require_approval: Option<bool>,
    pub enrollment_token_ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bootstrap_token_ttl_seconds: Option<u64>,
    pub token_ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub max_body_bytes: Option<usize>,
    /// How often this controller reads events other controllers stored.
    pub event_poll_ms: Option<u64>,
}

/// Argon2id cost; the defaults are OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub server_names: Vec<String>,
    pub kek: Kek,
    pub store: StoreConfig,
    pub lockout_threshold: u32,
    pub lockout_secs: i64,
    pub totp_issuer: String,
    pub login_rate_per_minute: u32,
    pub login_burst: u32,
    pub password_min_length: usize,
    pub argon2: Argon2Cost,
    pub token_issuer: String,
    pub device_cert_lifetime_secs: i64,
    pub require_device_approval: bool,
    pub enrollment_token_ttl_secs: i64,
    pub bootstrap_token_ttl_secs: i64,
    pub admin_token_ttl_secs: i64,
    pub max_body_bytes: usize,
    pub event_poll: std::time::Duration,
    pub audit_checkpoint_interval: std::time::Duration,
    /// `Some`: the controller is dark.
    pub spa: Option<SpaConfig>,
    pub policy: NativePolicy,
    pub detection: crate::detect::DetectionConfig,
    /// The login page and the controller's `/auth/verify`.
    pub browser: crate::browser_config::BrowserConfig,
}

/// Longest accepted lifetime for anything configurable, so arithmetic on
/// Unix times cannot overflow: ten years.
const MAX_LIFETIME: u64 = 10 * 365 * 86400;

fn secs(key: &'static str, value: Option<u64>, default: u64, min: u64) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if !(min..=MAX_LIFETIME).contains(&v) {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{v} is outside {min}..={MAX_LIFETIME} seconds"),
        });
    }
    i64::try_from(v).map_err(|e| ConfigError::Invalid {
        key,
        message: e.to_string(),
    })
}

impl RawConfig {
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Validates and applies defaults. `env_kek` is the `UMBRA_KEK` value,
    /// passed in so that tests need not touch the process environment.
    pub fn validate(self, env_kek: Option<&str>) -> Result<Config, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:8443");
        let listen =
            listen
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    key: "listen",
                    message: format!("{listen:?}: {e}"),
                })?;
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/umbra"));
        let trust_domain = TrustDomain::new(self.trust_domain.as_deref().unwrap_or("umbra.local"))
            .map_err(|e| ConfigError::Invalid {
                key: "trust_domain",
                message: e.to_string(),
            })?;
        let server_names = self
            .server_names
            .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()]);
        if server_names.is_empty() {
            return Err(ConfigError::Invalid {
                key: "server_names",
                message: "must not be empty".into(),
            });
        }
        let kek = match (&self.kek_file, env_kek) {
            (Some(path), _) => {
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Invalid {
                        key: "kek_file",
                        message: format!("{}: {e}", path.display()),
                    }
                })?);
                Kek::from_base64(&text)
            }
            (None, Some(text)) => Kek::from_base64(text),
            (None, None) => return Err(ConfigError::MissingKek),
        }
        .map_err(|e| ConfigError::Invalid {
            key: "kek_file / UMBRA_KEK",
            message: e.to_string(),
        })?;

        let store = match self.store.backend.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if self.store.url.is_some() {
                    return Err(ConfigError::Invalid {
                        key: "store.url",
                        message: "only for backend = \"postgres\" (SQLite uses store.path)".into(),
                    });
                }
                StoreConfig::Sqlite {
                    path: self.store.path.unwrap_or_else(|| data_dir.join("umbra.db")),
                }
            }
            "postgres" => {
                let url = self.store.url.ok_or(ConfigError::Invalid {
                    key: "store.url",
                    message: "required for backend = \"postgres\" (postgres://user@host/db)".into(),
                })?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::Invalid {
                        key: "store.url",
                        message: "must start with postgres:// or postgresql://".into(),
                    });
                }
                if self.store.path.is_some() {
                    return Err(ConfigError::Invalid {
                        key: "store.path",
                        message: "only for backend = \"sqlite\"".into(),
                    });
                }
                let max_connections = self.store.max_connections.unwrap_or(16);
                if !(1..=1000).contains(&max_connections) {
                    return Err(ConfigError::Invalid {
                        key: "store.max_connections",
                        message: "must be 1..=1000".into(),
                    });
                }
                StoreConfig::Postgres {
                    url: Redacted(url),
                    max_connections,
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "store.backend",
                    message: format!(
                        "{other:?} is not supported (supported: \"sqlite\", \"postgres\")"
                    ),
                });
            }
        };

        let a = self.auth;
        let lockout_threshold = a.lockout_threshold.unwrap_or(5);
        if lockout_threshold == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.lockout_threshold",
                message: "must be at least 1".into(),
            });
        }
        let argon2 = Argon2Cost {
            memory_kib: a.argon2_memory_kib.unwrap_or(19 * 1024),
            iterations: a.argon2_iterations.unwrap_or(2),
            parallelism: a.argon2_parallelism.unwrap_or(1),
        };
        argon2::Params::new(
            argon2.memory_kib,
            argon2.iterations,
            argon2.parallelism,
            None,
        )
        .map_err(|e| ConfigError::Invalid {
            key: "auth.argon2_*",
            message: e.to_string(),
        })?;
        let login_rate_per_minute = a.login_rate_per_minute.unwrap_or(30);
        let login_burst = a.login_burst.unwrap_or(10);
        if login_rate_per_minute == 0 || login_burst == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.login_rate_per_minute / auth.login_burst",
                message: "must be at least 1".into(),
            });
        }
        let password_min_length = a.password_min_length.unwrap_or(12);
        if !(8..=128).contains(&password_min_length) {
            return Err(ConfigError::Invalid {
                key: "auth.password_min_length",
                message: "must be 8..=128".into(),
            });
        }
        let totp_issuer = a.totp_issuer.unwrap_or_else(|| "Umbra".into());
        if totp_issuer.contains(':') || totp_issuer.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.totp_issuer",
                message: "must be non-empty, without ':'".into(),
            });
        }
        let token_issuer = a.token_issuer.unwrap_or_else(|| "umbra".into());
        if token_issuer.is_empty()
            || token_issuer.len() > 256
            || token_issuer.chars().any(char::is_control)
        {
            return Err(ConfigError::Invalid {
                key: "auth.token_issuer",
                message: "must be 1-256 characters without control characters".into(),
            });
        }
        let d = self.devices;
        let max_body_bytes = self.api.max_body_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(ConfigError::Invalid {
                key: "api.max_body_bytes",
                message: "must be 1024..=16777216".into(),
            });
        }
        let event_poll_ms = self.api.event_poll_ms.unwrap_or(500);
        if !(10..=60_000).contains(&event_poll_ms) {
            return Err(ConfigError::Invalid {
                key: "api.event_poll_ms",
                message: "must be 10..=60000".into(),
            });
        }
        let checkpoint_secs = self.audit.checkpoint_interval_seconds.unwrap_or(60);
        if !(1..=86_400).contains(&checkpoint_secs) {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_interval_seconds",
                message: "must be 1..=86400".into(),
            });
        }
        if self.firewall.is_some() && self.spa.is_none() {
            return Err(ConfigError::Invalid {
                key: "firewall",
                message: "only with [spa] (a controller that is not dark has no pinholes)".into(),
            });
        }
        let spa = match self.spa {
            Some(spa) => Some(spa.validate(listen, self.firewall)?),
            None => None,
        };
        let policy = self.policy.validate()?;
        let detection = self.detection.validate()?;
        let browser = self.browser.validate()?;
        Ok(Config {
            spa,
            policy,
            detection,
            browser,
            event_poll: std::time::Duration::from_millis(event_poll_ms),
            audit_checkpoint_interval: std::time::Duration::from_secs(checkpoint_secs),
            listen,
            trust_domain,
            server_names,
            kek,
            store,
            lockout_threshold,
            lockout_secs: secs("auth.lockout_seconds", a.lockout_seconds, 900, 1)?,
            totp_issuer,
            login_rate_per_minute,
            login_burst,
            password_min_length,
            argon2,
            token_issuer,
            device_cert_lifetime_secs: secs(
                "devices.certificate_lifetime_seconds",
                d.certificate_lifetime_seconds,
                86400,
                300,
            )?,
            require_device_approval: d.require_approval.unwrap_or(false),
            enrollment_token_ttl_secs: secs(
                "devices.enrollment_token_ttl_seconds",
                d.enrollment_token_ttl_seconds,
                86400,
                60,
            )
            .and_then(|t| {
                // The same ceiling a request may ask for: 30 days.
                if t > 30 * 86400 {
                    Err(ConfigError::Invalid {
                        key: "devices.enrollment_token_ttl_seconds",
                        message: format!("{t} is over 2592000 (30 days)"),
                    })
                } else {
                    Ok(t)
                }
            })?,
            bootstrap_token_ttl_secs: secs(
                "admin.bootstrap_token_ttl_seconds",
                self.admin.bootstrap_token_ttl_seconds,
                86400,
                60,
            )?,
            admin_token_ttl_secs: secs(
                "admin.token_ttl_seconds",
                self.admin.token_ttl_seconds,
                90 * 86400,
                60,
            )?,
            max_body_bytes,
            data_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = RawConfig::from_toml(
            Path::new("c.toml"),
            "listen = \"127.0.0.1:1\"\nlisten_adress = 1\n",
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("listen_adress"), "{err}");
        let err =
            RawConfig::from_toml(Path::new("c.toml"), "[auth]\nlockout = 3\n").expect_err("nested");
        assert!(err.to_string().contains("lockout"), "{err}");
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let c = RawConfig::default().validate(Some(KEK)).expect("valid");
        assert_eq!(c.lockout_threshold, 5);
        assert_eq!(c.device_cert_lifetime_secs, 86400);
        assert_eq!(
            c.argon2,
            Argon2Cost {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert!(!format!("{c:?}").contains(KEK));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = RawConfig::default().validate(None).expect_err("no kek");
        assert!(matches!(err, ConfigError::MissingKek));
        let raw =
            RawConfig::from_toml(Path::new("c"), "trust_domain = \"Bad Domain\"").expect("parse");
        assert!(
            raw.validate(Some(KEK))
                .expect_err("td")
                .to_string()
                .contains("trust_domain")
        );
        let raw = RawConfig::from_toml(
            Path::new("c"),
            "[devices]\ncertificate_lifetime_seconds = 1",
        )
        .expect("parse");
        assert!(
            raw.validate(Some(KEK))
                .expect_err("lifetime")
                .to_string()
                .contains("certificate_lifetime")
        );
        let raw =
            RawConfig::from_toml(Path::new("c"), "[store]\nbackend = \"mysql\"").expect("parse");
        assert!(
            raw.validate(Some(KEK))
                .expect_err("backend")
                .to_string()
                .contains("store.backend")
        );
        assert!(RawConfig::default().validate(Some("short")).is_err());
        let raw = RawConfig::from_toml(
            Path::new("c"),
            "[devices]\nenrollment_token_ttl_seconds = 2592001",
        )
        .expect("parse");
        assert!(
            raw.validate(Some(KEK))
                .expect_err("ttl")
                .to_string()
                .contains("enrollment_token_ttl")
        );
        let raw =
            RawConfig::from_toml(Path::new("c"), "[auth]\ntoken_issuer = \"\"").expect("parse");
        assert!(
            raw.validate(Some(KEK))
                .expect_err("iss")
                .to_string()
                .contains("token_issuer")
        );
    }

    #[test]
    fn postgres_store_needs_a_url_and_hides_its_password() {
        let parse = |t: &str| RawConfig::from_toml(Path::new("c"), t).expect("parse");
        let err = parse("[store]\nbackend = \"postgres\"")
            .validate(Some(KEK))
            .expect_err("url");
        assert!(err.to_string().contains("store.url"), "{err}");
        let err = parse("[store]\nbackend = \"postgres\"\nurl = \"mysql://x\"")
            .validate(Some(KEK))
            .expect_err("scheme");
        assert!(err.to_string().contains("store.url"), "{err}");
        let err = parse("[store]\nurl = \"postgres://x/y\"")
            .validate(Some(KEK))
            .expect_err("sqlite+url");
        assert!(err.to_string().contains("store.url"), "{err}");
        let c = parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@h/db\"")
            .validate(Some(KEK))
            .expect("valid");
        assert!(matches!(
            c.store,
            StoreConfig::Postgres {
                max_connections: 16,
                ..
            }
        ));
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the database password stays out of Debug"
        );
    }

    #[test]
    fn a_dark_controller_needs_a_public_listener_and_valid_exemptions() {
        let parse = |t: &str| {
            RawConfig::from_toml(Path::new("c"), t)
                .expect("parse")
                .validate(Some(KEK))
        };
        let err = parse("[spa]\n").expect_err("no public listener");
        assert!(err.to_string().contains("spa.public_listen"), "{err}");
        let err = parse("listen = \"127.0.0.1:8443\"\n[spa]\npublic_listen = \"127.0.0.1:8443\"\n")
            .expect_err("same listener");
        assert!(err.to_string().contains("must differ"), "{err}");
        let err = parse("[spa]\npublic_listen = \"127.0.0.1:8444\"\nexempt = [\"10.0.0.0/8\"]\n")
            .expect_err("a network");
        assert!(err.to_string().contains("spa.exempt"), "{err}");
        let err = parse("[firewall]\nbackend = \"userspace\"\n").expect_err("firewall alone");
        assert!(err.to_string().contains("only with [spa]"), "{err}");
        let err =
            parse("[spa]\npublic_listen = \"127.0.0.1:8444\"\n[firewall]\nbackend = \"userspace\"\nopen_command = [\"true\"]\n")
                .expect_err("a key of another backend");
        assert!(
            err.to_string().contains("`firewall`: open_command"),
            "{err}"
        );
        let c = parse(
            "[spa]\npublic_listen = \"127.0.0.1:8444\"\nexempt = [\"::ffff:10.1.2.3\", \"fd00::1\"]\n",
        )
        .expect("valid");
        let spa = c.spa.expect("dark");
        assert_eq!(spa.listen.port(), 62201);
        assert_eq!(spa.window_secs, 30);
        assert_eq!(spa.pinhole_ttl.as_secs(), 30);
        // Mapped addresses are what the kernel sees: plain IPv4.
        assert_eq!(spa.exempt[0].to_string(), "10.1.2.3");
        assert!(matches!(
            spa.firewall,
            umbra_firewall::FirewallSettings::Nftables(_)
        ));
    }
}
