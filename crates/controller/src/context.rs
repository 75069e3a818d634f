//! Per-request facts every handler needs: who is on the other end of the
//! TCP connection, what certificate (if any) it presented, and the request
//! id. The TLS accept loop attaches [`PeerInfo`] to each request; handlers
//! take a [`RequestContext`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rustls_pki_types::CertificateDer;

use crate::error::{Failure, current_request_id};

/// Attached by the accept loop to every request on a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The client's leaf certificate, already verified against the Umbra CA
    /// chain and validity period by rustls.
    pub cert: Option<CertificateDer<'static>>,
}

#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub ip: IpAddr,
    pub cert: Option<CertificateDer<'static>>,
    pub bearer: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Fail closed: a request without peer information did not come
        // through the accept loop and is not trusted.
        let peer = parts
            .extensions
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(Failure::internal)?;
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            });
        Ok(Self {
            request_id: current_request_id().unwrap_or_default(),
            ip: peer.addr.ip(),
            cert: peer.cert,
            bearer,
        })
    }
}
