//! One-time recovery codes, for a user who lost their authenticator.
//!
//! Ten codes of ten base32 characters (50 bits each), shown once. Stored as
//! keyed hashes (HMAC under a key derived from the KEK, bound to the user):
//! 50 bits would fall to an offline search of a stolen database, a keyed
//! hash does not. A code replaces the TOTP code at login, once; the password
//! is still required, and wrong codes count towards the lockout.

use umbra_pki::Kek;

pub const COUNT: usize = 10;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Fresh codes, formatted `xxxxx-xxxxx`.
pub fn generate() -> Vec<String> {
    (0..COUNT)
        .map(|_| {
            let mut bytes = [0u8; 10];
            if aws_lc_rs::rand::fill(&mut bytes).is_err() {
                panic!("system random generator unavailable");
            }
            let chars: String = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// The stored form of `code` for `user_id`; `None` if it cannot be a code.
pub fn hash(kek: &Kek, user_id: &str, code: &str) -> Option<String> {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = normal.len() == 10 && normal.bytes().all(|b| ALPHABET.contains(&b));
    valid.then(|| kek.mac(&format!("recovery:{user_id}"), normal.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_hash_leniently() {
        let kek = Kek::from_bytes(&[1; 32]).expect("kek");
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
        let c = &codes[0];
        let h = hash(&kek, "u1", c).expect("valid");
        assert_eq!(
            hash(&kek, "u1", &c.to_uppercase().replace('-', " ")),
            Some(h.clone())
        );
        assert_ne!(hash(&kek, "u2", c), Some(h));
        assert_eq!(hash(&kek, "u1", "short"), None);
        assert_eq!(
            hash(&kek, "u1", "0000000000"),
            None,
            "0 and 1 are not in the alphabet"
        );
    }
}
