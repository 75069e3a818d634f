//! The controller's shared state and its start-up: open the store, check the
//! KEK, load or create the CA and the token-signing key, and issue the
//! bootstrap admin credential on a fresh installation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use umbra_pki::{CertificateAuthority, Kek};
use umbra_store::{
    AdminTokenKind, AdminTokenRecord, AuditEvent, Outcome, PgStore, SigningKeyRecord, SqliteStore,
    Store,
};

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::error::Failure;
use crate::password::Passwords;
use crate::ratelimit::RateLimiter;
use crate::secrets;
use crate::tokens::{self, TokenSigner};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] umbra_store::StoreError),
    #[error(
        "the key-encryption key (id {kek_id}) is not the one this store was created with; \
         start with the original KEK"
    )]
    WrongKek { kek_id: String },
    #[error("{what}: {message}")]
    Init { what: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn init(what: &'static str) -> impl FnOnce(String) -> StartError {
    move |message| StartError::Init { what, message }
}

pub struct Controller {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub ca: CertificateAuthority,
    pub signer: TokenSigner,
    pub passwords: Passwords,
    pub login_limiter: RateLimiter,
    /// Events for the gateways' control channels.
    pub events: crate::events::EventHub,
    /// Where the bootstrap credential was written, if this start wrote one.
    pub bootstrap_file: Option<PathBuf>,
    /// A dark controller's login and knock ports, once its listeners are
    /// bound (enrollment tells devices where to knock).
    pub dark: std::sync::OnceLock<umbra_proto::api::DarkController>,
    pub knock_counters: crate::knock::KnockCounters,
    /// What `GET /metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// The Rego policy set served on the OPA Data API.
    pub policies: crate::policies::Policies,
    /// Live sessions to judge again before their time.
    pub reevaluation: crate::reevaluate::Reevaluation,
    /// Audit records on their way to threat detection.
    pub detector: crate::detect::Detector,
    /// Signs the audit chain's checkpoints (sealed by the KEK in the store).
    pub audit_key: umbra_store::chain::checkpoint::SigningKey,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("listen", &self.config.listen)
            .field("trust_domain", &self.config.trust_domain)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Name of the bootstrap credential file inside `data_dir`.
pub const BOOTSTRAP_FILE: &str = "bootstrap-admin-token";
const CA_LIFETIME_SECS: i64 = 10 * 365 * 86400;

impl Controller {
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        // Owner-only: the directory holds the database and the bootstrap credential.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.data_dir)
            .map_err(|source| StartError::Write {
                path: config.data_dir.clone(),
                source,
            })?;
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
            StoreConfig::Postgres {
                url,
                max_connections,
            } => Arc::new(PgStore::open(&url.0, *max_connections).await?),
        };
        Self::start_with_store(config, store, clock).await
    }

    pub async fn start_with_store(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StartError> {
        let now = clock.now();
        let kek = &config.kek;
        check_kek(store.as_ref(), kek, now).await?;
        let ca = load_or_create_ca(store.as_ref(), kek, &config, now).await?;
        if store.signing_keys().await?.is_empty() {
            let record = new_signing_key(kek, now).map_err(init("token-signing key"))?;
            // Concurrent first starts: one insert wins, all load the winner.
            store.insert_first_signing_key(&record).await?;
        }
        let keys = load_signing_keys(store.as_ref(), kek).await?;
        let audit_key = crate::audit::load_or_create_key(store.as_ref(), kek, now).await?;
        let signer =
            TokenSigner::new(&config.token_issuer, &keys).map_err(init("token-signing key"))?;
        let passwords = Passwords::new(&config.argon2).map_err(|e| StartError::Init {
            what: "argon2 parameters",
            message: e.to_string(),
        })?;
        let login_limiter = RateLimiter::new(config.login_rate_per_minute, config.login_burst);
        let (metrics, knock_counters) = crate::metrics::Metrics::new();
        let mut controller = Self {
            config,
            store,
            clock,
            ca,
            signer,
            passwords,
            login_limiter,
            events: crate::events::EventHub::default(),
            bootstrap_file: None,
            dark: std::sync::OnceLock::new(),
            knock_counters,
            metrics,
            policies: crate::policies::Policies::default(),
            reevaluation: crate::reevaluate::Reevaluation::default(),
            detector: crate::detect::Detector::default(),
            audit_key,
        };
        // The CA certificate is public: written where operators and agents'
        // installers can pick it up (and check its fingerprint out of band).
        let ca_path = controller.config.data_dir.join("ca.pem");
        std::fs::write(&ca_path, controller.ca.cert_pem()).map_err(|source| StartError::Write {
            path: ca_path,
            source,
        })?;
        // So is the audit checkpoints' key: copy it off the host to verify
        // exports against it (`umbra admin audit verify --public-key`).
        let key_path = controller
            .config
            .data_dir
            .join(crate::audit::PUBLIC_KEY_FILE);
        let key_hex = format!("{}\n", controller.audit_key.public_key().to_hex());
        std::fs::write(&key_path, key_hex).map_err(|source| StartError::Write {
            path: key_path,
            source,
        })?;
        controller.bootstrap_file = controller.maybe_issue_bootstrap().await?;
        // Stored policies that no longer build are logged and leave the
        // empty set in force (every query undefined): start anyway, so an
        // operator can fix them through the API.
        controller.reload_policies().await?;
        Ok(Arc::new(controller))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Issues a bootstrap credential when nobody could administer this
    /// controller otherwise: no usable admin token and no admin user.
    async fn maybe_issue_bootstrap(&self) -> Result<Option<PathBuf>, StartError> {
        let now = self.now();
        let tokens = self.store.list_admin_tokens().await?;
        let usable_api = tokens
            .iter()
            .any(|t| t.kind == AdminTokenKind::Api && t.revoked_at.is_none() && t.expires_at > now);
        let admin_user = self
            .store
            .list_users()
            .await?
            .iter()
            .any(|u| u.role == umbra_proto::api::Role::Admin);
        if usable_api || admin_user {
            return Ok(None);
        }
        // Older unused bootstrap credentials are retired: only the file
        // written now is valid.
        for t in tokens
            .iter()
            .filter(|t| t.kind == AdminTokenKind::Bootstrap && t.used_at.is_none())
        {
            self.store.revoke_admin_token(&t.id, now).await?;
        }
        let (record, token) = new_admin_token(
            AdminTokenKind::Bootstrap,
            "bootstrap",
            "controller",
            now,
            self.config.bootstrap_token_ttl_secs,
        );
        self.store.create_admin_token(&record).await?;
        let path = self.config.data_dir.join(BOOTSTRAP_FILE);
        write_private(&path, &format!("{token}\n"))?;
        self.audit_event(
            "controller",
            None,
            "admin.bootstrap.issue",
            &format!("admin_token:{}", record.id),
            Outcome::Allow,
            "fresh installation",
            "",
        )
        .await
        .map_err(|_| StartError::Init {
            what: "audit",
            message: "cannot record bootstrap".into(),
        })?;
        tracing::warn!(
            path = %path.display(),
            "no administrator exists yet: a one-time bootstrap admin credential was written; \
             exchange it with `umbra admin bootstrap --token-file {}`",
            path.display()
        );
        Ok(Some(path))
    }

    /// Appends an audit record. An error here means the record is not
    /// durable: callers granting something must then refuse (fail closed).
    #[allow(clippy::too_many_arguments)]
    pub async fn audit_event(
        &self,
        actor: &str,
        ip: Option<IpAddr>,
        action: &str,
        resource: &str,
        outcome: Outcome,
        reason: &str,
        request_id: &str,
    ) -> Result<(), Failure> {
        let event = AuditEvent {
            ts: self.now(),
            actor: actor.to_owned(),
            source_ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome,
            reason: reason.to_owned(),
            request_id: request_id.to_owned(),
            count: 1,
        };
        match outcome {
            Outcome::Allow => tracing::info!(actor, action, resource, reason, request_id, "audit"),
            _ => tracing::warn!(
                actor,
                action,
                resource,
                outcome = outcome.as_str(),
                reason,
                request_id,
                "audit"
            ),
        }
        self.store.append_audit(&event).await.map_err(|e| {
            tracing::error!(error = %e, action, "audit record could not be written");
            Failure::unavailable()
        })?;
        self.detector.offer(crate::detect::Observed {
            event,
            transfer: None,
        });
        Ok(())
    }

    /// Re-reads the signing keys from the store: after a rotation here or
    /// on another controller sharing the store.
    pub async fn reload_signing_keys(&self) -> Result<(), Failure> {
        let keys = load_signing_keys(self.store.as_ref(), &self.config.kek)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "signing keys could not be loaded");
                Failure::unavailable()
            })?;
        self.signer.replace(&keys).map_err(|e| {
            tracing::error!(error = %e, "signing keys are unusable");
            Failure::internal()
        })
    }

    pub fn may_reload_signing_keys(&self) -> bool {
        self.signer.claim_reload(self.now())
    }

    /// Starts signing with a new key. The old ones stay published and
    /// accepted until every token they signed has expired.
    pub async fn rotate_signing_key(&self) -> Result<(String, i64), Failure> {
        let now = self.now();
        let record = new_signing_key(&self.config.kek, now).map_err(|e| {
            tracing::error!(error = %e, "signing key generation failed");
            Failure::internal()
        })?;
        let retire_at = now + MAX_TOKEN_LIFETIME_SECS + TOKEN_CLOCK_SKEW_SECS;
        self.store.rotate_signing_key(&record, retire_at).await?;
        self.reload_signing_keys().await?;
        let jwks = serde_json::to_value(self.signer.jwks(now)).map_err(|_| Failure::internal())?;
        self.publish(&umbra_proto::control::Event::KeysChanged { jwks })
            .await?;
        Ok((record.kid, retire_at))
    }

    /// Admits one login or enrollment attempt from `ip`: first this
    /// controller's in-memory bucket (cheap, before any database work),
    /// then the bucket in the store, which every controller sharing the
    /// store draws from. `Err(retry_after_secs)` when either is empty; a
    /// store that cannot answer refuses (fail closed).
    pub async fn admit_attempt(&self, ip: IpAddr) -> Result<(), u64> {
        let now = self.now();
        self.login_limiter.check(ip, now)?;
        let key = format!("attempt:{ip}");
        match self
            .store
            .take_rate_token(
                &key,
                now,
                self.config.login_rate_per_minute,
                self.config.login_burst,
            )
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(60 / u64::from(self.config.login_rate_per_minute.max(1)) + 1),
            Err(e) => {
                tracing::error!(error = %e, "rate limit unavailable; refusing the attempt");
                Err(5)
            }
        }
    }

    /// Records a refusal by an unauthenticated peer. The refusal stands
    /// even if the record cannot be written (that error is logged).
    pub async fn audit_denial(
        &self,
        ctx: &crate::context::RequestContext,
        action: &str,
        resource: &str,
        reason: &str,
    ) {
        let _ = self
            .audit_event(
                "-",
                Some(ctx.ip),
                action,
                resource,
                Outcome::Deny,
                reason,
                &ctx.request_id,
            )
            .await;
    }

    /// Suspends `user`: the store revokes their live sessions with it (and
    /// opens no new one), and the gateways are told of the suspension and
    /// of every revoked, unexpired session of the user, so resuming the
    /// user later does not bring old tokens back.
    pub async fn suspend_user(&self, user: &umbra_store::UserRecord) -> Result<(), Failure> {
        use umbra_proto::control::Event;
        let now = self.now();
        self.store
            .set_user_status(&user.id, umbra_proto::api::UserStatus::Suspended, now)
            .await?;
        self.publish(&Event::UserSuspended {
            user: user.name.clone(),
        })
        .await?;
        let revoked: Vec<String> = self
            .store
            .unexpired_sessions_of(&user.id, now)
            .await?
            .into_iter()
            .filter(|s| s.revoked_at.is_some())
            .map(|s| s.id)
            .collect();
        for session in revoked {
            self.publish(&Event::SessionRevoked { session }).await?;
        }
        Ok(())
    }

    /// Blocks `ip` at every gateway for `seconds`.
    pub async fn block_source(
        &self,
        ip: IpAddr,
        seconds: u64,
        reason: &str,
    ) -> Result<(), Failure> {
        let now = self.now();
        let ip = ip.to_canonical();
        let until = now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        self.store
            .block_source(&umbra_store::BlockedSourceRecord {
                address: ip.to_string(),
                until,
                reason: reason.to_owned(),
                created_at: now,
            })
            .await?;
        self.publish(&umbra_proto::control::Event::SourceBlocked {
            address: ip.to_string(),
            until,
        })
        .await?;
        Ok(())
    }

    pub async fn resume_user(&self, user: &umbra_store::UserRecord) -> Result<(), Failure> {
        self.store
            .set_user_status(&user.id, umbra_proto::api::UserStatus::Active, self.now())
            .await?;
        self.publish(&umbra_proto::control::Event::UserResumed {
            user: user.name.clone(),
        })
        .await?;
        Ok(())
    }

    /// Mints an API admin credential directly (used by `umbra dev`, which
    /// owns its data directory, and by the bootstrap exchange).
    pub async fn issue_admin_token(
        &self,
        name: &str,
        created_by: &str,
    ) -> Result<(AdminTokenRecord, String), Failure> {
        let (record, token) = new_admin_token(
            AdminTokenKind::Api,
            name,
            created_by,
            self.now(),
            self.config.admin_token_ttl_secs,
        );
        self.store.create_admin_token(&record).await?;
        Ok((record, token))
    }
}

/// A new admin credential record and its secret text (shown once).
pub fn new_admin_token(
    kind: AdminTokenKind,
    name: &str,
    created_by: &str,
    now: i64,
    ttl: i64,
) -> (AdminTokenRecord, String) {
    let id = secrets::random_id();
    let secret = secrets::random_secret();
    let prefix = match kind {
        AdminTokenKind::Bootstrap => secrets::BOOTSTRAP_PREFIX,
        AdminTokenKind::Api => secrets::ADMIN_PREFIX,
    };
    let token = format!("{prefix}.{id}.{secret}");
    let record = AdminTokenRecord {
        id,
        name: name.to_owned(),
        kind,
        secret_hash: secrets::hash_secret(&secret),
        created_by: created_by.to_owned(),
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
        revoked_at: None,
    };
    (record, token)
}

/// Writes `text` to a new file readable by its owner only.
pub fn write_private(path: &std::path::Path, text: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| StartError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The longest a session token lives (the lowest risk band); a retired key
/// must stay valid this long for the tokens it signed.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;
const TOKEN_CLOCK_SKEW_SECS: i64 = 60;

fn new_signing_key(kek: &Kek, now: i64) -> Result<SigningKeyRecord, String> {
    let pkcs8 = tokens::generate_key()?;
    let kid = tokens::kid_of(&pkcs8)?;
    let sealed_key = kek
        .seal(&format!("signing-key:{kid}"), &pkcs8)
        .map_err(|e| e.to_string())?;
    Ok(SigningKeyRecord {
        kid,
        sealed_key,
        created_at: now,
        retire_at: None,
    })
}

async fn load_signing_keys(
    store: &dyn Store,
    kek: &Kek,
) -> Result<Vec<tokens::KeyMaterial>, StartError> {
    store
        .signing_keys()
        .await?
        .into_iter()
        .map(|r| {
            let pkcs8 = kek
                .open(&format!("signing-key:{}", r.kid), &r.sealed_key)
                .map_err(|e| init("signing key")(e.to_string()))?;
            Ok(tokens::KeyMaterial {
                pkcs8,
                retire_at: r.retire_at,
            })
        })
        .collect()
}

async fn check_kek(store: &dyn Store, kek: &Kek, now: i64) -> Result<(), StartError> {
    const CONTEXT: &str = "kek-check";
    let sealed = kek
        .seal(CONTEXT, b"umbra")
        .map_err(|e| init("kek")(e.to_string()))?;
    let stored = store.insert_secret_if_absent(CONTEXT, &sealed, now).await?;
    match kek.open(CONTEXT, &stored) {
        Ok(v) if v.as_slice() == b"umbra" => Ok(()),
        _ => Err(StartError::WrongKek {
            kek_id: kek.id().to_owned(),
        }),
    }
}

async fn load_or_create_ca(
    store: &dyn Store,
    kek: &Kek,
    config: &Config,
    now: i64,
) -> Result<CertificateAuthority, StartError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let td = config.trust_domain.clone();
    let stored = match store.secret("ca").await? {
        Some(s) => s,
        None => {
            let ca = CertificateAuthority::generate(td.clone(), now, CA_LIFETIME_SECS)
                .map_err(|e| init("CA")(e.to_string()))?;
            let sealed_key = kek
                .seal("ca-key", &ca.key_pkcs8())
                .map_err(|e| init("CA")(e.to_string()))?;
            let value = format!("{}:{}", b64.encode(ca.cert_der()), sealed_key);
            store.insert_secret_if_absent("ca", &value, now).await?
        }
    };
    let (cert, sealed_key) = stored
        .split_once(':')
        .ok_or_else(|| init("CA")("stored CA is malformed".into()))?;
    let cert = b64.decode(cert).map_err(|e| init("CA")(e.to_string()))?;
    let key = kek
        .open("ca-key", sealed_key)
        .map_err(|e| init("CA key")(e.to_string()))?;
    let ca =
        CertificateAuthority::from_parts(td, &cert, &key).map_err(|e| init("CA")(e.to_string()))?;
    Ok(ca)
}
