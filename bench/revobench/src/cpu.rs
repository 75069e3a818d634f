//! CPU time from /proc: waiting for a quiet machine before a timed phase,
//! and what other processes used during it (as bench/loadgen does).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// CPU seconds of every user-space process (kernel threads left out), by
/// pid, with its command name.
pub fn all_processes() -> HashMap<u32, (f64, String)> {
    let mut m = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        // Fields from the third on: state is 0, flags 6, utime 11, stime 12.
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let flags: u64 = f.get(6).and_then(|x| x.parse().ok()).unwrap_or(0);
        if flags & 0x0020_0000 != 0 {
            continue; // PF_KTHREAD
        }
        let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        m.insert(pid, ((t(11) + t(12)) / 100.0, comm)); // USER_HZ is 100 on Linux
    }
    m
}

/// CPU seconds used between two scans by processes not in `ours`, and the
/// three busiest of them.
pub fn others(
    before: &HashMap<u32, (f64, String)>,
    after: &HashMap<u32, (f64, String)>,
    ours: &[u32],
) -> (f64, Vec<(String, f64)>) {
    let mut list: Vec<(String, f64)> = after
        .iter()
        .filter(|(pid, _)| !ours.contains(pid))
        .map(|(pid, (cpu, comm))| {
            let d = cpu - before.get(pid).map_or(0.0, |b| b.0);
            (format!("{comm}[{pid}]"), d.max(0.0))
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = list.iter().map(|x| x.1).sum();
    list.truncate(3);
    (total, list)
}

/// CPU seconds of `pids` in a scan.
pub fn of(scan: &HashMap<u32, (f64, String)>, pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| scan.get(p)).map(|x| x.0).sum()
}

/// Waits until processes other than `ours` use less than `max_cores` over
/// 3 s, for at most `timeout`; prints what it found either way.
pub async fn quiet(ours: &[u32], max_cores: f64, timeout: Duration) {
    let start = Instant::now();
    let window = Duration::from_secs(3);
    loop {
        let before = all_processes();
        tokio::time::sleep(window).await;
        let after = all_processes();
        let (cpu, top) = others(&before, &after, ours);
        let cores = cpu / window.as_secs_f64();
        if cores < max_cores {
            println!(
                "quiet       : other processes {cores:.3} cores over 3 s, after {:.0} s of waiting",
                start.elapsed().as_secs_f64()
            );
            return;
        }
        if start.elapsed() >= timeout {
            println!(
                "WARNING     : NOT QUIET: other processes still used {cores:.2} cores over 3 s after {:.0} s of waiting (busiest: {top:?}); measuring anyway",
                timeout.as_secs_f64()
            );
            return;
        }
    }
}
