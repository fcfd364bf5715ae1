//! Helpers shared by the commitlog's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use commitlog::{Log, LogConfig, Offset, ReadLimits};

/// A config with tiny segments so tests cross segment boundaries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_bytes_max: 1024,
        record_bytes_max: 512,
        tail_bytes_max: 0,
        fsync: commitlog::Fsync::Never,
        retention: commitlog::RetentionConfig {
            bytes_max: 0,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 0,
        },
        ..LogConfig::default()
    }
}

/// The deterministic payload of record `i`: its length varies so frames differ, and
/// no byte is zero, so a zero-filled tail can never recreate a lost payload byte.
pub fn payload(i: u64) -> Bytes {
    let len = (i * 7 % 90) as usize + 1;
    let mut v = Vec::with_capacity(len);
    for j in 0..len {
        v.push(((i as usize * 31 + j) % 255 + 1) as u8);
    }
    Bytes::from(v)
}

/// Every record from `from` to the head.
pub fn read_all(log: &Log, from: Offset) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let limits = ReadLimits {
            records_max: 37,
            bytes_max: 700,
        };
        let b = log.read(at, limits, &mut out).unwrap();
        if b.is_empty() {
            return out;
        }
        assert_eq!(b.first, at, "no holes expected here");
        at = b.next;
    }
}
