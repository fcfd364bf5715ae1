//! The end-to-end load generator behind `rumq-load`: stock MQTT 3.1.1 over TCP,
//! batched writes, every message numbered per publisher so that loss, duplicates and
//! reordering are counted exactly. Every scenario is bounded in count and time.
//!
//! | module | owns |
//! |---|---|
//! | `client` | a minimal pipelining MQTT client (connect, publish window, acks) |
//! | `payload` | the numbered, timestamped payload |
//! | `publisher` | the numbered publisher: window, pacing, QoS 2 releases |
//! | `tracker` | per-publisher sequence accounting at a subscriber |
//! | `scenario` | throughput, latency, connections, topics |
//! | `probe` | closed-loop latency: one message in flight, blocking sockets |

pub mod client;
pub mod payload;
pub mod probe;
mod publisher;
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

/// CPU time the broker has used so far (user + system, all threads), in seconds,
/// from /proc. Values in /proc are in USER_HZ ticks, which Linux fixes at 100/s.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}
