//! Counters for people measuring copy-on-write cost: copy-ups, bytes copied, copy-up latency,
//! whiteouts written, and (from the index) the lookup hit rate. Lock-free atomics, cheap enough
//! to stay on in production; read by `stats` and printed on SIGUSR1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency buckets: bucket i counts copy-ups that took under 2^i microseconds.
const BUCKETS: usize = 40;

#[derive(Debug)]
pub struct Metrics {
    pub copy_ups: AtomicU64,
    pub copy_up_bytes: AtomicU64,
    pub copy_up_reflinks: AtomicU64,
    pub whiteouts: AtomicU64,
    pub opaque_dirs: AtomicU64,
    /// Opens answered with FUSE passthrough (the kernel then does their I/O itself).
    pub passthrough_opens: AtomicU64,
    /// Names the kernel was asked to drop to keep the node table bounded (see `reaper`).
    pub nodes_reaped: AtomicU64,
    latency_us: [AtomicU64; BUCKETS],
    /// When the union was set up, for rates in the report.
    pub started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            copy_ups: AtomicU64::new(0),
            copy_up_bytes: AtomicU64::new(0),
            copy_up_reflinks: AtomicU64::new(0),
            whiteouts: AtomicU64::new(0),
            opaque_dirs: AtomicU64::new(0),
            passthrough_opens: AtomicU64::new(0),
            nodes_reaped: AtomicU64::new(0),
            latency_us: std::array::from_fn(|_| AtomicU64::new(0)),
            started: Instant::now(),
        }
    }
}

impl Metrics {
    pub fn record_copy_up(&self, bytes: u64, reflink: bool, took: Duration) {
        self.copy_ups.fetch_add(1, Ordering::Relaxed);
        self.copy_up_bytes.fetch_add(bytes, Ordering::Relaxed);
        if reflink {
            self.copy_up_reflinks.fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros().max(1) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.latency_us[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_whiteout(&self) {
        self.whiteouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_opaque(&self) {
        self.opaque_dirs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_reaped(&self) {
        self.nodes_reaped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_passthrough_open(&self) {
        self.passthrough_opens.fetch_add(1, Ordering::Relaxed);
    }

    /// The non-empty latency buckets as (upper bound in microseconds, count), fastest first.
    pub fn copy_up_latency_histogram(&self) -> Vec<(u64, u64)> {
        self.latency_us
            .iter()
            .enumerate()
            .map(|(i, c)| (1u64 << i, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Upper bound (in microseconds) under which `q` (0..=1) of copy-ups completed.
    pub fn copy_up_latency_quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency_us
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(1u64 << i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let m = Metrics::default();
        assert_eq!(m.copy_up_latency_quantile_us(0.5), None);
        for _ in 0..9 {
            m.record_copy_up(10, false, Duration::from_micros(3));
        }
        m.record_copy_up(10, false, Duration::from_millis(100));
        assert!(m.copy_up_latency_quantile_us(0.5).unwrap() <= 4);
        assert!(m.copy_up_latency_quantile_us(1.0).unwrap() >= 100_000);
        assert_eq!(m.copy_up_bytes.load(Ordering::Relaxed), 100);
        let hist = m.copy_up_latency_histogram();
        assert_eq!(hist.iter().map(|&(_, n)| n).sum::<u64>(), 10);
        assert_eq!(hist[0], (4, 9));
    }
}
