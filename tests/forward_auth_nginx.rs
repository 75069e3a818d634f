//! The real nginx (Debian's) running `examples/nginx/nginx.conf` in front
//! of a backend, asking the Umbra gateway's `/auth/verify` about every
//! request: it allows, asks for a login (401) and denies (403) as Umbra
//! says, and the same configuration speaking from an address the gateway
//! does not trust gets nothing through.
//!
//! nginx must be installed (`.ci/run` installs it); with CI=true its
//! absence fails the test, elsewhere the test is skipped with a message.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::access::Rig;
use crate::forward_auth::{verify_listener, wait_verify};
use crate::support::{Running, TestDevice, free_port};

const EXAMPLE: &str = include_str!("../examples/nginx/nginx.conf");

pub fn nginx_available() -> bool {
    let found = Command::new("nginx").arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx must be installed (apt-get install nginx)"
        );
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
    }
    found
}

pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// nginx's own server certificate, from a throwaway CA; that CA's DER.
pub fn server_certificate(dir: &Path) -> CertificateDer<'static> {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    std::fs::write(dir.join("ztna.crt"), leaf.pem()).expect("write");
    std::fs::write(dir.join("ztna.key"), key.serialize_pem()).expect("write");
    ca.der().clone()
}

/// Starts nginx on the example, adapted to this test's paths and ports;
/// `bind` makes its subrequests to Umbra come from that address.
async fn start_nginx(
    dir: &Path,
    port: u16,
    verify: &str,
    backend: &str,
    bind: Option<&str>,
) -> Running {
    let certs = format!("{}/", dir.display());
    let mut conf = EXAMPLE
        .replace("/etc/nginx/certs/", &certs)
        .replace("/var/log/nginx/", &certs)
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("127.0.0.1:9444", verify)
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
            "proxy_pass http://umbra_verify/auth/verify;",
            &format!("proxy_bind {ip};\n            proxy_pass http://umbra_verify/auth/verify;"),
        );
    }
    start_conf(dir, port, &conf).await
}

/// Starts nginx on `conf` (checked with `nginx -t` first), listening on `port`.
pub async fn start_conf(dir: &Path, port: u16, conf: &str) -> Running {
    let file = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&file, conf).expect("conf");
    let args = |test: bool| {
        let mut c = Command::new("nginx");
        c.arg("-e")
            .arg(dir.join(format!("error-{port}.log")))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&file)
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {}/nginx-{port}.pid;",
                dir.display()
            ));
        if test {
            c.arg("-t");
        }
        c
    };
    let checked = args(true).output().expect("nginx -t");
    assert!(
        checked.status.success(),
        "nginx -t refused the example: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let child = Running(args(false).spawn().expect("nginx"));
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "nginx did not listen on {port}: {}",
        std::fs::read_to_string(dir.join(format!("error-{port}.log"))).unwrap_or_default()
    );
}

fn client(nginx_ca: &CertificateDer<'static>, device: &TestDevice) -> reqwest::Client {
    let identity = (
        vec![CertificateDer::from_pem_slice(device.cert_pem.as_bytes()).expect("cert")],
        PrivateKeyDer::from_pem_slice(device.key_pem.as_bytes()).expect("key"),
    );
    let tls = umbra_pki::tls::client_config(nginx_ca, Some(identity)).expect("tls");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .build()
        .expect("client")
}

async fn get(
    c: &reqwest::Client,
    port: u16,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = c
        .get(format!("https://127.0.0.1:{port}{path}"))
        .header("host", host)
        // A client's forgeries, which must reach neither Umbra nor the backend.
        .header("x-auth-user", "mallory")
        .header("x-original-uri", "/")
        .header("x-forwarded-uri", "/");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request through nginx");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn nginx_with_the_example_config_allows_asks_to_log_in_and_denies_as_umbra_says() {
    if !nginx_available() {
        return;
    }
    let rig = Rig::start().await;
    let (verify_url, _stop) = verify_listener(&rig, &["127.0.0.1/32"]).await;
    let verify = verify_url
        .trim_start_matches("http://")
        .trim_end_matches("/auth/verify")
        .to_owned();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend_addr = backend.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    tokio::spawn(umbra_gateway::demo::serve(backend, stop.clone()));
    let _stop_backend = stop.drop_guard();

    let dir = tempfile::tempdir().expect("tempdir");
    let nginx_ca = server_certificate(dir.path());
    let umbra_ca = pem("CERTIFICATE", &rig.tc.ca());
    std::fs::write(dir.path().join("umbra-ca.crt"), umbra_ca).expect("write");
    let port = free_port();
    let _nginx = start_nginx(dir.path(), port, &verify, &backend_addr, None).await;
    let c = client(&nginx_ca, &rig.device);

    // Allowed: the backend sees Umbra's identity, not the client's.
    let (status, body) = get(&c, port, "billing", "/v1/charges/7", Some(&rig.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let h = &body["headers"];
    assert_eq!(h["x-auth-user"], "alice", "{body}");
    assert_eq!(h["x-auth-groups"], "eng", "{body}");
    assert_eq!(h["x-session-id"], rig.login["session_id"], "{body}");
    assert!(
        h["x-umbra-jwt-assertion"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );
    assert!(h.get("authorization").is_none(), "the token stays at nginx");
    assert_eq!(body["path"], "/v1/charges/7");
    let record = wait_verify(&rig.tc, |r| r["outcome"] == "allow").await;
    assert_eq!(record["source_ip"], "127.0.0.1", "the user's address");
    assert_eq!(
        record["resource"],
        "service:billing GET /v1/charges/7 via gateway:gw1"
    );

    // No session: 401, the login is asked for.
    let (status, _) = get(&c, port, "billing", "/v1/charges/7", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Denied by policy (granted to bob only), and a path trick: 403.
    let (status, _) = get(&c, port, "secret", "/", Some(&rig.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(
        &c,
        port,
        "billing",
        "/v1/charges/../admin",
        Some(&rig.token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The method is the user's: POST is decided as a POST.
    let resp = c
        .post(format!("https://127.0.0.1:{port}/v1/charges"))
        .header("host", "billing")
        .bearer_auth(&rig.token)
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    wait_verify(&rig.tc, |r| {
        r["resource"] == "service:billing POST /v1/charges via gateway:gw1"
            && r["outcome"] == "allow"
    })
    .await;

    // The same configuration from an address the gateway does not trust:
    // its forwarded headers are not believed, nothing gets through.
    let port2 = free_port();
    let _untrusted =
        start_nginx(dir.path(), port2, &verify, &backend_addr, Some("127.0.0.3")).await;
    let (status, body) = get(&c, port2, "billing", "/v1/charges/7", Some(&rig.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let record = rig.tc.wait_audit("gateway.verify", "untrusted_proxy").await;
    assert_eq!(record["source_ip"], "127.0.0.3", "{record}");
}
