//! Behaviour every backend must have, written against `dyn Store` so the
//! PostgreSQL backend runs the very same checks.

use umbra_proto::api::{DeviceStatus, Role, UserStatus};

use crate::*;

const NOW: i64 = 1_800_000_000;

async fn user(store: &dyn Store, name: &str) -> UserRecord {
    store
        .create_user(&NewUser {
            id: format!("id-{name}"),
            name: name.into(),
            role: Role::User,
            groups: vec!["eng".into(), "ops".into()],
            password_hash: "$argon2id$x".into(),
            sealed_totp_secret: "v1.sealed".into(),
            now: NOW,
        })
        .await
        .expect("create user");
    store
        .user_by_name(name)
        .await
        .expect("read")
        .expect("exists")
}

fn cert(serial: &str, device: &str) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        device_id: device.into(),
        not_before: NOW,
        not_after: NOW + 86400,
        created_at: NOW,
        revoked_at: None,
        revoked_reason: None,
    }
}

fn device(id: &str, user_id: &str) -> NewDevice {
    NewDevice {
        id: id.into(),
        user_id: user_id.into(),
        status: DeviceStatus::Approved,
        hostname: "laptop".into(),
        posture: "{}".into(),
    }
}

async fn token(store: &dyn Store, hash: &str, user_id: &str, expires_at: i64) {
    store
        .create_enrollment_token(&NewEnrollmentToken {
            id: format!("t-{hash}"),
            token_hash: hash.into(),
            user_id: user_id.into(),
            created_by: "admin".into(),
            created_at: NOW,
            expires_at,
        })
        .await
        .expect("token");
}

async fn enrolled(store: &dyn Store, name: &str) -> (UserRecord, String, String) {
    let u = user(store, name).await;
    let hash = format!("h-{name}");
    token(store, &hash, &u.id, NOW + 600).await;
    let dev = format!("d-{name}");
    let serial = format!("s-{name}");
    let out = store
        .enroll_device(&hash, NOW, &device(&dev, &u.id), &cert(&serial, &dev))
        .await;
    assert_eq!(out.expect("enroll"), EnrollOutcome::Enrolled);
    (u, dev, serial)
}

fn session(id: &str, u: &UserRecord, dev: &str, serial: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        kind: SessionKind::Device,
        user_id: u.id.clone(),
        user_name: u.name.clone(),
        device_id: dev.into(),
        cert_serial: serial.into(),
        source_ip: "127.0.0.1".into(),
        risk: 10,
        created_at: NOW,
        expires_at: NOW + 3600,
        revoked_at: None,
        revoked_reason: None,
        mfa_at: Some(NOW),

        verdict: None,
    }
}

pub async fn users_and_groups(store: &dyn Store) {
    let u = user(store, "alice").await;
    assert_eq!(u.groups, vec!["eng".to_string(), "ops".to_string()]);
    assert_eq!(u.status, UserStatus::Active);
    let dup = store
        .create_user(&NewUser {
            id: "other".into(),
            name: "alice".into(),
            role: Role::Admin,
            groups: vec![],
            password_hash: "x".into(),
            sealed_totp_secret: "y".into(),
            now: NOW,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The failed insert left nothing behind.
    assert_eq!(store.list_users().await.expect("list").len(), 1);
    assert!(store.user_by_id("other").await.expect("read").is_none());
}

pub async fn lockout_counts_and_expires(store: &dyn Store) {
    let u = user(store, "bob").await;
    for i in 1..5 {
        let s = store
            .record_login_failure(&u.id, NOW, 5, 900)
            .await
            .expect("fail");
        assert_eq!(
            s,
            LockState {
                failed_logins: i,
                locked_until: None
            }
        );
    }
    let s = store
        .record_login_failure(&u.id, NOW, 5, 900)
        .await
        .expect("fail");
    assert_eq!(s.locked_until, Some(NOW + 900));
    // More failures while locked do not extend the lock.
    let s = store
        .record_login_failure(&u.id, NOW + 10, 5, 900)
        .await
        .expect("fail");
    assert_eq!(s.locked_until, Some(NOW + 900));
    // After expiry the count starts over.
    let s = store
        .record_login_failure(&u.id, NOW + 901, 5, 900)
        .await
        .expect("fail");
    assert_eq!(
        s,
        LockState {
            failed_logins: 1,
            locked_until: None
        }
    );
    assert!(store.unlock_user(&u.id, NOW).await.expect("unlock"));
    let u = store
        .user_by_id(&u.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((u.failed_logins, u.locked_until), (0, None));
}

pub async fn totp_steps_are_single_use(store: &dyn Store) {
    let u = user(store, "carol").await;
    assert!(store.consume_totp_step(&u.id, 100).await.expect("first"));
    assert!(!store.consume_totp_step(&u.id, 100).await.expect("replay"));
    assert!(!store.consume_totp_step(&u.id, 99).await.expect("older"));
    assert!(store.consume_totp_step(&u.id, 101).await.expect("next"));
    assert!(store.reset_totp(&u.id, "v1.new", NOW).await.expect("reset"));
    assert!(
        store
            .consume_totp_step(&u.id, 50)
            .await
            .expect("after reset")
    );
}

pub async fn enrollment_tokens_are_single_use_and_atomic(store: &dyn Store) {
    let (u, dev, _) = enrolled(store, "dave").await;
    assert_eq!(
        store
            .device(&dev)
            .await
            .expect("read")
            .expect("exists")
            .user_name,
        "dave"
    );
    // Reuse.
    let again = store
        .enroll_device("h-dave", NOW, &device("d2", &u.id), &cert("s2", "d2"))
        .await;
    assert_eq!(again.expect("enroll"), EnrollOutcome::TokenUsed);
    // Unknown and expired.
    let unknown = store
        .enroll_device("nope", NOW, &device("d3", &u.id), &cert("s3", "d3"))
        .await;
    assert_eq!(unknown.expect("enroll"), EnrollOutcome::TokenUnknown);
    token(store, "old", &u.id, NOW - 1).await;
    let old = store
        .enroll_device("old", NOW, &device("d4", &u.id), &cert("s4", "d4"))
        .await;
    assert_eq!(old.expect("enroll"), EnrollOutcome::TokenExpired);
    // A token is bound to its user.
    let other = user(store, "eve").await;
    token(store, "for-dave", &u.id, NOW + 60).await;
    let stolen = store
        .enroll_device("for-dave", NOW, &device("d5", &other.id), &cert("s5", "d5"))
        .await;
    assert_ne!(stolen.expect("enroll"), EnrollOutcome::Enrolled);
    // A failure after the token was taken (duplicate serial) rolls it all back.
    token(store, "fresh", &u.id, NOW + 60).await;
    let dup = store
        .enroll_device("fresh", NOW, &device("d6", &u.id), &cert("s-dave", "d6"))
        .await;
    assert!(dup.is_err());
    assert!(store.device("d6").await.expect("read").is_none());
    let t = store
        .enrollment_token("fresh")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        t.used_at, None,
        "token must not be consumed by a failed enrollment"
    );
    assert_eq!(store.list_devices().await.expect("list").len(), 1);
}

pub async fn blocked_sources_extend_expire_and_lift(store: &dyn Store) {
    let block = |address: &str, until| BlockedSourceRecord {
        address: address.into(),
        until,
        reason: "test".into(),
        created_at: NOW,
    };
    store
        .block_source(&block("198.51.100.7", NOW + 1800))
        .await
        .expect("block");
    store
        .block_source(&block("2001:db8::1", NOW + 60))
        .await
        .expect("block");
    // A shorter block does not shorten one in force; a longer one extends it.
    store
        .block_source(&block("198.51.100.7", NOW + 10))
        .await
        .expect("again");
    let listed = store.blocked_sources(NOW).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].until, NOW + 1800);
    store
        .block_source(&block("198.51.100.7", NOW + 3600))
        .await
        .expect("extend");
    assert_eq!(
        store.blocked_sources(NOW).await.expect("list")[0].until,
        NOW + 3600
    );
    // Expired blocks drop out.
    let later = store.blocked_sources(NOW + 61).await.expect("list");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].address, "198.51.100.7");
    assert!(store.unblock_source("198.51.100.7").await.expect("lift"));
    assert!(!store.unblock_source("198.51.100.7").await.expect("again"));
    assert!(store.blocked_sources(NOW).await.expect("list").is_empty());
}

pub async fn session_verdicts_move_forward_on_live_sessions_only(store: &dyn Store) {
    let (u, dev, serial) = enrolled(store, "vic").await;
    store
        .open_session(&session("sess-v", &u, &dev, &serial))
        .await
        .expect("open");
    let read = || async {
        store
            .session("sess-v")
            .await
            .expect("read")
            .expect("exists")
    };
    assert_eq!(read().await.verdict, None, "not evaluated yet");
    let first = StoredVerdict {
        risk: 40,
        at: NOW + 60,
        step_up_at: Some(NOW + 60),
    };
    assert!(
        store
            .record_session_verdict("sess-v", &first)
            .await
            .expect("record")
    );
    let s = read().await;
    assert_eq!(s.verdict, Some(first));
    assert_eq!(s.risk, 10, "the login-time score stays");
    let older = StoredVerdict {
        risk: 5,
        at: NOW + 30,
        step_up_at: None,
    };
    assert!(
        !store
            .record_session_verdict("sess-v", &older)
            .await
            .expect("late"),
        "an older verdict does not replace a newer one"
    );
    assert_eq!(read().await.verdict, Some(first));
    let cleared = StoredVerdict {
        risk: 12,
        at: NOW + 120,
        step_up_at: None,
    };
    assert!(
        store
            .record_session_verdict("sess-v", &cleared)
            .await
            .expect("clear")
    );
    assert_eq!(read().await.verdict, Some(cleared));
    assert!(
        store
            .revoke_session("sess-v", NOW + 130, "test")
            .await
            .expect("revoke")
    );
    let after = StoredVerdict {
        at: NOW + 140,
        ..cleared
    };
    assert!(
        !store
            .record_session_verdict("sess-v", &after)
            .await
            .expect("revoked"),
        "a revoked session takes no verdict"
    );
}

pub async fn session_mfa_moves_forward_on_live_sessions_only(store: &dyn Store) {
    let (u, dev, serial) = enrolled(store, "mia").await;
    store
        .open_session(&session("sess-m", &u, &dev, &serial))
        .await
        .expect("open");
    let mfa = |s: Option<SessionRecord>| s.expect("exists").mfa_at;
    assert_eq!(mfa(store.session("sess-m").await.expect("read")), Some(NOW));
    assert!(
        store
            .record_session_mfa("sess-m", NOW + 60)
            .await
            .expect("step up")
    );
    assert_eq!(
        mfa(store.session("sess-m").await.expect("read")),
        Some(NOW + 60)
    );
    // A late, older step-up does not age it; the session is still live.
    assert!(
        store
            .record_session_mfa("sess-m", NOW + 30)
            .await
            .expect("late")
    );
    assert_eq!(
        mfa(store.session("sess-m").await.expect("read")),
        Some(NOW + 60)
    );
    assert!(
        !store
            .record_session_mfa("nope", NOW + 61)
            .await
            .expect("unknown"),
        "no such session"
    );
    assert!(
        !store
            .record_session_mfa("sess-m", NOW + 3600)
            .await
            .expect("expired"),
        "an expired session takes no step-up"
    );
    assert!(
        store
            .revoke_session("sess-m", NOW + 70, "test")
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .record_session_mfa("sess-m", NOW + 80)
            .await
            .expect("revoked"),
        "a revoked session takes no step-up"
    );
    assert_eq!(
        mfa(store.session("sess-m").await.expect("read")),
        Some(NOW + 60)
    );
}

pub async fn revocation_cascades(store: &dyn Store) {
    let (u, dev, serial) = enrolled(store, "frank").await;
    store
        .open_session(&session("sess-1", &u, &dev, &serial))
        .await
        .expect("open");
    assert!(
        store
            .session("sess-1")
            .await
            .expect("read")
            .expect("exists")
            .is_live(NOW)
    );
    assert_eq!(store.list_sessions(Some(NOW)).await.expect("list").len(), 1);
    assert!(
        store
            .set_device_status(&dev, DeviceStatus::Revoked, NOW + 1)
            .await
            .expect("revoke")
    );
    let s = store
        .session("sess-1")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(s.revoked_reason.as_deref(), Some("device revoked"));
    let c = store
        .certificate(&serial)
        .await
        .expect("read")
        .expect("exists");
    assert!(c.revoked_at.is_some());
    // Revoked devices cannot be re-approved.
    assert!(
        !store
            .set_device_status(&dev, DeviceStatus::Approved, NOW + 2)
            .await
            .expect("approve")
    );
    assert!(
        store
            .list_sessions(Some(NOW))
            .await
            .expect("list")
            .is_empty()
    );

    let (g, gdev, gserial) = enrolled(store, "grace").await;
    store
        .open_session(&session("sess-2", &g, &gdev, &gserial))
        .await
        .expect("open");
    assert!(
        store
            .set_user_status(&g.id, UserStatus::Suspended, NOW)
            .await
            .expect("suspend")
    );
    assert!(
        !store
            .session("sess-2")
            .await
            .expect("read")
            .expect("exists")
            .is_live(NOW)
    );
    assert!(
        !store
            .open_session(&session("sess-3", &g, &gdev, &gserial))
            .await
            .expect("open"),
        "no session for a suspended user"
    );
    store
        .set_user_status(&g.id, UserStatus::Active, NOW)
        .await
        .expect("resume");
    assert!(
        store
            .open_session(&session("sess-3", &g, &gdev, &gserial))
            .await
            .expect("open")
    );
    assert!(
        store
            .revoke_certificate(&gserial, NOW, "key compromise")
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_certificate(&gserial, NOW, "again")
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .session("sess-3")
            .await
            .expect("read")
            .expect("exists")
            .is_live(NOW)
    );
    assert!(
        !store
            .revoke_session("sess-3", NOW, "x")
            .await
            .expect("revoke")
    );
}

pub async fn renewal_needs_a_live_certificate_and_device(store: &dyn Store) {
    let (_, dev, serial) = enrolled(store, "ivan").await;
    assert!(
        store
            .add_renewed_certificate(&serial, &cert("s-ivan-2", &dev))
            .await
            .expect("renew")
    );
    assert_eq!(
        store
            .certificate("s-ivan-2")
            .await
            .expect("read")
            .expect("exists")
            .device_id,
        dev
    );
    // Not from another device's certificate, nor from a revoked one.
    let (_, other_dev, _) = enrolled(store, "judy").await;
    assert!(
        !store
            .add_renewed_certificate(&serial, &cert("s-x", &other_dev))
            .await
            .expect("renew")
    );
    assert!(
        store
            .revoke_certificate(&serial, NOW, "lost")
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .add_renewed_certificate(&serial, &cert("s-ivan-3", &dev))
            .await
            .expect("renew")
    );
    // Nor for a revoked device, even from its live renewed certificate.
    assert!(
        store
            .set_device_status(&dev, DeviceStatus::Revoked, NOW)
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .add_renewed_certificate("s-ivan-2", &cert("s-ivan-4", &dev))
            .await
            .expect("renew")
    );
    assert!(store.certificate("s-ivan-4").await.expect("read").is_none());
}

pub async fn recovery_codes_are_single_use_and_replaced_together(store: &dyn Store) {
    let u = user(store, "kim").await;
    let codes = ["h1".to_string(), "h2".to_string()];
    store
        .replace_recovery_codes(&u.id, &codes, NOW)
        .await
        .expect("set");
    assert_eq!(store.recovery_codes_left(&u.id).await.expect("left"), 2);
    assert!(
        store
            .consume_recovery_code(&u.id, "h1", NOW)
            .await
            .expect("use")
    );
    assert!(
        !store
            .consume_recovery_code(&u.id, "h1", NOW)
            .await
            .expect("reuse")
    );
    assert!(
        !store
            .consume_recovery_code(&u.id, "nope", NOW)
            .await
            .expect("unknown")
    );
    let other = user(store, "lee").await;
    assert!(
        !store
            .consume_recovery_code(&other.id, "h2", NOW)
            .await
            .expect("other user")
    );
    assert_eq!(store.recovery_codes_left(&u.id).await.expect("left"), 1);
    store
        .replace_recovery_codes(&u.id, &["h3".to_string()], NOW)
        .await
        .expect("replace");
    assert!(
        !store
            .consume_recovery_code(&u.id, "h2", NOW)
            .await
            .expect("old set is gone")
    );
    assert!(
        store
            .consume_recovery_code(&u.id, "h3", NOW)
            .await
            .expect("new")
    );
}

pub async fn signing_keys_rotate_with_a_retirement_date(store: &dyn Store) {
    let key = |kid: &str, at: i64| SigningKeyRecord {
        kid: kid.into(),
        sealed_key: format!("v1.{kid}"),
        created_at: at,
        retire_at: None,
    };
    assert!(
        store
            .insert_first_signing_key(&key("k1", NOW))
            .await
            .expect("first")
    );
    assert!(
        !store
            .insert_first_signing_key(&key("k0", NOW))
            .await
            .expect("second first"),
        "only one first key"
    );
    store
        .rotate_signing_key(&key("k2", NOW + 10), NOW + 3600)
        .await
        .expect("rotate");
    let keys = store.signing_keys().await.expect("keys");
    assert_eq!(
        keys.iter()
            .map(|k| (k.kid.as_str(), k.retire_at))
            .collect::<Vec<_>>(),
        [("k2", None), ("k1", Some(NOW + 3600))]
    );
    // A second rotation does not move the older key's retirement.
    store
        .rotate_signing_key(&key("k3", NOW + 20), NOW + 7200)
        .await
        .expect("rotate");
    let keys = store.signing_keys().await.expect("keys");
    assert_eq!(
        keys.iter().map(|k| k.retire_at).collect::<Vec<_>>(),
        [None, Some(NOW + 7200), Some(NOW + 3600)]
    );
}

pub async fn bootstrap_exchanges_once(store: &dyn Store) {
    let boot = AdminTokenRecord {
        id: "boot".into(),
        name: "bootstrap".into(),
        kind: AdminTokenKind::Bootstrap,
        secret_hash: "h".into(),
        created_by: "controller".into(),
        created_at: NOW,
        expires_at: NOW + 3600,
        used_at: None,
        revoked_at: None,
    };
    store.create_admin_token(&boot).await.expect("create");
    let api = |id: &str| AdminTokenRecord {
        id: id.into(),
        kind: AdminTokenKind::Api,
        ..boot.clone()
    };
    assert!(
        store
            .exchange_bootstrap_token("boot", NOW, &api("a1"))
            .await
            .expect("exchange")
    );
    assert!(
        !store
            .exchange_bootstrap_token("boot", NOW, &api("a2"))
            .await
            .expect("again")
    );
    assert!(store.admin_token("a2").await.expect("read").is_none());
    // An API token is not a bootstrap token.
    assert!(
        !store
            .exchange_bootstrap_token("a1", NOW, &api("a3"))
            .await
            .expect("api")
    );
    assert!(store.revoke_admin_token("a1", NOW).await.expect("revoke"));
    assert_eq!(store.list_admin_tokens().await.expect("list").len(), 2);
}

pub async fn audit_appends_in_order(store: &dyn Store) {
    for i in 0..3 {
        store
            .append_audit(&AuditEvent {
                ts: NOW + i,
                actor: "admin".into(),
                source_ip: "127.0.0.1".into(),
                action: "user.create".into(),
                resource: format!("user:{i}"),
                outcome: Outcome::Allow,
                reason: String::new(),
                request_id: "r".into(),
                count: 1,
            })
            .await
            .expect("append");
    }
    let all = store.audit_after(0, 10).await.expect("read");
    assert_eq!(all.len(), 3);
    let rest = store.audit_after(all[0].id, 10).await.expect("read");
    assert_eq!(
        rest.iter().map(|r| r.resource.as_str()).collect::<Vec<_>>(),
        ["user:1", "user:2"]
    );
    assert_eq!(
        store
            .insert_secret_if_absent("ca", "one", NOW)
            .await
            .expect("put"),
        "one"
    );
    assert_eq!(
        store
            .insert_secret_if_absent("ca", "two", NOW)
            .await
            .expect("put"),
        "one"
    );
    assert_eq!(
        store.secret("ca").await.expect("get").as_deref(),
        Some("one")
    );
}

/// Runs each check on a fresh store from `make`.
pub async fn audit_batches_append_together(store: &dyn Store) {
    let event = |i: i64| AuditEvent {
        ts: NOW + i,
        actor: "gateway:gw1".into(),
        source_ip: "127.0.0.1".into(),
        action: "gateway.access".into(),
        resource: format!("service:s{i}"),
        outcome: Outcome::Allow,
        reason: String::new(),
        request_id: format!("r{i}"),
        count: i + 1,
    };
    let batch: Vec<AuditEvent> = (0..50).map(event).collect();
    store.append_audit_batch(&batch).await.expect("batch");
    store.append_audit_batch(&[]).await.expect("empty batch");
    let stored = store.audit_after(0, 100).await.expect("read");
    assert_eq!(stored.len(), 50);
    assert_eq!(stored[49].resource, "service:s49", "in order");
    assert_eq!(stored[49].count, 50, "a summary keeps its count");
}

pub async fn audit_is_found_by_actor_newest_first(store: &dyn Store) {
    let event = |actor: &str, at: i64| AuditEvent {
        ts: at,
        actor: actor.into(),
        source_ip: "10.0.0.1".into(),
        action: "gateway.access".into(),
        resource: format!("service:s{at}"),
        outcome: Outcome::Allow,
        reason: String::new(),
        request_id: String::new(),
        count: 1,
    };
    let batch: Vec<AuditEvent> = (0..10)
        .map(|i| event(if i % 2 == 0 { "user:ann" } else { "user:annie" }, NOW + i))
        .collect();
    store.append_audit_batch(&batch).await.expect("batch");
    let ann = store
        .audit_by_actor("user:ann", NOW + 2, 100)
        .await
        .expect("query");
    let times: Vec<i64> = ann.iter().map(|r| r.ts).collect();
    assert_eq!(
        times,
        vec![NOW + 8, NOW + 6, NOW + 4, NOW + 2],
        "exact actor, since, newest first"
    );
    let two = store.audit_by_actor("user:ann", 0, 2).await.expect("query");
    assert_eq!(two.len(), 2, "limited");
    assert_eq!(two[0].ts, NOW + 8);
    assert!(
        store
            .audit_by_actor("user:%", 0, 100)
            .await
            .expect("query")
            .is_empty(),
        "no patterns"
    );
}

pub async fn audit_is_tallied_by_action_outcome_and_bucket(store: &dyn Store) {
    let event = |action: &str, outcome: Outcome, at: i64, count: i64| AuditEvent {
        ts: at,
        actor: "user:ann".into(),
        source_ip: "10.0.0.1".into(),
        action: action.into(),
        resource: "service:demo".into(),
        outcome,
        reason: String::new(),
        request_id: String::new(),
        count,
    };
    let batch = vec![
        event("auth.login", Outcome::Allow, NOW - 1, 1),
        event("auth.login", Outcome::Allow, NOW, 1),
        event("auth.login", Outcome::Deny, NOW + 5, 1),
        event("auth.login", Outcome::Allow, NOW + 59, 1),
        event("gateway.access", Outcome::Allow, NOW + 60, 40),
        event("gateway.access", Outcome::Allow, NOW + 119, 2),
        event("gateway.access", Outcome::Deny, NOW + 61, 1),
        event("auth.login", Outcome::Allow, NOW + 120, 1),
    ];
    store.append_audit_batch(&batch).await.expect("batch");
    let mut tally = store.audit_tally(NOW, NOW + 120, 60).await.expect("tally");
    tally.sort_by(|a, b| (a.bucket, &a.action, &a.outcome).cmp(&(b.bucket, &b.action, &b.outcome)));
    let got: Vec<(i64, &str, &str, i64)> = tally
        .iter()
        .map(|t| (t.bucket, t.action.as_str(), t.outcome.as_str(), t.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "auth.login", "allow", 2),
            (0, "auth.login", "deny", 1),
            (1, "gateway.access", "allow", 42),
            (1, "gateway.access", "deny", 1),
        ],
        "since inclusive, until exclusive, summaries by their count"
    );
    assert!(
        store
            .audit_tally(NOW + 500, NOW + 600, 60)
            .await
            .expect("tally")
            .is_empty()
    );
}

pub async fn rate_limit_buckets_refill_and_are_shared(store: &dyn Store) {
    let take = |at: i64| store.take_rate_token("login:10.0.0.1", at, 60, 3);
    for _ in 0..3 {
        assert!(take(NOW).await.expect("take"), "the burst");
    }
    assert!(!take(NOW).await.expect("take"), "empty");
    assert!(!take(NOW).await.expect("take"), "still empty");
    assert!(take(NOW + 1).await.expect("take"), "one per second refills");
    assert!(!take(NOW + 1).await.expect("take"));
    assert!(
        store
            .take_rate_token("login:10.0.0.2", NOW, 60, 3)
            .await
            .expect("take"),
        "per key"
    );
    // Refill stops at the burst.
    for _ in 0..3 {
        assert!(take(NOW + 1000).await.expect("take"));
    }
    assert!(!take(NOW + 1000).await.expect("take"));
    // A controller whose clock is behind neither refills nor rewinds.
    assert!(
        !take(NOW + 900).await.expect("take"),
        "no refill from the past"
    );
    assert!(
        !take(NOW + 1000).await.expect("take"),
        "time did not move back"
    );
    assert_eq!(store.prune_rate_limits(NOW + 500).await.expect("prune"), 1);
}

pub async fn services_and_gateways(store: &dyn Store) {
    let svc = ServiceRecord {
        name: "billing".into(),
        allow_users: vec!["alice".into()],
        allow_groups: vec!["eng".into()],
        created_at: NOW,
        updated_at: NOW,
    };
    store.put_service(&svc).await.expect("put");
    let updated = ServiceRecord {
        allow_users: vec![],
        updated_at: NOW + 5,
        ..svc.clone()
    };
    store.put_service(&updated).await.expect("replace");
    let all = store.list_services().await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].allow_users, Vec::<String>::new());
    assert_eq!(all[0].created_at, NOW, "replace keeps the creation time");
    assert!(store.delete_service("billing").await.expect("delete"));
    assert!(!store.delete_service("billing").await.expect("again"));

    let new = NewGateway {
        name: "gw1".into(),
        sans: vec!["gw.example".into()],
        token_hash: "h1".into(),
        token_expires_at: NOW + 600,
        created_by: "admin".into(),
        now: NOW,
    };
    assert!(store.put_gateway_token(&new).await.expect("create"));
    let pending = store
        .gateway_by_token("h1")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(pending.status, GatewayStatus::Pending);
    assert_eq!(pending.sans, vec!["gw.example".to_owned()]);
    assert_eq!(
        store
            .enroll_gateway("h1", NOW + 601, "aa", NOW + 9999)
            .await
            .expect("late"),
        EnrollOutcome::TokenExpired
    );
    assert_eq!(
        store
            .enroll_gateway("nope", NOW, "aa", NOW + 9999)
            .await
            .expect("unknown"),
        EnrollOutcome::TokenUnknown
    );
    assert_eq!(
        store
            .enroll_gateway("h1", NOW + 1, "aa", NOW + 9999)
            .await
            .expect("enroll"),
        EnrollOutcome::Enrolled
    );
    assert_eq!(
        store
            .enroll_gateway("h1", NOW + 2, "bb", NOW + 9999)
            .await
            .expect("replay"),
        EnrollOutcome::TokenUnknown,
        "a gateway token is single-use"
    );
    let reg = GatewayRegistration {
        url: "https://gw.example:9443".into(),
        spa_port: Some(62201),
        routes: vec![RouteRecord {
            service: "billing".into(),
            host: "billing".into(),
            path_prefix: "/v1".into(),
            protocol: "http".into(),
        }],
        assertion_jwk: "{}".into(),
        now: NOW + 3,
    };
    assert!(store.register_gateway("gw1", &reg).await.expect("register"));
    let gw = store.gateway("gw1").await.expect("read").expect("found");
    assert_eq!(gw.status, GatewayStatus::Active);
    assert_eq!(gw.cert_serial.as_deref(), Some("aa"));
    assert_eq!(gw.routes, reg.routes);
    assert_eq!(gw.spa_port, Some(62201));
    assert!(
        !store
            .renew_gateway_certificate("gw1", "zz", "cc", NOW + 99, NOW + 3)
            .await
            .expect("stale"),
        "only the current certificate renews"
    );
    assert!(
        store
            .renew_gateway_certificate("gw1", "aa", "cc", NOW + 99, NOW + 3)
            .await
            .expect("renew")
    );
    let gw = store.gateway("gw1").await.expect("read").expect("found");
    assert_eq!(gw.cert_serial.as_deref(), Some("cc"));
    assert!(store.revoke_gateway("gw1", NOW + 4).await.expect("revoke"));
    assert!(
        !store
            .renew_gateway_certificate("gw1", "cc", "dd", NOW + 99, NOW + 5)
            .await
            .expect("revoked"),
        "a revoked gateway does not renew"
    );
    assert!(!store.register_gateway("gw1", &reg).await.expect("revoked"));
    assert!(
        !store
            .put_gateway_token(&NewGateway {
                token_hash: "h2".into(),
                ..new
            })
            .await
            .expect("token"),
        "a revoked gateway gets no new token"
    );
    assert_eq!(store.list_gateways().await.expect("list").len(), 1);
}

pub async fn events_are_numbered_in_order_and_pruned(store: &dyn Store) {
    let w = store.event_window().await.expect("window");
    assert_eq!((w.first, w.last), (1, 0), "empty log");
    for i in 0..5 {
        let seq = store
            .append_event(NOW + i, "session_revoked", &format!("{{\"n\":{i}}}"))
            .await
            .expect("append");
        assert_eq!(seq, i + 1);
    }
    let after = store.events_after(2, 2).await.expect("read");
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(store.prune_events(NOW + 3).await.expect("prune"), 3);
    let w = store.event_window().await.expect("window");
    assert_eq!((w.first, w.last), (4, 5));
    assert_eq!(store.prune_events(NOW + 100).await.expect("prune"), 2);
    let w = store.event_window().await.expect("window");
    assert_eq!((w.first, w.last), (6, 5), "numbering survives pruning");
    assert_eq!(store.append_event(NOW, "x", "{}").await.expect("append"), 6);
}

pub async fn revocations_list_what_still_matters(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    token(store, "ha", &alice.id, NOW + 600).await;
    store
        .enroll_device("ha", NOW, &device("d1", &alice.id), &cert("c1", "d1"))
        .await
        .expect("enroll");
    let session = |id: &str, expires_at| SessionRecord {
        id: id.into(),
        kind: SessionKind::Device,
        user_id: alice.id.clone(),
        user_name: alice.name.clone(),
        device_id: "d1".into(),
        cert_serial: "c1".into(),
        source_ip: "127.0.0.1".into(),
        risk: 5,
        created_at: NOW,
        expires_at,
        revoked_at: None,
        revoked_reason: None,
        mfa_at: None,
        verdict: None,
    };
    store
        .open_session(&session("s-live", NOW + 600))
        .await
        .expect("open");
    store
        .open_session(&session("s-old", NOW + 10))
        .await
        .expect("open");
    store
        .open_session(&session("s-kept", NOW + 600))
        .await
        .expect("open");
    store
        .revoke_session("s-live", NOW, "admin")
        .await
        .expect("revoke");
    store
        .revoke_session("s-old", NOW, "admin")
        .await
        .expect("revoke");
    store
        .set_user_status(&bob.id, UserStatus::Suspended, NOW)
        .await
        .expect("suspend");
    let bobs = SessionRecord {
        id: "s-bob".into(),
        user_id: bob.id.clone(),
        user_name: bob.name.clone(),
        ..session("s-bob", NOW + 600)
    };
    assert!(
        !store.open_session(&bobs).await.expect("open"),
        "no session opens for a suspended user"
    );
    assert!(store.session("s-bob").await.expect("read").is_none());
    let r = store.revocations(NOW + 20).await.expect("revocations");
    assert_eq!(
        r.sessions,
        vec!["s-live".to_owned()],
        "expired revocations drop out"
    );
    assert!(r.certificates.is_empty());
    assert_eq!(r.users, vec!["bob".to_owned()]);
    store
        .set_device_status("d1", DeviceStatus::Revoked, NOW + 21)
        .await
        .expect("revoke device");
    let r = store.revocations(NOW + 22).await.expect("revocations");
    assert_eq!(r.devices, vec!["d1".to_owned()]);
    assert_eq!(r.certificates, vec!["c1".to_owned()]);
    assert_eq!(r.sessions, vec!["s-kept".to_owned(), "s-live".to_owned()]);
}

pub async fn policies_and_data_move_the_revision(store: &dyn Store) {
    let empty = store.policy_snapshot().await.expect("snapshot");
    assert_eq!(empty, PolicySnapshot::default());
    let r1 = store
        .put_policy("authz", "package authz", NOW)
        .await
        .expect("put");
    assert!(r1 > 0);
    let r2 = store
        .put_policy("authz", "package authz\n", NOW + 1)
        .await
        .expect("replace");
    assert!(r2 > r1);
    assert_eq!(store.delete_policy("nope").await.expect("delete"), None);
    assert_eq!(store.policy_revision().await.expect("revision"), r2);
    store
        .put_policy_data("a/b", "{\"x\":1}", NOW)
        .await
        .expect("data");
    store.put_policy_data("ab", "2", NOW).await.expect("data");
    store
        .put_policy_data("a/b/c", "3", NOW)
        .await
        .expect("data");
    let snap = store.policy_snapshot().await.expect("snapshot");
    assert_eq!(snap.policies.len(), 1);
    assert_eq!(snap.policies[0].raw, "package authz\n");
    assert_eq!(snap.policies[0].created_at, NOW);
    assert_eq!(snap.policies[0].updated_at, NOW + 1);
    let paths: Vec<_> = snap.data.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["a/b", "a/b/c", "ab"]);
    // A write at `a` replaces what is below it, not its sibling `ab`.
    let r3 = store.put_policy_data("a", "{}", NOW).await.expect("data");
    let snap = store.policy_snapshot().await.expect("snapshot");
    assert_eq!(snap.revision, r3);
    let paths: Vec<_> = snap.data.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["a", "ab"]);
    assert!(
        store
            .delete_policy_data("a")
            .await
            .expect("delete")
            .is_some()
    );
    assert_eq!(store.delete_policy_data("a").await.expect("again"), None);
    let r4 = store
        .delete_policy("authz")
        .await
        .expect("delete")
        .expect("existed");
    let snap = store.policy_snapshot().await.expect("snapshot");
    assert_eq!(snap.revision, r4);
    assert!(snap.policies.is_empty());
    assert_eq!(snap.data.len(), 1);
}

pub async fn browser_sessions_are_listed_revoked_and_published(store: &dyn Store) {
    let (u, dev, serial) = enrolled(store, "brenda").await;
    let browser = SessionRecord {
        kind: SessionKind::Browser,
        device_id: String::new(),
        cert_serial: String::new(),
        created_at: NOW + 1,
        ..session("b-1", &u, "", "")
    };
    assert!(store.open_session(&browser).await.expect("open browser"));
    assert!(
        store
            .open_session(&session("d-1", &u, &dev, &serial))
            .await
            .expect("open device")
    );
    assert_eq!(
        store.session("b-1").await.expect("read").expect("found"),
        browser
    );
    let live = store.list_sessions(Some(NOW)).await.expect("list");
    let ids: Vec<(&str, SessionKind)> = live.iter().map(|s| (s.id.as_str(), s.kind)).collect();
    assert_eq!(
        ids,
        vec![("d-1", SessionKind::Device), ("b-1", SessionKind::Browser)],
        "both kinds, oldest first"
    );
    assert!(
        store
            .record_session_mfa("b-1", NOW + 30)
            .await
            .expect("mfa")
    );
    assert_eq!(
        store
            .session("b-1")
            .await
            .expect("read")
            .expect("found")
            .mfa_at,
        Some(NOW + 30)
    );
    assert!(
        store
            .revoke_session("b-1", NOW + 40, "logout")
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_session("b-1", NOW + 41, "again")
            .await
            .expect("revoke"),
        "revoked once"
    );
    let b = store.session("b-1").await.expect("read").expect("found");
    assert_eq!(b.revoked_reason.as_deref(), Some("logout"));
    assert!(
        !store
            .record_session_mfa("b-1", NOW + 50)
            .await
            .expect("mfa")
    );
    assert_eq!(
        store
            .revocations(NOW + 60)
            .await
            .expect("revocations")
            .sessions,
        vec!["b-1".to_owned()]
    );
    // Suspending the user ends the browser sessions too, and none opens.
    let second = SessionRecord {
        id: "b-2".into(),
        ..browser.clone()
    };
    assert!(store.open_session(&second).await.expect("open"));
    store
        .set_user_status(&u.id, UserStatus::Suspended, NOW + 70)
        .await
        .expect("suspend");
    let b2 = store.session("b-2").await.expect("read").expect("found");
    assert_eq!(b2.revoked_reason.as_deref(), Some("user suspended"));
    let third = SessionRecord {
        id: "b-3".into(),
        ..browser
    };
    assert!(!store.open_session(&third).await.expect("open"));
    assert!(store.session("b-3").await.expect("read").is_none());
    assert!(
        store
            .list_sessions(Some(NOW + 80))
            .await
            .expect("list")
            .is_empty()
    );
    // What the suspension must tell the gateways: the user's unexpired
    // sessions, revoked ones included, and nobody else's.
    let (other, odev, oserial) = enrolled(store, "bruno").await;
    assert!(
        store
            .open_session(&session("o-1", &other, &odev, &oserial))
            .await
            .expect("open")
    );
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .unexpired_sessions_of(&u.id, NOW + 75)
            .await
            .expect("list")),
        ["d-1", "b-1", "b-2"]
    );
    assert!(
        store
            .unexpired_sessions_of(&u.id, NOW + 3600)
            .await
            .expect("list")
            .is_empty(),
        "expired ones are not"
    );
}

macro_rules! suite {
    ($make:expr) => {
        $crate::conformance::suite!(@ $make;
            users_and_groups, lockout_counts_and_expires, totp_steps_are_single_use,
            enrollment_tokens_are_single_use_and_atomic, revocation_cascades,
            bootstrap_exchanges_once, audit_appends_in_order,
            renewal_needs_a_live_certificate_and_device,
            recovery_codes_are_single_use_and_replaced_together,
            signing_keys_rotate_with_a_retirement_date, services_and_gateways,
            audit_batches_append_together, rate_limit_buckets_refill_and_are_shared,
            events_are_numbered_in_order_and_pruned, revocations_list_what_still_matters,
            policies_and_data_move_the_revision,
            session_mfa_moves_forward_on_live_sessions_only,
            session_verdicts_move_forward_on_live_sessions_only,
            blocked_sources_extend_expire_and_lift,
            audit_is_found_by_actor_newest_first,
            audit_is_tallied_by_action_outcome_and_bucket,
            browser_sessions_are_listed_revoked_and_published);
    };
    (@ $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}
pub(crate) use suite;
