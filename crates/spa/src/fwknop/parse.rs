//! Parsing a decrypted fwknop plaintext with libfko's rules (FWKNOP.md
//! §2.6–2.7): the "16 digits then ':'" decryption check, printable text,
//! field counts per message type, base64 fields with length limits, the
//! inner digest whose type is inferred from its length.

use super::DigestType;
use super::b64;
use super::digest::ct_eq;
use super::message::{Message, MessageType};
use crate::Refusal;

const MAX_USERNAME_B64: usize = 64;
const MAX_MESSAGE_B64: usize = 256;
const MAX_NAT_HOST: usize = 70;

/// Most fields a plaintext has before its digest: six always, then
/// nat_access, server_auth and client_timeout.
const MAX_FIELDS: usize = 9;

/// Parse a decrypted plaintext with libfko's rules.
pub fn parse_plaintext(pt: &[u8]) -> Result<Message, Refusal> {
    // libfko's "good decryption" test: 16 digits then ':'.
    if pt.len() < 17 || !pt[..16].iter().all(u8::is_ascii_digit) || pt[16] != b':' {
        return Err(Refusal::DecryptionFailed);
    }
    let non_printable = Refusal::Malformed("plaintext has non-printable characters");
    if !b64::is_printable(pt) {
        return Err(non_printable);
    }
    // Printable ASCII is UTF-8, so this never fails.
    let text = std::str::from_utf8(pt).map_err(|_| non_printable)?;
    if pt.iter().filter(|&&b| b == b':').count() < 6 {
        return Err(Refusal::Malformed("too few fields"));
    }
    let (body, digest) = text
        .rsplit_once(':')
        .ok_or(Refusal::Malformed("too few fields"))?;
    let digest_type = verify_digest(body, digest)?;
    // The fields on the stack; `count` goes on past MAX_FIELDS so that too
    // many fields are refused below, after the checks that come first.
    let mut fields = [""; MAX_FIELDS];
    let mut count = 0;
    let mut start = 0;
    let ends = body.bytes().enumerate().filter(|&(_, b)| b == b':');
    for end in ends.map(|(i, _)| i).chain([body.len()]) {
        if let Some(slot) = fields.get_mut(count) {
            // Both ends are at ASCII ':' or the end: char boundaries.
            *slot = body.get(start..end).unwrap_or_default();
        }
        count += 1;
        start = end + 1;
    }
    let [random, user, ts, version, mtype, msg, ..] = fields;
    if count < 6 {
        return Err(Refusal::Malformed("too few fields"));
    }
    let username = b64_field(user, MAX_USERNAME_B64)?;
    if username.is_empty() || username.bytes().any(forbidden_in_username) {
        return Err(Refusal::Malformed("username has forbidden characters"));
    }
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Malformed("timestamp is not 1 to 12 digits"));
    }
    let timestamp = ts.parse().map_err(|_| Refusal::Malformed("timestamp"))?;
    if version.is_empty() || version.len() > 8 {
        return Err(Refusal::Malformed("version is not 1 to 8 characters"));
    }
    let message_type = (mtype.len() <= 2)
        .then(|| mtype.parse::<u8>().ok())
        .flatten()
        .and_then(MessageType::from_code)
        .ok_or(Refusal::Malformed("unknown message type"))?;
    let message = b64_field(msg, MAX_MESSAGE_B64)?;
    let max_rest =
        1 + usize::from(message_type.has_nat()) + usize::from(message_type.has_timeout());
    if count - 6 > max_rest {
        return Err(Refusal::Malformed("too many fields for the message type"));
    }
    // count <= 6 + max_rest <= MAX_FIELDS: every field is in the array.
    let mut rest = &fields[6..count];
    let nat_access = if message_type.has_nat() {
        let (first, tail) = rest
            .split_first()
            .ok_or(Refusal::Malformed("missing nat_access"))?;
        rest = tail;
        let nat = b64_field(first, MAX_MESSAGE_B64)?;
        validate_nat(&nat)?;
        Some(nat)
    } else {
        None
    };
    let client_timeout = if message_type.has_timeout() {
        let (last, init) = rest
            .split_last()
            .ok_or(Refusal::Malformed("missing client timeout"))?;
        rest = init;
        Some(parse_timeout(last)?)
    } else {
        None
    };
    let server_auth = match rest {
        [] => None,
        [sa] => Some(b64_field(sa, MAX_MESSAGE_B64)?),
        _ => return Err(Refusal::Malformed("too many fields for the message type")),
    };
    let access = if message_type == MessageType::Command {
        None
    } else {
        Some(message.parse().map_err(Refusal::Malformed)?)
    };
    Ok(Message {
        random: random.to_string(),
        username,
        timestamp,
        version: version.to_string(),
        message_type,
        message,
        access,
        nat_access,
        server_auth,
        client_timeout,
        digest_type,
    })
}

/// libfko's forbidden username characters: `" / \ [ ] : ; | = , + * ? < >`.
fn forbidden_in_username(b: u8) -> bool {
    matches!(
        b,
        b'"' | b'/'
            | b'\\'
            | b'['
            | b']'
            | b':'
            | b';'
            | b'|'
            | b'='
            | b','
            | b'+'
            | b'*'
            | b'?'
            | b'<'
            | b'>'
    )
}

/// The inner digest: type from its length, SHA-2 tried before SHA-3.
fn verify_digest(body: &str, digest: &str) -> Result<DigestType, Refusal> {
    let candidates = DigestType::by_b64_len(digest.len());
    if candidates.is_empty() {
        return Err(Refusal::Malformed("inner digest has an unknown length"));
    }
    for &d in candidates {
        let mut buf = [0u8; 88];
        let h = d.hash(&[body.as_bytes()]);
        let n = b64::encode_into(h.as_slice(), &mut buf).unwrap_or(0);
        if ct_eq(&buf[..n], digest.as_bytes()) {
            return Ok(d);
        }
    }
    Err(Refusal::DigestMismatch)
}

fn b64_field(field: &str, max: usize) -> Result<String, Refusal> {
    debug_assert!(
        max <= MAX_MESSAGE_B64,
        "the stack buffer holds MAX_MESSAGE_B64"
    );
    if field.len() > max {
        return Err(Refusal::Malformed("base64 field too long"));
    }
    let mut buf = [0u8; b64::decoded_len_max(MAX_MESSAGE_B64)];
    let n = b64::decode_into(field.as_bytes(), &mut buf)
        .ok_or(Refusal::Malformed("field is not base64"))?;
    let not_printable = Refusal::Malformed("decoded field is not printable ASCII");
    if !b64::is_printable(&buf[..n]) {
        return Err(not_printable);
    }
    // Printable ASCII is UTF-8, so this never fails.
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| not_printable)?;
    Ok(text.to_owned())
}

fn validate_nat(nat: &str) -> Result<(), Refusal> {
    let bad = Refusal::Malformed("nat_access must be host,port");
    let (host, port) = nat.split_once(',').ok_or(bad.clone())?;
    if port.contains(',')
        || host.is_empty()
        || host.len() > MAX_NAT_HOST
        || host.chars().any(|c| " /?\"'\\".contains(c))
    {
        return Err(bad);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad),
    }
}

fn parse_timeout(t: &str) -> Result<u32, Refusal> {
    let bad = Refusal::Malformed("client timeout must be 0..=65536");
    if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    match t.parse::<u32>() {
        Ok(v) if v <= 65_536 => Ok(v),
        _ => Err(bad),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
#[path = "parse_tests.rs"]
mod tests;
