//! Stats summarises latencies.

use std::time::Duration;

/// Stats summarises latencies in milliseconds.
#[derive(Clone, Copy)]
pub struct Stats {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// quantile interpolates linearly between the two nearest samples of `sorted`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// stats summarises `latencies`.
pub fn stats(latencies: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = latencies.iter().map(|d| ms(*d)).collect();
    ms.sort_by(f64::total_cmp);
    Stats {
        p50: quantile(&ms, 0.5),
        p95: quantile(&ms, 0.95),
        p99: quantile(&ms, 0.99),
    }
}

/// ms is `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_samples() {
        let s = stats(&[1, 2, 3, 4, 5].map(Duration::from_millis));
        assert_eq!(s.p50, 3.0);
        assert!((s.p95 - 4.8).abs() < 1e-9, "{}", s.p95);
        assert!(stats(&[]).p50.is_nan());
    }
}
