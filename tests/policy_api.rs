//! The OPA REST API on the controller, used as an OPA client would use it,
//! and `umbra policy eval|test|check` and `umbra admin policy load` on real
//! files. Expected answers are OPA's own (crates/policy/tests/fixtures).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const CASES: &str = include_str!("../crates/policy/tests/fixtures/opa_cases.json");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).expect("policy file")
}

fn cases(set: &str) -> Vec<Value> {
    let all: Vec<Value> = serde_json::from_str(CASES).expect("fixtures");
    all.into_iter().filter(|c| c["set"] == set).collect()
}

async fn put_policy(tc: &TestController, id: &str, raw: &str) -> (StatusCode, Value) {
    tc.public()
        .call(
            Method::PUT,
            &format!("/v1/policies/{id}"),
            Some(&tc.admin_token),
            Some(Body::Raw(raw.to_owned())),
        )
        .await
}

/// Each top-level key of a data file to `PUT /v1/data/{key}`.
async fn put_data_file(tc: &TestController, path: &str) {
    let doc: Value = serde_json::from_str(&read(path)).expect("json");
    for (key, value) in doc.as_object().expect("object") {
        let (status, body) = tc
            .public()
            .call(
                Method::PUT,
                &format!("/v1/data/{key}"),
                Some(&tc.admin_token),
                Some(Body::Json(value.clone())),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{key}: {body}");
    }
}

async fn load_seeds(tc: &TestController) {
    for name in ["service_auth", "zerotrust", "compliance"] {
        let (status, body) =
            put_policy(tc, name, &read(&format!("policies/seeds/{name}.rego"))).await;
        assert_eq!((status, &body), (StatusCode::OK, &json!({})), "{name}");
    }
    put_data_file(tc, "policies/seeds/service_auth.data.json").await;
    put_data_file(tc, "policies/seeds/compliance.data.json").await;
}

fn charge(path: &str) -> Value {
    json!({ "input": {
        "source_service": "api-gateway", "target_service": "payment-service",
        "method": "POST", "path": path,
    }})
}

#[tokio::test]
async fn the_data_api_gives_opas_answers_on_the_seed_policies() {
    let tc = start().await;
    load_seeds(&tc).await;
    let http = tc.public();
    let token = Some(tc.admin_token.as_str());
    let seeds = cases("seeds");
    assert!(seeds.len() > 40);
    for case in &seeds {
        let path = format!("/v1/data/{}", case["query"].as_str().expect("query"));
        let (status, body) = http
            .post(&path, token, json!({ "input": case["input"] }))
            .await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", case["name"]);
        assert_eq!(body, case["expected"], "{}", case["name"]);
    }
    // Allow and deny, as seed 001's middleware reads them.
    let (_, allowed) = http
        .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
        .await;
    assert_eq!(allowed, json!({ "result": true }));
    let (_, denied) = http
        .post("/v1/data/service_auth/allow", token, charge("/v1/payouts"))
        .await;
    assert_eq!(denied, json!({ "result": false }));
    // Undefined is `{}`, as OPA; GET evaluates without input.
    let (status, undefined) = http
        .post("/v1/data/service_auth/nope", token, charge("/"))
        .await;
    assert_eq!((status, undefined), (StatusCode::OK, json!({})));
    let (_, no_input) = http.get("/v1/data/service_auth/allow", token).await;
    assert_eq!(no_input, json!({ "result": false }));
    let (_, data) = http.get("/v1/data/gdpr_limits/pii", token).await;
    assert_eq!(data, json!({ "result": 365 }));
    // An empty body is no input; a body that is not an object is refused.
    let (status, body) = http
        .call(
            Method::POST,
            "/v1/data/service_auth/allow",
            token,
            Some(Body::Raw(String::new())),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "result": false })));
    let (status, body) = http
        .post("/v1/data/service_auth/allow", token, json!([1]))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    // The modules as uploaded.
    let (status, list) = http.get("/v1/policies", token).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("compliance"),
            json!("service_auth"),
            json!("zerotrust")
        ]
    );
    let (_, one) = http.get("/v1/policies/service_auth", token).await;
    assert_eq!(
        one["result"]["raw"],
        read("policies/seeds/service_auth.rego")
    );
    let (status, body) = http.get("/v1/policies/nope", token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("resource_not_found"))
    );
    // Every change is audited with its actor.
    let puts = tc.audit("policy.put").await;
    assert_eq!(puts.len(), 3);
    assert!(puts.iter().all(|r| {
        r["outcome"] == "allow"
            && r["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("admin_token:"))
    }));
    assert!(
        puts[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("package data.")
    );
    assert_eq!(tc.audit("policy.data.put").await.len(), 3);
}

#[tokio::test]
async fn umbras_decision_and_v0_modules_load_through_the_api() {
    let tc = start().await;
    let (status, body) = put_policy(&tc, "umbra/authz", &read("policies/umbra/authz.rego")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    put_data_file(&tc, "policies/umbra/data.json").await;
    let token = Some(tc.admin_token.as_str());
    for case in cases("umbra") {
        let path = format!("/v1/data/{}", case["query"].as_str().expect("query"));
        let (_, body) = tc
            .public()
            .post(&path, token, json!({ "input": case["input"] }))
            .await;
        assert_eq!(body, case["expected"], "{}", case["name"]);
    }
    // Seed 001's module exactly as printed (Rego v0) answers as OPA does.
    let (status, body) = put_policy(
        &tc,
        "service_auth",
        &read("policies/seeds/v0/service_auth.rego"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    put_data_file(&tc, "policies/seeds/service_auth.data.json").await;
    for case in cases("seeds_v0") {
        let path = format!("/v1/data/{}", case["query"].as_str().expect("query"));
        let (_, body) = tc
            .public()
            .post(&path, token, json!({ "input": case["input"] }))
            .await;
        assert_eq!(body, case["expected"], "{}", case["name"]);
    }
    let (status, body) = tc.public().get("/v1/policies/umbra/authz", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_broken_policy_is_refused_with_its_position_and_the_old_set_stays() {
    let tc = start().await;
    load_seeds(&tc).await;
    let http = tc.public();
    let token = Some(tc.admin_token.as_str());
    let broken =
        "package service_auth\n\ndefault allow := false\n\nallow if {\n\tinput.method ==\n}\n";
    let (status, body) = put_policy(&tc, "service_auth", broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_parameter");
    let error = &body["errors"][0];
    assert_eq!(error["code"], "rego_parse_error");
    assert_eq!(error["location"]["file"], "service_auth");
    let (row, col) = (
        error["location"]["row"].as_u64().expect("row"),
        error["location"]["col"].as_u64().expect("col"),
    );
    assert!((6..=7).contains(&row), "{body}");
    assert!(col >= 1);
    let message = body["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!("service_auth:{row}:{col}: ")),
        "{message}"
    );
    // Still the old module, still answering.
    let (_, one) = http.get("/v1/policies/service_auth", token).await;
    assert_eq!(
        one["result"]["raw"],
        read("policies/seeds/service_auth.rego")
    );
    let (_, allowed) = http
        .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
        .await;
    assert_eq!(allowed, json!({ "result": true }));
    let refused = tc
        .audit("policy.put")
        .await
        .into_iter()
        .find(|r| r["outcome"] == "deny")
        .expect("audited");
    assert!(
        refused["reason"]
            .as_str()
            .expect("reason")
            .contains(&format!("service_auth:{row}:{col}"))
    );
    // A module that parses but does not compile: an unsafe variable.
    let unsafe_var = "package service_auth\n\nextra if {\n\ty := 1\n\tz\n}\n";
    let (status, body) = put_policy(&tc, "extra", unsafe_var).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], "rego_compile_error", "{body}");
    assert_eq!(body["errors"][0]["location"]["file"], "extra", "{body}");
    assert_eq!(body["errors"][0]["location"]["row"], 5, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("unsafe"),
        "{body}"
    );
    let (_, allowed) = http
        .post("/v1/data/service_auth/allow", token, charge("/v1/payouts"))
        .await;
    assert_eq!(allowed, json!({ "result": false }));
    // Delete: undefined afterwards, 404 the second time.
    let (status, _) = http
        .call(Method::DELETE, "/v1/policies/service_auth", token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, gone) = http
        .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
        .await;
    assert_eq!(gone, json!({}));
    let (status, _) = http
        .call(Method::DELETE, "/v1/policies/service_auth", token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = http
        .call(Method::DELETE, "/v1/data/policies", token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, gone) = http.get("/v1/data/policies", token).await;
    assert_eq!(gone, json!({}));
    assert_eq!(tc.audit("policy.delete").await.len(), 1);
}

#[tokio::test]
async fn reads_need_a_credential_writes_the_admin_and_inputs_a_size() {
    let tc = start().await;
    load_seeds(&tc).await;
    let anonymous = tc.public();
    let (status, body) = anonymous
        .post("/v1/data/service_auth/allow", None, charge("/v1/charges"))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        tc.last_audit_reason("policy.eval").await,
        "deny: no_credential"
    );
    let (status, _) = anonymous.get("/v1/policies", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = anonymous
        .call(
            Method::PUT,
            "/v1/policies/x",
            None,
            Some(Body::Raw("package x".into())),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A device's certificate alone reads; a user's session reads; neither writes.
    let user = tc.create_user("alice", &["eng"]).await;
    let device = tc.enroll("alice").await;
    let with_cert = tc.with_device(&device);
    let (status, body) = with_cert
        .post("/v1/data/service_auth/allow", None, charge("/v1/charges"))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "result": true })));
    let (status, login) = tc.login(&device, &user).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let session = login["token"].as_str().expect("session token");
    let (status, body) = with_cert
        .post(
            "/v1/data/service_auth/allow",
            Some(session),
            charge("/v1/refunds"),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "result": true })));
    for bearer in [None, Some(session)] {
        let (status, body) = with_cert
            .call(
                Method::PUT,
                "/v1/policies/x",
                bearer,
                Some(Body::Raw("package x\n\ny := 1\n".into())),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
    }
    assert_eq!(
        tc.last_audit_reason("policy.put").await,
        "deny: not_an_admin"
    );
    let (status, _) = with_cert
        .call(Method::DELETE, "/v1/data/policies", None, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A revoked device's certificate reads nothing.
    tc.admin_post(
        &format!("/api/v1/admin/devices/{}/revoke", device.id),
        json!(null),
    )
    .await;
    let (status, _) = with_cert
        .post("/v1/data/service_auth/allow", None, charge("/v1/charges"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Oversized inputs: 413 under the route's body limit and over it.
    let token = Some(tc.admin_token.as_str());
    for size in [(1 << 20) + 10, 3 << 20] {
        let big = json!({ "input": { "path": "x".repeat(size) } });
        let (status, body) = anonymous
            .post("/v1/data/service_auth/allow", token, big)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large")),
            "{size}"
        );
    }
    assert!(
        tc.last_audit_reason("policy.eval")
            .await
            .contains("rego_input_too_large")
    );

    // An evaluation error is an error (never an answer) and is audited.
    let conflict = "package conflict\n\nx := 1 if input.a\n\nx := 2 if input.b\n";
    let (status, body) = put_policy(&tc, "conflict", conflict).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = anonymous
        .post(
            "/v1/data/conflict/x",
            token,
            json!({ "input": { "a": true, "b": true } }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("evaluation_error")),
        "{body}"
    );
    let record = tc.audit("policy.eval").await.pop().expect("audited");
    assert_eq!(
        (record["outcome"].as_str(), record["resource"].as_str()),
        (Some("error"), Some("data/conflict/x"))
    );
    let (_, one) = anonymous
        .post(
            "/v1/data/conflict/x",
            token,
            json!({ "input": { "a": true } }),
        )
        .await;
    assert_eq!(one, json!({ "result": 1 }));
}

/// Seed 001's FastAPI middleware, reduced to the standard library: it
/// posts `{"input": …}` to `/v1/data/service_auth/allow` and reads
/// `result`. Only the URL and the bearer token differ from OPA.
const OPA_CLIENT: &str = r#"
import json, ssl, sys, urllib.request
url, token, cafile = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)

def authorize(source_service, method, path):
    input_data = {"input": {"source_service": source_service, "target_service": "payment-service",
                            "method": method, "path": path}}
    req = urllib.request.Request(url + "/v1/data/service_auth/allow", data=json.dumps(input_data).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
        return json.load(resp).get("result", False)

print(json.dumps([authorize("api-gateway", "POST", "/v1/charges"),
                  authorize("api-gateway", "DELETE", "/v1/charges"),
                  authorize("", "POST", "/v1/charges")]))
"#;

#[tokio::test]
async fn an_opa_client_works_unchanged_with_a_bearer_token() {
    let tc = start().await;
    load_seeds(&tc).await;
    let ca = tc.dir.path().join("ca.pem");
    let (url, token) = (tc.url.clone(), tc.admin_token.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", OPA_CLIENT, &url, &token])
            .arg(&ca)
            .output()
            .expect("python3 must be installed")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[true, false, false]"
    );
}

/// A controller on `db` serving on loopback, polling the store every 100 ms.
async fn node(
    root: &Path,
    name: &str,
    kek: &str,
) -> (
    String,
    std::sync::Arc<umbra_controller::Controller>,
    tokio_util::sync::DropGuard,
) {
    let toml = format!(
        "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[store]\npath = {:?}\n[api]\nevent_poll_ms = 100\n",
        root.join(name),
        root.join("shared.db"),
    );
    let config = umbra_controller::config::RawConfig::from_toml(&root.join("c.toml"), &toml)
        .expect("toml")
        .validate(Some(kek))
        .expect("config");
    let clock = std::sync::Arc::new(umbra_controller::clock::SystemClock);
    let c = umbra_controller::Controller::start(config, clock)
        .await
        .expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(umbra_controller::server::run_with(
        c.clone(),
        umbra_controller::server::Listeners {
            main: listener,
            public: None,
            knock: None,
        },
        shutdown.clone(),
    ));
    (url, c, shutdown.drop_guard())
}

#[tokio::test]
async fn controllers_sharing_a_store_converge() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, kek) = umbra_pki::Kek::generate().expect("kek");
    let (url_one, one, _stop_one) = node(dir.path(), "one", &kek).await;
    let ca = one.ca.cert_der().clone();
    let first = http(&url_one, &ca, None);
    let bootstrap =
        std::fs::read_to_string(one.bootstrap_file.as_ref().expect("bootstrap")).expect("read");
    let (status, body) = first
        .call(
            Method::POST,
            "/api/v1/admin/bootstrap",
            Some(bootstrap.trim()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let admin = body["token"].as_str().expect("token").to_owned();
    let token = Some(admin.as_str());
    let (url_two, _two, _stop_two) = node(dir.path(), "two", &kek).await;
    let second = http(&url_two, &ca, None);
    let (status, _) = first
        .call(
            Method::PUT,
            "/v1/policies/service_auth",
            token,
            Some(Body::Raw(read("policies/seeds/service_auth.rego"))),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let data: Value =
        serde_json::from_str(&read("policies/seeds/service_auth.data.json")).expect("json");
    let (status, _) = first
        .call(
            Method::PUT,
            "/v1/data/policies",
            token,
            Some(Body::Json(data["policies"].clone())),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for expected in [json!({ "result": true }), json!({})] {
        loop {
            let (_, body) = second
                .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
                .await;
            if body == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the second controller never saw {expected}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, _) = first
            .call(Method::DELETE, "/v1/policies/service_auth", token, None)
            .await;
        assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND);
    }
}

// ---- the CLI -----------------------------------------------------------------------------

fn umbra(args: &[&str]) -> Output {
    Command::new(umbra_bin())
        .args(args)
        .current_dir(repo(""))
        .env("UMBRA_LOG", "warn")
        .output()
        .expect("run umbra")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

const SEED_FILES: [&str; 10] = [
    "-d",
    "policies/seeds/service_auth.rego",
    "-d",
    "policies/seeds/zerotrust.rego",
    "-d",
    "policies/seeds/compliance.rego",
    "-d",
    "policies/seeds/service_auth.data.json",
    "-d",
    "policies/seeds/compliance.data.json",
];

#[test]
fn policy_eval_prints_what_opa_eval_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in cases("seeds").iter().enumerate() {
        let input = dir.path().join(format!("{i}.json"));
        std::fs::write(&input, case["input"].to_string()).expect("input");
        let query = format!(
            "data.{}",
            case["query"].as_str().expect("query").replace('/', ".")
        );
        let mut args = vec!["policy", "eval"];
        args.extend(SEED_FILES);
        let input = input.to_string_lossy().into_owned();
        args.extend(["-i", &input, &query]);
        let out = umbra(&args);
        assert!(
            out.status.success(),
            "{}: {}",
            case["name"],
            text(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
        let expected = match case["expected"].get("result") {
            None => json!({}),
            Some(v) => json!({ "result": [{ "expressions": [{
                "value": v, "text": query, "location": { "row": 1, "col": 1 } }] }] }),
        };
        assert_eq!(printed, expected, "{}", case["name"]);
    }
    // Byte for byte, as OPA indents it.
    let input = dir.path().join("0.json");
    let mut args = vec!["policy", "eval"];
    args.extend(SEED_FILES);
    let input = input.to_string_lossy().into_owned();
    args.extend(["-i", &input, "data.service_auth.allow"]);
    assert_eq!(
        text(&umbra(&args).stdout),
        "{\n  \"result\": [\n    {\n      \"expressions\": [\n        {\n          \"value\": true,\n          \
         \"text\": \"data.service_auth.allow\",\n          \"location\": {\n            \"row\": 1,\n            \
         \"col\": 1\n          }\n        }\n      ]\n    }\n  ]\n}\n"
    );
    let mut args = vec!["policy", "eval"];
    args.extend(SEED_FILES);
    args.extend(["data.service_auth.nope"]);
    assert_eq!(text(&umbra(&args).stdout), "{}\n");
    let mut args = vec!["policy", "eval", "--format", "pretty"];
    args.extend(SEED_FILES);
    args.extend(["-i", &input, "data.service_auth.allow"]);
    assert_eq!(text(&umbra(&args).stdout), "true\n");
}

#[test]
fn policy_eval_explains_umbra_decisions_and_loads_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let case = cases("umbra").into_iter().next().expect("an umbra case");
    let input = dir.path().join("input.json");
    std::fs::write(&input, case["input"].to_string()).expect("input");
    let input = input.to_string_lossy().into_owned();
    let out = umbra(&[
        "policy",
        "eval",
        "-d",
        "policies/umbra",
        "-i",
        &input,
        "data.umbra.authz.decision",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        printed["result"][0]["expressions"][0]["value"],
        case["expected"]["result"]
    );
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("decision: allow"), "{stderr}");
    let reason = case["expected"]["result"]["reasons"][0]
        .as_str()
        .expect("a reason");
    assert!(stderr.contains(reason), "{stderr}");
    let out = umbra(&[
        "policy",
        "eval",
        "-f",
        "pretty",
        "-d",
        "policies/umbra",
        "-i",
        &input,
        "data.umbra.authz.decision",
    ]);
    assert!(text(&out.stdout).contains("decision: allow"));
}

#[test]
fn policy_test_runs_test_rules_as_opa_test() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(
        root.join("authz.rego"),
        read("policies/seeds/service_auth.rego"),
    )
    .expect("write");
    std::fs::write(
        root.join("data.json"),
        read("policies/seeds/service_auth.data.json"),
    )
    .expect("write");
    let passing = "package service_auth_test\n\nimport data.service_auth\n\n\
        test_charges_allowed if {\n\tservice_auth.allow with input as {\"source_service\": \"api-gateway\", \
        \"target_service\": \"payment-service\", \"method\": \"POST\", \"path\": \"/v1/charges/1\"}\n}\n\n\
        test_get_denied if {\n\tnot service_auth.allow with input as {\"source_service\": \"api-gateway\", \
        \"target_service\": \"payment-service\", \"method\": \"GET\", \"path\": \"/v1/charges\"}\n}\n";
    std::fs::write(root.join("authz_test.rego"), passing).expect("write");
    let dir_arg = root.to_string_lossy().into_owned();
    let out = umbra(&["policy", "test", &dir_arg]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "PASS: 2/2\n");
    let out = umbra(&["policy", "test", "-v", &dir_arg]);
    assert!(text(&out.stdout).contains("data.service_auth_test.test_get_denied: PASS ("));

    let failing = "package more_test\n\nimport data.service_auth\n\n\
        test_payouts_allowed if {\n\tservice_auth.allow with input as {\"source_service\": \"api-gateway\", \
        \"target_service\": \"payment-service\", \"method\": \"POST\", \"path\": \"/v1/payouts\"}\n}\n";
    std::fs::create_dir(root.join("more")).expect("mkdir");
    std::fs::write(root.join("more/more_test.rego"), failing).expect("write");
    let out = umbra(&["policy", "test", &dir_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("more_test.rego:\ndata.more_test.test_payouts_allowed: FAIL ("),
        "{stdout}"
    );
    assert!(stdout.ends_with("PASS: 2/3\nFAIL: 1/3\n"), "{stdout}");
}

#[test]
fn policy_check_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.rego");
    std::fs::write(&bad, "package bad\n\nallow if {\n\tinput.x ==\n}\n").expect("write");
    let bad_arg = bad.to_string_lossy().into_owned();
    let out = umbra(&[
        "policy",
        "check",
        "policies/seeds/service_auth.rego",
        &bad_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // regorus may print its own warnings first; the error is one line.
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{bad_arg}:")))
        .unwrap_or_else(|| panic!("{stderr}"));
    let position: Vec<&str> = line[bad_arg.len() + 1..].splitn(3, ':').collect();
    assert!(
        position[0]
            .parse::<u32>()
            .is_ok_and(|l| (4..=5).contains(&l)),
        "{stderr}"
    );
    assert!(position[1].parse::<u32>().is_ok(), "{stderr}");
    // Parses alone, does not compile: reported with its position too.
    let unsafe_var = dir.path().join("unsafe.rego");
    std::fs::write(&unsafe_var, "package u\n\nallow if {\n\ty := 1\n\tz\n}\n").expect("write");
    let unsafe_arg = unsafe_var.to_string_lossy().into_owned();
    let out = umbra(&[
        "policy",
        "check",
        "policies/seeds/service_auth.rego",
        &unsafe_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{unsafe_arg}:5:")),
        "{}",
        text(&out.stderr)
    );
    let out = umbra(&[
        "policy",
        "check",
        "policies/seeds/service_auth.rego",
        "policies/seeds/zerotrust.rego",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn admin_policy_load_puts_modules_and_data() {
    let tc = start().await;
    let ca = tc.dir.path().join("ca.pem").to_string_lossy().into_owned();
    let admin = |args: Vec<String>| {
        let (url, token, ca) = (tc.url.clone(), tc.admin_token.clone(), ca.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(umbra_bin())
                .args(["admin", "policy"])
                .args(args)
                .current_dir(repo(""))
                .env("UMBRA_CONTROLLER", url)
                .env("UMBRA_ADMIN_TOKEN", token)
                .env("UMBRA_CA_CERT", ca)
                .output()
                .expect("run umbra")
        })
    };
    let out = admin(vec![
        "load".into(),
        "policies/seeds/service_auth.rego".into(),
        "policies/seeds/service_auth.data.json".into(),
    ])
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("policy service_auth loaded"));
    let token = Some(tc.admin_token.as_str());
    let (_, allowed) = tc
        .public()
        .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
        .await;
    assert_eq!(allowed, json!({ "result": true }));
    let out = admin(vec!["list".into()]).await.expect("join");
    assert!(
        text(&out.stdout).contains("service_auth"),
        "{}",
        text(&out.stdout)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("service_auth.rego");
    std::fs::write(&bad, "package service_auth\n\nallow if {\n").expect("write");
    let out = admin(vec!["load".into(), bad.to_string_lossy().into_owned()])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HTTP 400") && stderr.contains("service_auth:"),
        "{stderr}"
    );
    let (_, allowed) = tc
        .public()
        .post("/v1/data/service_auth/allow", token, charge("/v1/charges"))
        .await;
    assert_eq!(allowed, json!({ "result": true }));
}

#[tokio::test]
async fn a_runaway_evaluation_times_out_is_an_error_and_is_audited() {
    let tc = start().await;
    let runaway = "package slow\n\nn := count({[a, b, c] |\n\tsome a in numbers.range(1, 1000)\n\
                   \tsome b in numbers.range(1, 1000)\n\tsome c in numbers.range(1, 1000)\n})\n";
    let (status, body) = put_policy(&tc, "slow", runaway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = std::time::Instant::now();
    let (status, body) = tc
        .public()
        .get("/v1/data/slow/n", Some(&tc.admin_token))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("evaluation_error")),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        tc.last_audit_reason("policy.eval")
            .await
            .starts_with("error: rego_timeout")
    );
}
