//! Nearest-rank percentiles of latencies in milliseconds.

use serde_json::{Value, json};

/// The value at or below which `p` % of `sorted` lie (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summary(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "n": v.len(),
        "min": r(v.first().copied().unwrap_or(f64::NAN)),
        "p50": r(percentile(&v, 50.0)),
        "p90": r(percentile(&v, 90.0)),
        "p99": r(percentile(&v, 99.0)),
        "max": r(v.last().copied().unwrap_or(f64::NAN)),
        "mean": r(mean),
    })
}

/// `label: n=… p50 … p90 … p99 … max … ms` for the human-readable output.
pub fn line(label: &str, s: &Value) -> String {
    format!(
        "{label:<44} n={:<5} min {:>8.2}  p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  max {:>8.2}  mean {:>8.2} ms",
        s["n"],
        s["min"].as_f64().unwrap_or(f64::NAN),
        s["p50"].as_f64().unwrap_or(f64::NAN),
        s["p90"].as_f64().unwrap_or(f64::NAN),
        s["p99"].as_f64().unwrap_or(f64::NAN),
        s["max"].as_f64().unwrap_or(f64::NAN),
        s["mean"].as_f64().unwrap_or(f64::NAN),
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
