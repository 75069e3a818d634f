//! The login page's HTML, cookies and return URLs: server-rendered, no
//! script and nothing fetched from elsewhere (the pages work with
//! JavaScript off and under a CSP that allows nothing but their own
//! inline style).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use umbra_proto::token::SESSION_COOKIE;

use crate::browser_config::BrowserConfig;

/// The pre-login cookie holding the CSRF token the form must repeat.
pub const CSRF_COOKIE: &str = "__Host-umbra_csrf";
/// How long a login form stays usable.
pub const CSRF_TTL_SECS: i64 = 600;
/// The longest `rd` accepted.
const MAX_RETURN_URL: usize = 2048;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin-top:0}label{display:block;\
margin:.8rem 0 .2rem}input{width:100%;box-sizing:border-box;padding:.5rem}\
button{margin-top:1.2rem;width:100%;padding:.6rem}.error{color:#a00}";

/// A whole page, with headers that keep it out of frames and caches.
pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} - Umbra</title><link rel=\"icon\" href=\"/ui/favicon.svg\" type=\"image/svg+xml\">\
         <style>{STYLE}</style></head>\
         <body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    );
    html_response(
        status,
        doc,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
}

/// An HTML document with the headers every controller page carries: its
/// CSP, and out of frames, caches, sniffing and other sites' referrers.
pub fn html_response(status: StatusCode, doc: String, csp: &'static str) -> Response {
    let mut r = (status, doc).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: under it browsers send `Origin: null` with
        // the page's own form POSTs, which the Origin check must refuse.
        // `same-origin` tells nothing to other sites either.
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default()
}

pub fn login_form(csrf: &str, rd: Option<&str>, error: Option<&str>) -> String {
    format!(
        "{err}<form method=\"post\" action=\"/auth/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
         <label for=\"user\">User</label>\
         <input id=\"user\" name=\"user\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <label for=\"totp\">One-time code</label>\
         <input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>\
         <button type=\"submit\">Sign in</button></form>",
        err = error_line(error),
        csrf = escape(csrf),
        rd = escape(rd.unwrap_or_default()),
    )
}

pub fn step_up_form(user: &str, csrf: &str, rd: Option<&str>, error: Option<&str>) -> String {
    format!(
        "{err}<p>Signed in as <b>{user}</b>. This resource needs a fresh one-time code.</p>\
         <form method=\"post\" action=\"/auth/step-up\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
         <label for=\"totp\">One-time code</label>\
         <input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus>\
         <button type=\"submit\">Confirm</button></form>",
        err = error_line(error),
        user = escape(user),
        csrf = escape(csrf),
        rd = escape(rd.unwrap_or_default()),
    )
}

pub fn signed_in(user: &str) -> String {
    format!(
        "<p>Signed in as <b>{}</b>.</p>\
         <form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Sign out</button></form>",
        escape(user)
    )
}

fn cookie(name: &str, value: &str, max_age: i64, same_site: &str) -> HeaderValue {
    // `__Host-`: Secure, Path=/ and no Domain, or browsers drop it.
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite={same_site}"
    ))
    .unwrap_or_else(|_| {
        HeaderValue::from_static("__Host-umbra_invalid=; Max-Age=0; Path=/; Secure")
    })
}

/// The session cookie: Lax, so a cross-site POST does not carry it, while
/// following a link to a protected app does.
pub fn session_cookie(token: &str, max_age: i64) -> HeaderValue {
    cookie(SESSION_COOKIE, token, max_age.max(0), "Lax")
}

pub fn clear_session_cookie() -> HeaderValue {
    cookie(SESSION_COOKIE, "", 0, "Lax")
}

/// The pre-login CSRF cookie: Strict, never sent with another site's
/// request, and readable by no script.
pub fn csrf_cookie(value: &str) -> HeaderValue {
    cookie(CSRF_COOKIE, value, CSRF_TTL_SECS, "Strict")
}

pub fn clear_csrf_cookie() -> HeaderValue {
    cookie(CSRF_COOKIE, "", 0, "Strict")
}

/// Where a login may send the user back: an `https` URL on one of
/// `return_hosts`, or a path on this host. Anything else (another host, a
/// scheme-relative `//host`, a `\`, user info, control characters) is
/// refused: the login page is no open redirect.
pub fn return_to(config: &BrowserConfig, rd: &str) -> Option<String> {
    if rd.is_empty()
        || rd.len() > MAX_RETURN_URL
        || rd.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f)
    {
        return None;
    }
    if rd.starts_with('/') {
        return (!rd.starts_with("//")).then(|| rd.to_owned());
    }
    let uri: http::Uri = rd.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    config.return_hosts.contains(&host).then(|| rd.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_stay_on_the_configured_hosts() {
        let c = BrowserConfig {
            return_hosts: vec!["app.example".into()],
            ..BrowserConfig::default()
        };
        for good in [
            "https://app.example/",
            "https://APP.example:8443/x?y=1",
            "/dashboard?a=b",
        ] {
            assert_eq!(return_to(&c, good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "http://app.example/",
            "//evil.example/",
            "/\\evil.example",
            "https://app.example@evil.example/",
            "https://evil.example\\@app.example/",
            "javascript:alert(1)",
            "https://app.example.evil.example/",
            "https://app.example/\r\nX: y",
            "",
            "app.example",
        ] {
            assert_eq!(return_to(&c, bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let f = login_form("c\"", Some("/a\"><script>"), Some("<b>"));
        assert!(!f.contains("<script>") && !f.contains("<b>"), "{f}");
        assert!(f.contains("&quot;&gt;&lt;script&gt;"));
        assert_eq!(
            urlencode("https://a/b?c=d e"),
            "https%3A%2F%2Fa%2Fb%3Fc%3Dd%20e"
        );
    }

    #[test]
    fn cookies_carry_the_host_prefix_attributes() {
        let v = session_cookie("tok", 1800);
        let v = v.to_str().expect("ascii");
        assert!(v.starts_with("__Host-umbra_session=tok;"), "{v}");
        for attr in [
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=1800",
        ] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
        assert!(!v.contains("Domain"), "{v}");
        assert!(
            csrf_cookie("x")
                .to_str()
                .expect("ascii")
                .contains("SameSite=Strict")
        );
    }
}
