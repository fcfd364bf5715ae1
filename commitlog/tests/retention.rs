//! Retention on a real log: limits, hold-back for a reader, the reported drop, and
//! offsets that never restart.
// Test helpers unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use commitlog::{Error, Fsync, Log, LogConfig, Offset, RetentionConfig};
use common::{payload, read_all, small_config};

fn with_retention(r: RetentionConfig) -> LogConfig {
    LogConfig {
        retention: r,
        ..small_config()
    }
}

fn fill(log: &mut Log, n: u64) {
    for i in 0..n {
        log.append(payload(i)).unwrap();
    }
}

#[test]
fn by_bytes_removes_oldest_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        with_retention(RetentionConfig {
            bytes_max: 3000,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 0,
        }),
    )
    .unwrap();
    fill(&mut log, 300);
    let before = log.stats();
    let report = log.apply_retention(SystemTime::now(), None).unwrap();
    let after = log.stats();
    assert!(report.segments_removed > 0);
    assert!(after.bytes <= 3000, "{after:?}");
    assert_eq!(report.removed, before.earliest..after.earliest);
    assert_eq!(report.dropped_needed, None);
    // What is left reads back, and reading below it says where to resume.
    assert_eq!(
        read_all(&log, after.earliest),
        (after.earliest.0..300).map(payload).collect::<Vec<_>>()
    );
    match log.read(Offset(0), common_limits(), &mut Vec::new()) {
        Err(Error::OffsetOutOfRange { earliest, .. }) => assert_eq!(earliest, after.earliest),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // The files are gone from disk too.
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        files,
        2 + 2 * after.segments,
        "meta, LOCK and two files per segment"
    );
}

fn common_limits() -> commitlog::ReadLimits {
    commitlog::ReadLimits {
        records_max: 10,
        bytes_max: 1 << 20,
    }
}

#[test]
fn by_segment_count_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        with_retention(RetentionConfig {
            bytes_max: 0,
            segments_max: 3,
            age_ms_max: 0,
            hold_bytes_max: 0,
        }),
    )
    .unwrap();
    fill(&mut log, 300);
    log.apply_retention(SystemTime::now(), None).unwrap();
    assert_eq!(log.stats().segments, 3);
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        with_retention(RetentionConfig {
            bytes_max: 0,
            segments_max: 0,
            age_ms_max: 60_000,
            hold_bytes_max: 0,
        }),
    )
    .unwrap();
    fill(&mut log, 300);
    let r = log.apply_retention(SystemTime::now(), None).unwrap();
    assert_eq!(r.segments_removed, 0, "nothing is a minute old yet");
    let later = SystemTime::now() + Duration::from_secs(120);
    log.apply_retention(later, None).unwrap();
    assert_eq!(
        log.stats().segments,
        1,
        "all but the active segment aged out"
    );
}

#[test]
fn holds_back_for_a_reader_until_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        with_retention(RetentionConfig {
            bytes_max: 2000,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 100_000,
        }),
    )
    .unwrap();
    fill(&mut log, 300);
    // A durable subscriber is still at offset 10: nothing it needs goes.
    let r = log
        .apply_retention(SystemTime::now(), Some(Offset(10)))
        .unwrap();
    assert!(log.earliest() <= Offset(10));
    assert_eq!(r.dropped_needed, None);
    assert!(log.stats().bytes > 2000, "held back past the soft limit");

    // The hard limit is reached: retention goes anyway, and says what it dropped.
    let mut log = {
        let config = with_retention(RetentionConfig {
            bytes_max: 2000,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 4000,
        });
        drop(log);
        Log::open(dir.path(), config).unwrap()
    };
    let before = log.earliest();
    let r = log
        .apply_retention(SystemTime::now(), Some(Offset(10)))
        .unwrap();
    let dropped = r.dropped_needed.expect("the drop is reported");
    assert_eq!(dropped.start, Offset(10).max(before));
    assert_eq!(dropped.end, log.earliest());
    assert!(log.stats().bytes <= 4000);
}

#[test]
fn offsets_never_restart_after_retention_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_retention(RetentionConfig {
        bytes_max: 1,
        segments_max: 0,
        age_ms_max: 0,
        hold_bytes_max: 0,
    });
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    fill(&mut log, 100);
    log.apply_retention(SystemTime::now(), None).unwrap();
    assert_eq!(log.stats().segments, 1);
    log.close().unwrap();
    let mut log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.head(), Offset(100));
    assert_eq!(log.append(payload(100)).unwrap(), Offset(100));
}

#[test]
fn remove_before_drops_only_whole_sealed_segments_below_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    fill(&mut log, 300);
    let segments = log.stats().segments;
    assert!(segments > 3, "the test needs several segments");
    // Nothing lies wholly below offset 0 or the first segment's last record.
    assert_eq!(log.remove_before(Offset(0)).unwrap(), 0);
    let cut = Offset(150);
    let removed = log.remove_before(cut).unwrap();
    assert!(removed > 0);
    let earliest = log.earliest();
    assert!(earliest <= cut, "a segment holding {cut} must stay");
    assert_eq!(
        read_all(&log, earliest),
        (earliest.0..300).map(payload).collect::<Vec<_>>()
    );
    // Past the head: everything but the active segment goes, the head stays.
    log.remove_before(Offset(10_000)).unwrap();
    assert_eq!(log.stats().segments, 1);
    assert_eq!(log.head(), Offset(300));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.head(), Offset(300));
}

#[test]
fn offset_within_counts_whole_segments_back_from_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.offset_within(0), log.head(), "an empty log");
    fill(&mut log, 300);
    let total = log.stats().bytes;
    assert_eq!(log.offset_within(u64::MAX), log.earliest());
    assert_eq!(log.offset_within(total), log.earliest());
    assert_eq!(
        log.offset_within(0),
        log.head(),
        "not even the newest segment"
    );
    // Somewhere in between: a segment boundary, and what lies from it fits.
    let half = log.offset_within(total / 2);
    assert!(log.earliest() < half && half < log.head(), "{half}");
    let cut = log.offset_within(total / 2);
    log.remove_before(cut).unwrap();
    assert!(
        log.stats().bytes <= total / 2 + total / 4,
        "about half is left"
    );
    assert_eq!(log.earliest(), cut, "the cut is a segment base");
}

#[test]
fn skip_to_goes_on_past_the_head_and_the_skip_survives_a_reopen() {
    for fsync in [Fsync::Never, Fsync::Interval, Fsync::Always] {
        skips_to_under(LogConfig {
            fsync,
            tail_bytes_max: 4096,
            ..small_config()
        });
    }
}

fn skips_to_under(config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    fill(&mut log, 300);
    assert_eq!(
        log.skip_to(Offset(200)).unwrap(),
        0,
        "below the head: nothing"
    );
    assert!(
        log.skip_to(Offset(1_000)).unwrap() > 1,
        "every segment goes"
    );
    assert_eq!((log.earliest(), log.head()), (Offset(1_000), Offset(1_000)));
    assert!(matches!(
        log.read(Offset(299), common_limits(), &mut Vec::new()),
        Err(Error::OffsetOutOfRange {
            earliest: Offset(1_000),
            ..
        })
    ));
    // Skipped and not yet appended to: a reopen (a crash) starts there too.
    drop(log);
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!((log.earliest(), log.head()), (Offset(1_000), Offset(1_000)));
    assert_eq!(log.append(payload(1_000)).unwrap(), Offset(1_000));
    fill(&mut log, 100);
    drop(log);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.head(), Offset(1_101));
    assert_eq!(read_all(&log, Offset(1_000))[0], payload(1_000));
}
