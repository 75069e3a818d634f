//! TOTP per RFC 6238 as the seeds use it: SHA-1, 6 digits, 30-second steps,
//! ±1 step of clock skew. Provisioning is an `otpauth://` URI and its QR code.
//!
//! `verify` returns the matched time step; the caller must then have the
//! store accept that step at most once (`Store::consume_totp_step`), which is
//! what makes a code single-use across controllers.

use totp_rs::{Algorithm, Builder, Secret, Totp};
use zeroize::Zeroizing;

pub const DIGITS: u8 = 6;
pub const STEP_SECS: u64 = 30;
pub const SKEW_STEPS: u16 = 1;

fn build(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, String> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW_STEPS)
        .with_step_duration(STEP_SECS)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| e.to_string())
}

/// A new random 160-bit secret (RFC 4226's recommended length).
pub fn generate_secret() -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; 20]);
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("system random generator unavailable");
    }
    bytes
}

pub struct Provisioning {
    pub secret_base32: String,
    pub uri: String,
    pub qr_svg: String,
}

pub fn provisioning(secret: &[u8], issuer: &str, account: &str) -> Result<Provisioning, String> {
    let totp = build(secret, issuer, account)?;
    let uri = totp.to_url().map_err(|e| e.to_string())?;
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| e.to_string())?;
    let qr_svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(Provisioning {
        secret_base32: totp.secret().to_base32(),
        uri,
        qr_svg,
    })
}

/// The QR code of `uri` for a terminal (two rows of modules per line).
pub fn terminal_qr(uri: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// The time step `code` matches at `now`, within ±1 step, if any.
pub fn verify(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = u64::try_from(now).ok()?;
    let totp = build(secret, "x", "").ok()?;
    totp.check(code, now)
        .and_then(|step| i64::try_from(step).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 Appendix B, SHA-1 (8-digit codes there; the last 6 digits are
    // the 6-digit code).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_vectors() {
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(verify(RFC_SECRET, code, t), Some(t / 30), "t={t}");
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let t = 1_111_111_109;
        assert!(verify(RFC_SECRET, "081804", t + 30).is_some());
        assert!(verify(RFC_SECRET, "081804", t - 30).is_some());
        assert!(verify(RFC_SECRET, "081804", t + 61).is_none());
        assert!(verify(RFC_SECRET, "81804", t).is_none());
        assert!(verify(RFC_SECRET, "08180a", t).is_none());
    }

    #[test]
    fn provisioning_uri_and_qr() {
        let p = provisioning(RFC_SECRET, "Umbra", "alice").expect("provision");
        assert!(
            p.uri.starts_with("otpauth://totp/Umbra:alice?"),
            "{}",
            p.uri
        );
        assert!(p.uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"));
        assert!(p.qr_svg.starts_with("<?xml") && p.qr_svg.contains("<svg"));
        assert!(terminal_qr(&p.uri).expect("qr").lines().count() > 10);
    }
}
