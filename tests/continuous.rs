//! Continuous verification: the controller judges every live session again
//! (on events and on its risk's interval), pushes what it decides to every
//! gateway, and gateways cut off from the controller fail closed within the
//! staleness bound and catch up when they are back. Users, devices and
//! sessions are made through the API; sessions live in real TCP tunnels.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use umbra_agent::AgentError;
use umbra_gateway::Gateway;
use umbra_gateway::config::{RawConfig, RawRoute};

use crate::access::{Rig, echo_round_trip, eventually};
use crate::policy_access::{advance, demo, report, rig_with_policy, step_up};
use crate::support::{error_code, oathtool};

const FIREWALL_REQUIRED: &str = r#"
[compliance]
required = "fw"
on_failure = "ON_FAILURE"

[compliance.policies.fw]
require_firewall = true
"#;

/// Waits until `stream` ends (EOF or reset), within `within`.
async fn ends<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration, what: &str) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"))
        .unwrap_or(0);
    assert_eq!(n, 0, "{what}: EOF expected");
}

fn sid(login: &Value) -> String {
    login["session_id"].as_str().expect("session id").to_owned()
}

async fn session_record(rig: &Rig, id: &str) -> Value {
    let list = rig.tc.admin_get("/api/v1/admin/sessions?all=true").await;
    list["items"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("session {id} listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_switched_off_ends_the_session_everywhere_when_the_policy_says_terminate() {
    let (rig, _policy) =
        rig_with_policy(&FIREWALL_REQUIRED.replace("ON_FAILURE", "terminate")).await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel");
    echo_round_trip(&mut tunnel, b"before\n").await;

    report(&rig, false).await;
    let record = rig
        .tc
        .wait_audit(
            "session.reevaluate",
            "terminate: device fails compliance policy fw: Firewall is disabled",
        )
        .await;
    assert_eq!(record["outcome"], "deny");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("trigger: posture changed"), "{reason}");
    ends(&mut tunnel, Duration::from_secs(5), "the live tunnel").await;

    let session = session_record(&rig, &sid(&rig.login)).await;
    assert!(
        session["revoked_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("reevaluation: device fails compliance policy fw")),
        "{session}"
    );
    // The token is dead even once the device complies again.
    report(&rig, true).await;
    assert_eq!(demo(&rig).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_switched_off_holds_the_session_until_a_step_up_when_the_policy_says_so() {
    let (rig, _policy) = rig_with_policy(&FIREWALL_REQUIRED.replace("ON_FAILURE", "step_up")).await;
    let session = sid(&rig.login);
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut tunnel = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel");
    echo_round_trip(&mut tunnel, b"before\n").await;

    report(&rig, false).await;
    rig.tc
        .wait_audit(
            "session.reevaluate",
            "step_up: device fails compliance policy fw: Firewall is disabled",
        )
        .await;
    let (gw, s) = (rig.gw.clone(), session.clone());
    eventually(
        "the verdict reached the gateway",
        Duration::from_secs(10),
        || {
            gw.view
                .read()
                .verdicts
                .get(&s)
                .is_some_and(|v| v.step_up_at.is_some())
        },
    )
    .await;
    // What the session had open ends; new requests are held for the MFA.
    ends(&mut tunnel, Duration::from_secs(5), "the live tunnel").await;
    rig.tc
        .wait_audit("gateway.tunnel", "tunnel cut: step_up_required")
        .await;
    let (status, body) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "step_up_required", "{body}");
    let listed = session_record(&rig, &session).await;
    assert!(listed["step_up_since"].is_string(), "{listed}");
    assert!(listed["revoked_at"].is_null(), "{listed}");

    // The step-up needs a code from a later time step than the login's.
    advance(&rig, 30).await;
    let code = oathtool(&rig.alice.totp_secret, rig.tc.now());
    let (status, body) = step_up(&rig, &rig.token, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["token"].as_str().expect("token").to_owned();
    let (status, body) = rig.get(&rig.device, "demo", "/", Some(&fresh), &[]).await;
    assert_eq!(status, StatusCode::OK, "paid: the session goes on: {body}");
    let (status, _) = rig
        .get(&rig.device, "demo", "/", Some(&rig.token), &[])
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the token from before the step-up is still held"
    );
    // A later judgement of the same lasting condition asks nothing new.
    advance(&rig, 601).await;
    let (gw, s) = (rig.gw.clone(), session.clone());
    rig.tc
        .wait_audit("session.reevaluate", "trigger: periodic")
        .await;
    eventually("still paid", Duration::from_secs(5), || {
        gw.view
            .read()
            .verdicts
            .get(&s)
            .is_some_and(|v| v.step_up_at.is_some())
    })
    .await;
    let (status, _) = rig.get(&rig.device, "demo", "/", Some(&fresh), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_are_judged_again_on_their_risk_interval() {
    let rig = Rig::start().await;
    let session = sid(&rig.login);
    // Nothing is due before the interval (risk < 30: every 600 s).
    advance(&rig, 300).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        rig.tc
            .audit("session.reevaluate")
            .await
            .iter()
            .all(|r| r["resource"] != format!("session:{session}")),
        "judged before its interval"
    );
    advance(&rig, 301).await;
    let record = rig
        .tc
        .wait_audit("session.reevaluate", "trigger: periodic")
        .await;
    assert_eq!(record["resource"], format!("session:{session}"));
    assert_eq!(record["outcome"], "allow");
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("continue")),
        "{record}"
    );
    let listed = session_record(&rig, &session).await;
    assert!(listed["evaluated_at"].is_string(), "{listed}");
    assert_eq!(demo(&rig).await, StatusCode::OK);
}

/// A TCP forwarder between a gateway and the controller that can be cut
/// (every relayed connection closed, new ones dropped) and healed: the
/// controller unreachable, as a crash or a partition leaves it.
struct Partition {
    url: String,
    down: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().expect("lock").cancel();
    }
}

impl Partition {
    async fn start(controller_url: &str) -> Self {
        let target: SocketAddr = controller_url
            .trim_start_matches("https://")
            .parse()
            .expect("controller address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let p = Self {
            url,
            down: Arc::new(AtomicBool::new(false)),
            cut: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
        };
        let (down, cut, stop) = (p.down.clone(), p.cut.clone(), p.stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                if down.load(Ordering::SeqCst) {
                    continue; // dropped: the peer sees the connection close
                }
                let token = cut.lock().expect("lock").clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        p
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        let mut token = self.cut.lock().expect("lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    fn heal(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A second gateway, `name`, reaching the controller at `controller_url`,
/// with one TCP service, `service` (an echo), granted to alice.
struct SecondGateway {
    gw: Arc<Gateway>,
    url: String,
    service: String,
    _state: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for SecondGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl SecondGateway {
    async fn start(rig: &Rig, name: &str, service: &str, controller_url: &str) -> Self {
        let token = rig
            .tc
            .admin_post(
                "/api/v1/admin/gateways",
                json!({ "name": name, "sans": ["127.0.0.1", "localhost"] }),
            )
            .await["token"]
            .as_str()
            .expect("gateway token")
            .to_owned();
        let shutdown = CancellationToken::new();
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let echo_url = format!("tcp://{}", echo.local_addr().expect("addr"));
        tokio::spawn(umbra_gateway::demo::serve_tcp_echo(echo, shutdown.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let state = tempfile::tempdir().expect("tempdir");
        let raw = RawConfig {
            controller_url: controller_url.to_owned(),
            listen: listener.local_addr().expect("addr").to_string(),
            public_url: Some(url.clone()),
            state_dir: state.path().join(name),
            enrollment_token: Some(token),
            enrollment_token_file: None,
            max_staleness_seconds: None,
            resync_interval_seconds: Some(300),
            assertion_ttl_seconds: None,
            workers: None,
            firewall: None,
            spa: None,
            limits: umbra_gateway::config::RawLimits::default(),
            forward_auth: None,
            metrics: None,
            routes: vec![RawRoute {
                service: service.into(),
                host: None,
                path_prefix: None,
                upstream: echo_url,
                protocol: Some("tcp".into()),
                upstream_http2: None,
            }],
        };
        let gw = Gateway::start(
            raw.validate().expect("config"),
            Arc::new(rig.tc.clock.clone()),
        )
        .await
        .expect("gateway start");
        tokio::spawn(umbra_gateway::server::run(
            gw.clone(),
            listener,
            shutdown.clone(),
        ));
        let (status, body) = rig
            .tc
            .public()
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/admin/services/{service}"),
                Some(&rig.tc.admin_token),
                Some(crate::support::Body::Json(
                    json!({ "allow_users": ["alice"] }),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (view, want) = (gw.view.clone(), service.to_owned());
        eventually(
            "the second gateway is synced",
            Duration::from_secs(10),
            || view.is_fresh() && view.read().grants.contains_key(&want),
        )
        .await;
        Self {
            gw,
            url,
            service: service.to_owned(),
            _state: state,
            shutdown,
        }
    }

    fn access(&self, name: &str) -> umbra_proto::control::ServiceAccess {
        umbra_proto::control::ServiceAccess {
            name: self.service.clone(),
            gateway_url: self.url.clone(),
            host: self.service.clone(),
            protocol: umbra_proto::control::Protocol::Tcp,
            gateway: name.into(),
            spa_port: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_user_ends_their_live_sessions_on_two_gateways() {
    let rig = Rig::start().await;
    let gw2 = SecondGateway::start(&rig, "gw2", "echo2", &rig.tc.url).await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut one = umbra_agent::tunnel::open(&dir, &rig.tcp_access("echo"))
        .await
        .expect("tunnel through gw1");
    let mut two = umbra_agent::tunnel::open(&dir, &gw2.access("gw2"))
        .await
        .expect("tunnel through gw2");
    echo_round_trip(&mut one, b"one\n").await;
    echo_round_trip(&mut two, b"two\n").await;

    rig.tc
        .admin_post("/api/v1/admin/users/alice/suspend", json!({}))
        .await;
    ends(&mut one, Duration::from_secs(5), "the tunnel through gw1").await;
    ends(&mut two, Duration::from_secs(5), "the tunnel through gw2").await;
    // Each gateway says so in the audit trail (its batches land within a
    // second or so).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen = rig
            .tc
            .audit("gateway.tunnel")
            .await
            .iter()
            // The suspension revokes the sessions too: either is the cut's
            // reason, as the gateway happens to have applied them.
            .filter(|r| {
                r["reason"].as_str().is_some_and(|s| {
                    s.starts_with("tunnel cut: user_suspended")
                        || s.starts_with("tunnel cut: session_revoked")
                })
            })
            .filter_map(|r| r["resource"].as_str()?.split("via gateway:").nth(1))
            .map(str::to_owned)
            .collect();
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["gw1", "gw2"],
        "both gateways cut their tunnel for the suspension"
    );
    match umbra_agent::tunnel::open(&dir, &gw2.access("gw2")).await {
        Err(AgentError::Refused { .. }) => {}
        other => panic!("a suspended user's tunnel: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_during_a_revocation_applies_it_when_it_reconnects() {
    let rig = Rig::start().await;
    let partition = Partition::start(&rig.tc.url).await;
    let gw2 = SecondGateway::start(&rig, "gw2", "echo2", &partition.url).await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut tunnel = umbra_agent::tunnel::open(&dir, &gw2.access("gw2"))
        .await
        .expect("tunnel through gw2");
    echo_round_trip(&mut tunnel, b"before\n").await;

    partition.cut();
    let session = sid(&rig.login);
    rig.tc
        .admin_post(
            &format!("/api/v1/admin/sessions/{session}/revoke"),
            json!({}),
        )
        .await;
    // gw2 cannot hear of it; within the staleness bound it serves on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo_round_trip(&mut tunnel, b"unheard\n").await;
    assert!(!gw2.gw.view.read().sessions.contains(&session));

    partition.heal();
    ends(
        &mut tunnel,
        Duration::from_secs(15),
        "the tunnel after reconnecting",
    )
    .await;
    assert!(gw2.gw.view.read().sessions.contains(&session));
    let cut = rig
        .tc
        .wait_audit("gateway.tunnel", "tunnel cut: session_revoked")
        .await;
    assert!(
        cut["resource"]
            .as_str()
            .is_some_and(|r| r.ends_with("via gateway:gw2")),
        "{cut}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_controller_unreachable_known_sessions_last_until_the_staleness_bound_and_new_ones_wait()
 {
    let rig = Rig::start().await;
    let partition = Partition::start(&rig.tc.url).await;
    let gw2 = SecondGateway::start(&rig, "gw2", "echo2", &partition.url).await;
    let (_keep, dir) = rig.agent_dir(&rig.device);
    let mut live = umbra_agent::tunnel::open(&dir, &gw2.access("gw2"))
        .await
        .expect("tunnel through gw2");
    echo_round_trip(&mut live, b"before\n").await;

    partition.cut();
    let view = gw2.gw.view.clone();
    eventually("gw2 knows it is cut off", Duration::from_secs(10), || {
        !view
            .read()
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    // A session it has served goes on, even in a new connection ...
    let mut again = umbra_agent::tunnel::open(&dir, &gw2.access("gw2"))
        .await
        .expect("a known session's new tunnel");
    echo_round_trip(&mut again, b"known\n").await;
    // ... a new one (a login the gateway never saw) waits for the controller.
    let other = rig.tc.enroll("alice").await;
    rig.tc.clock.advance(30); // the login's TOTP step must be unspent
    let (status, login) = rig.tc.login(&other, &rig.alice).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (keep2, other_dir) = rig.agent_dir(&other);
    std::fs::write(keep2.path().join("session.json"), login.to_string()).expect("session");
    match umbra_agent::tunnel::open(&other_dir, &gw2.access("gw2")).await {
        Err(AgentError::Refused { .. }) => {}
        other => panic!("a new session while cut off: {:?}", other.map(|_| ())),
    }

    // Past the staleness bound (60 s) everything stops.
    rig.tc.clock.advance(31);
    ends(
        &mut live,
        Duration::from_secs(5),
        "a live tunnel past the bound",
    )
    .await;
    ends(&mut again, Duration::from_secs(5), "the other live tunnel").await;
    match umbra_agent::tunnel::open(&dir, &gw2.access("gw2")).await {
        Err(AgentError::Refused { .. }) => {}
        other => panic!("a stale gateway: {:?}", other.map(|_| ())),
    }

    // Back: both sessions are served again.
    partition.heal();
    eventually("gw2 is fresh again", Duration::from_secs(15), || {
        view.is_fresh()
    })
    .await;
    let mut known = umbra_agent::tunnel::open(&dir, &gw2.access("gw2"))
        .await
        .expect("the old session after recovery");
    echo_round_trip(&mut known, b"back\n").await;
    let mut new = umbra_agent::tunnel::open(&other_dir, &gw2.access("gw2"))
        .await
        .expect("the new session after recovery");
    echo_round_trip(&mut new, b"new\n").await;
    // What gw2 refused while cut off reaches the audit trail once it is back.
    rig.tc
        .wait_audit("gateway.tunnel", "controller_unreachable_new_session")
        .await;
    rig.tc
        .wait_audit("gateway.tunnel", "gateway_state_stale")
        .await;
}

/// An upstream that streams a chunk every 100 ms (for 30 s at most), as a
/// long download or server-sent events would.
async fn streaming_upstream() -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let start = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                              transfer-encoding: chunked\r\n\r\n";
                if tcp.write_all(start).await.is_err() {
                    return;
                }
                for _ in 0..300 {
                    if tcp.write_all(b"5\r\ntick\n\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = tcp.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_cuts_a_streaming_response_in_flight() {
    let upstream = streaming_upstream().await;
    let rig = Rig::start_routes(vec![RawRoute {
        service: "events".into(),
        host: Some("events".into()),
        path_prefix: None,
        upstream,
        protocol: None,
        upstream_http2: None,
    }])
    .await;
    let mut resp = rig
        .client(Some(&rig.device))
        .get(format!("{}/stream", rig.gw_url))
        .header("host", "events")
        .bearer_auth(&rig.token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.expect("a chunk").expect("not over");
    assert!(first.starts_with(b"tick"), "{first:?}");

    rig.tc
        .admin_post(
            &format!("/api/v1/admin/sessions/{}/revoke", sid(&rig.login)),
            json!({}),
        )
        .await;
    // The stream fails (reset), within the bound, rather than ending as if
    // it were complete.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream is cut in time");
    assert!(ended.is_err(), "a cut stream must not look complete");
}
