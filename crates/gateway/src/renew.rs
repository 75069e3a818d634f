//! Certificate renewal. A gateway certificate lives 30 days; at two thirds
//! of its life the gateway makes a new key, asks the controller (over mTLS
//! with the current certificate) for a certificate with the same name and
//! SANs, writes both, and swaps them in: new TLS handshakes serve the new
//! certificate and new controller connections present it. The controller
//! records the new serial, after which the old certificate opens nothing.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;
use umbra_proto::control::{GatewayEnrollResponse, GatewayRenewRequest};

use crate::{Gateway, GatewayError};

/// When a certificate valid from `not_before` to `not_after` is renewed.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

const RETRY: Duration = Duration::from_secs(300);
/// Sleeps are cut in slices so a clock that jumps (or a long suspend) is
/// noticed within this.
const SLICE: Duration = Duration::from_secs(600);

/// Renews now. Returns the new certificate's serial.
pub async fn renew(gw: &Gateway) -> Result<String, GatewayError> {
    let fail = |e: rcgen::Error| GatewayError::Identity(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(fail)?;
    let url = format!("{}/api/v1/gateway/renew", gw.config.controller_url);
    let resp = gw
        .controller()
        .post(&url)
        .timeout(Duration::from_secs(30))
        .json(&GatewayRenewRequest { csr })
        .send()
        .await
        .map_err(|e| GatewayError::Controller(format!("{url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| GatewayError::Controller(e.to_string()))?;
    if !status.is_success() {
        return Err(GatewayError::Controller(format!(
            "renewal refused (HTTP {status}): {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let renewed: GatewayEnrollResponse = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::Controller(format!("renewal response: {e}")))?;
    let cert = CertificateDer::from_pem_slice(renewed.certificate.as_bytes())
        .map_err(|e| GatewayError::Controller(format!("renewed certificate: {e}")))?;
    let peer = umbra_pki::GatewayCertificate::parse(&cert, &gw.trust_domain)?;
    if peer.name != gw.name() {
        return Err(GatewayError::Controller(format!(
            "the controller renewed the certificate of {:?}, not {:?}",
            peer.name,
            gw.name()
        )));
    }
    // Disk first: if writing fails, the running gateway keeps its current
    // certificate and retries, instead of running on one a restart loses.
    let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
    crate::identity::store(
        &gw.config.state_dir,
        &key.serialize_pem(),
        &renewed.certificate,
    )?;
    gw.install(cert, &pkcs8)?;
    tracing::info!(serial = %peer.serial, expires = %renewed.expires_at, "gateway certificate renewed");
    Ok(peer.serial)
}

/// Renews whenever the current certificate reaches two thirds of its life.
pub async fn run(gw: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let (not_before, not_after) = gw.validity();
        let due = renew_at(not_before, not_after);
        let wait = u64::try_from(due - gw.now()).unwrap_or(0);
        if wait > 0 {
            let nap = Duration::from_secs(wait).min(SLICE);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(nap) => continue,
            }
        }
        if let Err(e) = renew(&gw).await {
            tracing::error!(error = %e, expires = not_after, "certificate renewal failed; will retry");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(super::renew_at(0, 30 * 86400), 20 * 86400);
        assert_eq!(super::renew_at(100, 400), 300);
    }
}
