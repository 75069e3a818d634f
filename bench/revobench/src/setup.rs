//! Sessions made the way a person gets one: a user created through the
//! admin API (with its own generated password and TOTP secret), a one-time
//! enrollment token, a device enrolled with its own key and CSR
//! (`umbra_agent::controller::enroll`), a login with the password and the
//! current TOTP code (`umbra_agent::controller::login`), then one TCP
//! tunnel through a gateway (`umbra_agent::tunnel::open`) checked to echo.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::client::TlsStream;
use umbra_agent::AgentError;
use umbra_agent::dir::AgentDir;
use zeroize::Zeroizing;

use crate::BoxError;
use crate::admin::Admin;

/// How long the tunnels get to open while the gateways are still getting
/// their first snapshot (`unavailable`) or starting to listen.
const GATEWAY_PATIENCE: Duration = Duration::from_secs(60);

pub struct Plan {
    pub controller: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub admin_token: String,
    /// Where each device's agent directory goes (`<dir>/u<i>`).
    pub dir: std::path::PathBuf,
    pub group: String,
    /// The TCP services, one per gateway; session i uses `services[i % len]`.
    pub services: Vec<String>,
    pub prefix: String,
}

/// One user's session with its live tunnel.
pub struct Live {
    pub index: usize,
    pub user: String,
    pub session_id: String,
    pub service: String,
    pub gateway: String,
    pub stream: TlsStream<TcpStream>,
}

/// Milliseconds spent in each step of one session's setup.
#[derive(Default, Clone, Copy)]
pub struct Steps {
    pub create_user: f64,
    pub enroll_token: f64,
    pub enroll: f64,
    pub login: f64,
    pub tunnel: f64,
    pub tunnel_retries: u32,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn totp_now(secret_base32: &str) -> Result<String, BoxError> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|e| format!("TOTP secret: {e:?}"))?;
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .map_err(|e| format!("TOTP: {e:?}"))?;
    Ok(totp.generate_current().to_string())
}

/// Writes a line through the tunnel and reads the same bytes back.
pub async fn echo(stream: &mut TlsStream<TcpStream>, tag: &str) -> Result<(), BoxError> {
    let line = format!("revobench {tag}\n");
    let check = async {
        stream.write_all(line.as_bytes()).await?;
        stream.flush().await?;
        let mut back = vec![0u8; line.len()];
        stream.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let back = tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .map_err(|_| "no echo within 5 s")??;
    if back != line.as_bytes() {
        return Err(format!("echo mismatch: {:?}", String::from_utf8_lossy(&back)).into());
    }
    Ok(())
}

async fn one(plan: &Plan, admin: &mut Admin, index: usize) -> Result<(Live, Steps), BoxError> {
    let mut steps = Steps::default();
    let user = format!("{}{index}", plan.prefix);

    let t = Instant::now();
    let created = admin
        .json(
            "POST",
            "/api/v1/admin/users",
            Some(&serde_json::json!({"name": user, "groups": [plan.group]})),
        )
        .await?;
    steps.create_user = ms(t);
    let password = created["password"]
        .as_str()
        .ok_or("the user's response has no generated password")?
        .to_owned();
    let secret = created["totp"]["secret"]
        .as_str()
        .ok_or("the user's response has no TOTP secret")?
        .to_owned();

    let t = Instant::now();
    let token = admin
        .json(
            "POST",
            "/api/v1/admin/enrollment-tokens",
            Some(&serde_json::json!({"user": user})),
        )
        .await?;
    steps.enroll_token = ms(t);
    let token = token["token"].as_str().ok_or("no enrollment token")?;

    let dir = AgentDir::new(plan.dir.join(format!("u{index}")));
    let t = Instant::now();
    umbra_agent::controller::enroll(&dir, &plan.controller, token)
        .await
        .map_err(|e| format!("{user}: enroll: {e}"))?;
    steps.enroll = ms(t);

    let t = Instant::now();
    let code = totp_now(&secret)?;
    let login =
        umbra_agent::controller::login(&dir, &user, Zeroizing::new(password), Some(code), None)
            .await
            .map_err(|e| format!("{user}: login: {e}"))?;
    steps.login = ms(t);

    let service = &plan.services[index % plan.services.len()];
    let access = login
        .services
        .iter()
        .find(|s| &s.name == service)
        .ok_or_else(|| {
            format!(
                "{user}: the login lists no service {service} (listed: {:?}); has its gateway registered?",
                login.services.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })?;
    let t = Instant::now();
    let deadline = Instant::now() + GATEWAY_PATIENCE;
    let mut stream = loop {
        match umbra_agent::tunnel::open(&dir, access).await {
            Ok(s) => break s,
            // A gateway still waiting for its first snapshot, or not yet listening.
            Err(AgentError::Refused { code, .. } | AgentError::Network(code))
                if Instant::now() < deadline
                    && (code == "unavailable" || code.contains("refused")) =>
            {
                steps.tunnel_retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("{user}: tunnel to {service}: {e}").into()),
        }
    };
    echo(&mut stream, &user)
        .await
        .map_err(|e| format!("{user}: tunnel to {service}: {e}"))?;
    steps.tunnel = ms(t);
    Ok((
        Live {
            index,
            user,
            session_id: login.session_id,
            service: service.clone(),
            gateway: access.gateway.clone(),
            stream,
        },
        steps,
    ))
}

/// Makes `count` sessions, numbered from `first`, with `workers` in
/// parallel (each with its own keep-alive admin connection); stops at the
/// first failure.
pub async fn sessions(
    plan: Arc<Plan>,
    first: usize,
    count: usize,
    workers: usize,
) -> Result<(Vec<Live>, Vec<Steps>), BoxError> {
    let next = Arc::new(AtomicUsize::new(first));
    let done = Arc::new(Mutex::new((
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    )));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..workers.max(1) {
        let (plan, next, done) = (plan.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            let mut admin = Admin::new(&plan.controller, plan.tls.clone(), &plan.admin_token)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= first + count {
                    return Ok::<_, BoxError>(());
                }
                let (live, steps) = one(&plan, &mut admin, i).await?;
                let mut d = done.lock().await;
                d.0.push(live);
                d.1.push(steps);
                let n = d.0.len();
                if n % 100 == 0 {
                    eprintln!(
                        "  {n}/{count} sessions ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r? {
            tasks.abort_all();
            return Err(e);
        }
    }
    let (mut lives, steps) = std::mem::take(&mut *done.lock().await);
    lives.sort_by_key(|l| l.index);
    Ok((lives, steps))
}
