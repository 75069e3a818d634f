//! Base64 exactly as libfko does it.
//!
//! libfko strips `=` padding from everything it emits (it truncates at the
//! first `=`), and its decoder stops at the first `=`, needs no padding,
//! rejects characters outside the standard alphabet and silently drops a
//! dangling final 6-bit group (length % 4 == 1). Key strings in config
//! files are ordinary padded base64; [`PERMISSIVE`] reads both.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard alphabet, padding optional, trailing bits tolerated.
pub const PERMISSIVE: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Encode without `=` padding (what libfko puts on the wire).
pub fn encode(data: &[u8]) -> String {
    PERMISSIVE.encode(data)
}

/// Encode into `out` without allocating; returns the encoded length.
/// `out` must hold `ceil(4 * len / 3)` bytes.
pub fn encode_into(data: &[u8], out: &mut [u8]) -> Option<usize> {
    PERMISSIVE.encode_slice(data, out).ok()
}

/// Decode the libfko way. `None` for characters outside the alphabet.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; decoded_len_max(text.len())];
    let n = decode_into(text, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// The most bytes [`decode_into`] writes for `len` characters.
pub const fn decoded_len_max(len: usize) -> usize {
    len.div_ceil(4) * 3
}

/// [`decode`] into `out` without allocating; returns the decoded length.
/// `None` for characters outside the alphabet, or if `out` is shorter than
/// [`decoded_len_max`] of the text before its first `=`.
pub fn decode_into(text: &[u8], out: &mut [u8]) -> Option<usize> {
    // Packets and fields almost never hold '=': look for one with a scan
    // that vectorizes before finding where it is.
    let has_eq = text.iter().fold(false, |any, &c| any | (c == b'='));
    let end = if has_eq {
        text.iter().position(|&c| c == b'=').unwrap_or(text.len())
    } else {
        text.len()
    };
    let mut t = &text[..end];
    // Every character is checked, the dangling one included: the engine
    // rejects any other character outside the alphabet (and `=` is gone).
    if t.len() % 4 == 1 {
        if !is_alphabet(t[t.len() - 1]) {
            return None;
        }
        t = &t[..t.len() - 1];
    }
    if out.len() < decoded_len_max(t.len()) {
        return None;
    }
    PERMISSIVE.decode_slice(t, out).ok()
}

/// A character of the standard alphabet (`=` excluded). Branch-free, so
/// whole-buffer scans vectorize.
#[inline(always)]
fn is_alphabet(c: u8) -> bool {
    let lower = c | 0x20;
    (lower.wrapping_sub(b'a') < 26) | (c.wrapping_sub(b'0') < 10) | (c == b'+') | (c == b'/')
}

/// Whether every byte is in `[A-Za-z0-9+/=]` (fwknopd's `is_base64()`).
pub fn is_base64_charset(text: &[u8]) -> bool {
    // No early exit inside a chunk (the loop vectorizes); one per chunk so
    // random bytes are still refused after the first few.
    text.chunks(32).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, &c| ok & (is_alphabet(c) | (c == b'=')))
    })
}

/// Whether every byte is printable ASCII (`0x20..0x7f`), as libfko's
/// decoder requires of plaintexts and decoded fields.
pub fn is_printable(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5f))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn libfko_rules() {
        assert_eq!(encode(b"root"), "cm9vdA");
        assert_eq!(decode(b"cm9vdA").unwrap(), b"root");
        assert_eq!(decode(b"cm9vdA==").unwrap(), b"root");
        // Stops at the first '=' even mid-string.
        assert_eq!(decode(b"cm9vdA=garbage").unwrap(), b"root");
        // Dangling 6-bit group dropped.
        assert_eq!(decode(b"cm9vx").unwrap(), b"roo");
        assert!(decode(b"cm9v-A").is_none());
        assert!(decode(b"cm9v!").is_none());
        assert!(is_base64_charset(b"ab+/=9"));
        assert!(!is_base64_charset(b"ab\n"));
        let mut buf = [0u8; 3];
        assert_eq!(decode_into(b"cm9vdA", &mut buf), None); // too small
    }

    #[test]
    fn charset_and_printable_match_the_naive_rules() {
        for c in 0..=255u8 {
            let b64 = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=';
            assert_eq!(is_base64_charset(&[c]), b64, "{c}");
            // Every position of a long buffer, for the chunked scan.
            let mut long = vec![b'A'; 100];
            long[c as usize % 100] = c;
            assert_eq!(is_base64_charset(&long), b64, "{c}");
            assert_eq!(is_printable(&[c]), (0x20..0x7f).contains(&c), "{c}");
        }
    }
}
