//! Antivirus: an engine, the age of its signatures, and the last scan.
//!
//! ClamAV is the engine the agent can inspect:
//! - Installed: `usr/bin/clamscan`, `usr/bin/clamdscan` or `usr/sbin/clamd`
//!   exists. Their absence from a root that has a `usr/bin` is evidence that
//!   ClamAV is not installed; a root without `usr/bin` is not an installed
//!   system, and says nothing.
//! - Signatures: `var/lib/clamav/daily.{cld,cvd}`. An engine without them
//!   detects nothing, so "installed" alone is not "active". Their age comes
//!   from the database header, whose last field is the build time in Unix
//!   seconds; the file's mtime would say when freshclam wrote it, which for
//!   a restored or copied database is not how old the signatures are.
//! - Last scan: the newest `End Date:` of a clamscan summary in
//!   `var/log/clamav/*.log` (clamscan writes one per run with `--log`).
//!
//! Other engines keep their state in formats the agent does not read. When
//! one is installed the answer is unknown, not "no antivirus".

use std::path::Path;

use super::read::{self, Absent, Read};
use super::{CLOCK_SLACK_SECS, Finding, date, log_time};

const CLAMAV_BINARIES: [&str; 3] = ["usr/bin/clamscan", "usr/bin/clamdscan", "usr/sbin/clamd"];
const CLAMAV_DB: &str = "var/lib/clamav";
const CLAMAV_LOGS: &str = "var/log/clamav";
/// Engines recognised but not inspected: (name, a path their package owns).
const OTHER_ENGINES: [(&str, &str); 4] = [
    ("CrowdStrike Falcon", "opt/CrowdStrike/falconctl"),
    ("Microsoft Defender for Endpoint", "opt/microsoft/mdatp"),
    ("Sophos Protection for Linux", "opt/sophos-spl"),
    ("ESET", "opt/eset"),
];
/// A ClamAV database header is the first 512 bytes.
const CVD_HEADER_LEN: u64 = 512;

/// What the collector found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Antivirus {
    /// An engine with signatures is installed.
    pub engine: Finding<bool>,
    /// When its signatures were built.
    pub signatures: Finding<i64>,
    /// When its last scan ended.
    pub last_scan: Finding<i64>,
}

/// The parts of a ClamAV database header the report uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CvdHeader {
    pub version: u64,
    /// Build time, Unix seconds.
    pub built: i64,
}

/// Parses `ClamAV-VDB:<date>:<version>:<sigs>:<level>:<md5>:<dsig>:<builder>:<unix time>`
/// padded with spaces to 512 bytes. The human date uses `-` for its own
/// colons, so the fields split cleanly.
pub fn parse_cvd_header(head: &[u8]) -> Option<CvdHeader> {
    let text = std::str::from_utf8(head.get(..CVD_HEADER_LEN as usize).unwrap_or(head)).ok()?;
    let fields: Vec<&str> = text.trim_end_matches([' ', '\0']).split(':').collect();
    match fields.as_slice() {
        ["ClamAV-VDB", _, version, _, _, _, _, _, built, ..] => Some(CvdHeader {
            version: version.trim().parse().ok()?,
            built: built.trim().parse().ok().filter(|&t: &i64| t > 0)?,
        }),
        _ => None,
    }
}

/// The newest clamscan summary end time in a log (`End Date:   2025:06:14
/// 02:05:33`, local time without a zone); entries after `not_after` are
/// ignored.
pub fn parse_scan_log(text: &str, not_after: i64) -> Option<i64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("End Date:")?;
            let mut parts = rest.split_ascii_whitespace();
            let (d, t) = (parts.next()?, parts.next()?);
            log_time(&d.replace(':', "-"), t)
        })
        .filter(|&t| t <= not_after)
        .max()
}

pub fn collect(root: &Path, now: i64) -> Antivirus {
    let last_scan = last_scan(root, now);
    let installed = CLAMAV_BINARIES
        .iter()
        .find(|rel| read::exists(root, rel) == Some(true));
    let Some(binary) = installed else {
        return Antivirus {
            engine: no_clamav(root),
            signatures: Finding::unknown("no ClamAV to have signatures"),
            last_scan,
        };
    };
    let (engine, signatures) = match newest_database(root) {
        Ok(Some((rel, h))) => (
            Finding::known(
                true,
                format!("ClamAV ({binary}), {rel} version {}", h.version),
            ),
            Finding::known(h.built, format!("{rel} header")),
        ),
        Ok(None) => {
            let why = format!(
                "ClamAV is installed ({binary}) but {CLAMAV_DB} holds no daily signatures (has freshclam run?)"
            );
            (Finding::known(false, why.clone()), Finding::unknown(why))
        }
        Err(e) => (Finding::unknown(e.clone()), Finding::unknown(e)),
    };
    Antivirus {
        engine,
        signatures,
        last_scan,
    }
}

/// Without ClamAV: another known engine makes it unknown; none, in a root
/// where one would be installed, is "no".
fn no_clamav(root: &Path) -> Finding<bool> {
    if let Some((name, rel)) = OTHER_ENGINES
        .iter()
        .find(|(_, rel)| read::exists(root, rel) == Some(true))
    {
        return Finding::unknown(format!(
            "{name} is installed ({rel}); the agent cannot read its state"
        ));
    }
    match read::exists(root, "usr/bin") {
        Some(true) => Finding::known(
            false,
            format!(
                "no supported antivirus engine: none of {} exists",
                CLAMAV_BINARIES.join(", ")
            ),
        ),
        _ => Finding::unknown("usr/bin does not exist: not an installed system"),
    }
}

/// The daily database with the highest version, if any; an error when one
/// exists but cannot be read or parsed.
fn newest_database(root: &Path) -> Result<Option<(String, CvdHeader)>, String> {
    let mut best: Option<(String, CvdHeader)> = None;
    for name in ["daily.cld", "daily.cvd"] {
        let rel = format!("{CLAMAV_DB}/{name}");
        let head = match read::head(root, &rel, CVD_HEADER_LEN) {
            Ok(head) => head,
            Err(Absent::Missing) => continue,
            Err(Absent::Failed(e)) => return Err(e),
        };
        let header =
            parse_cvd_header(&head).ok_or(format!("{rel}: not a ClamAV database header"))?;
        if best
            .as_ref()
            .is_none_or(|(_, b)| header.version > b.version)
        {
            best = Some((rel, header));
        }
    }
    Ok(best)
}

fn last_scan(root: &Path, now: i64) -> Finding<i64> {
    let names = match read::dir_names(root, CLAMAV_LOGS, 256) {
        Ok(names) => names,
        Err(Absent::Missing) => {
            return Finding::unknown(format!("no {CLAMAV_LOGS}: no scan has been logged"));
        }
        Err(Absent::Failed(e)) => return Finding::unknown(e),
    };
    let mut newest: Option<(i64, String)> = None;
    let mut failures = Vec::new();
    // Current and once-rotated logs; older ones are compressed.
    for name in names
        .iter()
        .filter(|n| n.ends_with(".log") || n.ends_with(".log.1"))
    {
        let rel = format!("{CLAMAV_LOGS}/{name}");
        match read::log_tail(root, &rel) {
            Read::Text(t) => {
                if let Some(t) = parse_scan_log(&t, now.saturating_add(CLOCK_SLACK_SECS))
                    && newest.as_ref().is_none_or(|(n, _)| t > *n)
                {
                    newest = Some((t, rel));
                }
            }
            Read::Missing => {}
            Read::Failed(e) => failures.push(e),
        }
    }
    match newest {
        Some((t, rel)) => Finding::known(t, format!("clamscan summary in {rel}, {}", date(t))),
        None if !failures.is_empty() => Finding::unknown(failures.join("; ")),
        None => Finding::unknown(format!(
            "no clamscan summary in {CLAMAV_LOGS}/*.log (scans leave one only when run with --log)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NOW, root};
    use super::*;

    fn padded(header: &str) -> Vec<u8> {
        let mut bytes = format!("{header:<512}").into_bytes();
        bytes.extend_from_slice(b"\x1f\x8bbody");
        bytes
    }

    #[test]
    fn cvd_and_cld_headers_parse() {
        let cvd =
            padded("ClamAV-VDB:16 Sep 2021 08-32 -0400:62:6647427:90:a1b2:OUVF:raynman:1631795520");
        assert_eq!(
            parse_cvd_header(&cvd),
            Some(CvdHeader {
                version: 62,
                built: 1_631_795_520
            })
        );
        let cld =
            padded("ClamAV-VDB:15 Jun 2025 04-30 -0400:27669:2074012:90:X:X:raynman:1749976200");
        assert_eq!(parse_cvd_header(&cld).map(|h| h.version), Some(27669));
    }

    #[test]
    fn anything_else_is_not_a_header() {
        for bad in [
            padded("ClamAV-VDB:15 Jun 2025:27669"),
            padded("ClamAV-VDB:d:v:1:90:X:X:b:1749976200"),
            padded("NotClamAV:d:1:1:90:X:X:b:1749976200"),
            padded("ClamAV-VDB:d:1:1:90:X:X:b:0"),
            vec![0xff; 600],
            Vec::new(),
        ] {
            assert_eq!(
                parse_cvd_header(&bad),
                None,
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn the_newest_scan_summary_counts() {
        let log = "Start Date: 2025:06:07 01:55:21\nEnd Date:   2025:06:07 02:05:33\n\
                   End Date:   2025:06:14 02:05:33\nEnd Date:   2031:01:01 00:00:00\nEnd Date: garbage\n";
        assert_eq!(parse_scan_log(log, NOW), log_time("2025-06-14", "02:05:33"));
        assert_eq!(
            parse_scan_log("Sun Jun 15 08:31:02 2025 -> updated\n", NOW),
            None
        );
    }

    #[test]
    fn clamav_with_fresh_signatures_and_a_scan() {
        let av = collect(&root("hardened"), NOW);
        assert_eq!(av.engine.value, Some(true), "{}", av.engine.why);
        assert!(
            av.engine.why.contains("daily.cld version 27669"),
            "{}",
            av.engine.why
        );
        assert_eq!(av.signatures.value, Some(1_749_976_200));
        assert_eq!(av.last_scan.value, log_time("2025-06-14", "02:05:33"));
        assert!(
            av.last_scan.why.contains("scan.log"),
            "{}",
            av.last_scan.why
        );
    }

    #[test]
    fn no_engine_on_an_installed_system_is_no() {
        let av = collect(&root("bare"), NOW);
        assert_eq!(av.engine.value, Some(false), "{}", av.engine.why);
        assert_eq!((av.signatures.value, av.last_scan.value), (None, None));
    }

    #[test]
    fn clamav_without_signatures_is_no() {
        let av = collect(&root("container"), NOW);
        assert_eq!(av.engine.value, Some(false), "{}", av.engine.why);
        assert!(av.engine.why.contains("freshclam"), "{}", av.engine.why);
        assert_eq!(av.last_scan.value, None);
        assert!(av.last_scan.why.contains("--log"), "{}", av.last_scan.why);
    }

    #[test]
    fn an_engine_the_agent_cannot_read_is_unknown() {
        let av = collect(&root("appliance"), NOW);
        assert_eq!(av.engine.value, None);
        assert!(
            av.engine.why.starts_with("CrowdStrike Falcon"),
            "{}",
            av.engine.why
        );
    }

    #[test]
    fn an_empty_root_says_nothing_about_antivirus() {
        let av = collect(&root("empty"), NOW);
        assert_eq!(av.engine.value, None, "{}", av.engine.why);
        assert_eq!(av.last_scan.value, None);
    }
}
