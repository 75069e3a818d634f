//! What a reverse proxy says about the request it asks `/auth/verify`
//! about, believed only from `[browser] trusted_proxies`.
//!
//! nginx sends `X-Original-URI`/`X-Original-Method` (set in its config),
//! Traefik `X-Forwarded-Uri`/`X-Forwarded-Method`, both
//! `X-Forwarded-Host`/`-Proto`/`-For`; Envoy's HTTP `ext_authz` appends
//! the original path to the verify path (`/auth/verify/orig/path`) and
//! keeps the original `Host` and method. From any other address every one
//! of these headers is ignored: the request is decided as what it is (the
//! verify request itself, for its own `Host`), so a client cannot choose
//! the host, path or address that is decided.

use std::net::IpAddr;

use http::{HeaderMap, Method, Uri};

use crate::browser_config::BrowserConfig;

/// The request a decision is about.
#[derive(Debug)]
pub struct Original {
    pub method: Method,
    /// Normalized path.
    pub path: String,
    /// The URI as the user sent it (path and query).
    pub uri: String,
    /// Lowercase, without the port.
    pub host: String,
    /// The host as sent, with the port (for the return URL).
    pub authority: String,
    pub proto: String,
    pub client: IpAddr,
    /// Whether the forwarded headers were believed.
    pub forwarded: bool,
}

impl Original {
    /// The user's URL, for the login page to return to.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.proto, self.authority, self.uri)
    }
}

/// Exactly one value of the first of `names` present; two values (a
/// client's copy next to the proxy's) are refused, not picked from.
fn single<'h>(h: &'h HeaderMap, names: &[&str]) -> Result<Option<&'h str>, String> {
    if names.iter().filter(|n| h.contains_key(**n)).count() > 1 {
        return Err(format!(
            "original_request_ambiguous: more than one of {}",
            names.join(", ")
        ));
    }
    for name in names {
        let mut all = h.get_all(*name).iter();
        if let Some(v) = all.next() {
            if all.next().is_some() {
                return Err(format!("original_request_ambiguous: {name} sent twice"));
            }
            return v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| format!("original_request_invalid: {name} is not text"));
        }
    }
    Ok(None)
}

/// The user's address: the peer's, or what a trusted proxy says.
pub fn client_ip(config: &BrowserConfig, peer: IpAddr, h: &HeaderMap) -> IpAddr {
    if !config.trusts(peer) {
        return peer;
    }
    forwarded_client(h).ok().flatten().unwrap_or(peer)
}

fn forwarded_client(h: &HeaderMap) -> Result<Option<IpAddr>, String> {
    Ok(match single(h, &["x-real-ip"])? {
        Some(ip) => ip.parse().ok(),
        // The last entry is the one the trusted proxy added itself.
        None => single(h, &["x-forwarded-for"])?
            .and_then(|l| l.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok()),
    })
}

fn host_of(authority: &str) -> Option<String> {
    let a: http::uri::Authority = authority.parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    let host = a.host().trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Reads the original request of a verify call `method uri` from `peer`.
pub fn original(
    config: &BrowserConfig,
    peer: IpAddr,
    method: &Method,
    uri: &Uri,
    h: &HeaderMap,
) -> Result<Original, String> {
    let own_host = || {
        h.get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_owned()
    };
    let verify_path = uri.path();
    // Envoy: the original path follows the verify path.
    let suffix = verify_path
        .strip_prefix(super::verify::VERIFY_PATH)
        .filter(|s| s.starts_with('/'));
    if !config.trusts(peer) {
        let authority = own_host();
        return Ok(Original {
            method: method.clone(),
            path: verify_path.to_owned(),
            uri: uri
                .path_and_query()
                .map_or(verify_path, |p| p.as_str())
                .to_owned(),
            host: host_of(&authority).unwrap_or_default(),
            authority,
            proto: "https".into(),
            client: peer,
            forwarded: false,
        });
    }
    let method = match single(h, &["x-original-method", "x-forwarded-method"])? {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| "original_request_invalid: method".to_owned())?,
        None => method.clone(),
    };
    let raw_uri = match (single(h, &["x-original-uri", "x-forwarded-uri"])?, suffix) {
        (Some(u), _) => u.to_owned(),
        (None, Some(s)) => match uri.query() {
            Some(q) => format!("{s}?{q}"),
            None => s.to_owned(),
        },
        (None, None) => {
            return Err(
                "original_request_missing: no X-Original-URI or X-Forwarded-Uri".to_owned(),
            );
        }
    };
    // Origin form only: an absolute URI would name a host of its own.
    if !raw_uri.starts_with('/') || raw_uri.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("original_request_invalid: the URI must be a path".into());
    }
    let raw_path = raw_uri.split(['?', '#']).next().unwrap_or_default();
    let path = umbra_policy::path::normalize(raw_path)
        .map_err(|e| format!("original_request_invalid: path: {e}"))?;
    let authority = match single(h, &["x-forwarded-host"])? {
        Some(a) => a.to_owned(),
        None => own_host(),
    };
    let host = host_of(&authority).ok_or("original_request_missing: no valid host")?;
    let proto = match single(h, &["x-forwarded-proto"])? {
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => "https",
    };
    let client = forwarded_client(h)?.unwrap_or(peer);
    Ok(Original {
        method,
        path,
        uri: raw_uri,
        host,
        authority,
        proto: proto.into(),
        client,
        forwarded: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrowserConfig {
        crate::browser_config::RawBrowser {
            trusted_proxies: vec!["10.0.0.1/32".into()],
            ..Default::default()
        }
        .validate()
        .expect("config")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const NGINX: &[(&str, &str)] = &[
        ("host", "controller:8443"),
        ("x-original-method", "POST"),
        ("x-original-uri", "/a/../b?x=1"),
        ("x-forwarded-host", "App.Example:8443"),
        ("x-real-ip", "192.0.2.7"),
    ];

    fn ask(peer: &str, pairs: &[(&str, &str)], uri: &str) -> Result<Original, String> {
        original(
            &config(),
            peer.parse().expect("ip"),
            &Method::GET,
            &uri.parse().expect("uri"),
            &headers(pairs),
        )
    }

    #[test]
    fn a_trusted_proxy_names_the_original_request() {
        let o = ask("10.0.0.1", NGINX, "/auth/verify").expect("original");
        assert!(o.forwarded);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.path, "/b");
        assert_eq!(o.host, "app.example");
        assert_eq!(o.url(), "https://App.Example:8443/a/../b?x=1");
        assert_eq!(o.client.to_string(), "192.0.2.7");
    }

    #[test]
    fn from_anyone_else_the_forwarded_headers_are_ignored() {
        let o = ask("10.0.0.2", NGINX, "/auth/verify").expect("original");
        assert!(!o.forwarded);
        assert_eq!(o.method, Method::GET);
        assert_eq!(o.path, "/auth/verify");
        assert_eq!(o.host, "controller");
        assert_eq!(o.client.to_string(), "10.0.0.2");
        let h = headers(NGINX);
        assert_eq!(
            client_ip(&config(), "10.0.0.2".parse().expect("ip"), &h).to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn envoy_appends_the_path_and_keeps_host_and_method() {
        let o = ask(
            "10.0.0.1",
            &[
                ("host", "app.example"),
                ("x-forwarded-for", "198.51.100.1, 192.0.2.9"),
            ],
            "/auth/verify/wiki/page?q=1",
        )
        .expect("original");
        assert_eq!(o.path, "/wiki/page");
        assert_eq!(o.uri, "/wiki/page?q=1");
        assert_eq!(o.host, "app.example");
        assert_eq!(o.client.to_string(), "192.0.2.9");
    }

    #[test]
    fn ambiguous_or_odd_headers_are_refused() {
        let mut twice = NGINX.to_vec();
        twice.push(("x-forwarded-uri", "/"));
        assert!(ask("10.0.0.1", &twice, "/auth/verify").is_err());
        let mut absolute = NGINX.to_vec();
        absolute[2] = ("x-original-uri", "https://evil/");
        assert!(ask("10.0.0.1", &absolute, "/auth/verify").is_err());
        let missing: Vec<_> = NGINX
            .iter()
            .copied()
            .filter(|(k, _)| *k != "x-original-uri")
            .collect();
        assert!(ask("10.0.0.1", &missing, "/auth/verify").is_err());
    }
}
