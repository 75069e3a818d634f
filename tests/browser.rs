//! The controller's login page and its `/auth/verify`, and the gateway's
//! forward-auth taking the same cookie. "The browser" is a plain HTTP
//! client that keeps cookies by hand (so every attribute can be checked)
//! and follows no redirect by itself. Users and sessions are made through
//! the real API; TOTP codes come from `oathtool`.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::access::{Rig, eventually};
use crate::forward_auth::verify_listener;
use crate::support::{TestUser, oathtool};

const SESSION: &str = "__Host-umbra_session";
const CSRF: &str = "__Host-umbra_csrf";

/// The native policy (billing's admin path wants an MFA within 300 s) and
/// the `[browser]` section every test here runs with.
const POLICY: &str = r#"
[[rule]]
name = "billing-admin"
priority = 10
effect = "allow"
users = ["alice"]
services = ["billing"]
paths = ["/v1/charges/admin"]
max_mfa_age_seconds = 300
"#;

const BROWSER: &str = r#"
[browser]
trusted_proxies = ["127.0.0.1/32"]
return_hosts = ["app.example"]
[browser.services]
"app.example" = "demo"
"billing.example" = "billing"
"secret.example" = "secret"
"#;

pub async fn browser_rig() -> (Rig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, POLICY).expect("policy file");
    let rig = Rig::start_with_controller(&format!(
        "[policy]\nfile = {:?}\n{BROWSER}",
        path.to_str().expect("path")
    ))
    .await;
    (rig, dir)
}

/// A browser: a cookie jar kept by hand, speaking from `local`.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    pub jar: BTreeMap<String, String>,
    /// `Set-Cookie` lines of the last response.
    pub set_cookies: Vec<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The hidden CSRF field of a form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a csrf field") + marker.len();
        let end = self.body[start..].find('"').expect("end of value") + start;
        self.body[start..end].to_owned()
    }
}

impl Browser {
    pub fn new(base: &str, ca: &rustls_pki_types::CertificateDer<'static>, local: &str) -> Self {
        let tls = umbra_pki::tls::client_config(ca, None).expect("tls");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(Some(local.parse().expect("ip")))
            .build()
            .expect("client");
        Self {
            client,
            base: base.to_owned(),
            jar: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.jar.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let resp = req.send().await.expect("request");
        self.set_cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for line in &self.set_cookies {
            let (pair, attrs) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            if attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Opens the login page for `rd`, then signs in with a code for `at`.
    pub async fn login(&mut self, u: &TestUser, at: i64, rd: &str) -> Page {
        let form = self.get(&format!("/auth/login?rd={}", urlencode(rd))).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        let code = oathtool(&u.totp_secret, at);
        self.post(
            "/auth/login",
            &[
                ("user", &u.name),
                ("password", &u.password),
                ("totp", &code),
                ("csrf", &csrf),
                ("rd", rd),
            ],
        )
        .await
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A verify request as nginx sends it, from `local`, with `cookie`.
pub async fn verify(
    base: &str,
    ca: &rustls_pki_types::CertificateDer<'static>,
    local: &str,
    host: &str,
    uri: &str,
    cookie: Option<&str>,
) -> Page {
    let mut b = Browser::new(base, ca, local);
    if let Some(c) = cookie {
        b.jar.insert(SESSION.into(), c.into());
    }
    let req = b
        .client
        .get(format!("{base}/auth/verify"))
        .header("x-original-uri", uri)
        .header("x-original-method", "GET")
        .header("x-forwarded-host", host)
        .header("x-real-ip", "192.0.2.10");
    b.send(req).await
}

fn login_time(rig: &Rig) -> i64 {
    // The rig's agent login spent the current TOTP step.
    rig.tc.clock.advance(30);
    rig.tc.now()
}

#[tokio::test]
async fn the_login_page_sets_a_host_cookie_and_verify_allows_asks_and_denies() {
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let ca = tc.ca();
    let mut b = Browser::new(&tc.public_url, &ca, "127.0.0.1");

    // The page: server-rendered, no script, a CSRF cookie for its form.
    let page = b.get("/auth/login?rd=https%3A%2F%2Fapp.example%2Fx").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(
        page.body
            .contains("name=\"rd\" value=\"https://app.example/x\"")
    );
    let csrf_cookie = &b.set_cookies[0];
    assert!(
        csrf_cookie.starts_with(&format!("{CSRF}=")),
        "{csrf_cookie}"
    );
    assert!(csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("HttpOnly"));

    let at = login_time(&rig);
    let done = b.login(&rig.alice, at, "https://app.example/x").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.header("location"), "https://app.example/x");
    let set = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with(SESSION))
        .expect("a session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let cookie = b.jar.get(SESSION).expect("kept").clone();
    assert!(!b.jar.contains_key(CSRF), "the CSRF cookie is spent");

    // Allowed, with the identity headers.
    let ok = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "app.example",
        "/x",
        Some(&cookie),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.header("x-auth-user"), "alice");
    assert_eq!(ok.header("x-auth-groups"), "eng");
    assert!(ok.header("x-risk-score").parse::<u8>().is_ok());
    let sid = ok.header("x-session-id").to_owned();
    let record = tc.wait_audit("auth.verify", &sid).await;
    assert_eq!(record["outcome"], "allow");
    assert_eq!(record["source_ip"], "192.0.2.10", "the user's address");
    assert_eq!(record["resource"], "service:demo GET /x");

    // Denied by policy (secret is bob's; no service for an unknown host).
    for host in ["secret.example", "unknown.example"] {
        let denied = verify(&tc.public_url, &ca, "127.0.0.1", host, "/", Some(&cookie)).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{host}");
        assert!(denied.header("x-auth-user").is_empty());
    }
    // No cookie: 401, and where to log in, with the way back.
    let ask = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "app.example",
        "/x?y=1",
        None,
    )
    .await;
    assert_eq!(ask.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        ask.header("location"),
        "/auth/login?rd=https%3A%2F%2Fapp.example%2Fx%3Fy%3D1"
    );
    let denial = tc.wait_audit("auth.verify", "no_session_cookie").await;
    assert_eq!(denial["outcome"], "deny");

    // The admin API lists the browser session and revokes it.
    let sessions = tc.admin_get("/api/v1/admin/sessions").await;
    let listed = sessions["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["id"] == sid.as_str())
        .expect("the browser session is listed")
        .clone();
    assert_eq!(listed["user"], "alice");
    assert_eq!(listed["device_id"], "");
    tc.admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), Value::Null)
        .await;
    let revoked = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "app.example",
        "/x",
        Some(&cookie),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    tc.wait_audit("auth.verify", "session_revoked").await;
}

#[tokio::test]
async fn step_up_and_logout_work_through_the_pages() {
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let ca = tc.ca();
    let mut b = Browser::new(&tc.public_url, &ca, "127.0.0.1");
    let at = login_time(&rig);
    let done = b.login(&rig.alice, at, "https://app.example/").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let cookie = b.jar.get(SESSION).expect("cookie").clone();
    let admin = "/v1/charges/admin";
    let ok = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "billing.example",
        admin,
        Some(&cookie),
    )
    .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "MFA at login is fresh: {}",
        ok.body
    );

    // Later the rule wants a fresh code: 401 towards the step-up page.
    rig.tc.clock.advance(301);
    let stale = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "billing.example",
        admin,
        Some(&cookie),
    )
    .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
    assert_eq!(
        stale.header("www-authenticate"),
        "Umbra error=\"step_up_required\""
    );
    assert!(
        stale.header("location").starts_with("/auth/step-up?rd="),
        "{}",
        stale.header("location")
    );
    let form = b.get("/auth/step-up?rd=https%3A%2F%2Fapp.example%2F").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let csrf = form.csrf();
    // A wrong code is refused (and counted towards the lockout).
    let wrong = b
        .post(
            "/auth/step-up",
            &[
                ("totp", "000000"),
                ("csrf", &csrf),
                ("rd", "https://app.example/"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        tc.last_audit_reason("auth.browser_step_up")
            .await
            .contains("failure 1 of 5")
    );
    let csrf = wrong.csrf();
    let code = oathtool(&rig.alice.totp_secret, tc.now());
    let fresh = b
        .post(
            "/auth/step-up",
            &[
                ("totp", &code),
                ("csrf", &csrf),
                ("rd", "https://app.example/"),
            ],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::SEE_OTHER, "{}", fresh.body);
    let cookie = b.jar.get(SESSION).expect("a new cookie").clone();
    let ok = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "billing.example",
        admin,
        Some(&cookie),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // Logout: the cookie is cleared and the session revoked.
    let out = b.post("/auth/logout", &[]).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(
        b.set_cookies
            .iter()
            .any(|c| c.starts_with(SESSION) && c.contains("Max-Age=0"))
    );
    assert!(!b.jar.contains_key(SESSION));
    let gone = verify(
        &tc.public_url,
        &ca,
        "127.0.0.1",
        "app.example",
        "/",
        Some(&cookie),
    )
    .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let all = tc.admin_get("/api/v1/admin/sessions?all=true").await;
    assert!(
        all["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["device_id"] == "" && s["revoked_reason"] == "logout"),
        "{all}"
    );
}

#[tokio::test]
async fn forged_foreign_and_agent_credentials_get_nothing() {
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let ca = tc.ca();
    let mut b = Browser::new(&tc.public_url, &ca, "127.0.0.1");
    let at = login_time(&rig);
    b.login(&rig.alice, at, "https://app.example/").await;
    let cookie = b.jar.get(SESSION).expect("cookie").clone();
    let check = |c: String, reason: &'static str| {
        let ca = ca.clone();
        async move {
            let r = verify(
                &tc.public_url,
                &ca,
                "127.0.0.1",
                "app.example",
                "/",
                Some(&c),
            )
            .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}: {}", r.body);
            tc.wait_audit("auth.verify", reason).await;
        }
    };
    // Tampered: the claims changed under the old signature (bob, admin).
    let parts: Vec<&str> = cookie.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    claims["sub"] = "bob".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).expect("json")),
        parts[2]
    );
    check(forged, "token_bad_signature").await;
    check(format!("{}x", &cookie[..cookie.len() - 1]), "token_").await;
    // An agent's session token is no cookie.
    check(rig.token.clone(), "token_wrong_kind").await;
    // A cookie of another deployment (another trust domain and keys).
    let other = crate::support::start_with("trust_domain = \"other.example\"\n").await;
    let foreign = verify(
        &other.public_url,
        &other.ca(),
        "127.0.0.1",
        "app.example",
        "/",
        Some(&cookie),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED);
    other.wait_audit("auth.verify", "token_unknown_key").await;

    // The cookie is no bearer token: not at the controller's API with the
    // device's certificate, not at the gateway's forward-auth.
    let (status, _) = tc
        .with_device(&rig.device)
        .get("/api/v1/auth/session", Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tc.wait_audit("auth.session", "token_wrong_kind").await;

    // Forwarded headers from an address that is no trusted proxy are
    // ignored: the request is decided for its own host, which is no
    // service.
    let untrusted = verify(
        &tc.public_url,
        &ca,
        "127.0.0.2",
        "app.example",
        "/",
        Some(&cookie),
    )
    .await;
    assert_eq!(
        untrusted.status,
        StatusCode::FORBIDDEN,
        "{}",
        untrusted.body
    );
    let record = tc
        .wait_audit("auth.verify", "forwarded headers ignored")
        .await;
    assert_eq!(record["source_ip"], "127.0.0.2", "{record}");
}

#[tokio::test]
async fn the_login_form_refuses_csrf_open_redirects_and_brute_force() {
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let ca = tc.ca();
    let victim = tc.create_user("victor", &["eng"]).await;
    let mut b = Browser::new(&tc.public_url, &ca, "127.0.0.1");
    let at = login_time(&rig);
    let code = oathtool(&victim.totp_secret, at);
    let fields = |csrf: &str| {
        vec![
            ("user", victim.name.clone()),
            ("password", victim.password.clone()),
            ("totp", code.clone()),
            ("csrf", csrf.to_owned()),
            ("rd", "https://app.example/".to_owned()),
        ]
    };
    let post = |b: &mut Browser, f: Vec<(&'static str, String)>| {
        let f: Vec<(&str, String)> = f;
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        b.client
            .post(format!("{}/auth/login", tc.public_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };

    // CSRF: another site's form has no CSRF cookie (Strict), or the wrong
    // token, or names its own origin. Nothing is opened.
    let req = post(&mut b, fields("guess"));
    let r = b.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    tc.wait_audit("auth.browser_login", "csrf_cookie_missing")
        .await;
    let token = b.get("/auth/login").await.csrf();
    let req = post(&mut b, fields("wrong"));
    assert_eq!(b.send(req).await.status, StatusCode::FORBIDDEN);
    tc.wait_audit("auth.browser_login", "csrf_token_mismatch")
        .await;
    let token2 = b.get("/auth/login").await.csrf();
    assert_ne!(token, token2);
    let req = post(&mut b, fields(&token2)).header("origin", "https://evil.example");
    assert_eq!(b.send(req).await.status, StatusCode::FORBIDDEN);
    tc.wait_audit("auth.browser_login", "origin_mismatch").await;
    assert!(!b.jar.contains_key(SESSION));

    // Open redirect: a return URL off the allowed hosts is dropped.
    for rd in [
        "https://evil.example/",
        "//evil.example/",
        "https://app.example@evil.example/",
    ] {
        let mut fresh = Browser::new(&tc.public_url, &ca, "127.0.0.1");
        let page = fresh
            .get(&format!("/auth/login?rd={}", urlencode(rd)))
            .await;
        assert!(!page.body.contains("evil"), "{rd}: {}", page.body);
        let f = fresh
            .post(
                "/auth/login",
                &[
                    ("user", "nobody"),
                    ("password", "x"),
                    ("totp", "1"),
                    ("csrf", &page.csrf()),
                    ("rd", rd),
                ],
            )
            .await;
        assert!(f.header("location").is_empty(), "{rd}");
    }
    // With valid credentials too: signed in, but not sent to evil.
    let mut fresh = Browser::new(&tc.public_url, &ca, "127.0.0.1");
    let page = fresh.get("/auth/login").await;
    let ok = fresh
        .post(
            "/auth/login",
            &[
                ("user", &victim.name),
                ("password", &victim.password),
                ("totp", &code),
                ("csrf", &page.csrf()),
                ("rd", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.header("location").is_empty());
    assert!(fresh.jar.contains_key(SESSION));

    // Brute force: the login page draws from the same lockout as the
    // agent's login; five failures lock the account, and then even the
    // right password and a fresh code are refused.
    for i in 1..=5 {
        let form = b.get("/auth/login").await;
        let f = b
            .post(
                "/auth/login",
                &[
                    ("user", &victim.name),
                    ("password", "wrong-password"),
                    ("totp", "123456"),
                    ("csrf", &form.csrf()),
                    ("rd", ""),
                ],
            )
            .await;
        assert_eq!(f.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    tc.wait_audit("auth.browser_login", "account locked after 5 failures")
        .await;
    tc.clock.advance(30);
    let code = oathtool(&victim.totp_secret, tc.now());
    let form = b.get("/auth/login").await;
    let f = b
        .post(
            "/auth/login",
            &[
                ("user", &victim.name),
                ("password", &victim.password),
                ("totp", &code),
                ("csrf", &form.csrf()),
                ("rd", ""),
            ],
        )
        .await;
    assert_eq!(f.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.browser_login").await,
        "deny: account_locked"
    );
    // And the per-address rate limit (burst 10) refuses before any check.
    let mut limited = false;
    for _ in 0..12 {
        let form = b.get("/auth/login").await;
        let f = b
            .post(
                "/auth/login",
                &[
                    ("user", "nobody"),
                    ("password", "x"),
                    ("totp", "1"),
                    ("csrf", &form.csrf()),
                    ("rd", ""),
                ],
            )
            .await;
        if f.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the rate limit applies to the login page");
}

#[tokio::test]
async fn the_gateway_takes_the_cookie_and_its_revocation() {
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let ca = tc.ca();
    let (url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let mut b = Browser::new(&tc.public_url, &ca, "127.0.0.1");
    let at = login_time(&rig);
    b.login(&rig.alice, at, "https://app.example/").await;
    let cookie = b.jar.get(SESSION).expect("cookie").clone();
    let ask = |cookie: Option<String>, host: &'static str| {
        let url = url.clone();
        async move {
            let client = reqwest::Client::new();
            let mut req = client
                .get(&url)
                .header("x-original-method", "GET")
                .header("x-original-uri", "/")
                .header("x-forwarded-host", host)
                .header("x-real-ip", "192.0.2.10");
            if let Some(c) = cookie {
                req = req.header("cookie", format!("{SESSION}={c}"));
            }
            let r = req.send().await.expect("verify");
            let status = r.status();
            let h = r.headers().clone();
            (status, h)
        }
    };
    let (status, h) = ask(Some(cookie.clone()), "demo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-auth-user"], "alice");
    assert!(h.get("x-umbra-jwt-assertion").is_some());
    let (status, _) = ask(Some(cookie.clone()), "secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // No cookie: the login page, with the way back.
    let (status, h) = ask(None, "demo").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h["location"],
        format!(
            "{}?rd=https%3A%2F%2Fdemo%2F",
            crate::forward_auth::LOGIN_URL
        )
    );
    // An agent token in the cookie is refused, and the cookie is no
    // bearer token at the gateway's proxy either (same keys, other kind).
    let (status, _) = ask(Some(rig.token.clone()), "demo").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tc.wait_audit("gateway.verify", "token_wrong_kind").await;
    let (status, _) = rig.get(&rig.device, "demo", "/", Some(&cookie), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tc.wait_audit("gateway.access", "token_wrong_kind").await;
    // Revoked at the controller: the event reaches the gateway.
    let sid = tc.admin_get("/api/v1/admin/sessions").await["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["device_id"] == "")
        .expect("browser session")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    tc.admin_post(&format!("/api/v1/admin/sessions/{sid}/revoke"), Value::Null)
        .await;
    let view = rig.gw.view.clone();
    eventually(
        "the gateway knows the revocation",
        std::time::Duration::from_secs(10),
        || view.read().sessions.contains(&sid),
    )
    .await;
    let (status, _) = ask(Some(cookie), "demo").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
