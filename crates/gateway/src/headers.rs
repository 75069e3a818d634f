//! Identity-header stripping and hop-by-hop handling for the reverse proxy.
//!
//! Upstreams behind the gateway trust the identity headers it sets
//! (`x-auth-user`, `x-auth-groups`, ...) instead of authenticating users
//! themselves. If a client's own copy of such a header reached the upstream,
//! next to or instead of the gateway's, the client could claim to be anyone.
//! Many frameworks also read `X_Auth_User` as `X-Auth-User` (CGI turns both
//! into `HTTP_X_AUTH_USER`), so every spelling has to go, not just the
//! canonical one. The same holds for headers that upstreams commonly trust
//! for the client's address, TLS identity or original URL (`x-real-ip`,
//! `x-ssl-client-dn`, `x-original-url`, `forwarded`, ...).
//!
//! The client's `authorization` header carries the Umbra session token; it is
//! stripped so a compromised or curious upstream cannot replay it.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not
//! be forwarded: a `transfer-encoding` or `connection` passed through from one
//! side to the other is a request-smuggling and desync vector, and headers
//! the peer lists in `Connection` are hop-by-hop by its declaration.

use http::HeaderMap;
use http::header::{AUTHORIZATION, CONNECTION, HeaderName};

/// Identity headers the gateway sets itself; a client must never supply them.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-auth-user",
    "x-auth-groups",
    "x-risk-score",
    "x-device-id",
    "x-session-id",
    "x-umbra-jwt-assertion",
];

/// Families reserved for identity: the gateway may add members later, and
/// upstreams written against one version must not trust a client's copy.
const SPOOFABLE_PREFIXES: &[&str] = &["x-auth-", "x-umbra-"];

/// Headers that common upstreams and frameworks trust for the user's identity,
/// address, TLS client certificate or original URL.
const UPSTREAM_TRUSTED_HEADERS: &[&str] = &[
    "x-client-dn",
    "x-client-cert",
    "x-ssl-client-dn",
    "x-ssl-client-cert",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-user",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "forwarded",
    "x-remote-user",
    "remote-user",
    "x-user",
    "x-email",
    "x-auth-request-user",
    "x-auth-request-email",
    "proxy-authorization",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones still sent).
const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True if a client-sent header with this name must be dropped.
///
/// The name is compared after lowercasing and mapping `_` to `-`, so
/// `X_Auth_User` is caught like `x-auth-user`.
pub fn is_spoofable(name: &str) -> bool {
    let canonical = name.to_ascii_lowercase().replace('_', "-");
    let canonical = canonical.as_str();
    IDENTITY_HEADERS.contains(&canonical)
        || UPSTREAM_TRUSTED_HEADERS.contains(&canonical)
        || SPOOFABLE_PREFIXES.iter().any(|p| canonical.starts_with(p))
}

/// Cleans a request from the client before it is proxied upstream.
///
/// Removes every spoofable header in any spelling, the hop-by-hop headers,
/// any header named in `Connection`, and `authorization`. Returns how many
/// spoofable header fields were removed (each value counts, so a repeated
/// header counts once per occurrence); any non-zero result is a forgery
/// attempt worth auditing.
pub fn sanitize_request(headers: &mut HeaderMap) -> usize {
    // Counted before the hop-by-hop pass, which also removes
    // `proxy-authorization` and anything named in `Connection`, so a forged
    // header does not escape the count by being listed there.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable(name.as_str()))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in &spoofed {
        removed += remove_all(headers, name);
    }
    remove_hop_by_hop(headers);
    headers.remove(AUTHORIZATION);
    removed
}

/// Removes hop-by-hop headers, and those named by `Connection`, from an
/// upstream response before it is returned to the client.
pub fn sanitize_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Read before `connection` itself is removed below.
    let named = connection_tokens(headers);
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP_HEADERS {
        headers.remove(*name);
    }
}

/// Header names listed in every `Connection` field. Tokens that are not
/// valid header names (`close` is, `a b` is not) cannot name a header in the
/// map, so they are skipped rather than treated as an error.
fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect()
}

/// Removes every value of `name` and returns how many there were.
fn remove_all(headers: &mut HeaderMap, name: &HeaderName) -> usize {
    let count = headers.get_all(name).iter().count();
    headers.remove(name);
    count
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Builds a map the way a server would from raw header lines: names are
    /// parsed (and so lowercased) by `http`, values kept as sent.
    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn spoofable_names() {
        for name in [
            "x-auth-user",
            "X-Auth-User",
            "X_Auth_User",
            "x_auth_USER",
            "X-AUTH-GROUPS",
            "x-risk-score",
            "X_Risk_Score",
            "x-device-id",
            "x-session-id",
            "x-umbra-jwt-assertion",
            "X-Umbra-Anything",
            "x_umbra_",
            "x-auth-whatever-comes-next",
            "X-Real-IP",
            "x_real_ip",
            "Forwarded",
            "X-Forwarded-For",
            "x_forwarded_proto",
            "X-Forwarded-Host",
            "x-forwarded-port",
            "x-forwarded-user",
            "X-Client-DN",
            "x-client-cert",
            "X-SSL-Client-DN",
            "x-ssl-client-cert",
            "x-original-url",
            "X-Original-URI",
            "x-rewrite-url",
            "x-remote-user",
            "Remote-User",
            "remote_user",
            "x-user",
            "X-Email",
            "x-auth-request-user",
            "x-auth-request-email",
            "Proxy-Authorization",
        ] {
            assert!(is_spoofable(name), "{name:?} should be spoofable");
        }
        for name in [
            "accept",
            "content-type",
            "user-agent",
            "x-request-id",
            "cookie",
            "authorization",
            "host",
            "x-auth",
            "x-authorization",
            "x-umbra",
            "x-user-agent",
            "x-forwarded",
            "x-email-verified",
            "auth-user",
            "",
        ] {
            assert!(!is_spoofable(name), "{name:?} should not be spoofable");
        }
    }

    #[test]
    fn constant_names_are_canonical_header_names() {
        // A typo or capital letter here would never match a parsed name.
        for list in [
            IDENTITY_HEADERS,
            SPOOFABLE_PREFIXES,
            UPSTREAM_TRUSTED_HEADERS,
            HOP_BY_HOP_HEADERS,
        ] {
            for name in list {
                let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
                assert_eq!(parsed.as_str(), *name);
            }
        }
        for name in IDENTITY_HEADERS {
            assert!(is_spoofable(name));
        }
    }

    #[test]
    fn request_loses_identity_forgeries_in_every_spelling() {
        let mut headers = map(&[
            ("X-Auth-User", "admin"),
            ("X_Auth_User", "admin"),
            ("x_auth_USER", "admin"),
            ("X-Auth-Groups", "admins"),
            ("X-Real-IP", "10.0.0.1"),
            ("X-Umbra-Anything", "1"),
            ("Forwarded", "for=10.0.0.1"),
            ("Authorization", "Bearer session-token"),
            ("Accept", "*/*"),
            ("Content-Type", "application/json"),
            ("User-Agent", "curl/8"),
            ("X-Request-Id", "r-1"),
            ("Cookie", "a=b"),
        ]);
        let removed = sanitize_request(&mut headers);
        assert_eq!(removed, 7);
        assert_eq!(
            names(&headers),
            [
                "accept",
                "content-type",
                "cookie",
                "user-agent",
                "x-request-id"
            ]
        );
        assert_eq!(headers["accept"], "*/*");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["user-agent"], "curl/8");
        assert_eq!(headers["x-request-id"], "r-1");
        assert_eq!(headers["cookie"], "a=b");
    }

    #[test]
    fn repeated_forgeries_count_each_value() {
        let mut headers = map(&[
            ("x-auth-user", "alice"),
            ("x-auth-user", "admin"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        assert_eq!(sanitize_request(&mut headers), 5);
        assert!(headers.is_empty());
    }

    #[test]
    fn clean_request_reports_nothing() {
        let mut headers = map(&[("accept", "*/*"), ("authorization", "Bearer t")]);
        assert_eq!(sanitize_request(&mut headers), 0);
        assert_eq!(names(&headers), ["accept"]);
        let mut empty = HeaderMap::new();
        assert_eq!(sanitize_request(&mut empty), 0);
        assert!(empty.is_empty());
    }

    #[test]
    fn request_loses_hop_by_hop_headers() {
        let mut headers = map(&[
            ("Connection", "close, X-Custom"),
            ("X-Custom", "dropped"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("TE", "trailers"),
            ("Trailer", "x-checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("X-Kept", "yes"),
        ]);
        // Only proxy-authorization is a credential forgery; the rest are
        // ordinary connection management.
        assert_eq!(sanitize_request(&mut headers), 1);
        assert_eq!(names(&headers), ["x-kept"]);
    }

    #[test]
    fn connection_tokens_are_parsed_leniently() {
        let mut headers = map(&[
            ("connection", " ,X-One ,, x-two,"),
            ("connection", "X-Three"),
            ("connection", "not a header, @@"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-three", "3"),
            ("x-four", "4"),
        ]);
        assert_eq!(sanitize_request(&mut headers), 0);
        assert_eq!(names(&headers), ["x-four"]);
    }

    #[test]
    fn forgery_named_in_connection_is_still_counted() {
        let mut headers = map(&[("connection", "x-auth-user"), ("x-auth-user", "admin")]);
        assert_eq!(sanitize_request(&mut headers), 1);
        assert!(headers.is_empty());
    }

    #[test]
    fn non_utf8_connection_value_still_names_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xff\xfe").unwrap(),
        );
        headers.insert("x-secret", HeaderValue::from_static("s"));
        sanitize_response(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn response_loses_only_hop_by_hop_headers() {
        let mut headers = map(&[
            ("Content-Type", "text/html"),
            ("Content-Length", "12"),
            ("Set-Cookie", "a=b"),
            ("Connection", "keep-alive, X-Internal"),
            ("X-Internal", "debug"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authenticate", "Basic"),
            ("Upgrade", "h2c"),
            ("Trailer", "x-checksum"),
            ("Cache-Control", "no-store"),
        ]);
        sanitize_response(&mut headers);
        assert_eq!(
            names(&headers),
            [
                "cache-control",
                "content-length",
                "content-type",
                "set-cookie"
            ]
        );
        assert_eq!(headers["content-type"], "text/html");
    }
}
