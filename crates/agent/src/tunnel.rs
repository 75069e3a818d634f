//! TCP services (`umbra agent connect SERVICE --listen ADDR` for a service
//! whose protocol is `tcp`): each local connection gets its own TLS
//! connection to the gateway, with ALPN `umbra-tunnel/1` and the device
//! certificate; the first line names the service and carries the session
//! token, the gateway answers with one line, and then the bytes are the
//! service's, both ways, with backpressure and half-close.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use umbra_proto::control::{MAX_TUNNEL_FRAME, ServiceAccess, TUNNEL_ALPN, TunnelOpen, TunnelReply};

use crate::AgentError;
use crate::dir::AgentDir;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads one `\n`-terminated line, byte by byte so nothing after it is
/// consumed (the service's bytes follow at once).
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(128);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_TUNNEL_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "tunnel reply too long",
            ));
        }
        line.push(b);
    }
}

/// Opens a tunnel to `access` with the session and certificate now in
/// `dir`; returns the stream once the gateway has accepted it.
pub async fn open(
    dir: &AgentDir,
    access: &ServiceAccess,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AgentError> {
    let token = dir
        .session()?
        .ok_or_else(|| {
            AgentError::State("not logged in; run `umbra agent login --user NAME`".into())
        })?
        .token;
    let (host, port) = crate::knock::gateway_host_port(access)?;
    crate::knock::ensure(dir, access).await?;
    let mut tls = umbra_pki::tls::client_config(&dir.ca()?, Some(dir.identity()?))?;
    tls.alpn_protocols = vec![TUNNEL_ALPN.to_vec()];
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| AgentError::State(format!("gateway host {host:?}: {e}")))?;
    let connect = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| AgentError::Network(format!("{}: timed out", access.gateway_url)))
        .and_then(|r| r.map_err(|e| AgentError::Network(format!("{}: {e}", access.gateway_url))));
    if connected.is_err() {
        crate::knock::forget(access);
    }
    let mut stream = connected?;
    let mut line = serde_json::to_vec(&TunnelOpen {
        service: access.name.clone(),
        token,
    })
    .map_err(|e| AgentError::State(e.to_string()))?;
    line.push(b'\n');
    let answer = async {
        stream.write_all(&line).await?;
        stream.flush().await?;
        read_line(&mut stream).await
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, answer)
        .await
        .map_err(|_| AgentError::Network("the gateway did not answer the tunnel".into()))?
        .map_err(|e| AgentError::Network(format!("tunnel: {e}")))?;
    let reply: TunnelReply = serde_json::from_slice(&answer)
        .map_err(|e| AgentError::Network(format!("tunnel reply: {e}")))?;
    if !reply.ok {
        return Err(AgentError::Refused {
            code: reply.error.map_or("refused", |c| c.as_str()).to_owned(),
            message: reply.message,
        });
    }
    Ok(stream)
}

/// Accepts local connections until `shutdown` and tunnels each.
pub async fn run(
    dir: AgentDir,
    access: Arc<ServiceAccess>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let dir = Arc::new(dir);
    loop {
        let (mut local, addr) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (dir, access) = (dir.clone(), access.clone());
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            match open(&dir, &access).await {
                Ok(mut remote) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
                        tracing::debug!(%addr, error = %e, "tunnel ended with an error");
                    }
                }
                Err(e) => {
                    tracing::warn!(%addr, service = %access.name, error = %e, "tunnel refused");
                    let _ = local.shutdown().await;
                }
            }
        });
    }
}
