//! Property test: random appends, reads, reopens (clean and unclean) and retention
//! against a `Vec<Vec<u8>>` model of what the log must hold.
// Test helpers unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::{Log, LogConfig, Offset, ReadLimits, RetentionConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    AppendFramed(Vec<Vec<u8>>),
    Read {
        at: u16,
        records_max: usize,
        bytes_max: usize,
    },
    Reopen {
        clean: bool,
    },
    Retention {
        hold_back: Option<u16>,
    },
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 100..300),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => payload().prop_map(Op::Append),
        3 => proptest::collection::vec(payload(), 0..20).prop_map(Op::AppendBatch),
        2 => proptest::collection::vec(payload(), 0..20).prop_map(Op::AppendFramed),
        6 => (any::<u16>(), 0usize..50, 0usize..2000)
            .prop_map(|(at, records_max, bytes_max)| Op::Read { at, records_max, bytes_max }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => proptest::option::of(any::<u16>()).prop_map(|hold_back| Op::Retention { hold_back }),
    ]
}

fn config(tail_bytes_max: usize, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes_max: 700,
        index_bytes_max: 400,
        index_interval_bytes,
        record_bytes_max: 400,
        tail_bytes_max,
        retention: RetentionConfig {
            bytes_max: 2000,
            segments_max: 6,
            age_ms_max: 0,
            hold_bytes_max: 5000,
        },
        ..common::small_config()
    }
}

/// A read at `at` (aimed mostly inside the log, sometimes around its edges) gives
/// what the model holds, or the error the model predicts.
fn check_read(
    l: &Log,
    model: &[Vec<u8>],
    earliest: u64,
    at: u16,
    limits: ReadLimits,
) -> Result<(), TestCaseError> {
    let head = model.len() as u64;
    let span = head - earliest + 2;
    let at = (earliest + u64::from(at) % span).saturating_sub(1);
    let mut out = Vec::new();
    match l.read(Offset(at), limits, &mut out) {
        Ok(b) => {
            prop_assert!(at >= earliest && at <= head);
            prop_assert_eq!(b.first, Offset(at));
            prop_assert_eq!(b.len() as usize, out.len());
            prop_assert!(out.len() <= limits.records_max);
            if limits.records_max > 0 && at < head {
                prop_assert!(!out.is_empty(), "a read below the head gives something");
            }
            for (i, r) in out.iter().enumerate() {
                prop_assert_eq!(&r[..], &model[at as usize + i][..]);
            }
        }
        Err(commitlog::Error::OffsetOutOfRange { earliest: e, .. }) => {
            prop_assert!(at < earliest);
            prop_assert_eq!(e, Offset(earliest));
        }
        Err(commitlog::Error::OffsetBeyondHead { head: h, .. }) => {
            prop_assert!(at > head);
            prop_assert_eq!(h, Offset(head));
        }
        Err(e) => return Err(TestCaseError::fail(format!("read failed: {e}"))),
    }
    Ok(())
}

/// Retention an hour from now, holding back from `hold_back` (scaled into the log):
/// removes whole segments from the start only, keeps what is held back or says what
/// it dropped of it. The new earliest offset.
fn check_retention(
    l: &mut Log,
    head: u64,
    earliest: u64,
    hold_back: Option<u16>,
) -> Result<u64, TestCaseError> {
    let hold = hold_back.map(|h| Offset(earliest + u64::from(h) % (head - earliest + 1)));
    let now = SystemTime::now() + Duration::from_secs(3600);
    let report = l.apply_retention(now, hold).unwrap();
    prop_assert_eq!(report.removed.start, Offset(earliest));
    prop_assert_eq!(report.removed.end, l.earliest());
    let new_earliest = l.earliest().0;
    prop_assert!(new_earliest >= earliest && new_earliest <= head);
    match (&report.dropped_needed, hold) {
        (None, Some(h)) => prop_assert!(new_earliest <= h.0, "held-back data kept"),
        (Some(d), Some(h)) => {
            prop_assert_eq!(d.start, h.max(Offset(earliest)));
            prop_assert_eq!(d.end, Offset(new_earliest));
        }
        (Some(_), None) => prop_assert!(false, "nothing was held back"),
        (None, None) => {}
    }
    Ok(new_earliest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn log_matches_model(
        ops in proptest::collection::vec(op(), 1..120),
        tail in prop_oneof![Just(0usize), Just(300), Just(1 << 20)],
        interval in prop_oneof![Just(0u32), Just(64)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = config(tail, interval);
        let mut log = Some(Log::open(dir.path(), config.clone()).unwrap());
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut earliest = 0u64;

        for op in ops {
            let l = log.as_mut().unwrap();
            match op {
                Op::Append(p) => {
                    let at = l.append(Bytes::from(p.clone())).unwrap();
                    prop_assert_eq!(at, Offset(model.len() as u64));
                    model.push(p);
                }
                Op::AppendBatch(ps) => {
                    let bs: Vec<Bytes> = ps.iter().cloned().map(Bytes::from).collect();
                    let r = l.append_batch(&bs).unwrap();
                    prop_assert_eq!(r.start, Offset(model.len() as u64));
                    prop_assert_eq!(r.end, Offset((model.len() + ps.len()) as u64));
                    model.extend(ps);
                }
                Op::AppendFramed(ps) => {
                    let fs: Vec<_> = ps.iter().map(|p| commitlog::record::Framed::new(p)).collect();
                    let r = l.append_framed(&fs).unwrap();
                    prop_assert_eq!(r.start, Offset(model.len() as u64));
                    model.extend(ps);
                }
                Op::Read { at, records_max, bytes_max } => {
                    check_read(l, &model, earliest, at, ReadLimits { records_max, bytes_max })?;
                }
                Op::Reopen { clean } => {
                    let l = log.take().unwrap();
                    if clean { l.close().unwrap() } else { drop(l) }
                    let l = Log::open(dir.path(), config.clone()).unwrap();
                    prop_assert_eq!(l.head(), Offset(model.len() as u64));
                    prop_assert_eq!(l.earliest(), Offset(earliest));
                    log = Some(l);
                }
                Op::Retention { hold_back } => {
                    earliest = check_retention(l, model.len() as u64, earliest, hold_back)?;
                }
            }
        }
        // Finally everything retained reads back in order.
        let l = log.take().unwrap();
        let mut at = Offset(earliest);
        let mut out = Vec::new();
        loop {
            let b = l.read(at, ReadLimits { records_max: 17, bytes_max: 500 }, &mut out).unwrap();
            if b.is_empty() { break; }
            at = b.next;
        }
        prop_assert_eq!(out.len(), model.len() - earliest as usize);
        for (r, m) in out.iter().zip(&model[earliest as usize..]) {
            prop_assert_eq!(&r[..], &m[..]);
        }
    }
}
