//! A small timing harness for `cargo bench` (harness = false): every case runs beside a baseline
//! that does the same work directly, and the report gives both medians and their ratio.
//!
//! Each measurement repeats the closure in batches sized to take about 20 ms and reports the
//! median time per call over the batches, which shrugs off the odd scheduling hiccup of a
//! shared machine. `cargo bench -- WORD` runs only the cases whose name contains WORD.

#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Wall-clock budget per measured closure.
const BUDGET: Duration = Duration::from_millis(400);
const BATCH_TARGET: Duration = Duration::from_millis(20);

pub struct Bench {
    filters: Vec<String>,
}

impl Bench {
    pub fn from_args() -> Bench {
        // cargo passes `--bench`; anything else not starting with '-' is a name filter.
        let filters = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        Bench { filters }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Measures `case` and its `baseline` (same work done directly); prints one line.
    pub fn compare<R1, R2>(
        &mut self,
        name: &str,
        mut case: impl FnMut() -> R1,
        baseline_name: &str,
        mut baseline: impl FnMut() -> R2,
    ) {
        if !self.wants(name) {
            return;
        }
        let ours = median_ns(&mut case);
        let base = median_ns(&mut baseline);
        println!(
            "{name:<48} {:>12}   {baseline_name:<34} {:>12}   x{:.2}",
            fmt_ns(ours),
            fmt_ns(base),
            ours / base
        );
    }

    /// Measures a closure that does its own setup and returns the time of the part that counts
    /// (for operations that cannot be repeated on the same state, such as copy-up).
    pub fn compare_timed(
        &mut self,
        name: &str,
        runs: usize,
        mut case: impl FnMut() -> Duration,
        baseline_name: &str,
        mut baseline: impl FnMut() -> Duration,
    ) {
        if !self.wants(name) {
            return;
        }
        let mut ours: Vec<f64> = Vec::new();
        let mut base: Vec<f64> = Vec::new();
        // Interleaved, so drift hits both alike.
        for _ in 0..runs {
            ours.push(case().as_nanos() as f64);
            base.push(baseline().as_nanos() as f64);
        }
        let (ours, base) = (median(&mut ours), median(&mut base));
        println!(
            "{name:<48} {:>12}   {baseline_name:<34} {:>12}   x{:.2}",
            fmt_ns(ours),
            fmt_ns(base),
            ours / base
        );
    }

    pub fn header(&self, title: &str) {
        println!(
            "\n## {title}\n{:<48} {:>12}   {:<34} {:>12}   ratio",
            "case", "median", "baseline", "median"
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median nanoseconds per call.
fn median_ns<R>(f: &mut impl FnMut() -> R) -> f64 {
    // Warm up and size the batch.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        if t.elapsed() >= BATCH_TARGET / 4 || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    batch = (batch * 4).max(1);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < BUDGET && samples.len() < 100) {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    median(&mut samples)
}

pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A scratch directory under /tmp named `bench-cargo-*`, removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bench-cargo-")
        .tempdir_in("/tmp")
        .expect("creating a scratch directory in /tmp")
}
