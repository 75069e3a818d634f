//! Request path normalization and whole-segment prefix matching.
//!
//! The gateway's proxy and the policy rules both use this module, so they
//! agree byte for byte. Every path a rule sees has been through
//! [`normalize`], and every configured prefix through [`normalize_prefix`].
//!
//! The gateway authorizes a request by the prefix of its path and then
//! proxies it to an upstream. Whenever the gateway and the upstream read the
//! same bytes as different paths, an attacker can get a path authorized under
//! one route and served from another: `/v1/../admin`, `/v1/%2e%2e/admin`,
//! `//admin`, `/v1/..;/admin` (Tomcat's path parameters), `/v1%2fadmin`,
//! `/v1\admin` (IIS), or `/v1/charges-admin` against a naive string prefix.
//!
//! The answer is to compute one canonical form, authorize that, and send the
//! upstream exactly that string, so there is nothing left for it to
//! reinterpret:
//!
//! - percent-escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2),
//!   once, so `%2e` is a dot everywhere and `%252e` stays a literal `%2e`;
//!   every other escape is kept, with uppercase hex;
//! - characters that may not appear raw in a path (space, `"`, `?`, `#`,
//!   non-ASCII, ...) are percent-encoded, so the result is always a valid
//!   RFC 3986 `path-absolute` that `http::Uri` accepts unchanged;
//! - encoded separators (`%2F`, `%5C`) and any backslash are refused as
//!   [`PathError::EncodedSeparator`]: upstreams disagree on whether they
//!   separate segments, so no single reading is safe to authorize;
//! - control characters, raw or encoded, are refused: they truncate or split
//!   paths in C-based upstreams and in log files;
//! - empty and `.` segments are dropped and `..` removes the previous
//!   segment; a `..` at the root is refused rather than clamped, because a
//!   request trying to climb out of the root is an attack, not a typo;
//! - a `.` or `..` segment carrying path parameters (`..;x`, `..%3Bx`) is
//!   resolved as a dot segment, because some upstreams strip the parameters
//!   before resolving dots.

use std::fmt;

/// Longest request path, before or after normalization, that is accepted.
pub const MAX_PATH_LEN: usize = 8192;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path contains `%2F`, `%5C` or a raw backslash.
    EncodedSeparator,
    /// A `%` is not followed by two hex digits.
    BadEncoding,
    /// The path contains a control character, raw or percent-encoded.
    ControlCharacter,
    /// A `..` segment would climb above the root.
    EscapesRoot,
    /// The path is longer than [`MAX_PATH_LEN`].
    TooLong,
}

impl PathError {
    /// Stable reason code for audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::BadEncoding => "path_bad_encoding",
            PathError::ControlCharacter => "path_control_character",
            PathError::EscapesRoot => "path_escapes_root",
            PathError::TooLong => "path_too_long",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// Normalizes the path part (no query) of a request target.
///
/// The result starts with `/`, has no empty, `.` or `..` segments, keeps a
/// trailing slash if the resolved input had one, is pure ASCII, and
/// normalizing it again returns it unchanged.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    // Checked before any work so an oversized path costs nothing.
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let canonical = canonicalize_characters(raw)?;
    let resolved = resolve_segments(&canonical)?;
    // Encoding non-ASCII can triple the length; re-checking keeps every Ok
    // result acceptable to `normalize` itself, which idempotence relies on.
    if resolved.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    Ok(resolved)
}

/// Validates and normalizes a configured route prefix.
///
/// Same rules as [`normalize`]; the result has no trailing slash except for
/// the root `/`, so `/v1/` and `/v1` configure the same route.
pub fn normalize_prefix(raw: &str) -> Result<String, PathError> {
    let mut prefix = normalize(raw)?;
    if prefix.len() > 1 && prefix.ends_with('/') {
        prefix.pop();
    }
    Ok(prefix)
}

/// Whole-segment prefix match on normalized paths.
///
/// `/` matches every path; `/v1/charges` matches `/v1/charges` and
/// `/v1/charges/x` but not `/v1/charges-admin`. A prefix given with a
/// trailing slash (`/v1/`) behaves like `/v1`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        // An empty prefix is a configuration mistake, not "match all": fail
        // closed. Only a real root prefix matches everything.
        return prefix.starts_with('/') && path.starts_with('/');
    }
    match path.strip_prefix(trimmed) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Decodes unreserved escapes, uppercases the rest, encodes characters that
/// are not allowed raw, and refuses separators and control characters.
fn canonicalize_characters(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&hi), Some(&lo)) => hex_pair(hi, lo).ok_or(PathError::BadEncoding)?,
                _ => return Err(PathError::BadEncoding),
            };
            if decoded == b'/' {
                return Err(PathError::EncodedSeparator);
            }
            check_byte(decoded)?;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                // Kept encoded: decoding anything but unreserved characters
                // can change which resource the upstream serves.
                out.push_str(percent_encoding::percent_encode_byte(decoded));
            }
            i += 3;
        } else {
            check_byte(b)?;
            if b == b'/' || is_unreserved(b) || is_allowed_raw(b) {
                out.push(char::from(b));
            } else {
                out.push_str(percent_encoding::percent_encode_byte(b));
            }
            i += 1;
        }
    }
    Ok(out)
}

/// Refusals that apply equally to a raw byte and to a decoded escape, so
/// `\` and `%5C` give the same audit reason.
fn check_byte(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::EncodedSeparator),
        0x00..=0x1f | 0x7f => Err(PathError::ControlCharacter),
        _ => Ok(()),
    }
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let hi = char::from(hi).to_digit(16)?;
    let lo = char::from(lo).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Sub-delims, `:` and `@`: the rest of RFC 3986 `pchar`.
fn is_allowed_raw(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

enum DotSegment {
    Current,
    Parent,
}

/// Recognizes `.` and `..`, including with path parameters (`..;jsessionid`,
/// `..%3B`), which Tomcat-style upstreams resolve as dot segments.
fn dot_segment(segment: &str) -> Option<DotSegment> {
    let base = segment.split(';').next().unwrap_or(segment);
    let base = base.split("%3B").next().unwrap_or(base);
    match base {
        "." => Some(DotSegment::Current),
        ".." => Some(DotSegment::Parent),
        _ => None,
    }
}

/// Collapses empty segments and resolves dot segments of a path that starts
/// with `/`.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    // A path ending in `/`, `/.` or `/..` names a directory (RFC 3986 §5.2.4),
    // so its result keeps the trailing slash.
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        match dot_segment(segment) {
            Some(DotSegment::Current) => {}
            Some(DotSegment::Parent) => {
                if kept.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            None if segment.is_empty() => {}
            None => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    if kept.is_empty() {
        return Ok("/".to_owned());
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            // Plain paths.
            ("/", Ok("/")),
            ("/a", Ok("/a")),
            ("/a/b/", Ok("/a/b/")),
            ("/v1/charges", Ok("/v1/charges")),
            // Separators collapse.
            ("//", Ok("/")),
            ("//admin", Ok("/admin")),
            ("/v1//charges", Ok("/v1/charges")),
            ("///a///b///", Ok("/a/b/")),
            // Dot segments.
            ("/.", Ok("/")),
            ("/./", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("/a/./", Ok("/a/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/..", Ok("/")),
            ("/v1/../admin", Ok("/admin")),
            ("/v1/charges/../../admin", Ok("/admin")),
            ("/a//../b", Ok("/b")),
            ("/..", Err(EscapesRoot)),
            ("/../", Err(EscapesRoot)),
            ("/../admin", Err(EscapesRoot)),
            ("/a/../../admin", Err(EscapesRoot)),
            ("//../admin", Err(EscapesRoot)),
            ("/./../admin", Err(EscapesRoot)),
            // Names that merely contain dots are not dot segments.
            ("/...", Ok("/...")),
            ("/a/..b/.c/", Ok("/a/..b/.c/")),
            ("/.well-known/jwks.json", Ok("/.well-known/jwks.json")),
            // Encoded dots are dots.
            ("/v1/%2e%2e/admin", Ok("/admin")),
            ("/v1/%2E%2e/admin", Ok("/admin")),
            ("/v1/.%2E/admin", Ok("/admin")),
            ("/v1/%2e/admin", Ok("/v1/admin")),
            ("/%2e%2e/admin", Err(EscapesRoot)),
            ("/%2E./admin", Err(EscapesRoot)),
            // Dot segments with path parameters (Tomcat `..;/`).
            ("/v1/..;/admin", Ok("/admin")),
            ("/v1/..;jsessionid=x/admin", Ok("/admin")),
            ("/v1/%2e%2e;/admin", Ok("/admin")),
            ("/v1/..%3b/admin", Ok("/admin")),
            ("/v1/.;x/admin", Ok("/v1/admin")),
            ("/..;/admin", Err(EscapesRoot)),
            ("/v1;x/admin", Ok("/v1;x/admin")),
            ("/a/b;c=d", Ok("/a/b;c=d")),
            // Unreserved escapes decode, others are kept with uppercase hex.
            ("/a/%41", Ok("/a/A")),
            ("/%7euser/%5F%2D%30", Ok("/~user/_-0")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/%c3%a9", Ok("/%C3%A9")),
            ("/a%40b", Ok("/a%40b")),
            // Decoding happens once.
            ("/%252e", Ok("/%252e")),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
            ("/%25", Ok("/%25")),
            ("/%252f", Ok("/%252f")),
            // Raw characters outside `pchar` are encoded.
            ("/a b", Ok("/a%20b")),
            ("/é", Ok("/%C3%A9")),
            ("/a?b#c", Ok("/a%3Fb%23c")),
            ("/<x>\"{|}^`", Ok("/%3Cx%3E%22%7B%7C%7D%5E%60")),
            ("/!$&'()*+,;=:@-._~", Ok("/!$&'()*+,;=:@-._~")),
            // Encoded and alternative separators.
            ("/a%2fb", Err(EncodedSeparator)),
            ("/a%2Fb", Err(EncodedSeparator)),
            ("/v1%2f..%2fadmin", Err(EncodedSeparator)),
            ("/a%5cb", Err(EncodedSeparator)),
            ("/a%5Cb", Err(EncodedSeparator)),
            ("/a\\b", Err(EncodedSeparator)),
            ("/v1\\..\\admin", Err(EncodedSeparator)),
            // Control characters, raw and encoded.
            ("/a\u{0}", Err(ControlCharacter)),
            ("/a%00", Err(ControlCharacter)),
            ("/a%0d%0aSet-Cookie:x", Err(ControlCharacter)),
            ("/a%1F", Err(ControlCharacter)),
            ("/a%7f", Err(ControlCharacter)),
            ("/a\tb", Err(ControlCharacter)),
            ("/a\r\nb", Err(ControlCharacter)),
            ("/a\u{7f}", Err(ControlCharacter)),
            // Malformed escapes.
            ("/a/%zz", Err(BadEncoding)),
            ("/a/%4", Err(BadEncoding)),
            ("/a/%", Err(BadEncoding)),
            ("/a/%g1", Err(BadEncoding)),
            ("/a/%4é", Err(BadEncoding)),
            ("/a/%%41", Err(BadEncoding)),
            // Not absolute.
            ("", Err(NotAbsolute)),
            ("a/b", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
            ("%2fadmin", Err(NotAbsolute)),
            ("\\admin", Err(NotAbsolute)),
            ("http://evil/admin", Err(NotAbsolute)),
        ];
        for (input, expected) in cases {
            let got = normalize(input);
            assert_eq!(
                got.as_deref(),
                expected.as_ref().copied(),
                "normalize({input:?})"
            );
        }
    }

    #[test]
    fn length_limits() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(normalize(&at_limit).as_deref(), Ok(at_limit.as_str()));
        let over = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalize(&over), Err(PathError::TooLong));
        // Within the limit raw, over it once encoded.
        let grows = format!("/{}", "é".repeat(MAX_PATH_LEN / 2 - 1));
        assert!(grows.len() <= MAX_PATH_LEN);
        assert_eq!(normalize(&grows), Err(PathError::TooLong));
        // Shrinking by decoding is fine if the raw input fits.
        let shrinks = format!("/{}", "%41".repeat((MAX_PATH_LEN - 1) / 3));
        assert!(normalize(&shrinks).is_ok());
    }

    #[test]
    fn error_display_is_a_reason_code() {
        let all = [
            (PathError::NotAbsolute, "path_not_absolute"),
            (PathError::EncodedSeparator, "path_encoded_separator"),
            (PathError::BadEncoding, "path_bad_encoding"),
            (PathError::ControlCharacter, "path_control_character"),
            (PathError::EscapesRoot, "path_escapes_root"),
            (PathError::TooLong, "path_too_long"),
        ];
        for (err, code) in all {
            assert_eq!(err.to_string(), code);
            assert_eq!(err.as_str(), code);
            let boxed: Box<dyn std::error::Error> = Box::new(err);
            assert_eq!(boxed.to_string(), code);
        }
    }

    #[test]
    fn prefix_matching_is_whole_segment() {
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/", "/anything/at/all", true),
            ("/v1/charges", "/v1/charges", true),
            ("/v1/charges", "/v1/charges/", true),
            ("/v1/charges", "/v1/charges/x", true),
            ("/v1/charges", "/v1/charges-admin", false),
            ("/v1/charges", "/v1/chargesadmin", false),
            ("/v1/charges", "/v1/charge", false),
            ("/v1/charges", "/v1", false),
            ("/v1/charges", "/", false),
            ("/v1/", "/v1", true),
            ("/v1/", "/v1/x", true),
            ("/v1/", "/v10", false),
            ("/v1", "/v10/x", false),
            ("/v1", "/admin", false),
            ("/v1", "/V1/x", false),
            ("/a%20b", "/a%20b/c", true),
            // An empty prefix is not the root.
            ("", "/", false),
            ("", "/x", false),
        ];
        for (prefix, path, expected) in cases {
            assert_eq!(
                prefix_matches(prefix, path),
                *expected,
                "prefix_matches({prefix:?}, {path:?})"
            );
        }
    }

    #[test]
    fn attacks_do_not_reach_outside_their_prefix() {
        let prefix = normalize_prefix("/v1").unwrap();
        for attack in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2e/admin",
            "/v1/..;/admin",
            "/v1/charges/../../admin",
            "/v1-admin",
            "/v10/x",
        ] {
            let path = normalize(attack).unwrap();
            assert!(!prefix_matches(&prefix, &path), "{attack:?} -> {path:?}");
        }
        let charges = normalize_prefix("/v1/charges/").unwrap();
        let path = normalize("/v1/charges-admin").unwrap();
        assert!(!prefix_matches(&charges, &path));
        let path = normalize("/v1//charges/./x").unwrap();
        assert!(prefix_matches(&charges, &path));
    }

    #[test]
    fn normalize_prefix_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("//", Ok("/")),
            ("/v1", Ok("/v1")),
            ("/v1/", Ok("/v1")),
            ("/v1//", Ok("/v1")),
            ("/v1/./charges/", Ok("/v1/charges")),
            ("/%7Eops", Ok("/~ops")),
            ("/a%2fb", Err(PathError::EncodedSeparator)),
            ("/..", Err(PathError::EscapesRoot)),
            ("v1", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
        ];
        for (input, expected) in cases {
            let got = normalize_prefix(input);
            assert_eq!(
                got.as_deref(),
                expected.as_ref().copied(),
                "normalize_prefix({input:?})"
            );
        }
    }

    /// Properties every successful result must have.
    fn assert_canonical(input: &str, out: &str) {
        assert!(out.starts_with('/'), "{input:?} -> {out:?}");
        assert!(!out.contains("//"), "{input:?} -> {out:?}");
        assert!(out.is_ascii(), "{input:?} -> {out:?}");
        assert!(out.len() <= MAX_PATH_LEN);
        for segment in out.split('/').skip(1) {
            assert!(
                dot_segment(segment).is_none(),
                "{input:?} -> {out:?} has dot segment {segment:?}"
            );
        }
        assert!(!out.contains('\\'));
        assert!(!out.bytes().any(|b| b.is_ascii_control()));
        assert_eq!(
            normalize(out).as_deref(),
            Ok(out),
            "not idempotent for {input:?}"
        );
        // The upstream must receive exactly this string: `http` must accept it
        // as a path without rewriting it.
        let pq = http::uri::PathAndQuery::try_from(out).unwrap();
        assert_eq!(pq.path(), out);
        assert_eq!(pq.query(), None);
    }

    #[test]
    fn idempotent_on_samples() {
        for sample in [
            "/",
            "/a/b/",
            "/a/./b/../c/",
            "/v1/%2e%2e/admin",
            "/%41%42%43",
            "/%c3%a9/%25",
            "/%252e%252e/",
            "/a b/é?#",
            "/v1/..;/x/.;y/",
            "/~%7e%7E",
            "/a%3bb/..%3B/c",
        ] {
            let once = normalize(sample).unwrap();
            assert_canonical(sample, &once);
        }
    }

    /// Deterministic xorshift64 so failures are reproducible without a
    /// dependency on `rand`.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn fuzz_never_panics_and_results_are_canonical() {
        let alphabet: Vec<char> = "/.%2eE5cfA-_a;3bB0 é\\?".chars().collect();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut ok = 0usize;
        for _ in 0..20_000 {
            let len = rng.below(24);
            let mut input = String::new();
            // Most inputs start with '/' so the interesting rules are reached.
            if rng.below(10) != 0 {
                input.push('/');
            }
            for _ in 0..len {
                input.push(alphabet[rng.below(alphabet.len())]);
            }
            if let Ok(out) = normalize(&input) {
                ok += 1;
                assert_canonical(&input, &out);
                let prefix = normalize_prefix(&input).unwrap();
                assert!(prefix == "/" || !prefix.ends_with('/'));
                assert!(prefix_matches(&prefix, &out), "{input:?}");
            }
        }
        // Guards against a generator that only ever produces errors.
        assert!(ok > 2_000, "only {ok} inputs normalized");
    }
}
