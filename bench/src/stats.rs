//! Stats summarises latencies.

use std::time::Duration;

/// Stats summarises latencies in milliseconds.
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
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
        n: ms.len(),
        min: ms.first().copied().unwrap_or(f64::NAN),
        p50: quantile(&ms, 0.5),
        p90: quantile(&ms, 0.9),
        p99: quantile(&ms, 0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
        mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
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
        assert_eq!((s.n, s.min, s.max, s.mean), (5, 1.0, 5.0, 3.0));
        assert_eq!(s.p50, 3.0);
        assert!((s.p90 - 4.6).abs() < 1e-9, "{}", s.p90);
        assert!(stats(&[]).p50.is_nan());
    }
}
