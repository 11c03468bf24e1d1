//! The metrics view: what copy-on-write has cost a running mount so far, as a small report.
//!
//! The counters live in `metrics` (copy-ups, bytes, latency buckets, whiteouts, opaque
//! directories) and `index` (hits and misses); this module only takes a snapshot and renders it,
//! as `key: value` text for people or as one JSON object for scripts. The report is served as
//! reserved xattrs of the mount root (`user.unionfs.stats`, `user.unionfs.stats.json`): names
//! under `user.unionfs.` are private to the union (`whiteout::is_private_xattr`), so no real
//! xattr is ever shadowed and none can be set through the mount. `read_from_mount` is the client
//! side (`unionfs-rs stats MERGED`), and the daemon prints `report` on SIGUSR1.
//! Kernel analog: none; overlayfs exposes nothing comparable.

use std::ffi::OsStr;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::inode::{Node, ROOT_INO};
use crate::union::Union;

/// The root xattr that answers with the text report.
pub const STATS_XATTR: &str = "user.unionfs.stats";
/// The root xattr that answers with the JSON report.
pub const STATS_JSON_XATTR: &str = "user.unionfs.stats.json";

/// A report is padded with spaces to a multiple of this, so that its size rarely changes between
/// the size probe and the read of a `getxattr` pair (which would fail with ERANGE).
const PAD: usize = 256;

/// One consistent-enough reading of every counter (each is read once, relaxed).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub uptime_s: f64,
    pub layers: usize,
    pub nodes: usize,
    pub copy_ups: u64,
    pub copy_up_bytes: u64,
    pub copy_up_reflinks: u64,
    /// Upper bounds in microseconds (bucket resolution: powers of two).
    pub copy_up_p50_us: Option<u64>,
    pub copy_up_p90_us: Option<u64>,
    pub copy_up_p99_us: Option<u64>,
    pub copy_up_max_us: Option<u64>,
    /// (upper bound in microseconds, count), non-empty buckets only.
    pub copy_up_histogram: Vec<(u64, u64)>,
    /// Copy-ups in place whose data is still being synced in the background.
    pub copy_ups_unsynced: u64,
    /// Copy-ups synced after they went into place / before (see `durability`).
    pub copy_ups_synced_later: u64,
    pub copy_ups_synced_inline: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub passthrough_opens: u64,
    pub nodes_reaped: u64,
    pub index_hits: u64,
    pub index_misses: u64,
}

impl Snapshot {
    pub fn of(union: &Union) -> Snapshot {
        let m = &union.metrics;
        let q = |p| m.copy_up_latency_quantile_us(p);
        let (unsynced, synced_later, synced_inline) = union.durability.counts();
        Snapshot {
            uptime_s: m.started.elapsed().as_secs_f64(),
            layers: union.stack.layers().len(),
            nodes: union.nodes.len(),
            copy_ups: m.copy_ups.load(Ordering::Relaxed),
            copy_up_bytes: m.copy_up_bytes.load(Ordering::Relaxed),
            copy_up_reflinks: m.copy_up_reflinks.load(Ordering::Relaxed),
            copy_up_p50_us: q(0.5),
            copy_up_p90_us: q(0.9),
            copy_up_p99_us: q(0.99),
            copy_up_max_us: q(1.0),
            copy_up_histogram: m.copy_up_latency_histogram(),
            copy_ups_unsynced: unsynced,
            copy_ups_synced_later: synced_later,
            copy_ups_synced_inline: synced_inline,
            whiteouts: m.whiteouts.load(Ordering::Relaxed),
            opaque_dirs: m.opaque_dirs.load(Ordering::Relaxed),
            passthrough_opens: m.passthrough_opens.load(Ordering::Relaxed),
            nodes_reaped: m.nodes_reaped.load(Ordering::Relaxed),
            index_hits: union.index.hits.load(Ordering::Relaxed),
            index_misses: union.index.misses.load(Ordering::Relaxed),
        }
    }

    /// Hits over all index lookups (0 before the first).
    pub fn index_hit_rate(&self) -> f64 {
        let total = self.index_hits + self.index_misses;
        if total == 0 {
            0.0
        } else {
            self.index_hits as f64 / total as f64
        }
    }

    /// `key: value` lines, latencies as "<= N us" upper bounds.
    pub fn to_text(&self) -> String {
        let us = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| format!("<= {v} us"));
        let mut out = String::new();
        let _ = writeln!(out, "uptime_s: {:.1}", self.uptime_s);
        let _ = writeln!(out, "layers: {}", self.layers);
        let _ = writeln!(out, "nodes: {}", self.nodes);
        let _ = writeln!(out, "copy_ups: {}", self.copy_ups);
        let _ = writeln!(out, "copy_up_bytes: {}", self.copy_up_bytes);
        let _ = writeln!(out, "copy_up_reflinks: {}", self.copy_up_reflinks);
        let _ = writeln!(out, "copy_up_latency_p50: {}", us(self.copy_up_p50_us));
        let _ = writeln!(out, "copy_up_latency_p90: {}", us(self.copy_up_p90_us));
        let _ = writeln!(out, "copy_up_latency_p99: {}", us(self.copy_up_p99_us));
        let _ = writeln!(out, "copy_up_latency_max: {}", us(self.copy_up_max_us));
        let buckets: Vec<String> = self
            .copy_up_histogram
            .iter()
            .map(|(b, n)| format!("<{b}us={n}"))
            .collect();
        let _ = writeln!(out, "copy_up_latency_histogram: {}", buckets.join(" "));
        let _ = writeln!(out, "copy_ups_unsynced: {}", self.copy_ups_unsynced);
        let _ = writeln!(out, "copy_ups_synced_later: {}", self.copy_ups_synced_later);
        let _ = writeln!(
            out,
            "copy_ups_synced_inline: {}",
            self.copy_ups_synced_inline
        );
        let _ = writeln!(out, "whiteouts: {}", self.whiteouts);
        let _ = writeln!(out, "opaque_dirs: {}", self.opaque_dirs);
        let _ = writeln!(out, "passthrough_opens: {}", self.passthrough_opens);
        let _ = writeln!(out, "nodes_reaped: {}", self.nodes_reaped);
        let _ = writeln!(out, "index_hits: {}", self.index_hits);
        let _ = writeln!(out, "index_misses: {}", self.index_misses);
        let _ = writeln!(out, "index_hit_rate: {:.4}", self.index_hit_rate());
        out
    }

    /// One JSON object; latencies in microseconds (null when no copy-up happened yet).
    pub fn to_json(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let hist: Vec<String> = self
            .copy_up_histogram
            .iter()
            .map(|(b, n)| format!("[{b},{n}]"))
            .collect();
        format!(
            concat!(
                "{{\"uptime_s\":{:.1},\"layers\":{},\"nodes\":{},\"copy_ups\":{},\"copy_up_bytes\":{},",
                "\"copy_up_reflinks\":{},\"copy_up_latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{},",
                "\"histogram\":[{}]}},\"copy_ups_unsynced\":{},\"copy_ups_synced_later\":{},",
                "\"copy_ups_synced_inline\":{},\"whiteouts\":{},\"opaque_dirs\":{},\"passthrough_opens\":{},",
                "\"nodes_reaped\":{},\"index_hits\":{},",
                "\"index_misses\":{},\"index_hit_rate\":{:.4}}}\n"
            ),
            self.uptime_s,
            self.layers,
            self.nodes,
            self.copy_ups,
            self.copy_up_bytes,
            self.copy_up_reflinks,
            opt(self.copy_up_p50_us),
            opt(self.copy_up_p90_us),
            opt(self.copy_up_p99_us),
            opt(self.copy_up_max_us),
            hist.join(","),
            self.copy_ups_unsynced,
            self.copy_ups_synced_later,
            self.copy_ups_synced_inline,
            self.whiteouts,
            self.opaque_dirs,
            self.passthrough_opens,
            self.nodes_reaped,
            self.index_hits,
            self.index_misses,
            self.index_hit_rate(),
        )
    }
}

/// The text report of a union (what SIGUSR1 prints and `unionfs-rs stats` shows).
pub fn report(union: &Union) -> String {
    Snapshot::of(union).to_text()
}

/// The JSON report of a union.
pub fn report_json(union: &Union) -> String {
    Snapshot::of(union).to_json()
}

/// The value of a reserved stats xattr when `node` is the mount root and `key` names one;
/// `None` for everything else, which then takes the ordinary xattr path.
pub fn root_xattr(union: &Union, node: &Node, key: &OsStr) -> Option<Vec<u8>> {
    if node.ino != ROOT_INO {
        return None;
    }
    let report = match key.as_bytes() {
        k if k == STATS_XATTR.as_bytes() => report(union),
        k if k == STATS_JSON_XATTR.as_bytes() => report_json(union),
        _ => return None,
    };
    Some(padded(report).into_bytes())
}

/// Pads with spaces before the final newline up to a multiple of `PAD` bytes.
fn padded(mut report: String) -> String {
    let body = report.trim_end_matches('\n').len();
    report.truncate(body);
    let len = (body + 1).div_ceil(PAD) * PAD;
    report.extend(std::iter::repeat_n(' ', len - body - 1));
    report.push('\n');
    report
}

/// Client side of `unionfs-rs stats MERGED [--json]`: reads the report of the union mounted at
/// `mountpoint` (with padding removed). Any user who may read the mount root may read it.
pub fn read_from_mount(mountpoint: &Path, json: bool) -> std::io::Result<String> {
    let key = if json { STATS_JSON_XATTR } else { STATS_XATTR };
    let not_ours = || {
        std::io::Error::other(format!(
            "{}: not a unionfs-rs mount (no {key} attribute)",
            mountpoint.display()
        ))
    };
    // The report may grow between the size probe and the read: retry a few times.
    for _ in 0..8 {
        let size = match rustix::fs::getxattr_query(mountpoint, key) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => {
                return Err(not_ours());
            }
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size + PAD];
        match rustix::fs::getxattr(mountpoint, key, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                let text = String::from_utf8_lossy(&buf);
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty())
                    .collect();
                return Ok(lines.join("\n") + "\n");
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: the stats report kept changing size",
        mountpoint.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            uptime_s: 12.0,
            layers: 3,
            nodes: 7,
            copy_ups: 2,
            copy_up_bytes: 4096,
            copy_up_reflinks: 0,
            copy_up_p50_us: Some(64),
            copy_up_p90_us: Some(128),
            copy_up_p99_us: Some(128),
            copy_up_max_us: Some(128),
            copy_up_histogram: vec![(64, 1), (128, 1)],
            copy_ups_unsynced: 1,
            copy_ups_synced_later: 6,
            copy_ups_synced_inline: 0,
            whiteouts: 5,
            opaque_dirs: 1,
            passthrough_opens: 4,
            nodes_reaped: 0,
            index_hits: 3,
            index_misses: 1,
        }
    }

    #[test]
    fn text_has_every_counter() {
        let text = sample().to_text();
        for needle in [
            "copy_ups: 2",
            "copy_up_bytes: 4096",
            "copy_up_latency_p50: <= 64 us",
            "whiteouts: 5",
            "passthrough_opens: 4",
            "copy_ups_synced_later: 6",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
        assert!(text.contains("index_hit_rate: 0.7500"));
        assert!(text.contains("copy_up_latency_histogram: <64us=1 <128us=1"));
    }

    #[test]
    fn json_is_one_object() {
        let json = sample().to_json();
        assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
        assert!(json.contains("\"histogram\":[[64,1],[128,1]]"));
        assert!(json.contains("\"p50\":64") && json.contains("\"passthrough_opens\":4"));
        assert!(json.contains("\"copy_ups_unsynced\":1,\"copy_ups_synced_later\":6"));
        let empty = Snapshot {
            copy_up_p50_us: None,
            copy_up_histogram: vec![],
            ..sample()
        }
        .to_json();
        assert!(empty.contains("\"p50\":null") && empty.contains("\"histogram\":[]"));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn padding_keeps_the_text_and_rounds_the_size() {
        let p = padded("a: 1\nb: 2\n".to_string());
        assert_eq!(p.len(), PAD);
        assert!(p.starts_with("a: 1\nb: 2") && p.ends_with(" \n"));
        let long = "x".repeat(PAD);
        assert_eq!(padded(long).len(), 2 * PAD);
    }
}
