//! The end-to-end load generator behind `rumq-load`: stock MQTT 3.1.1 over TCP,
//! batched writes, every message numbered per publisher so that loss, duplicates and
//! reordering are counted exactly. Every scenario is bounded in count and time.
//!
//! | module | owns |
//! |---|---|
//! | `client` | a minimal pipelining MQTT client (connect, publish window, acks) |
//! | `payload` | the numbered, timestamped payload |
//! | `tracker` | per-publisher sequence accounting at a subscriber |
//! | `scenario` | throughput, latency, connections, topics |

pub mod client;
pub mod payload;
pub mod scenario;
pub mod tracker;

/// The broker's resident set size in KiB and its open file descriptors, from /proc.
pub fn proc_stats(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kib, fds))
}
