//! Router limits. Every queue the router owns has a bound here.

use serde::Deserialize;

/// Limits and batch sizes of the router.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Outbound QoS 1/2 messages unacknowledged per session.
    pub inflight_max: usize,
    /// Matched offsets queued per session before it falls back to scanning the log.
    pub session_queue_max: usize,
    /// Messages per delivery batch to one connection.
    pub deliver_records_max: usize,
    /// Bytes per delivery batch to one connection (the first message always goes).
    pub deliver_bytes_max: usize,
    /// Publishes staged before the router appends them as one batch.
    pub append_batch_max: usize,
    /// Records read per step when a session catches up from the log.
    pub scan_records_max: usize,
    /// How often retention runs, in milliseconds.
    pub retention_interval_ms: u64,
    /// Subscriptions (distinct filters) per session; more are refused in SUBACK.
    pub subscriptions_max: usize,
    /// The session journal is compacted (a checkpoint of the whole state is written
    /// and older journal segments removed) once the ops written since the last
    /// checkpoint exceed this and twice the checkpoint's own size.
    pub journal_checkpoint_bytes: u64,
    /// Bytes of the message log one offline persistent session may keep from
    /// retention (0: no limit besides the log's own `hold_bytes_max`). Past it the
    /// oldest messages it has not read may be removed; it is told how many it lost.
    pub offline_bytes_max: u64,
    /// Topics whose messages are counted (by interned id, below this): the broker
    /// sets it to its `[limits] topics_max`, the most ids its connections hand out.
    #[serde(skip)]
    pub topics_max: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            inflight_max: 256,
            session_queue_max: 4096,
            deliver_records_max: 512,
            deliver_bytes_max: 1024 * 1024,
            append_batch_max: 1024,
            scan_records_max: 4096,
            retention_interval_ms: 10_000,
            subscriptions_max: 1000,
            journal_checkpoint_bytes: 64 * 1024 * 1024,
            offline_bytes_max: 1024 * 1024 * 1024,
            topics_max: 1_000_000,
        }
    }
}
