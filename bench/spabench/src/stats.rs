//! Medians, percentiles and the `RESULT {json}` lines bench/spa.sh parses.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Map, Value, json};

/// Prints one result line. bench/spa.sh keeps every line starting with
/// `RESULT ` and builds its summary from them only.
pub fn emit(v: Value) {
    println!("RESULT {v}");
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of an unsorted sample.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// p50/p90/p99/max/mean of a latency sample, in milliseconds, rounded to µs.
pub fn latency_ms(v: &[f64]) -> Value {
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    json!({
        "n": v.len(),
        "p50": r(percentile(v, 50.0)),
        "p90": r(percentile(v, 90.0)),
        "p99": r(percentile(v, 99.0)),
        "max": r(percentile(v, 100.0)),
        "mean": r(mean),
    })
}

/// This thread's CPU time (`/proc/thread-self/schedstat`, ns). The yield
/// makes the kernel account the slice now running, so the figure is
/// current to within microseconds.
fn thread_cpu_secs() -> f64 {
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// Rates measured over several passes, by the wall clock and per second of
/// this thread's CPU time. On an idle machine the two agree; when other
/// work preempts the thread only the CPU figure stays a per-core rate.
#[derive(Default)]
pub struct Passes {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    started: Option<(Instant, f64)>,
}

impl Passes {
    pub fn start(&mut self) {
        self.started = Some((Instant::now(), thread_cpu_secs()));
    }

    /// Ends the pass started last: `n` packets were handled.
    pub fn finish(&mut self, n: usize) {
        let cpu1 = thread_cpu_secs();
        if let Some((t, cpu0)) = self.started.take() {
            self.wall.push(n as f64 / t.elapsed().as_secs_f64());
            self.cpu.push(n as f64 / (cpu1 - cpu0));
        }
    }

    /// One result line: the medians are what the summary uses; every pass
    /// is kept in the raw output.
    pub fn emit(&self, bench: &str, what: &str, extra: Value) {
        let round = |v: &[f64]| v.iter().map(|x| x.round()).collect::<Vec<_>>();
        let mut m = Map::new();
        m.insert("bench".into(), json!(bench));
        m.insert("what".into(), json!(what));
        m.insert("per_sec_median".into(), json!(median(&self.wall).round()));
        m.insert(
            "per_cpu_sec_median".into(),
            json!(median(&self.cpu).round()),
        );
        m.insert("per_pass".into(), json!(round(&self.wall)));
        m.insert("per_cpu_sec_per_pass".into(), json!(round(&self.cpu)));
        if let Value::Object(extra) = extra {
            m.extend(extra);
        }
        emit(Value::Object(m));
    }
}

/// Counts of refusal labels, for checking that garbage was refused for the
/// reason the measurement is about (and not, say, because it went stale).
#[derive(Default)]
pub struct Labels(pub BTreeMap<&'static str, u64>);

impl Labels {
    pub fn add(&mut self, label: &'static str) {
        *self.0.entry(label).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `Err` unless every counted refusal is `expected`, except those in
    /// `also` (reasons a few packets may legitimately hit, e.g. random
    /// bytes that happen to pass a cheap check).
    pub fn check(&self, what: &str, expected: &str, also: &[&str]) -> Result<(), String> {
        let wrong: u64 = self
            .0
            .iter()
            .filter(|(k, _)| **k != expected && !also.contains(k))
            .map(|(_, n)| n)
            .sum();
        if wrong > 0 || self.0.get(expected).copied().unwrap_or(0) == 0 {
            return Err(format!(
                "{what}: expected every packet refused as {expected}, got {:?}",
                self.0
            ));
        }
        Ok(())
    }

    pub fn json(&self) -> Value {
        json!(self.0)
    }
}
