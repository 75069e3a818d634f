//! Browser session cookies (the controller's login page) at the
//! forward-auth listener.
//!
//! The cookie holds an ES256 token of its own kind (`typ`
//! `umbra-browser+jwt`, audience `umbra-browser:<trust domain>`), signed
//! with the controller's session keys, which the gateway already holds. It
//! is checked against the view's revocation lists like an agent token
//! (revoked sessions, suspended users); it is bound to no device, so
//! nothing about a device is claimed for it.

use umbra_proto::token::{
    BrowserClaims, Confirmation, SESSION_COOKIE, SessionClaims, browser_audience, cookie,
};

use crate::view::Inner;

const MAX_TOKEN_LEN: usize = 8192;
/// Tolerance for a controller clock slightly ahead of ours (`nbf`).
const SKEW_SECS: i64 = 60;

/// The session cookie of a request, when it carries exactly one.
pub fn session_cookie(h: &http::HeaderMap) -> Option<&str> {
    let mut values = h
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie(v, SESSION_COOKIE));
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Checks a browser session token against the view.
pub fn verify(
    view: &Inner,
    issuer: &str,
    trust_domain: &str,
    token: &str,
    now: i64,
) -> Result<BrowserClaims, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token_malformed");
    }
    let audience = browser_audience(trust_domain);
    let claims: BrowserClaims = crate::authn::decode_es256(
        view,
        issuer,
        token,
        crate::authn::TokenKind::Browser {
            audience: &audience,
        },
    )?;
    if claims.exp <= now {
        return Err("token_expired");
    }
    if claims.nbf > now + SKEW_SECS {
        return Err("token_not_yet_valid");
    }
    if view.sessions.contains(&claims.sid) {
        return Err("session_revoked");
    }
    if view.users.contains(&claims.sub) {
        return Err("user_suspended");
    }
    Ok(claims)
}

/// The claims an identity assertion is made from: the session's, with no
/// device and no certificate.
pub fn assertion_subject(b: &BrowserClaims) -> SessionClaims {
    SessionClaims {
        iss: b.iss.clone(),
        sub: b.sub.clone(),
        sid: b.sid.clone(),
        device: String::new(),
        groups: b.groups.clone(),
        risk: b.risk,
        iat: b.iat,
        nbf: b.nbf,
        exp: b.exp,
        cnf: Confirmation {
            x5t_s256: String::new(),
        },
        mfa_at: Some(b.mfa_at),
    }
}

/// `login` with `rd` (the user's URL) added as a query parameter.
pub fn with_return(login: &str, rd: &str) -> String {
    let sep = if login.contains('?') { '&' } else { '?' };
    let rd = percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC);
    format!("{login}{sep}rd={rd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_url_is_escaped_into_the_login_url() {
        assert_eq!(
            with_return("https://app/auth/login", "https://app/a?b=c"),
            "https://app/auth/login?rd=https%3A%2F%2Fapp%2Fa%3Fb%3Dc"
        );
        assert_eq!(with_return("https://l/?x=1", "/"), "https://l/?x=1&rd=%2F");
    }
}
