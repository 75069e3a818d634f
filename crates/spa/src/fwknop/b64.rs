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
    let end = text.iter().position(|&c| c == b'=').unwrap_or(text.len());
    let mut t = &text[..end];
    // Every character is checked, the dangling one included.
    if !t
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    {
        return None;
    }
    if t.len() % 4 == 1 {
        t = &t[..t.len() - 1];
    }
    PERMISSIVE.decode(t).ok()
}

/// Whether every byte is in `[A-Za-z0-9+/=]` (fwknopd's `is_base64()`).
pub fn is_base64_charset(text: &[u8]) -> bool {
    text.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
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
    }
}
