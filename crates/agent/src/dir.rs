//! The agent's state directory (`UMBRA_AGENT_DIR` or `--dir`):
//!
//! | file          | mode | what |
//! |---------------|------|------|
//! | `device.key`  | 0600 | the device's private key (never leaves this directory) |
//! | `device.crt`  | 0644 | its certificate from the Umbra CA |
//! | `ca.pem`      | 0644 | the Umbra CA, pinned at enrollment |
//! | `agent.json`  | 0644 | controller URL, device id, a dark controller's ports |
//! | `session.json`| 0600 | the current session token and its services |
//! | `spa.key`     | 0600 | the device's SPA secret (base64), for knocking at dark gateways |

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use umbra_proto::api::LoginResponse;

use crate::AgentError;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentState {
    pub controller_url: String,
    pub device_id: String,
    /// `spiffe://<trust domain>/device/<id>`; the trust domain names the
    /// gateways whose SPA keys the agent derives.
    #[serde(default)]
    pub spiffe_id: String,
    /// Set when the controller is dark: where its login surface is and
    /// where to knock first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark: Option<umbra_proto::api::DarkController>,
}

#[derive(Clone, Debug)]
pub struct AgentDir {
    pub path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `text` atomically; `private` files are created owner-only.
pub fn write_file(path: &Path, text: &str, private: bool) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl AgentDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn create(&self) -> Result<(), AgentError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.path)
            .map_err(io(&self.path))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn not_enrolled(&self) -> AgentError {
        AgentError::State(format!(
            "{} holds no enrolled device; run `umbra agent enroll --controller URL --token T`",
            self.path.display()
        ))
    }

    pub fn state(&self) -> Result<AgentState, AgentError> {
        let path = self.file("agent.json");
        let text = std::fs::read_to_string(&path).map_err(|_| self.not_enrolled())?;
        serde_json::from_str(&text)
            .map_err(|e| AgentError::State(format!("{}: {e}", path.display())))
    }

    pub fn ca(&self) -> Result<CertificateDer<'static>, AgentError> {
        CertificateDer::from_pem_file(self.file("ca.pem")).map_err(|_| self.not_enrolled())
    }

    pub fn certificate(&self) -> Result<CertificateDer<'static>, AgentError> {
        CertificateDer::from_pem_file(self.file("device.crt")).map_err(|_| self.not_enrolled())
    }

    /// The device certificate and key, for mTLS.
    pub fn identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AgentError> {
        let cert = self.certificate()?;
        let key = PrivateKeyDer::from_pem_file(self.file("device.key"))
            .map_err(|_| self.not_enrolled())?;
        Ok((vec![cert], key))
    }

    pub fn session(&self) -> Result<Option<LoginResponse>, AgentError> {
        let path = self.file("session.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AgentError::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    pub fn save_session(&self, session: &LoginResponse) -> Result<(), AgentError> {
        let text =
            serde_json::to_string_pretty(session).map_err(|e| AgentError::State(e.to_string()))?;
        write_file(&self.file("session.json"), &text, true)
    }

    pub fn clear_session(&self) -> Result<(), AgentError> {
        let path = self.file("session.json");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}
