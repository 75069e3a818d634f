//! `[spa]` and `[firewall]`: a dark gateway. With `[spa]` present the
//! gateway's TLS port (and any `protect`ed port) is closed to every source
//! until a valid knock opens a pinhole for that source alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use umbra_firewall::{FirewallConfig, FirewallSettings, Protected, Protocol};
use umbra_spa::fwknop::Stanza;

use crate::config::ConfigError;

/// The UDP port fwknop uses, and Umbra's default.
pub const DEFAULT_SPA_PORT: u16 = 62201;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpa {
    /// UDP address for knocks; default `0.0.0.0:62201`.
    pub listen: Option<String>,
    /// Accepted clock difference of native knocks, seconds (default 30).
    pub window_seconds: Option<u64>,
    /// How long a native knock's pinhole stays open (default 30 s).
    /// Connections made meanwhile outlive it.
    pub pinhole_seconds: Option<u64>,
    /// fwknop-compatible knocks: an `access.conf` (fwknopd's syntax).
    pub fwknop_access_file: Option<PathBuf>,
    /// More ports to keep dark (`"tcp/22"`), opened by fwknop stanzas.
    #[serde(default)]
    pub protect: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SpaConfig {
    pub listen: SocketAddr,
    pub window_secs: u64,
    pub pinhole_ttl: Duration,
    pub fwknop: Option<Vec<Stanza>>,
    pub protect: Vec<Protected>,
    pub firewall: FirewallSettings,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("spa.{key}"),
        message: message.into(),
    }
}

pub fn parse_port(text: &str) -> Option<Protected> {
    let (proto, port) = text.split_once('/')?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(Protected::new(proto, port))
}

impl RawSpa {
    pub fn validate(self, firewall: Option<FirewallConfig>) -> Result<SpaConfig, ConfigError> {
        let listen = self
            .listen
            .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_SPA_PORT}"));
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| invalid("listen", format!("{listen:?}: {e}")))?;
        let window_secs = self.window_seconds.unwrap_or(30);
        if !(5..=600).contains(&window_secs) {
            return Err(invalid("window_seconds", "5..=600"));
        }
        let pinhole = self.pinhole_seconds.unwrap_or(30);
        if !(1..=3600).contains(&pinhole) {
            return Err(invalid("pinhole_seconds", "1..=3600"));
        }
        let fwknop = match self.fwknop_access_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let stanzas = umbra_spa::fwknop::parse_access_conf(&text).map_err(|e| {
                    invalid("fwknop_access_file", format!("{}: {e}", path.display()))
                })?;
                Some(stanzas)
            }
        };
        let protect = self
            .protect
            .iter()
            .map(|p| {
                parse_port(p)
                    .ok_or_else(|| invalid("protect", format!("{p:?}: tcp/PORT or udp/PORT")))
            })
            .collect::<Result<_, _>>()?;
        let firewall =
            firewall
                .unwrap_or_default()
                .validate()
                .map_err(|e| ConfigError::Invalid {
                    key: format!("firewall.{}", e.key),
                    message: e.message,
                })?;
        Ok(SpaConfig {
            listen,
            window_secs,
            pinhole_ttl: Duration::from_secs(pinhole),
            fwknop,
            protect,
            firewall,
        })
    }
}
