//! The dashboard at `/ui/`: after a scripted scenario (logins, a
//! brute-force run, requests through the gateway, a device failing its
//! posture), headless Chromium signs in as an admin and reads the figures;
//! they must be the scenario's. Its buttons revoke a session and unlock a
//! user. Then the attacks: no session, a non-admin's session, an API
//! token, forged cookies, forms without this session's token or from
//! another origin.
//!
//! Chromium is Debian's (`/usr/bin/chromium`), driven by `playwright-core`
//! (`tests/ui`, installed by `.ci/run` with `npm ci`), trusting the test
//! CA through an NSS database in a throwaway `$HOME`. With CI=true a
//! missing part fails the test; elsewhere the test says so and skips.
//! Screenshots are kept in `target/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::access::Rig;
use crate::browser::Browser;
use crate::support::{self, TestUser, oathtool};

/// The reference compliance policy the figures use: `standard`, replaced
/// by one a healthy test device passes and a device without its firewall
/// fails (not `required`: the device still logs in).
const POLICY: &str = r#"
[compliance.policies.standard]
require_encryption = true
require_antivirus = true
require_firewall = true
"#;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The workspace root (this test crate lives in `crates/umbra`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Chromium, node, playwright-core and certutil, or why not.
fn browser_parts() -> Result<(), String> {
    let ui = workspace().join("tests/ui/node_modules/playwright-core");
    if !Path::new("/usr/bin/chromium").exists() {
        return Err("no /usr/bin/chromium (apt-get install chromium)".into());
    }
    if !ui.exists() {
        return Err("no playwright-core (npm ci --prefix tests/ui)".into());
    }
    for tool in ["node", "certutil"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("no {tool} (apt-get install nodejs libnss3-tools)"));
        }
    }
    Ok(())
}

/// A `$HOME` whose NSS database (which Chromium on Linux reads) trusts the
/// controller's CA, as a user who installed it would have.
fn home_trusting(ca_pem: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).expect("nssdb dir");
    let ca = home.path().join("umbra-ca.pem");
    std::fs::write(&ca, ca_pem).expect("ca");
    let db = format!("sql:{}", nssdb.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-N", "-d", &db, "--empty-password"]);
    run(&[
        "-A",
        "-d",
        &db,
        "-n",
        "umbra-test-ca",
        "-t",
        "C,,",
        "-i",
        ca.to_str().expect("path"),
    ]);
    home
}

/// Where screenshots are kept.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from)
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// An admin user made through the API.
async fn admin_user(rig: &Rig, name: &str) -> TestUser {
    let body = rig
        .tc
        .admin_post(
            "/api/v1/admin/users",
            json!({ "name": name, "role": "admin", "groups": ["ops"] }),
        )
        .await;
    TestUser {
        name: name.into(),
        password: body["password"].as_str().expect("password").into(),
        totp_secret: body["totp"]["secret"].as_str().expect("secret").into(),
    }
}

async fn rig() -> (Rig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, POLICY).expect("policy file");
    // Every request here comes from 127.0.0.1 and the clock stands still
    // (no refill): room for the scenario's logins.
    let rig = Rig::start_with_controller(&format!(
        "[policy]\nfile = {:?}\n[auth]\nlogin_burst = 100\n",
        path.to_str().expect("path")
    ))
    .await;
    (rig, dir)
}

/// Sums the `count` of audit records of `action` with `outcome`.
async fn counted(rig: &Rig, action: &str, outcome: &str) -> i64 {
    rig.tc
        .audit(action)
        .await
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["count"].as_i64().unwrap_or(1))
        .sum()
}

/// The scenario: bob logs in from a device whose firewall is off; alice
/// makes three allowed requests and one refused; carol's password is
/// guessed five times (an alert, a lock).
async fn scenario(rig: &Rig) {
    let tc = &rig.tc;
    let bob = tc.create_user("bob", &["ops"]).await;
    let bobs = tc.enroll("bob").await;
    let mut report = support::posture(true);
    report["firewall_enabled"] = json!(false);
    let (status, body) = tc
        .with_device(&bobs)
        .post(
            "/api/v1/devices/posture",
            None,
            json!({ "posture": report }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = tc.login(&bobs, &bob).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for _ in 0..3 {
        let (status, _) = rig
            .get(&rig.device, "demo", "/", Some(&rig.token), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = rig
        .get(&rig.device, "secret", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let carol = tc.create_user("carol", &["eng"]).await;
    let carols = tc.enroll("carol").await;
    let wrong = TestUser {
        password: "not-her-password".into(),
        ..carol
    };
    for _ in 0..5 {
        let (status, _) = tc.login(&carols, &wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    tc.wait_audit("threat.alert", "failed_logins").await;
    // Allowed requests reach the audit trail within a flush interval.
    for _ in 0..100 {
        if counted(rig, "gateway.access", "allow").await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted(rig, "gateway.access", "allow").await, 3);
    assert_eq!(counted(rig, "gateway.access", "deny").await, 1);
}

fn session_of<'a>(sessions: &'a Value, user: &str) -> &'a Value {
    sessions["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["user"] == user)
        .unwrap_or_else(|| panic!("no session of {user}: {sessions}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_scenarios_figures_and_its_buttons_revoke_and_unlock() {
    if let Err(why) = browser_parts() {
        assert!(!ci(), "CI needs the dashboard's browser: {why}");
        eprintln!("skipping: {why}");
        return;
    }
    let (rig, _policy) = rig().await;
    scenario(&rig).await;
    let ops = admin_user(&rig, "ops").await;
    // The sessions as the store has them (the API's list) before the
    // browser revokes bob's; the admin's own comes with the page.
    let sessions = rig.tc.admin_get("/api/v1/admin/sessions").await;
    let home = home_trusting(rig.tc.controller.ca.cert_pem());
    let shots = artifacts();
    let code = oathtool(&ops.totp_secret, rig.tc.now());
    let run = tokio::process::Command::new("node")
        .arg(workspace().join("tests/ui/dashboard.mjs"))
        .env("HOME", home.path())
        .env("UMBRA_UI_URL", &rig.tc.url)
        .env("UMBRA_UI_USER", &ops.name)
        .env("UMBRA_UI_PASSWORD", &ops.password)
        .env("UMBRA_UI_TOTP", &code)
        .env("UMBRA_UI_REVOKE_USER", "bob")
        .env("UMBRA_UI_UNLOCK_USER", "carol")
        .env("UMBRA_UI_SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser run ends within 180 s")
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser run failed: {}\nlogins: {:?}",
        String::from_utf8_lossy(&out.stderr),
        rig.tc.audit("auth.browser_login").await
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the run's JSON");
    let before = &seen["before"];

    // Not signed in, the dashboard sent the browser to the login page.
    assert!(
        seen["login_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/auth/login?rd=%2Fui%2F")),
        "{}",
        seen["login_url"]
    );
    assert_eq!(before["me"], "ops");
    assert_eq!(before["scripts"], 0, "no script on the page");
    assert_eq!(
        seen["console_errors"],
        json!([]),
        "no CSP violation or error"
    );

    // The figures. Sessions: alice's (the rig's), bob's and the admin's
    // browser session.
    let cards = &before["cards"];
    assert_eq!(cards["active_sessions"]["data"], "3");
    assert_eq!(cards["active_sessions"]["value"], "3");
    // Authentications: alice's, bob's and the admin's logins succeeded,
    // carol's five failed.
    assert_eq!(cards["auth_success"]["data"], "3/8");
    assert_eq!(cards["auth_success"]["value"], "38%");
    // Devices: alice's and carol's pass, bob's (no firewall) fails.
    assert_eq!(cards["compliant_devices"]["data"], "2/3");
    assert_eq!(cards["compliant_devices"]["value"], "67%");
    // Risk: as the store has it.
    let admins = rig.tc.admin_get("/api/v1/admin/sessions").await;
    let risks: Vec<u64> = ["alice", "bob", "ops"]
        .iter()
        .map(|u| {
            let s = session_of(if *u == "ops" { &admins } else { &sessions }, u);
            s["current_risk"]
                .as_u64()
                .or_else(|| s["risk"].as_u64())
                .expect("risk")
        })
        .collect();
    let average = risks.iter().sum::<u64>() as f64 / 3.0;
    assert_eq!(cards["average_risk"]["value"], format!("{average:.1}"));
    let mut bands = [0u64; 5];
    for r in &risks {
        bands[match r {
            0..=20 => 0,
            21..=40 => 1,
            41..=60 => 2,
            61..=80 => 3,
            _ => 4,
        }] += 1;
    }
    let shown: Vec<u64> = before["risk_bands"]
        .as_array()
        .expect("bands")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(shown, bands, "{}", before["risk_bands"]);
    assert_eq!(before["risk_bands"][0]["band"], "0-20");
    // Access decisions through the gateway: three allowed, one refused.
    assert_eq!(before["trend"]["allowed"], 3);
    assert_eq!(before["trend"]["refused"], 1);
    assert_eq!(before["trend"]["hours"], 24);
    // The alert, carol locked, bob's device and why it fails.
    let alerts = before["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["user"], "carol");
    assert_eq!(alerts[0]["threat"], "0.80");
    assert!(
        alerts[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("5 failed logins in 15 minutes")),
        "{}",
        alerts[0]
    );
    let user = |page: &Value, name: &str| {
        page["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    assert_eq!(user(before, "carol")["status"], "locked");
    assert_eq!(user(before, "bob")["status"], "active");
    let devices = before["devices"].as_array().expect("devices");
    let bobs = devices
        .iter()
        .find(|d| d["user"] == "bob")
        .expect("bob's device");
    assert_eq!(bobs["compliance"], "failing");
    assert_eq!(
        bobs["failing"],
        json!([{ "check": "firewall", "text": "firewall: Firewall is disabled" }])
    );
    for d in devices.iter().filter(|d| d["user"] != "bob") {
        assert_eq!(d["compliance"], "compliant", "{d}");
    }

    // The buttons. Revoke: bob's session is gone from the page and from
    // the store, by the admin's hand.
    let after = &seen["after_revoke"];
    assert!(
        after["notice"]
            .as_str()
            .is_some_and(|n| n.contains("revoked")),
        "{after}"
    );
    assert_eq!(after["cards"]["active_sessions"]["data"], "2");
    let bob_sid = session_of(&sessions, "bob")["id"].clone();
    let all = rig.tc.admin_get("/api/v1/admin/sessions?all=true").await;
    let bobs_now = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["id"] == bob_sid)
        .expect("bob's session");
    assert!(bobs_now["revoked_at"].is_string(), "{bobs_now}");
    let revoked = rig.tc.wait_audit("session.revoke", "").await;
    assert_eq!(revoked["actor"], "user:ops");
    assert_eq!(
        revoked["resource"],
        format!("session:{}", bob_sid.as_str().expect("id"))
    );
    // Unlock: carol is active again and can sign in.
    let after = &seen["after_unlock"];
    assert_eq!(user(after, "carol")["status"], "active");
    let unlocked = rig.tc.wait_audit("user.unlock", "").await;
    assert_eq!(unlocked["actor"], "user:ops");
    assert!(shots.join("dashboard.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_for_admins_and_its_forms_for_this_session_only() {
    let (rig, _policy) = rig().await;
    let tc = &rig.tc;
    let ops = admin_user(&rig, "ops").await;
    let base = tc.url.clone();
    let ca = tc.ca();

    // No session: to the login page, and back here after.
    let mut anon = Browser::new(&base, &ca, "127.0.0.1");
    let page = anon.get("/ui/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), "/auth/login?rd=%2Fui%2F");
    assert_eq!(anon.get("/ui").await.header("location"), "/ui/");
    // The stylesheet is public, and not to be sniffed as anything else.
    let css = anon.get("/ui/ui.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    assert_eq!(css.header("x-content-type-options"), "nosniff");

    // An admin API token is no browser session.
    let req = anon
        .client()
        .get(format!("{base}/ui/"))
        .bearer_auth(&tc.admin_token);
    let page = anon.send(req).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(!page.body.contains("Active sessions"));
    // A forged cookie: to the login page, and on the record.
    let mut forger = Browser::new(&base, &ca, "127.0.0.1");
    forger.jar.insert(
        "__Host-umbra_session".into(),
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2lnbmF0dXJl".into(),
    );
    assert_eq!(forger.get("/ui/").await.status, StatusCode::SEE_OTHER);
    tc.wait_audit("ui.authenticate", "").await;

    // Alice's session is no admin's: 403, on the record. (The rig's login
    // took her code of this step: the clock stands still, so each login
    // of one user takes the next step's code.)
    let mut alice = Browser::new(&base, &ca, "127.0.0.1");
    let signed_in = alice.login(&rig.alice, tc.now() + 30, "/ui/").await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let page = alice.get("/ui/").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!page.body.contains("Active sessions"));
    let refused = tc.wait_audit("ui.authenticate", "not_an_admin").await;
    assert_eq!(refused["actor"], "user:alice");
    assert_eq!(refused["outcome"], "deny");

    // The admin's dashboard, with its headers.
    let mut admin = Browser::new(&base, &ca, "127.0.0.1");
    let signed_in = admin.login(&ops, tc.now(), "/ui/").await;
    assert_eq!(signed_in.header("location"), "/ui/");
    let page = admin.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("cache-control"), "no-store");
    let csrf = page.csrf();
    // The agent's session (alice also has a browser one now).
    let alice_sid = rig.login["session_id"].as_str().expect("id").to_owned();
    let revoke = format!("/ui/sessions/{alice_sid}/revoke");
    let still_live = |sessions: Value| {
        sessions["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["id"] == alice_sid.as_str())
    };

    // Without the token, with another's, with a foreign Origin: refused,
    // the session untouched, each refusal on the record.
    let page = admin.post(&revoke, &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let mut other = Browser::new(&base, &ca, "127.0.0.1");
    other.login(&ops, tc.now() + 30, "/ui/").await;
    let others = other.get("/ui/").await.csrf();
    assert_ne!(others, csrf, "each session has its own token");
    let page = admin.post(&revoke, &[("csrf", &others)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let cookie = admin
        .jar
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let cross_site = admin
        .client()
        .post(format!("{base}{revoke}"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .expect("request");
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert!(still_live(tc.admin_get("/api/v1/admin/sessions").await));
    let refusals: Vec<String> = tc
        .audit("ui.action")
        .await
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        refusals,
        [
            "csrf_token_mismatch",
            "csrf_token_mismatch",
            "origin_mismatch"
        ]
    );

    // Alice cannot act either, even with a token she saw nowhere.
    let page = alice.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(still_live(tc.admin_get("/api/v1/admin/sessions").await));

    // With this session's token, from this origin: done, and alice's
    // requests through the gateway end.
    let page = admin.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.header("location"), "/ui/?done=revoke");
    assert!(!still_live(tc.admin_get("/api/v1/admin/sessions").await));
    let mut refused = false;
    for _ in 0..100 {
        let (status, _) = rig
            .get(&rig.device, "demo", "/", Some(&rig.token), &[])
            .await;
        if status == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the gateway refuses the revoked session");

    // Reset TOTP: the new secret is shown once, never cached, and the old
    // one no longer signs in (a reset also forgets the last step used).
    let page = admin
        .post("/ui/users/alice/reset-totp", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.header("cache-control"), "no-store");
    assert!(page.body.contains("<svg"), "a QR code");
    let marker = "id=\"totp-secret\">";
    let at = page.body.find(marker).expect("the secret") + marker.len();
    let secret = &page.body[at..at + page.body[at..].find('<').expect("end")];
    assert_ne!(secret, rig.alice.totp_secret);
    let mut again = Browser::new(&base, &ca, "127.0.0.1");
    let old = again.login(&rig.alice, tc.now() - 30, "/ui/").await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "the old secret is dead"
    );
    let renewed = TestUser {
        name: "alice".into(),
        password: rig.alice.password.clone(),
        totp_secret: secret.to_owned(),
    };
    let new = again.login(&renewed, tc.now(), "/").await;
    assert_eq!(new.status, StatusCode::SEE_OTHER, "{}", new.body);

    // Unknown actions and users are refused as such, and nothing is
    // recorded as done.
    let page = admin
        .post("/ui/users/alice/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = admin
        .post("/ui/users/nobody/suspend", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(tc.audit("user.delete").await.is_empty());

    // Five minutes after the last code, the dashboard still shows, but an
    // action asks for a fresh code first: a stolen cookie alone cannot act
    // for long.
    tc.clock.advance(301);
    assert_eq!(admin.get("/ui/").await.status, StatusCode::OK);
    let suspend = "/ui/users/alice/suspend";
    let page = admin.post(suspend, &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let step_up = page.header("location").to_owned();
    assert_eq!(step_up, "/auth/step-up?rd=%2Fui%2F%3Fdone%3Dconfirmed");
    let refused = tc.wait_audit("ui.action", "step_up_required").await;
    assert_eq!(
        refused["reason"],
        "step_up_required: last TOTP 301 s ago, at most 300 s"
    );
    let alice_status = || async {
        tc.admin_get("/api/v1/admin/users").await["items"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["name"] == "alice")
            .expect("alice")["status"]
            .clone()
    };
    assert_eq!(alice_status().await, "active", "nothing was done");
    let form = admin.get(&step_up).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let code = oathtool(&ops.totp_secret, tc.now());
    let confirmed = admin
        .post(
            "/auth/step-up",
            &[
                ("totp", &code),
                ("csrf", &form.csrf()),
                ("rd", "/ui/?done=confirmed"),
            ],
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    assert_eq!(confirmed.header("location"), "/ui/?done=confirmed");
    let page = admin.get("/ui/?done=confirmed").await;
    assert!(
        page.body.contains("Press the button again"),
        "{}",
        page.body
    );
    let page = admin.post(suspend, &[("csrf", &page.csrf())]).await;
    assert_eq!(
        page.header("location"),
        "/ui/?done=suspend",
        "{}",
        page.body
    );
    assert_eq!(alice_status().await, "suspended");

    // Signing out ends the dashboard too, and its cookie and form token,
    // replayed, do nothing.
    admin.post("/auth/logout", &[]).await;
    assert_eq!(admin.get("/ui/").await.status, StatusCode::SEE_OTHER);
    let replayed = admin
        .client()
        .post(format!("{base}/ui/users/alice/resume"))
        .header("cookie", &cookie)
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .expect("request");
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        replayed.headers()["location"],
        "/auth/login?rd=%2Fui%2F",
        "to the login page"
    );
    assert_eq!(alice_status().await, "suspended", "nothing was done");
}
