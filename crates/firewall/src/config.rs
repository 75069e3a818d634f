//! The `[firewall]` section of the gateway's TOML, in two phases: the raw
//! [`FirewallConfig`] as written (unknown keys rejected), then
//! [`FirewallConfig::validate`] into typed [`FirewallSettings`] that can
//! build the backend. Keys that belong to another backend are errors, so a
//! typo'd backend name cannot silently ignore an operator's commands.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::template::Template;
use crate::nft::{NftSettings, valid_table_name};
use crate::{CommandPinholes, CommandSettings, Error, NftPinholes, Pinholes, UserspacePinholes};

/// Default seconds before an nft call or a command is killed.
pub const DEFAULT_COMMAND_TIMEOUT_SECONDS: u64 = 10;

/// Which backend enforces pinholes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Kernel filtering; protected ports are dark. The default, so that
    /// forgetting the key never exposes a port.
    #[default]
    Nftables,
    /// In-process table checked at accept; no privilege, no hiding.
    Userspace,
    /// External commands (cloud security groups).
    Command,
}

/// `[firewall]` as written. See `docs/firewall.md` for every key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    #[serde(default)]
    pub backend: BackendKind,
    /// nftables: the nft program and prefix; default `["nft"]`.
    pub nft_command: Option<Vec<String>>,
    /// nftables: table name in family `inet`; default `"umbra"`.
    pub table: Option<String>,
    /// command: argv run to open a pinhole.
    pub open_command: Option<Vec<String>>,
    /// command: argv run to close a pinhole.
    pub close_command: Option<Vec<String>>,
    /// command: argv run to block a source (optional).
    pub block_command: Option<Vec<String>>,
    /// command: argv run to lift a block (required with `block_command`).
    pub unblock_command: Option<Vec<String>>,
    /// nftables and command: seconds before a call is killed; default 10.
    pub command_timeout_seconds: Option<u64>,
}

/// A `[firewall]` key with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("firewall.{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

/// The validated choice of backend.
#[derive(Clone, Debug)]
pub enum FirewallSettings {
    Nftables(NftSettings),
    Userspace,
    Command(CommandSettings),
}

impl FirewallConfig {
    pub fn validate(&self) -> Result<FirewallSettings, ConfigError> {
        let timeout = match self
            .command_timeout_seconds
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECONDS)
        {
            secs @ 1..=600 => Duration::from_secs(secs),
            _ => return Err(err("command_timeout_seconds", "must be within 1..=600")),
        };
        let nft_keys = [
            ("nft_command", self.nft_command.is_some()),
            ("table", self.table.is_some()),
        ];
        let command_keys = [
            ("open_command", self.open_command.is_some()),
            ("close_command", self.close_command.is_some()),
            ("block_command", self.block_command.is_some()),
            ("unblock_command", self.unblock_command.is_some()),
        ];
        let foreign: &[(&'static str, bool)] = match self.backend {
            BackendKind::Nftables => &command_keys,
            BackendKind::Command => &nft_keys,
            BackendKind::Userspace => &[
                nft_keys.as_slice(),
                command_keys.as_slice(),
                &[(
                    "command_timeout_seconds",
                    self.command_timeout_seconds.is_some(),
                )],
            ]
            .concat(),
        };
        if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(err(key, format!("not used by backend {:?}", self.backend)));
        }
        match self.backend {
            BackendKind::Userspace => Ok(FirewallSettings::Userspace),
            BackendKind::Nftables => self.nftables(timeout),
            BackendKind::Command => self.command(timeout),
        }
    }

    fn nftables(&self, timeout: Duration) -> Result<FirewallSettings, ConfigError> {
        let defaults = NftSettings::default();
        let command = self.nft_command.clone().unwrap_or(defaults.command);
        if command.first().is_none_or(String::is_empty) {
            return Err(err("nft_command", "must name a program"));
        }
        let table = self.table.clone().unwrap_or(defaults.table);
        if !valid_table_name(&table) {
            return Err(err(
                "table",
                "letters, digits and _, starting with a letter, at most 64",
            ));
        }
        Ok(FirewallSettings::Nftables(NftSettings {
            command,
            table,
            timeout,
        }))
    }

    fn command(&self, timeout: Duration) -> Result<FirewallSettings, ConfigError> {
        let template = |key, argv: &Option<Vec<String>>| -> Result<Option<Template>, ConfigError> {
            argv.clone()
                .map(Template::new)
                .transpose()
                .map_err(|m| err(key, m))
        };
        let open = template("open_command", &self.open_command)?
            .ok_or_else(|| err("open_command", "required"))?;
        let close = template("close_command", &self.close_command)?
            .ok_or_else(|| err("close_command", "required"))?;
        let block = template("block_command", &self.block_command)?;
        let unblock = template("unblock_command", &self.unblock_command)?;
        if block.is_some() != unblock.is_some() {
            return Err(err(
                "unblock_command",
                "block_command and unblock_command go together",
            ));
        }
        Ok(FirewallSettings::Command(CommandSettings {
            open,
            close,
            block,
            unblock,
            timeout,
        }))
    }
}

impl FirewallSettings {
    /// Builds the backend. Call inside a Tokio runtime (nftables spawns
    /// its batching task). Nothing is changed until `install`.
    pub fn build(&self) -> Result<Arc<dyn Pinholes>, Error> {
        Ok(match self {
            Self::Nftables(s) => Arc::new(NftPinholes::new(s.clone())?),
            Self::Userspace => Arc::new(UserspacePinholes::new()),
            Self::Command(s) => Arc::new(CommandPinholes::new(s.clone())),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FirewallSettings, String> {
        let cfg: FirewallConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_nftables_with_nft_and_table_umbra() {
        match parse("").unwrap() {
            FirewallSettings::Nftables(s) => assert_eq!(s, NftSettings::default()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_each_backend() {
        let nft = parse(
            "backend = \"nftables\"\nnft_command = [\"ip\", \"netns\", \"exec\", \"s\", \"nft\"]\ntable = \"gw1\"\ncommand_timeout_seconds = 3",
        );
        assert!(
            matches!(nft, Ok(FirewallSettings::Nftables(s)) if s.table == "gw1" && s.command.len() == 5 && s.timeout == Duration::from_secs(3))
        );
        assert!(matches!(
            parse("backend = \"userspace\""),
            Ok(FirewallSettings::Userspace)
        ));
        let cmd = parse(
            "backend = \"command\"\nopen_command = [\"sg\", \"add\", \"{source}\"]\nclose_command = [\"sg\", \"rm\", \"{source}\"]",
        );
        assert!(matches!(cmd, Ok(FirewallSettings::Command(s)) if s.block.is_none()));
    }

    #[test]
    fn rejects_mistakes_with_the_key_named() {
        for (text, key) in [
            ("backend = \"iptables\"", "backend"),
            ("tabel = \"x\"", "tabel"),
            ("table = \"umbra; flush ruleset\"", "firewall.table"),
            ("nft_command = []", "firewall.nft_command"),
            ("open_command = [\"x\"]", "firewall.open_command"),
            (
                "backend = \"command\"\nopen_command = [\"x\"]",
                "firewall.close_command",
            ),
            (
                "backend = \"command\"\nopen_command = [\"x\"]\nclose_command = [\"y\"]\nblock_command = [\"z\"]",
                "firewall.unblock_command",
            ),
            ("backend = \"userspace\"\ntable = \"x\"", "firewall.table"),
            (
                "command_timeout_seconds = 0",
                "firewall.command_timeout_seconds",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[tokio::test]
    async fn builds_a_dyn_backend() {
        let fw = parse("backend = \"userspace\"").unwrap().build().unwrap();
        assert_eq!(fw.backend(), "userspace");
    }
}
