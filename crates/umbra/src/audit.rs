//! `umbra admin audit …`: list with filters, export as JSON lines, verify
//! the hash chain and the signed checkpoints, checkpoint now.
//!
//! Verification runs here, not on the controller: the CLI reads the export
//! (from the controller or from a file kept off the host) and checks every
//! hash and signature itself, against a public key it can pin.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use serde_json::json;
use umbra_controller::audit::{checkpoint_from_view, record_from_view};
use umbra_proto::api::{AuditCheckpoint, AuditLine, AuditRecord, List};
use umbra_store::chain::checkpoint::PublicKey;
use umbra_store::chain::verify::{Problem, Summary, Verifier};

use crate::client::ApiClient;
use crate::table;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Records matching every filter given, oldest first.
    List {
        /// Exact actor, e.g. user:ann.
        #[arg(long)]
        actor: Option<String>,
        /// Exact action, e.g. auth.login.
        #[arg(long)]
        action: Option<String>,
        /// allow, deny or error.
        #[arg(long)]
        outcome: Option<String>,
        /// From this time on (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Records with a greater id (paging).
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The log as JSON lines (records with their hashes, and the signed
    /// checkpoints), streamed: for a SIEM, or to keep off the host.
    Export {
        /// From this time on (RFC 3339). A filtered export cannot be
        /// verified end to end.
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
    /// Check the hash chain and the signed checkpoints; names the first
    /// modified, deleted, inserted or reordered record.
    Verify {
        /// Verify this export instead of the controller's log (offline: no
        /// controller, CA or credential needed).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The checkpoint key to trust: 64 hex digits, or a file holding
        /// them (the controller's DATA_DIR/audit-key.pub). Without it, the
        /// key named in the export is used.
        #[arg(long)]
        public_key: Option<String>,
        /// An earlier export (or a file of checkpoint lines) kept off the
        /// host: the log must still agree with its checkpoints, even if
        /// they were deleted from the store.
        #[arg(long)]
        anchor: Vec<PathBuf>,
    },
    /// Sign the chain's head now (the controller also does so periodically).
    Checkpoint,
}

impl AuditCommand {
    /// Whether this command runs without a controller.
    pub fn is_offline(&self) -> bool {
        matches!(self, Self::Verify { file: Some(_), .. })
    }
}

pub async fn run(api: Option<&ApiClient>, cmd: AuditCommand, json: bool) -> Result<()> {
    let online = || api.ok_or_else(|| anyhow!("this command needs the controller"));
    match cmd {
        AuditCommand::List {
            actor,
            action,
            outcome,
            since,
            until,
            after,
            limit,
        } => {
            let mut path = format!("/api/v1/admin/audit?after={after}&limit={limit}");
            for (name, value) in [
                ("actor", actor),
                ("action", action),
                ("outcome", outcome),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={}", crate::admin::urlencode(&v)));
                }
            }
            let page: List<AuditRecord> = online()?.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.items)?);
                return Ok(());
            }
            let rows: Vec<_> = page
                .items
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.timestamp.clone(),
                        r.actor.clone(),
                        r.action.clone(),
                        r.resource.clone(),
                        r.outcome.clone(),
                        r.reason.clone(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "id", "time", "actor", "action", "resource", "outcome", "reason",
                ],
                &rows,
            );
            Ok(())
        }
        AuditCommand::Export { since, until } => {
            let mut path = String::from("/api/v1/admin/audit/export");
            let params: Vec<String> = [("since", since), ("until", until)]
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| format!("{n}={}", crate::admin::urlencode(&v))))
                .collect();
            if !params.is_empty() {
                path = format!("{path}?{}", params.join("&"));
            }
            let mut resp = online()?.stream(&path).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = resp.chunk().await.context("reading the export")? {
                out.write_all(&chunk)?;
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let cp: AuditCheckpoint = online()?
                .post("/api/v1/admin/audit/checkpoints", &serde_json::Value::Null)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cp)?);
            } else {
                println!(
                    "checkpoint {} signs records up to {} (hash {}) with key {}",
                    cp.id, cp.last_id, cp.last_hash, cp.key_id
                );
            }
            Ok(())
        }
        AuditCommand::Verify {
            file,
            public_key,
            anchor,
        } => {
            let pinned = public_key.as_deref().map(load_key).transpose()?;
            let lines = match file {
                Some(path) => Lines::File(std::io::BufReader::new(
                    std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )),
                None => Lines::Http {
                    resp: online()?.stream("/api/v1/admin/audit/export").await?,
                    buf: Vec::new(),
                },
            };
            verify(lines, pinned, &anchor, json).await
        }
    }
}

/// A key given as hex or as a file holding it.
fn load_key(arg: &str) -> Result<PublicKey> {
    if let Some(k) = PublicKey::from_hex(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).with_context(|| {
        format!("--public-key {arg:?}: neither 64 hex digits nor a readable file")
    })?;
    PublicKey::from_hex(&text)
        .ok_or_else(|| anyhow!("{arg}: not an Ed25519 public key (64 hex digits)"))
}

/// Export lines, from a file or the controller's streamed response.
enum Lines {
    File(std::io::BufReader<std::fs::File>),
    Http {
        resp: reqwest::Response,
        buf: Vec<u8>,
    },
}

impl Lines {
    async fn next(&mut self) -> Result<Option<String>> {
        match self {
            Self::File(f) => {
                let mut line = String::new();
                Ok((f.read_line(&mut line)? > 0).then_some(line))
            }
            Self::Http { resp, buf } => loop {
                if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    return Ok(Some(
                        String::from_utf8(line).context("export is not UTF-8")?,
                    ));
                }
                match resp.chunk().await.context("reading the export")? {
                    Some(chunk) => buf.extend_from_slice(&chunk),
                    None if buf.is_empty() => return Ok(None),
                    None => {
                        let rest = std::mem::take(buf);
                        return Ok(Some(
                            String::from_utf8(rest).context("export is not UTF-8")?,
                        ));
                    }
                }
            },
        }
    }
}

fn parse(line: &str, n: u64) -> Result<AuditLine> {
    serde_json::from_str(line).with_context(|| format!("export line {n} is not an audit line"))
}

async fn verify(
    mut lines: Lines,
    pinned: Option<PublicKey>,
    anchors: &[PathBuf],
    json: bool,
) -> Result<()> {
    let Some(first) = lines.next().await? else {
        bail!("the export is empty (not an Umbra audit export)");
    };
    let AuditLine::Header(header) = parse(&first, 1)? else {
        bail!("the export does not start with its header line (not an Umbra audit export)");
    };
    if header.filtered {
        bail!(
            "a filtered export (--since/--until) cannot be verified end to end: export without filters"
        );
    }
    let named = PublicKey::from_hex(&header.public_key)
        .ok_or_else(|| anyhow!("the export's public key is malformed"))?;
    if let Some(p) = &pinned
        && *p != named
    {
        bail!(
            "the export is signed by key {} but the pinned key is {}: the controller's key \
             changed, or this is not the log you pinned",
            named.key_id(),
            p.key_id()
        );
    }
    let key = pinned.clone().unwrap_or(named);
    let mut verifier = Verifier::new(key.clone());
    let mut outcome = Ok(());
    for path in anchors {
        for cp in read_anchor(path)? {
            outcome = outcome.and_then(|()| verifier.anchor(cp));
        }
    }
    let mut n = 1;
    while outcome.is_ok()
        && let Some(line) = lines.next().await?
    {
        n += 1;
        outcome = match parse(&line, n)? {
            AuditLine::Record(r) => verifier.record(&record_from_view(r).map_err(|e| anyhow!(e))?),
            AuditLine::Checkpoint(cp) => {
                verifier.checkpoint(checkpoint_from_view(cp).map_err(|e| anyhow!(e))?)
            }
            AuditLine::Header(_) => bail!("export line {n}: a second header"),
        };
    }
    let result = outcome.and_then(|()| verifier.finish());
    report(&result, &key, pinned.is_some(), json)?;
    result
        .map(drop)
        .map_err(|p| anyhow!("audit log verification failed: {p}"))
}

/// The checkpoint lines of an earlier export (other lines are skipped).
fn read_anchor(path: &Path) -> Result<Vec<umbra_store::Checkpoint>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        if let AuditLine::Checkpoint(cp) =
            parse(&line, i as u64 + 1).with_context(|| format!("in anchor {}", path.display()))?
        {
            out.push(checkpoint_from_view(cp).map_err(|e| anyhow!(e))?);
        }
    }
    Ok(out)
}

fn report(
    result: &Result<Summary, Problem>,
    key: &PublicKey,
    pinned: bool,
    json: bool,
) -> Result<()> {
    if json {
        let v = match result {
            Ok(s) => json!({
                "ok": true, "records": s.records, "legacy_records": s.legacy,
                "last_id": s.last_id, "checkpoints": s.checkpoints,
                "signed_through": s.signed_through, "key_id": key.key_id(), "key_pinned": pinned,
            }),
            Err(p) => json!({
                "ok": false, "kind": p.kind(), "record_id": p.record_id(),
                "checkpoint_id": p.checkpoint_id(), "message": p.to_string(),
                "key_id": key.key_id(), "key_pinned": pinned,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let Ok(s) = result else {
        // The error itself is printed by main.
        return Ok(());
    };
    println!(
        "audit log intact: {} chained records up to {}, {} checkpoints verified (key {})",
        s.records,
        s.last_id,
        s.checkpoints,
        key.key_id()
    );
    if s.legacy > 0 {
        println!(
            "{} records from before the chain are counted but not hash-protected",
            s.legacy
        );
    }
    if s.signed_through < s.last_id {
        println!(
            "records after {} are chained but not yet covered by a signed checkpoint",
            s.signed_through
        );
    }
    if !pinned {
        eprintln!(
            "note: checkpoints were checked against the key the controller named; pin it with \
             --public-key (DATA_DIR/audit-key.pub, copied off the host) for an independent check"
        );
    }
    Ok(())
}
