//! The admin API over one keep-alive HTTP/1.1 connection (TLS, the Umbra
//! CA as the only root, `Authorization: Bearer <admin token>`).
//!
//! One connection per client, opened once and reused for every call, so a
//! timed revocation costs one request on a warm connection, not a TCP and
//! TLS handshake. `connects` counts the connections a client opened: the
//! tool reports it for the timed phases (1 means no reconnection).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::BoxError;

pub struct Admin {
    addr: SocketAddr,
    host: String,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    token: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    pub connects: u64,
}

impl Admin {
    /// `url` is the controller's `https://IP:port`.
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>, token: &str) -> Result<Self, BoxError> {
        let host = url
            .strip_prefix("https://")
            .ok_or("the controller URL must be https://IP:port")?
            .trim_end_matches('/')
            .to_owned();
        let addr: SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
        let name = ServerName::IpAddress(addr.ip().into());
        Ok(Self {
            addr,
            host,
            name,
            tls,
            token: token.to_owned(),
            sender: None,
            connects: 0,
        })
    }

    async fn connect(&mut self) -> Result<(), BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.name.clone(), tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        self.connects += 1;
        Ok(())
    }

    /// Makes sure the connection is open and ready for a request, opening
    /// it if needed: called before a timed request, outside the timing.
    pub async fn ready(&mut self) -> Result<(), BoxError> {
        if let Some(s) = self.sender.as_mut()
            && s.ready().await.is_ok()
        {
            return Ok(());
        }
        self.connect().await
    }

    /// One request on the current connection; (status, body).
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), BoxError> {
        self.ready().await?;
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let resp = sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// A call that must answer 200 with JSON.
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, BoxError> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status != 200 {
            return Err(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
            .into());
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}
