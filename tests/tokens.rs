//! Session tokens: verifiable with the JWKS, bound to the device
//! certificate, and refused when forged, confused or expired.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

async fn logged_in(tc: &TestController, name: &str) -> (TestDevice, String) {
    let user = tc.create_user(name, &["eng"]).await;
    let dev = tc.enroll(name).await;
    let (status, body) = tc.login(&dev, &user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (dev, body["token"].as_str().expect("token").to_owned())
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[tokio::test]
async fn tokens_verify_against_the_jwks_and_carry_the_session() {
    let tc = start().await;
    let (dev, token) = logged_in(&tc, "alice").await;
    let (status, jwks) = tc.public().get("/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).expect("jwks");
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("key in jwks");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&["umbra"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
        .expect("verifies")
        .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["device"], dev.id.as_str());
    assert_eq!(claims["groups"], json!(["eng"]));
    assert_eq!(claims["risk"], 15, "no history yet");
    assert_eq!(claims["mfa_at"], claims["iat"], "the login was an MFA");
    assert!(claims["sid"].is_string() && claims["exp"].as_i64().expect("exp") > tc.now());
    assert!(claims["cnf"]["x5t#S256"].is_string());

    let http = tc.with_device(&dev);
    let (status, session) = http.get("/api/v1/auth/session", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["id"], claims["sid"]);
    let (status, _) = http
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = http.get("/api/v1/auth/session", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.session").await,
        "deny: session_revoked"
    );
}

#[tokio::test]
async fn forged_confused_and_expired_tokens_are_refused() {
    let tc = start().await;
    let (dev, token) = logged_in(&tc, "bob").await;
    let http = tc.with_device(&dev);
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");

    let check = |t: String, reason: &'static str| {
        let http = http.clone();
        let tc = &tc;
        async move {
            let (status, body) = http.get("/api/v1/auth/session", Some(&t)).await;
            assert_eq!(
                (status, error_code(&body)),
                (StatusCode::UNAUTHORIZED, "authentication_failed"),
                "{reason}"
            );
            assert_eq!(
                tc.last_audit_reason("auth.session").await,
                format!("deny: {reason}")
            );
        }
    };
    // Bad signature: the claims were edited.
    let mut edited = claims.clone();
    edited["groups"] = json!(["admins"]);
    check(
        format!("{}.{}.{}", parts[0], b64(&edited), parts[2]),
        "token_bad_signature",
    )
    .await;
    // alg: none.
    check(
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            parts[1]
        ),
        "token_alg_none",
    )
    .await;
    // HS256 keyed with the public JWK from the JWKS (key confusion).
    let (_, jwks) = tc.public().get("/.well-known/jwks.json", None).await;
    let public = serde_json::to_vec(&jwks["keys"][0]).expect("jwk");
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid);
    let hs = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .expect("hs256");
    check(hs, "token_algorithm_refused").await;
    check("garbage".into(), "token_malformed").await;
    // Expired: move the controller's clock past `exp`.
    tc.clock
        .advance(claims["exp"].as_i64().expect("exp") - tc.now() + 1);
    check(token.clone(), "token_expired").await;
}

#[tokio::test]
async fn a_token_works_only_with_the_certificate_it_was_issued_to() {
    let tc = start().await;
    let (_dev, token) = logged_in(&tc, "carol").await;
    tc.create_user("dave", &[]).await;
    let other = tc.enroll("dave").await;
    let (status, _) = tc
        .with_device(&other)
        .get("/api/v1/auth/session", Some(&token))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tc.last_audit_reason("auth.session").await,
        "deny: token_not_bound_to_certificate"
    );
    let (status, body) = tc.public().get("/api/v1/auth/session", Some(&token)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "client_certificate_required")
    );
}

#[tokio::test]
async fn signing_keys_rotate_and_old_tokens_verify_until_they_expire() {
    let tc = start().await;
    let (dev, old_token) = logged_in(&tc, "erin").await;
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .expect("header")
        .kid
        .expect("kid");
    let rotated = tc
        .admin_post("/api/v1/admin/signing-keys/rotate", json!(null))
        .await;
    let new_kid = rotated["kid"].as_str().expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(
        tc.last_audit_reason("signing_key.rotate")
            .await
            .starts_with("allow: previous keys retire at")
    );

    // Both keys are published; the old token still works; new tokens use the new key.
    let (_, jwks) = tc.public().get("/.well-known/jwks.json", None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "signing key first"
    );
    let http = tc.with_device(&dev);
    assert_eq!(
        http.get("/api/v1/auth/session", Some(&old_token)).await.0,
        StatusCode::OK
    );
    let user = tc.create_user("fred", &[]).await;
    let fred_dev = tc.enroll("fred").await;
    let (_, login) = tc.login(&fred_dev, &user).await;
    let new_token = login["token"].as_str().expect("token");
    assert_eq!(
        jsonwebtoken::decode_header(new_token)
            .expect("header")
            .kid
            .as_deref(),
        Some(new_kid.as_str())
    );

    // Once every token the old key signed has expired, the key is withdrawn.
    tc.clock.advance(3600 + 61);
    let (_, jwks) = tc.public().get("/.well-known/jwks.json", None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [new_kid.as_str()]);
    let (status, _) = http.get("/api/v1/auth/session", Some(&old_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let reason = tc.last_audit_reason("auth.session").await;
    assert!(
        reason == "deny: token_key_retired" || reason == "deny: token_expired",
        "{reason}"
    );
}
