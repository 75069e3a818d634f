//! File access for the collectors, relative to the root they inspect.
//!
//! Every read is capped: the files are ordinary system files, but a log can
//! be large and a bad root can hold anything. A missing file and one that
//! could not be read are different answers — the first is often evidence
//! ("ClamAV is not installed"), the second never is ("permission denied"
//! says nothing about the device) — so the result keeps them apart.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// The outcome of reading one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Text(String),
    /// The file does not exist.
    Missing,
    /// It exists (or may) but could not be read; the message says why.
    Failed(String),
}

/// Why a file or directory gave nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Absent {
    Missing,
    Failed(String),
}

impl From<Absent> for Read {
    fn from(a: Absent) -> Self {
        match a {
            Absent::Missing => Read::Missing,
            Absent::Failed(e) => Read::Failed(e),
        }
    }
}

/// Largest configuration-style file read whole (os-release, sysfs
/// attributes, rulesets).
pub const MAX_FILE: u64 = 4 * 1024 * 1024;
/// How much of the end of a log is read: the newest entries are at the end,
/// and a month of dpkg or scan logs is well under this.
pub const MAX_LOG_TAIL: u64 = 8 * 1024 * 1024;

/// Reads `root/rel` whole, or fails when it is larger than `MAX_FILE`.
pub fn text(root: &Path, rel: &str) -> Read {
    let path = root.join(rel);
    let result = std::fs::File::open(&path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match result {
        Ok(bytes) if bytes.len() as u64 > MAX_FILE => {
            Read::Failed(format!("{rel}: larger than {MAX_FILE} bytes"))
        }
        Ok(bytes) => Read::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => failure(rel, &e).into(),
    }
}

/// Reads the last `MAX_LOG_TAIL` bytes of `root/rel`, starting at a line
/// boundary.
pub fn log_tail(root: &Path, rel: &str) -> Read {
    let path = root.join(rel);
    let result = std::fs::File::open(&path).and_then(|mut f| {
        let len = f.metadata()?.len();
        let cut = len > MAX_LOG_TAIL;
        if cut {
            f.seek(SeekFrom::Start(len - MAX_LOG_TAIL))?;
        }
        let mut bytes = Vec::new();
        f.take(MAX_LOG_TAIL).read_to_end(&mut bytes)?;
        if cut {
            // The first line is a fragment of an older entry.
            let start = bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            bytes.drain(..start);
        }
        Ok(bytes)
    });
    match result {
        Ok(bytes) => Read::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => failure(rel, &e).into(),
    }
}

/// The first `n` bytes of `root/rel` (file headers).
pub fn head(root: &Path, rel: &str, n: u64) -> Result<Vec<u8>, Absent> {
    let path = root.join(rel);
    let result = std::fs::File::open(&path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(n).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    result.map_err(|e| failure(rel, &e))
}

/// Whether `root/rel` exists; `None` when that cannot be told.
pub fn exists(root: &Path, rel: &str) -> Option<bool> {
    // `symlink_metadata`: a dangling symlink is still something installed.
    match std::fs::symlink_metadata(root.join(rel)) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// The names in directory `root/rel`, sorted; at most `max` of them.
pub fn dir_names(root: &Path, rel: &str, max: usize) -> Result<Vec<String>, Absent> {
    let entries = std::fs::read_dir(root.join(rel)).map_err(|e| failure(rel, &e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .take(max)
        .collect();
    names.sort();
    Ok(names)
}

/// The first line of a small attribute file, trimmed; `None` when missing,
/// unreadable or empty.
pub fn attribute(root: &Path, rel: &str) -> Option<String> {
    match text(root, rel) {
        Read::Text(t) => t
            .lines()
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
        Read::Missing | Read::Failed(_) => None,
    }
}

fn failure(rel: &str, e: &std::io::Error) -> Absent {
    if e.kind() == std::io::ErrorKind::NotFound {
        Absent::Missing
    } else {
        Absent::Failed(format!("{rel}: {e}"))
    }
}
