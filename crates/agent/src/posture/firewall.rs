//! Firewall: is inbound traffic dropped unless a rule accepts it?
//!
//! "Firewall enabled" means default-deny input, the posture a zero-trust
//! device needs: a loaded firewall whose input policy is `accept` protects
//! nothing it has no rule for. An input chain denies by default when its
//! policy is `drop`, or when its last rule drops or rejects unconditionally
//! (the `… ; reject` style). Every base chain on the input hook sees each
//! packet, so one such chain is enough for its address family; IPv6 counts
//! only where the kernel has it enabled (`proc/net/if_inet6` and
//! `proc/sys/net/ipv6/conf/all/disable_ipv6`).
//!
//! The ruleset is kernel state, read with `nft -j list ruleset` (JSON, so
//! no text grammar to guess at) and `iptables-save`/`ip6tables-save`, which
//! also see iptables-legacy tables. Both need `CAP_NET_ADMIN`: an
//! unprivileged agent gets "unknown", never "disabled". The tools are run
//! from fixed paths, not `$PATH`. For any root but `/` the live ruleset
//! describes the wrong system, so saved dumps are read instead (see
//! [`Origin`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Finding;
use super::read::{self, Read};

/// Which input traffic is denied by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Coverage {
    fn add(&mut self, other: Self) {
        self.ipv4 |= other.ipv4;
        self.ipv6 |= other.ipv6;
    }
}

/// Where rulesets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Run `nft` and `iptables-save` against the running kernel.
    Live,
    /// Read `nft.json`, `iptables-save.txt` and `ip6tables-save.txt` (the
    /// three tools' output) from this directory.
    Dumps(PathBuf),
}

/// Where dumps are looked for under a root other than `/`.
pub const DUMP_DIR: &str = "var/lib/umbra/rulesets";

impl Origin {
    pub fn for_root(root: &Path) -> Self {
        if root == Path::new("/") {
            Self::Live
        } else {
            Self::Dumps(root.join(DUMP_DIR))
        }
    }
}

/// The input chains of an `nft -j list ruleset` document that deny by
/// default, by family (`inet` covers both). Tables flagged `dormant` are
/// loaded but not active, and are skipped.
pub fn nft_coverage(json: &str) -> Result<Coverage, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not nft JSON: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("not nft JSON: no \"nftables\" array")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut dormant = BTreeSet::new();
    let mut input_chains = Vec::new();
    // The last rule of each chain: the listing is in chain order.
    let mut last_rule = BTreeMap::new();
    for item in items {
        if let Some(t) = item.get("table") {
            let flags = t.get("flags");
            let is_dormant = flags.and_then(Value::as_str) == Some("dormant")
                || flags
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|f| f.as_str() == Some("dormant")));
            if is_dormant {
                dormant.insert((s(t, "family"), s(t, "name")));
            }
        } else if let Some(c) = item.get("chain") {
            if s(c, "hook") == "input" {
                let key = (s(c, "family"), s(c, "table"), s(c, "name"));
                input_chains.push((key, s(c, "policy") == "drop"));
            }
        } else if let Some(r) = item.get("rule") {
            let key = (s(r, "family"), s(r, "table"), s(r, "chain"));
            last_rule.insert(key, r.get("expr").cloned().unwrap_or(Value::Null));
        }
    }
    let mut coverage = Coverage::default();
    for ((family, table, chain), policy_drop) in input_chains {
        if dormant.contains(&(family.clone(), table.clone())) {
            continue;
        }
        let key = (family.clone(), table, chain);
        let denies = policy_drop || last_rule.get(&key).is_some_and(unconditional_deny);
        if denies {
            coverage.add(match family.as_str() {
                "inet" => Coverage {
                    ipv4: true,
                    ipv6: true,
                },
                "ip" => Coverage {
                    ipv4: true,
                    ipv6: false,
                },
                "ip6" => Coverage {
                    ipv4: false,
                    ipv6: true,
                },
                _ => Coverage::default(),
            });
        }
    }
    Ok(coverage)
}

/// A rule that matches everything and drops or rejects: only counters and
/// logging before the verdict (a `limit` or any match makes it conditional).
fn unconditional_deny(expr: &Value) -> bool {
    let Some(statements) = expr.as_array() else {
        return false;
    };
    let key = |v: &Value| v.as_object().and_then(|o| o.keys().next().cloned());
    let Some((verdict, before)) = statements.split_last() else {
        return false;
    };
    matches!(key(verdict).as_deref(), Some("drop" | "reject"))
        && before
            .iter()
            .all(|st| matches!(key(st).as_deref(), Some("counter" | "log")))
}

/// Whether an `iptables-save` dump's filter table denies INPUT by default:
/// `:INPUT DROP`, or a last `-A INPUT` rule that is only `-j DROP` or
/// `-j REJECT [--reject-with TYPE]`.
pub fn iptables_input_denied(save: &str) -> bool {
    let mut in_filter = false;
    let (mut policy_drop, mut last_rule) = (false, None);
    for line in save.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
        } else if !in_filter {
            continue;
        } else if let Some(policy) = line.strip_prefix(":INPUT ") {
            policy_drop = policy.split_ascii_whitespace().next() == Some("DROP");
        } else if let Some(rule) = line.strip_prefix("-A INPUT ") {
            last_rule = Some(rule);
        }
    }
    let final_deny = last_rule.is_some_and(|rule| {
        let words: Vec<&str> = rule.split_ascii_whitespace().collect();
        matches!(
            words.as_slice(),
            ["-j", "DROP"] | ["-j", "REJECT"] | ["-j", "REJECT", "--reject-with", _]
        )
    });
    policy_drop || final_deny
}

/// Whether the kernel under `root` has IPv6; `None` when `proc` is absent.
fn ipv6_enabled(root: &Path) -> Option<bool> {
    if read::exists(root, "proc/net/if_inet6")? {
        let disabled = read::attribute(root, "proc/sys/net/ipv6/conf/all/disable_ipv6");
        Some(disabled.as_deref() != Some("1"))
    } else {
        // No if_inet6 in a mounted /proc: the kernel has no IPv6.
        read::exists(root, "proc/net")?.then_some(false)
    }
}

/// The three rulesets, each as text or why it is unavailable.
struct Rulesets {
    nft: Result<String, String>,
    iptables: Result<String, String>,
    ip6tables: Result<String, String>,
}

fn gather(origin: &Origin) -> Rulesets {
    match origin {
        Origin::Live => Rulesets {
            nft: run(&["/usr/sbin/nft", "/sbin/nft"], &["-j", "list", "ruleset"]),
            iptables: run(&["/usr/sbin/iptables-save", "/sbin/iptables-save"], &[]),
            ip6tables: run(&["/usr/sbin/ip6tables-save", "/sbin/ip6tables-save"], &[]),
        },
        Origin::Dumps(dir) => {
            let dump = |name: &str| match read::text(dir, name) {
                Read::Text(t) => Ok(t),
                Read::Missing => Err(format!(
                    "no {name} in {} (the live ruleset belongs to this kernel, not to that root)",
                    dir.display()
                )),
                Read::Failed(e) => Err(e),
            };
            Rulesets {
                nft: dump("nft.json"),
                iptables: dump("iptables-save.txt"),
                ip6tables: dump("ip6tables-save.txt"),
            }
        }
    }
}

/// Whether inbound traffic under `root` is denied by default.
pub fn default_deny(root: &Path, origin: &Origin) -> Finding<bool> {
    let rules = gather(origin);
    let mut coverage = Coverage::default();
    let (mut sources, mut obstacles) = (Vec::new(), Vec::new());
    match rules.nft.and_then(|t| nft_coverage(&t)) {
        Ok(c) => {
            coverage.add(c);
            sources.push("nftables");
        }
        Err(e) => obstacles.push(e),
    }
    for (text, family, name) in [
        (
            rules.iptables,
            Coverage {
                ipv4: true,
                ipv6: false,
            },
            "iptables",
        ),
        (
            rules.ip6tables,
            Coverage {
                ipv4: false,
                ipv6: true,
            },
            "ip6tables",
        ),
    ] {
        match text {
            Ok(t) => {
                if iptables_input_denied(&t) {
                    coverage.add(family);
                }
                sources.push(name);
            }
            Err(e) => obstacles.push(e),
        }
    }
    if sources.is_empty() {
        return Finding::unknown(obstacles.join("; "));
    }
    let seen = sources.join(", ");
    match (coverage.ipv4, coverage.ipv6, ipv6_enabled(root)) {
        (true, true, _) | (true, false, Some(false)) => {
            Finding::known(true, format!("input denies by default ({seen})"))
        }
        (false, ..) => Finding::known(
            false,
            format!(
                "IPv4 input is accepted by default: no input chain drops what no rule accepts ({seen})"
            ),
        ),
        (true, false, Some(true)) => Finding::known(
            false,
            format!(
                "IPv4 input denies by default but IPv6 is enabled and its input does not ({seen})"
            ),
        ),
        (true, false, None) => Finding::unknown(format!(
            "IPv4 input denies by default, IPv6 input does not, and whether IPv6 is enabled is unknown ({seen})"
        )),
    }
}

/// Runs the first of `paths` that exists with `args`; its stdout, or why
/// not. A tool that hangs is killed after a few seconds: posture must not
/// stall the agent.
fn run(paths: &[&str], args: &[&str]) -> Result<String, String> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    const MAX_OUTPUT: u64 = 64 * 1024 * 1024;
    let Some(path) = paths.iter().find(|p| Path::new(p).exists()) else {
        return Err(format!(
            "{} is not installed",
            paths.first().copied().unwrap_or("?")
        ));
    };
    let mut child = Command::new(path)
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{path}: {e}"))?;
    // Read both pipes on threads so a full pipe cannot block the child
    // while this thread waits for it to exit.
    let stdout = drain(child.stdout.take(), MAX_OUTPUT);
    let stderr = drain(child.stderr.take(), MAX_OUTPUT);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{path}: no answer in {} s", TIMEOUT.as_secs()));
            }
            Err(e) => break Err(format!("{path}: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status? {
        s if s.success() => Ok(String::from_utf8_lossy(&out).into_owned()),
        s => {
            let err = String::from_utf8_lossy(&err);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let command = std::iter::once(*path).chain(args.iter().copied());
            Err(format!(
                "{} failed ({s}): {first}",
                command.collect::<Vec<_>>().join(" ")
            ))
        }
    }
}

fn drain<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
    max: u64,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(p) = pipe {
            // An error mid-read leaves what was read: the caller judges it.
            let _ = p.take(max).read_to_end(&mut bytes);
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::root;
    use super::*;

    fn nft(items: &str) -> String {
        format!("{{\"nftables\": [{{\"metainfo\": {{\"json_schema_version\": 1}}}}, {items}]}}")
    }

    const CHAIN_IP_ACCEPT: &str = r#"{"chain": {"family": "ip", "table": "t", "name": "in", "hook": "input", "policy": "accept"}}"#;

    #[test]
    fn a_drop_policy_covers_its_family() {
        let inet = nft(
            r#"{"chain": {"family": "inet", "table": "f", "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}"#,
        );
        assert_eq!(
            nft_coverage(&inet),
            Ok(Coverage {
                ipv4: true,
                ipv6: true
            })
        );
        let ip6 = nft(
            r#"{"chain": {"family": "ip6", "table": "f", "name": "input", "hook": "input", "policy": "drop"}}"#,
        );
        assert_eq!(
            nft_coverage(&ip6),
            Ok(Coverage {
                ipv4: false,
                ipv6: true
            })
        );
        let output = nft(
            r#"{"chain": {"family": "inet", "table": "f", "name": "o", "hook": "output", "policy": "drop"}}"#,
        );
        assert_eq!(nft_coverage(&output), Ok(Coverage::default()));
    }

    #[test]
    fn a_final_unconditional_reject_denies_by_default() {
        let rule = |expr: &str| {
            nft(&format!(
                r#"{CHAIN_IP_ACCEPT}, {{"rule": {{"family": "ip", "table": "t", "chain": "in", "expr": {expr}}}}}"#
            ))
        };
        let deny =
            rule(r#"[{"counter": {"packets": 1, "bytes": 2}}, {"reject": {"type": "icmpx"}}]"#);
        assert_eq!(nft_coverage(&deny).map(|c| c.ipv4), Ok(true));
        let conditional = rule(
            r#"[{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}}, {"drop": null}]"#,
        );
        assert_eq!(nft_coverage(&conditional).map(|c| c.ipv4), Ok(false));
        let limited = rule(r#"[{"limit": {"rate": 5, "per": "second"}}, {"drop": null}]"#);
        assert_eq!(nft_coverage(&limited).map(|c| c.ipv4), Ok(false));
        assert_eq!(nft_coverage(&rule("[]")).map(|c| c.ipv4), Ok(false));
    }

    #[test]
    fn dormant_tables_and_bad_json_do_not_count() {
        let dormant = nft(
            r#"{"table": {"family": "inet", "name": "f", "flags": "dormant"}}, {"chain": {"family": "inet", "table": "f", "name": "input", "hook": "input", "policy": "drop"}}"#,
        );
        assert_eq!(nft_coverage(&dormant), Ok(Coverage::default()));
        assert!(nft_coverage("nft: Operation not permitted").is_err());
        assert!(nft_coverage("{\"tables\": []}").is_err());
    }

    #[test]
    fn iptables_save_policy_and_final_rules() {
        let save =
            |body: &str| format!("*nat\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\n{body}\nCOMMIT\n");
        assert!(iptables_input_denied(&save(":INPUT DROP [5:300]")));
        assert!(iptables_input_denied(&save(
            ":INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -j REJECT --reject-with icmp-host-prohibited"
        )));
        assert!(!iptables_input_denied(&save(
            ":INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j DROP"
        )));
        assert!(!iptables_input_denied(&save(
            ":INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n-A INPUT -j ACCEPT"
        )));
        // A DROP policy in another table is not the filter table's.
        assert!(!iptables_input_denied(
            "*mangle\n:INPUT DROP [0:0]\nCOMMIT\n"
        ));
        assert!(!iptables_input_denied(""));
    }

    #[test]
    fn an_inet_drop_chain_passes() {
        let f = default_deny(&root("hardened"), &Origin::for_root(&root("hardened")));
        assert_eq!(f.value, Some(true), "{}", f.why);
        assert!(f.why.contains("nftables"), "{}", f.why);
    }

    #[test]
    fn an_accept_policy_fails_even_beside_a_dormant_drop() {
        let f = default_deny(&root("bare"), &Origin::for_root(&root("bare")));
        assert_eq!(f.value, Some(false), "{}", f.why);
        assert!(f.why.starts_with("IPv4 input is accepted"), "{}", f.why);
    }

    #[test]
    fn ipv4_alone_fails_when_ipv6_is_on_and_passes_when_it_is_off() {
        let f = default_deny(&root("container"), &Origin::for_root(&root("container")));
        assert_eq!(f.value, Some(false), "{}", f.why);
        assert!(f.why.contains("IPv6 is enabled"), "{}", f.why);
        let f = default_deny(&root("appliance"), &Origin::for_root(&root("appliance")));
        assert_eq!(f.value, Some(true), "{}", f.why);
    }

    #[test]
    fn no_ruleset_is_unknown() {
        let f = default_deny(&root("empty"), &Origin::for_root(&root("empty")));
        assert_eq!(f.value, None);
        assert!(f.why.contains("no nft.json"), "{}", f.why);
    }

    #[test]
    fn missing_tools_are_reported_not_run() {
        let r = run(&["/nonexistent/nft"], &["-j"]);
        assert_eq!(r, Err("/nonexistent/nft is not installed".into()));
    }

    #[test]
    fn a_failing_tool_reports_its_error() {
        let r = run(
            &["/bin/sh", "/usr/bin/sh"],
            &["-c", "echo denied >&2; exit 1"],
        );
        let e = r.expect_err("exit 1");
        assert!(e.contains("failed") && e.ends_with("denied"), "{e}");
        let r = run(&["/bin/sh", "/usr/bin/sh"], &["-c", "echo ok"]);
        assert_eq!(r, Ok("ok\n".into()));
    }
}
