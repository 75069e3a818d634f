//! The real nginx running `examples/nginx/browser.conf` in front of a
//! backend, asking the Umbra controller's `/auth/verify`: it sends a user
//! with no session to the login page (served through nginx on the app's
//! host), lets the signed-in user through with Umbra's identity, denies
//! what policy denies (403), and the same configuration speaking from an
//! address the controller does not trust gets nothing through.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::browser::{Browser, browser_rig, urlencode};
use crate::forward_auth_nginx::{nginx_available, pem, server_certificate, start_conf};
use crate::support::{Running, free_port, oathtool};

const EXAMPLE: &str = include_str!("../examples/nginx/browser.conf");

async fn start(
    dir: &Path,
    port: u16,
    controller: &str,
    backend: &str,
    bind: Option<&str>,
) -> Running {
    let certs = format!("{}/", dir.display());
    let mut conf = EXAMPLE
        .replace("/etc/nginx/certs/", &certs)
        .replace("/var/log/nginx/", &certs)
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("127.0.0.1:8443", controller)
        .replace("127.0.0.1:8080", backend)
        .replace(
            "http {\n",
            &format!(
                "http {{\n    access_log off;\n    client_body_temp_path {certs}body;\n    \
                 proxy_temp_path {certs}proxy;\n    fastcgi_temp_path {certs}fastcgi;\n    \
                 uwsgi_temp_path {certs}uwsgi;\n    scgi_temp_path {certs}scgi;\n"
            ),
        );
    if let Some(ip) = bind {
        conf = conf.replace(
            "proxy_pass https://umbra_controller/auth/verify;",
            &format!(
                "proxy_bind {ip};\n            proxy_pass https://umbra_controller/auth/verify;"
            ),
        );
    }
    start_conf(dir, port, &conf).await
}

#[tokio::test]
async fn nginx_with_the_browser_example_sends_to_login_allows_and_denies() {
    if !nginx_available() {
        return;
    }
    let (rig, _policy) = browser_rig().await;
    let tc = &rig.tc;
    let controller = tc.public_url.trim_start_matches("https://").to_owned();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend_addr = backend.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    tokio::spawn(umbra_gateway::demo::serve(backend, stop.clone()));
    let _stop_backend = stop.drop_guard();
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx_ca = server_certificate(dir.path());
    std::fs::write(
        dir.path().join("umbra-ca.crt"),
        pem("CERTIFICATE", &tc.ca()),
    )
    .expect("write");
    let port = free_port();
    let _nginx = start(dir.path(), port, &controller, &backend_addr, None).await;

    let base = format!("https://127.0.0.1:{port}");
    let mut b = Browser::new(&base, &nginx_ca, "127.0.0.1");
    let get = |b: &Browser, path: &str, host: &str| {
        b_client(b)
            .get(format!("{base}{path}"))
            .header("host", host)
            // A client's forgeries, which must reach neither Umbra nor the backend.
            .header("x-auth-user", "mallory")
            .header("x-original-uri", "/")
    };

    // No session: to the login page, on this host, with the way back.
    let req = get(&b, "/docs?page=2", "app.example");
    let first = b.send(req).await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.body);
    let location = first.header("location").to_owned();
    assert_eq!(
        location,
        format!(
            "/auth/login?rd={}",
            urlencode("https://app.example/docs?page=2")
        )
    );
    // The login page through nginx; the form posts back through nginx.
    let req = get(&b, &location, "app.example");
    let form = b.send(req).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    rig.tc.clock.advance(30);
    let code = oathtool(&rig.alice.totp_secret, tc.now());
    let body = [
        ("user", rig.alice.name.as_str()),
        ("password", rig.alice.password.as_str()),
        ("totp", code.as_str()),
        ("csrf", form.csrf().as_str()),
        ("rd", "https://app.example/docs?page=2"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", urlencode(v)))
    .collect::<Vec<_>>()
    .join("&");
    let req = b_client(&b)
        .post(format!("{base}/auth/login"))
        .header("host", "app.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let done = b.send(req).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.header("location"), "https://app.example/docs?page=2");
    assert!(b.jar.contains_key("__Host-umbra_session"));
    let login = tc.wait_audit("auth.browser_login", "risk").await;
    assert_eq!(
        login["source_ip"], "127.0.0.1",
        "the user's address, from nginx"
    );

    // Signed in: the backend sees Umbra's identity, not the client's, and
    // not the cookie.
    let req = get(&b, "/docs?page=2", "app.example");
    let ok = b.send(req).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let seen: Value = serde_json::from_str(&ok.body).expect("json");
    let h = &seen["headers"];
    assert_eq!(h["x-auth-user"], "alice", "{seen}");
    assert_eq!(h["x-auth-groups"], "eng", "{seen}");
    assert!(h["x-session-id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        h.get("cookie").is_none(),
        "the cookie stays at nginx: {seen}"
    );
    // Written before the answer: no waiting.
    let record = tc
        .audit("auth.verify")
        .await
        .into_iter()
        .find(|r| r["outcome"] == "allow")
        .expect("an allowed verify");
    assert_eq!(record["resource"], "service:demo GET /docs");

    // Denied by policy: 403 (secret is bob's).
    let req = get(&b, "/", "secret.example");
    assert_eq!(b.send(req).await.status, StatusCode::FORBIDDEN);
    // A client cannot ask /auth/verify itself through nginx.
    let req = get(&b, "/auth/verify", "app.example");
    assert_eq!(b.send(req).await.status, StatusCode::NOT_FOUND);

    // The same configuration from an address the controller does not
    // trust: its forwarded headers are ignored, nothing gets through.
    let port2 = free_port();
    let _untrusted = start(
        dir.path(),
        port2,
        &controller,
        &backend_addr,
        Some("127.0.0.3"),
    )
    .await;
    let base2 = format!("https://127.0.0.1:{port2}");
    let req = b_client(&b)
        .get(format!("{base2}/docs"))
        .header("host", "app.example");
    let r = b.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let record = tc
        .wait_audit("auth.verify", "forwarded headers ignored")
        .await;
    assert_eq!(record["source_ip"], "127.0.0.3", "{record}");
}

fn b_client(b: &Browser) -> &reqwest::Client {
    b.client()
}
