//! What a timed phase prints: a human-readable summary and one
//! `RESULT {json}` line that bench/revocation.sh turns into tables.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::measure::{How, Sample};
use crate::stats;

pub struct Timed {
    pub how: How,
    pub sessions: usize,
    pub samples: Vec<Sample>,
    /// Revocations that are not measurements (a tunnel already dead, an
    /// API error).
    pub errors: Vec<String>,
    pub wall: f64,
    /// Admin connections opened during the phase.
    pub reconnects: u64,
    /// This benchmark's processes: cores used on average, by name.
    pub cpu_cores: BTreeMap<String, f64>,
    pub others_cores: f64,
    pub busiest_others: Vec<(String, f64)>,
    pub timeout_ms: u64,
    pub pause_ms: u64,
    pub max_others: f64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prints the phase; `true` if any revocation failed.
pub fn phase(t: &Timed) -> bool {
    let samples = &t.samples;
    let closed: Vec<f64> = samples.iter().filter_map(|s| s.close_ms).collect();
    let timeouts = samples.iter().filter(|s| s.close_ms.is_none()).count();
    let before_response = samples
        .iter()
        .filter(|s| s.close_ms.is_some_and(|c| c < s.response_ms))
        .count();
    let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_gateway: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in samples {
        *ends.entry(s.end.as_str()).or_default() += 1;
        if let Some(c) = s.close_ms {
            by_gateway.entry(s.gateway.as_str()).or_default().push(c);
        }
    }
    let by_gateway: BTreeMap<&str, Value> = by_gateway
        .iter()
        .map(|(g, v)| (*g, stats::summary(v)))
        .collect();
    let cpu: BTreeMap<&str, f64> = t
        .cpu_cores
        .iter()
        .map(|(n, c)| (n.as_str(), round3(*c)))
        .collect();
    let close = stats::summary(&closed);
    let response = stats::summary(&samples.iter().map(|s| s.response_ms).collect::<Vec<_>>());

    println!(
        "{}",
        stats::line("revoke request sent -> tunnel closed", &close)
    );
    for (g, s) in &by_gateway {
        println!("{}", stats::line(&format!("  through gateway {g}"), s));
    }
    println!(
        "{}",
        stats::line("revoke request sent -> API response read", &response)
    );
    println!(
        "checks      : {} measured, {} closed, {timeouts} NOT closed within {} ms, {} other failures; {before_response} closed before the API response was read; ends {ends:?}",
        samples.len(),
        closed.len(),
        t.timeout_ms,
        t.errors.len()
    );
    println!(
        "admin HTTP  : one keep-alive HTTP/1.1 connection over TLS, opened and warmed before the phase; {} new connection(s) during it",
        t.reconnects
    );
    println!(
        "cpu         : over {:.1} s, cores used: {cpu:?}; other processes {:.3}{} (busiest {:?})",
        t.wall,
        t.others_cores,
        if t.others_cores > t.max_others {
            " (!)"
        } else {
            ""
        },
        t.busiest_others
    );
    for e in t.errors.iter().take(10) {
        println!("!!!! {e}");
    }
    let result = json!({
        "phase": t.how.name(),
        "sessions": t.sessions,
        "close_ms": close,
        "close_ms_by_gateway": by_gateway,
        "response_ms": response,
        "timeouts": timeouts,
        "errors": t.errors.len(),
        "closed_before_response": before_response,
        "ends": ends,
        "admin_reconnects": t.reconnects,
        "pause_ms": t.pause_ms,
        "timeout_ms": t.timeout_ms,
        "wall_seconds": (t.wall * 10.0).round() / 10.0,
        "cpu_cores": cpu,
        "others_cores": round3(t.others_cores),
    });
    println!("RESULT {result}");
    timeouts > 0 || !t.errors.is_empty()
}
