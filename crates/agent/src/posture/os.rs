//! The operating system: distribution and version from os-release, the
//! running kernel, and the hostname.
//!
//! - `etc/os-release`, else `usr/lib/os-release` (the order os-release(5)
//!   gives): `ID` and `VERSION_ID` say which distribution release the
//!   packages come from, which is what a minimum-version policy compares.
//!   The spec lets a reader assume `ID=linux` when `ID` is absent; that
//!   would be a guess, so it is reported as unknown.
//! - `proc/sys/kernel/osrelease`: the release of the kernel that is
//!   *running*, which can lag the installed one until a reboot.
//! - `etc/hostname`, else `proc/sys/kernel/hostname`.

use std::path::Path;

use super::read::{self, Read};
use super::{Finding, wire_text};

/// The fields of os-release the report uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release: `KEY=value` lines, where the value may be quoted as
/// in a shell (double quotes with `\` escapes, or single quotes).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut out = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let Some(value) = unquote(raw).and_then(|v| wire_text(&v)) else {
            continue;
        };
        match key {
            "ID" => out.id = Some(value),
            "VERSION_ID" => out.version_id = Some(value),
            "PRETTY_NAME" => out.pretty_name = Some(value),
            _ => {}
        }
    }
    out
}

/// A shell-quoted value; `None` for an unterminated quote.
fn unquote(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        return inner.strip_suffix('\'').map(str::to_owned);
    }
    let Some(inner) = raw.strip_prefix('"') else {
        return Some(raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            // Inside double quotes only these are escapes in a shell.
            ('\\', Some(next @ ('\\' | '"' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// os-release and the path it came from, or why there is none.
fn os_release(root: &Path) -> Result<(OsRelease, &'static str), String> {
    const PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];
    for rel in PATHS {
        match read::text(root, rel) {
            Read::Text(t) => return Ok((parse_os_release(&t), rel)),
            Read::Missing => {}
            Read::Failed(e) => return Err(e),
        }
    }
    Err("neither etc/os-release nor usr/lib/os-release exists".into())
}

fn source(rel: &str, os: &OsRelease) -> String {
    match &os.pretty_name {
        Some(name) => format!("{rel}: {name}"),
        None => rel.to_owned(),
    }
}

pub fn os_id(root: &Path) -> Finding<String> {
    match os_release(root) {
        Ok((os, rel)) => match os.id.clone() {
            Some(id) => Finding::known(id, source(rel, &os)),
            None => Finding::unknown(format!("{rel} has no ID")),
        },
        Err(e) => Finding::unknown(e),
    }
}

pub fn os_version(root: &Path) -> Finding<String> {
    match os_release(root) {
        Ok((os, rel)) => match os.version_id.clone() {
            Some(v) => Finding::known(v, source(rel, &os)),
            None => Finding::unknown(format!("{rel} has no VERSION_ID (a rolling release?)")),
        },
        Err(e) => Finding::unknown(e),
    }
}

pub fn kernel(root: &Path) -> Finding<String> {
    const REL: &str = "proc/sys/kernel/osrelease";
    match read::text(root, REL) {
        Read::Text(t) => match wire_text(&t) {
            Some(release) => Finding::known(release, REL),
            None => Finding::unknown(format!("{REL} is empty or not text")),
        },
        Read::Missing => Finding::unknown(format!("{REL} does not exist (is /proc mounted?)")),
        Read::Failed(e) => Finding::unknown(e),
    }
}

/// The configured hostname, else the kernel's, else `localhost`: the
/// report needs one (the controller refuses an empty hostname), and this
/// one only names the device for humans.
pub fn hostname(root: &Path) -> String {
    ["etc/hostname", "proc/sys/kernel/hostname"]
        .iter()
        .find_map(|rel| read::attribute(root, rel).and_then(|h| wire_text(&h)))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::root;
    use super::*;

    #[test]
    fn os_release_values_are_unquoted_like_a_shell_would() {
        let os = parse_os_release(
            "# comment\nID=debian\nVERSION_ID=\"12\"\n\
             PRETTY_NAME=\"Say \\\"hi\\\" \\\\ to \\$HOME and \\n\"\nBROKEN=\"open\n",
        );
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Say \"hi\" \\ to $HOME and \\n")
        );
        let os = parse_os_release("ID='arch'\nVERSION_ID=''\n");
        assert_eq!(os.id.as_deref(), Some("arch"));
        assert_eq!(os.version_id, None, "an empty value is no value");
    }

    #[test]
    fn values_unfit_for_the_report_are_dropped() {
        let long = "x".repeat(300);
        let os = parse_os_release(&format!("ID={long}\nVERSION_ID=\"1\u{7}\"\n"));
        assert_eq!(os, OsRelease::default());
    }

    #[test]
    fn etc_os_release_and_the_running_kernel() {
        let r = root("hardened");
        assert_eq!(os_id(&r).value.as_deref(), Some("debian"));
        assert_eq!(
            os_version(&r).why,
            "etc/os-release: Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(kernel(&r).value.as_deref(), Some("6.1.0-37-amd64"));
        assert_eq!(hostname(&r), "laptop-7");
    }

    #[test]
    fn usr_lib_os_release_is_the_fallback() {
        let r = root("container");
        assert_eq!(os_version(&r).value.as_deref(), Some("12"));
        assert!(os_version(&r).why.starts_with("usr/lib/os-release"));
        assert_eq!(hostname(&r), "4f2a9c1d7e3b", "the kernel's hostname");
    }

    #[test]
    fn a_rolling_release_has_no_version() {
        let r = root("appliance");
        assert_eq!(os_id(&r).value.as_deref(), Some("arch"));
        let v = os_version(&r);
        assert_eq!(v.value, None);
        assert!(v.why.contains("no VERSION_ID"), "{}", v.why);
    }

    #[test]
    fn missing_files_are_unknown() {
        let r = root("empty");
        assert_eq!(os_id(&r).value, None);
        assert!(os_id(&r).why.contains("neither"));
        assert_eq!(kernel(&r).value, None);
        assert_eq!(hostname(&r), "localhost");
    }
}
