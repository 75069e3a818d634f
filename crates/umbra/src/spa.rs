//! `umbra spa inspect`: decode one SPA packet offline and say whether a
//! gateway would accept it, and if not, precisely why.
//!
//! Stateless: it checks structure, keys (MAC/AEAD), the message itself and
//! (unless `--ignore-time`) the timestamp window against this machine's
//! clock. Replay, rate limits and the packet's source address need a live
//! gateway and are not checked. Exit status 0 only for a packet that
//! verifies; the decoded fields are printed as JSON on stdout either way.

use std::io::Read;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use umbra_spa::fwknop::{self, DigestType, EncryptionMode, FwknopKeys};
use umbra_spa::native::{self, OpenAddr};
use umbra_spa::window::{check_window, unix_secs};
use umbra_spa::{GatewayKey, Refusal};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct SpaArgs {
    #[command(subcommand)]
    command: SpaCommand,
}

#[derive(Subcommand)]
enum SpaCommand {
    /// Decode a packet and say whether it would be accepted (exit 0) or why not.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The packet is fwknop-compatible (default: native Umbra SPA).
    #[arg(long)]
    fwknop: bool,
    /// Native: the per-gateway derived key (32 bytes, base64), not the device
    /// secret. fwknop: the Rijndael key (KEY_BASE64).
    #[arg(long, value_name = "K")]
    key_base64: Option<String>,
    /// fwknop: the HMAC key (HMAC_KEY_BASE64). Without it the packet is
    /// decoded unauthenticated (Umbra's access.conf requires HMAC).
    #[arg(long, value_name = "H")]
    hmac_key_base64: Option<String>,
    /// fwknop: HMAC digest (md5, sha1, sha256, sha384, sha512, sha3_256,
    /// sha3_512; case-insensitive).
    #[arg(long, default_value = "sha256", value_parser = str::parse::<DigestType>)]
    hmac_digest_type: DigestType,
    /// fwknop: encryption mode (cbc, ecb, cfb, ofb, ctr, legacy; case-insensitive).
    #[arg(long, default_value = "cbc", value_parser = str::parse::<EncryptionMode>)]
    encryption_mode: EncryptionMode,
    /// Skip the timestamp window check (old captures, test vectors).
    #[arg(long)]
    ignore_time: bool,
    /// The packet: fwknop: the ASCII UDP payload; native: the datagram in
    /// base64 or hex. `-` reads standard input, `@FILE` reads a raw datagram.
    packet: String,
}

pub fn run(args: SpaArgs) -> Result<()> {
    match args.command {
        SpaCommand::Inspect(a) => {
            let packet = read_packet(&a.packet, a.fwknop)?;
            let (report, verdict) = inspect(&a, &packet, SystemTime::now())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            verdict.map_err(|r| anyhow::anyhow!("packet would be refused: {r}"))
        }
    }
}

/// Decode `packet` per `args` at `now`: the JSON report and the verdict.
/// `Err` only for unusable arguments (bad keys).
pub fn inspect(
    args: &InspectArgs,
    packet: &[u8],
    now: SystemTime,
) -> Result<(Value, Result<(), Refusal>)> {
    if args.fwknop {
        inspect_fwknop(args, packet, now)
    } else {
        inspect_native(args, packet, now)
    }
}

fn inspect_native(
    args: &InspectArgs,
    packet: &[u8],
    now: SystemTime,
) -> Result<(Value, Result<(), Refusal>)> {
    let mut report = json!({ "format": "native", "length": packet.len() });
    let header = match native::peek_header(packet) {
        Ok(h) => h,
        Err(r) => return Ok((refused(report, &r), Err(r))),
    };
    report["device"] = json!(header.device.to_string());
    report["nonce"] = json!(to_hex(&header.nonce));
    let Some(key) = &args.key_base64 else {
        bail!(
            "native packets need --key-base64 (the gateway's derived key for device {})",
            header.device
        );
    };
    let key = GatewayKey::from_base64(key).context("--key-base64")?;
    let knock = match native::open(packet, &key) {
        Ok(k) => k,
        Err(r) => return Ok((refused(report, &r), Err(r))),
    };
    report["timestamp"] = json!(knock.timestamp);
    report["services"] = json!(knock.services);
    report["open"] = match knock.open {
        OpenAddr::Source => json!("source"),
        OpenAddr::Addr(a) => json!(a.to_string()),
    };
    let window = native::VerifierConfig::default().window_secs;
    Ok(finish(
        report,
        knock.timestamp,
        now,
        window,
        args.ignore_time,
    ))
}

fn inspect_fwknop(
    args: &InspectArgs,
    packet: &[u8],
    now: SystemTime,
) -> Result<(Value, Result<(), Refusal>)> {
    let key = Zeroizing::new(decode_b64(
        args.key_base64
            .as_deref()
            .context("fwknop packets need --key-base64")?,
        "--key-base64",
    )?);
    let hkey = match &args.hmac_key_base64 {
        Some(h) => Some(Zeroizing::new(decode_b64(h, "--hmac-key-base64")?)),
        None => None,
    };
    let keys = FwknopKeys::new(
        &key,
        args.encryption_mode,
        hkey.as_ref().map(|h| (h.as_slice(), args.hmac_digest_type)),
    )?;
    let mut report = json!({
        "format": "fwknop",
        "length": packet.len(),
        "encryption_mode": args.encryption_mode.name(),
        "hmac": keys.hmac_digest().map(DigestType::name),
        "replay_digest": fwknop::b64::encode(&fwknop::replay_digest(packet)),
    });
    if hkey.is_none() {
        report["warning"] = json!(
            "no HMAC key given: decoded unauthenticated; Umbra's access.conf requires HMAC by default"
        );
    }
    let m = match fwknop::decode(packet, &keys) {
        Ok(m) => m,
        Err(r) => return Ok((refused(report, &r), Err(r))),
    };
    report["random"] = json!(m.random);
    report["username"] = json!(m.username);
    report["timestamp"] = json!(m.timestamp);
    report["version"] = json!(m.version);
    report["message_type"] = json!(m.message_type.code());
    report["message"] = json!(m.message);
    report["nat_access"] = json!(m.nat_access);
    report["server_auth"] = json!(m.server_auth);
    report["client_timeout"] = json!(m.client_timeout);
    report["digest_type"] = json!(m.digest_type.name());
    if let Some(a) = &m.access {
        report["allow_ip"] = json!(a.allow_ip.to_string());
        report["ports"] = json!(a.ports.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    Ok(finish(
        report,
        m.timestamp,
        now,
        fwknop::DEFAULT_MAX_AGE,
        args.ignore_time,
    ))
}

fn finish(
    mut report: Value,
    ts: u64,
    now: SystemTime,
    window: u64,
    ignore_time: bool,
) -> (Value, Result<(), Refusal>) {
    let now = unix_secs(now);
    report["age_secs"] = json!(i128::from(now) - i128::from(ts));
    if !ignore_time && let Err(r) = check_window(ts, now, window) {
        return (refused(report, &r), Err(r));
    }
    report["verdict"] = json!("accept");
    (report, Ok(()))
}

fn refused(mut report: Value, r: &Refusal) -> Value {
    report["verdict"] = json!("refuse");
    report["reason"] = json!(r.label());
    report["detail"] = json!(r.to_string());
    report
}

fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const B64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    B64.decode(s.trim())
        .with_context(|| format!("{what} is not valid base64"))
}

/// The packet bytes from the argument: `-` = stdin, `@FILE` = raw file;
/// native text is base64 or hex, fwknop text is used as is.
fn read_packet(arg: &str, fwknop: bool) -> Result<Vec<u8>> {
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading {path}"));
    }
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the packet from stdin")?;
        s
    } else {
        arg.to_string()
    };
    let text = text.trim();
    if fwknop {
        return Ok(text.as_bytes().to_vec());
    }
    // Hex digits are also base64 characters, so try hex first: a native
    // packet in base64 always starts "9VVT" (F5 55 53), never all-hex.
    match from_hex(text) {
        Some(bytes) => Ok(bytes),
        None => decode_b64(text, "native packet (neither hex nor base64)"),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InspectArgs,
    }

    const V1: &str = "+TLbcIDs0k3/YwzZLkHlnEY1PH2P1/V8mK+jAx5oSeif03BASXL66hbEG1q1RoBw0FapUAu1Qcj0tDEVRPUnoyPvuBj4Kr59AHCVYAufZFmFxTMZIEtp8U8XEjK4+AcnhRctTG/DDcJ+g6s5eHu36IyKX7uTc8llEXhIV1NbOk0//mx+Kd5suV9rP1GtPly4wVo7pdE6qLXo";
    const KEY: &str = "dYGwY3EiluwwBYCR5PlXSyFbNIINExOGQEjK3rQPz9c=";
    const HKEY: &str =
        "GlgORKNCgu0gn6/vFHPBQKOjKablPt3gUPSeKfvjYBvA5pmogyNkayzZHg6Jlr3qslSbK2++CLmewC+nf3vB/w==";

    fn parse(extra: &[&str]) -> InspectArgs {
        let mut argv = vec![
            "inspect",
            "--fwknop",
            "--key-base64",
            KEY,
            "--hmac-key-base64",
            HKEY,
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn digest_and_mode_names_are_case_insensitive() {
        let a = parse(&[
            "--hmac-digest-type",
            "SHA512",
            "--encryption-mode",
            "CBC",
            "x",
        ]);
        assert_eq!(a.hmac_digest_type, DigestType::Sha512);
        assert_eq!(a.encryption_mode, EncryptionMode::Cbc);
        assert_eq!(parse(&["x"]).hmac_digest_type, DigestType::Sha256);
        assert!(Cli::try_parse_from(["inspect", "--hmac-digest-type", "sha224", "x"]).is_err());
        assert!(Cli::try_parse_from(["inspect", "--encryption-mode", "gpg", "x"]).is_err());
    }

    #[test]
    fn fwknop_vector_verifies_only_with_ignore_time_or_in_window() {
        let now = umbra_spa::window::from_unix_secs(1_795_420_950);
        let (report, verdict) = inspect(&parse(&[V1]), V1.as_bytes(), now).unwrap();
        assert!(verdict.is_ok(), "{report}");
        assert_eq!(report["message"], "10.66.0.2,tcp/22");
        assert_eq!(report["ports"][0], "tcp/22");
        let later = umbra_spa::window::from_unix_secs(1_795_430_000);
        let (report, verdict) = inspect(&parse(&[V1]), V1.as_bytes(), later).unwrap();
        assert!(matches!(verdict, Err(Refusal::Stale { .. })));
        assert_eq!(report["reason"], "stale");
        assert!(
            inspect(&parse(&["--ignore-time", V1]), V1.as_bytes(), later)
                .unwrap()
                .1
                .is_ok()
        );
        let tampered = V1.replacen('+', "/", 1);
        let (report, verdict) = inspect(&parse(&[&tampered]), tampered.as_bytes(), now).unwrap();
        assert_eq!(verdict, Err(Refusal::BadMac));
        assert_eq!(report["verdict"], "refuse");
    }

    #[test]
    fn native_packet_round_trip_through_inspect() {
        let key = GatewayKey::from_bytes([5; 32]);
        let knock = native::Knock::new(
            uuid::Uuid::nil(),
            vec!["ssh".into()],
            OpenAddr::Source,
            1_800_000_000,
        );
        let packet = native::seal(&key, &knock).unwrap();
        let text = base64::engine::general_purpose::STANDARD.encode(&packet);
        let args = Cli::try_parse_from(["inspect", "--key-base64", &key.to_base64(), &text])
            .unwrap()
            .args;
        let bytes = read_packet(&args.packet, false).unwrap();
        let now = umbra_spa::window::from_unix_secs(1_800_000_010);
        let (report, verdict) = inspect(&args, &bytes, now).unwrap();
        assert!(verdict.is_ok(), "{report}");
        assert_eq!(report["services"][0], "ssh");
        assert_eq!(report["open"], "source");
        assert_eq!(read_packet(&to_hex(&packet), false).unwrap(), packet);
        let wrong = Cli::try_parse_from([
            "inspect",
            "--key-base64",
            &GatewayKey::from_bytes([6; 32]).to_base64(),
            &text,
        ])
        .unwrap()
        .args;
        assert_eq!(
            inspect(&wrong, &bytes, now).unwrap().1,
            Err(Refusal::BadMac)
        );
        let no_key = Cli::try_parse_from(["inspect", &text]).unwrap().args;
        assert!(inspect(&no_key, &bytes, now).is_err());
    }
}
