//! access.conf parsing and its secure defaults.

use super::*;

const KEY: &str = "dYGwY3EiluwwBYCR5PlXSyFbNIINExOGQEjK3rQPz9c=";
const HKEY: &str =
    "GlgORKNCgu0gn6/vFHPBQKOjKablPt3gUPSeKfvjYBvA5pmogyNkayzZHg6Jlr3qslSbK2++CLmewC+nf3vB/w==";

#[test]
fn recipe_stanza_parses_with_secure_defaults() {
    let text = format!(
        "# from interop_recipe.sh\nSOURCE                  10.66.0.0/24\nOPEN_PORTS              tcp/22\n\
         KEY_BASE64              {KEY}\nHMAC_KEY_BASE64         {HKEY}\nHMAC_DIGEST_TYPE        SHA256\n\
         FW_ACCESS_TIMEOUT       30\n"
    );
    let s = parse_access_conf(&text).unwrap();
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert!(s.source.contains("10.66.0.7".parse().unwrap()));
    assert!(s.source.contains("::ffff:10.66.0.7".parse().unwrap()));
    assert!(!s.source.contains("10.66.1.7".parse().unwrap()));
    assert_eq!(s.open_ports.as_ref().unwrap()[0].to_string(), "tcp/22");
    assert!(
        s.require_source_address,
        "REQUIRE_SOURCE_ADDRESS defaults to Y"
    );
    assert_eq!(s.keys.hmac_digest(), Some(DigestType::Sha256));
    assert_eq!(s.keys.mode(), EncryptionMode::Cbc);
    assert_eq!((s.fw_access_timeout, s.max_fw_timeout), (30, 300));
    assert!(!format!("{:?}", s.keys).contains(KEY));
}

#[test]
fn several_stanzas_and_every_key() {
    let text = format!(
        "SOURCE ANY\nKEY secretpass\nHMAC_KEY otherpass\nHMAC_DIGEST_TYPE sha3_512\nENCRYPTION_MODE ctr\n\
         RESTRICT_PORTS tcp/23, udp/69\nMAX_FW_TIMEOUT 60\nREQUIRE_USERNAME alice\nREQUIRE_SOURCE_ADDRESS N\n\
         SOURCE 192.0.2.1, 2001:db8::/32\nKEY_BASE64 {KEY}\nHMAC_KEY_BASE64 {HKEY}\nREQUIRE_SOURCE y\n"
    );
    let s = parse_access_conf(&text).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].source, Sources::Any);
    assert_eq!(s[0].restrict_ports.len(), 2);
    assert_eq!(s[0].keys.hmac_digest(), Some(DigestType::Sha3_512));
    assert_eq!(s[0].keys.mode(), EncryptionMode::Ctr);
    assert_eq!(s[0].require_username.as_deref(), Some("alice"));
    assert!(!s[0].require_source_address);
    assert!(s[1].source.contains("2001:db8:1::5".parse().unwrap()));
    assert!(!s[1].source.contains("192.0.2.2".parse().unwrap()));
    assert!(s[1].require_source_address);
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("OPEN_PORTS tcp/22\n", 1, "before the first SOURCE"),
        (
            "SOURCE ANY\nKEY k\n",
            1,
            "HMAC_KEY or HMAC_KEY_BASE64 is required",
        ),
        (
            "SOURCE ANY\nHMAC_KEY h\n",
            1,
            "KEY or KEY_BASE64 is required",
        ),
        ("SOURCE ANY\nKEY k\nHMAC_KEY k\n", 1, "must differ"),
        (
            "SOURCE ANY\nKEY k\nHMAC_KEY h\nDESTINATION ANY\n",
            4,
            "not supported",
        ),
        (
            "SOURCE ANY\nKEY k\nHMAC_KEY h\nGPG_DECRYPT_ID x\n",
            4,
            "not supported",
        ),
        ("SOURCE 10.0.0.0/33\n", 1, "invalid prefix"),
        ("SOURCE ANY\nOPEN_PORTS icmp/8\n", 2, "tcp or udp"),
        ("SOURCE ANY\nHMAC_DIGEST_TYPE sha224\n", 2, "unknown digest"),
        (
            "SOURCE ANY\nENCRYPTION_MODE asymmetric\n",
            2,
            "unsupported encryption mode",
        ),
        ("SOURCE ANY\nFW_ACCESS_TIMEOUT soon\n", 2, "seconds"),
        ("SOURCE ANY\nREQUIRE_SOURCE_ADDRESS maybe\n", 2, "Y or N"),
        ("SOURCE ANY\nKEY_BASE64 !!!\n", 2, "not valid base64"),
        ("SOURCE ANY\nKEY\n", 2, "no value"),
        ("# nothing\n", 0, "no SOURCE"),
    ];
    for (text, line, needle) in cases {
        let e = parse_access_conf(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn no_hmac_only_when_allowed() {
    let text = "SOURCE ANY\nKEY fwknop-test-passphrase\n";
    assert!(parse_access_conf(text).is_err());
    let s = parse_access_conf_with(
        text,
        &AccessOptions {
            allow_no_hmac: true,
        },
    )
    .unwrap();
    assert_eq!(s[0].keys.hmac_digest(), None);
    // Legacy mode with HMAC is refused, as fwknop refuses it.
    assert!(parse_access_conf("SOURCE ANY\nKEY k\nHMAC_KEY h\nENCRYPTION_MODE legacy\n").is_err());
}

#[test]
fn ipnet_edges() {
    let any4 = IpNet {
        addr: "0.0.0.0".parse().unwrap(),
        prefix: 0,
    };
    assert!(any4.contains("203.0.113.5".parse().unwrap()));
    assert!(!any4.contains("2001:db8::1".parse().unwrap()));
    let any6 = IpNet {
        addr: "::".parse().unwrap(),
        prefix: 0,
    };
    assert!(any6.contains("2001:db8::1".parse().unwrap()));
}
