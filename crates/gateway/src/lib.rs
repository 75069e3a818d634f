//! The Umbra gateway (CSA SDP "Accepting Host", NIST 800-207 "Policy
//! Enforcement Point"): an mTLS identity-aware reverse proxy that decides
//! every request locally from a replica of the controller's state, kept
//! current by events the controller pushes.
//!
//! Start it with [`Gateway::start`] and serve it with [`server::run`] on a
//! listener you bound; stop it by cancelling the token you passed.
//!
//! Layout:
//! - [`config`]: TOML config, two-phase parse and validation.
//! - [`identity`]: enrollment, the gateway certificate, the assertion key.
//! - [`control`]: registration and the control channel (resume or resync).
//! - [`view`]: the replica: deny lists, grants, policy, postures, token
//!   keys; fail closed.
//! - [`policy`]: the decision point built from the controller's policy.
//! - [`live`]: live connections by session, cut the moment it is revoked.
//! - [`metrics`]: Prometheus metrics and their plain listener.
//! - [`authn`]: client-certificate admission and session-token checks;
//!   [`browser`]: the controller's browser session cookies.
//! - [`proxy`]: routing, authorization, header hygiene, forwarding.
//! - [`path`], [`headers`]: path normalization and header sanitizing.
//! - [`renew`]: certificate renewal at two thirds of its life.
//! - [`assertion`]: the signed identity assertion for upstreams.
//! - [`audit`]: access decisions, uploaded to the controller in batches.
//! - [`forward_auth`], [`forward_auth_config`]: `/auth/verify` for a
//!   fronting reverse proxy (nginx `auth_request`, Traefik `forwardAuth`).
//! - [`tunnel`]: TCP services through a TLS tunnel (ALPN `umbra-tunnel/1`).
//! - [`server`]: the TLS accept loop.
//! - [`demo`]: an upstream that echoes what it received (`umbra dev`, tests).

pub mod assertion;
pub mod audit;
pub mod authn;
pub mod browser;
pub mod config;
pub mod control;
pub mod demo;
pub mod forward_auth;
pub mod forward_auth_config;
pub mod headers;
pub mod identity;
/// Path normalization is the policy crate's, so rules and the proxy agree.
pub use umbra_policy::path;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod renew;
pub mod server;
pub mod spa;
pub mod spa_config;
pub mod transfer;
pub mod tunnel;
pub mod view;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use umbra_pki::clock::Clock;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(String),
    #[error("controller: {0}")]
    Controller(String),
    #[error("tls: {0}")]
    Pki(#[from] umbra_pki::PkiError),
    #[error("firewall: {0}")]
    Firewall(String),
}

/// The running gateway's shared state.
pub struct Gateway {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub identity: identity::Identity,
    pub trust_domain: umbra_pki::TrustDomain,
    pub view: Arc<view::View>,
    pub audit: audit::AuditSink,
    pub assertions: assertion::AssertionSigner,
    /// Talks to the controller with the current gateway certificate.
    controller: std::sync::RwLock<reqwest::Client>,
    /// What the TLS listener serves (swapped on renewal).
    pub server_cert: Arc<identity::ServerCert>,
    /// The current certificate's validity (Unix seconds).
    validity: std::sync::RwLock<(i64, i64)>,
    /// `iss` of session tokens, learned at registration.
    pub issuer: std::sync::RwLock<Option<String>>,
    /// Set when the controller revokes this gateway: it refuses everything.
    pub revoked: std::sync::atomic::AtomicBool,
    /// Cancelled when the server stops: long-lived relays (tunnels,
    /// upgraded connections) end with it.
    pub stop: tokio_util::sync::CancellationToken,
    /// A dark gateway's pinholes (`None`: not dark).
    pub pinholes: Option<Arc<dyn umbra_firewall::Pinholes>>,
    /// A dark gateway's SPA socket, bound at start so the port is known
    /// when registering; taken by the listener.
    spa_socket: std::sync::Mutex<Option<std::net::UdpSocket>>,
    /// The UDP port of that socket.
    pub spa_port: Option<u16>,
    pub spa_counters: spa::SpaCounters,
    /// The pinholes each device's knocks opened, closed when it is revoked.
    pub knocked: spa::Knocked,
    /// Live tunnels and upgraded connections, cut at once on revocation.
    pub live: Arc<live::LiveSessions>,
    /// Bytes of HTTP responses per session, for the exfiltration rule.
    pub transfers: transfer::Transfers,
    /// What the metrics listener serves.
    pub metrics: metrics::Metrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads (or enrolls) the identity and prepares the state; nothing is
    /// served and the view stays stale until [`control::run`] syncs it.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, GatewayError> {
        let identity = identity::load_or_enroll(&config).await?;
        let trust_domain = trust_domain_of(&identity)?;
        let peer = umbra_pki::GatewayCertificate::parse(&identity.cert, &trust_domain)?;
        let controller = controller_client(&identity.ca, &identity.cert, &identity.key_pkcs8)?;
        let server_cert = Arc::new(identity::ServerCert::new(umbra_pki::tls::certified_key(
            vec![identity.cert.clone()],
            &identity.key_pkcs8,
        )?));
        let validity = validity_of(&identity.cert)?;
        if validity.1 <= clock.now() {
            return Err(GatewayError::Identity(format!(
                "the gateway certificate in {} has expired; enroll the gateway again \
                 (`umbra admin gateway add` gives a new token)",
                config.state_dir.display()
            )));
        }
        let view = Arc::new(view::View::new(
            clock.clone(),
            config.max_staleness.as_secs() as i64,
        ));
        let assertions = assertion::AssertionSigner::new(
            &peer.name,
            &identity.assertion,
            config.assertion_ttl_secs,
        );
        tracing::info!(name = %peer.name, serial = %peer.serial, "gateway identity loaded");
        let (pinholes, spa_socket) = match &config.spa {
            None => (None, None),
            Some(spa) => {
                let socket = umbra_firewall::knock_socket(spa.listen).map_err(|source| {
                    GatewayError::Io {
                        path: format!("SPA socket {}", spa.listen).into(),
                        source,
                    }
                })?;
                let pinholes = spa
                    .firewall
                    .build()
                    .map_err(|e| GatewayError::Firewall(e.to_string()))?;
                let mut protected = vec![umbra_firewall::Protected::new(
                    umbra_firewall::Protocol::Tcp,
                    config.listen.port(),
                )];
                protected.extend(spa.protect.iter().copied());
                pinholes
                    .install(&protected)
                    .await
                    .map_err(|e| GatewayError::Firewall(e.to_string()))?;
                tracing::info!(backend = pinholes.backend(), spa = %spa.listen, "dark gateway: pinholes installed");
                (Some(pinholes), Some(socket))
            }
        };
        let spa_port = spa_socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port());
        let (metrics, spa_counters) =
            metrics::Metrics::new(&config.routes, pinholes.is_some(), clock.now());
        Ok(Arc::new(Self {
            metrics,
            pinholes,
            spa_socket: std::sync::Mutex::new(spa_socket),
            spa_port,
            spa_counters,
            knocked: spa::Knocked::default(),
            live: Arc::default(),
            transfers: transfer::Transfers::default(),
            audit: audit::AuditSink::new(),
            config,
            clock,
            identity,
            trust_domain,
            view,
            assertions,
            controller: std::sync::RwLock::new(controller),
            server_cert,
            validity: std::sync::RwLock::new(validity),
            issuer: std::sync::RwLock::new(None),
            revoked: std::sync::atomic::AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
        }))
    }

    /// The SPA socket, once (the listener takes it).
    pub fn take_spa_socket(&self) -> Option<std::net::UdpSocket> {
        self.spa_socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub fn name(&self) -> &str {
        self.assertions.gateway()
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A client for the controller presenting the current certificate.
    pub fn controller(&self) -> reqwest::Client {
        self.controller
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn validity(&self) -> (i64, i64) {
        *self
            .validity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts using a renewed certificate everywhere.
    pub fn install(
        &self,
        cert: rustls_pki_types::CertificateDer<'static>,
        key_pkcs8: &[u8],
    ) -> Result<(), GatewayError> {
        let client = controller_client(&self.identity.ca, &cert, key_pkcs8)?;
        let validity = validity_of(&cert)?;
        self.server_cert
            .replace(umbra_pki::tls::certified_key(vec![cert], key_pkcs8)?);
        *self
            .controller
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
        *self
            .validity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = validity;
        Ok(())
    }
}

fn controller_client(
    ca: &rustls_pki_types::CertificateDer<'static>,
    cert: &rustls_pki_types::CertificateDer<'static>,
    key_pkcs8: &[u8],
) -> Result<reqwest::Client, GatewayError> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key_pkcs8.to_vec().into());
    let tls = umbra_pki::tls::client_config(ca, Some((vec![cert.clone()], key)))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        // The control channel is a long response: bound each read (the
        // controller sends heartbeats), not the whole exchange.
        .read_timeout(std::time::Duration::from_secs(
            3 * umbra_proto::control::HEARTBEAT_SECS,
        ))
        .build()
        .map_err(|e| GatewayError::Controller(e.to_string()))
}

fn validity_of(cert: &rustls_pki_types::CertificateDer<'_>) -> Result<(i64, i64), GatewayError> {
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    Ok((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// The trust domain is the one in the gateway's own SPIFFE ID.
fn trust_domain_of(identity: &identity::Identity) -> Result<umbra_pki::TrustDomain, GatewayError> {
    let (_, cert) = x509_parser::parse_x509_certificate(&identity.cert)
        .map_err(|e| GatewayError::Identity(e.to_string()))?;
    let uri = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
        })
        .ok_or_else(|| GatewayError::Identity("certificate has no SPIFFE ID".into()))?;
    let td = uri
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once("/gateway/"))
        .map(|(td, _)| td)
        .ok_or_else(|| GatewayError::Identity(format!("{uri:?} is not a gateway SPIFFE ID")))?;
    Ok(umbra_pki::TrustDomain::new(td)?)
}
