//! Behaviour of `Log` through its public API, on real files.
// Test helpers unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use commitlog::{Error, Fsync, Log, LogConfig, Offset, ReadLimits};
use common::{payload, read_all, small_config};

#[test]
fn offsets_are_dense_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.append(payload(0)).unwrap(), Offset(0));
    let r = log
        .append_batch(&(1..100).map(payload).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(r, Offset(1)..Offset(100));
    assert!(log.stats().segments > 3, "small segments roll");
    log.close().unwrap();

    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.head(), Offset(100));
    assert_eq!(log.append(payload(100)).unwrap(), Offset(100));
    let all = read_all(&log, Offset(0));
    assert_eq!(all, (0..101).map(payload).collect::<Vec<_>>());
}

#[test]
fn unclean_drop_keeps_every_returned_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..250 {
        log.append(payload(i)).unwrap();
    }
    drop(log); // no close: the next open must recover the active segment
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.head(), Offset(250));
    assert_eq!(
        read_all(&log, Offset(0)),
        (0..250).map(payload).collect::<Vec<_>>()
    );
}

#[test]
fn reads_at_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let limits = ReadLimits {
        records_max: 10,
        bytes_max: 1 << 20,
    };
    let mut out = Vec::new();
    // Empty log: at the head.
    let b = log.read(Offset(0), limits, &mut out).unwrap();
    assert!(b.is_empty() && out.is_empty());
    log.append_batch(&[payload(0), payload(1)]).unwrap();
    let b = log.read(Offset(2), limits, &mut out).unwrap();
    assert_eq!((b.first, b.next), (Offset(2), Offset(2)));
    match log.read(Offset(3), limits, &mut out) {
        Err(Error::OffsetBeyondHead { requested, head }) => {
            assert_eq!((requested, head), (Offset(3), Offset(2)));
        }
        other => panic!("expected OffsetBeyondHead, got {other:?}"),
    }
    // Zero records asked: nothing given, no progress.
    let b = log
        .read(
            Offset(0),
            ReadLimits {
                records_max: 0,
                bytes_max: 100,
            },
            &mut out,
        )
        .unwrap();
    assert!(b.is_empty());
}

#[test]
fn caught_up_readers_are_served_from_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        tail_bytes_max: 1 << 20,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let rec = Bytes::from_static(b"the very same buffer");
    let at = log.append(rec.clone()).unwrap();
    let mut out = Vec::new();
    log.read(
        at,
        ReadLimits {
            records_max: 1,
            bytes_max: 100,
        },
        &mut out,
    )
    .unwrap();
    // Served from memory: the same allocation, not a copy read back from the file.
    assert_eq!(out[0].as_ptr(), rec.as_ptr());
    assert!(log.stats().tail_bytes > 0);
}

#[test]
fn byte_budget_bounds_reads_but_never_starves() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append_batch(&[Bytes::from(vec![1u8; 400]), Bytes::from(vec![2u8; 10])])
        .unwrap();
    let mut out = Vec::new();
    let b = log
        .read(
            Offset(0),
            ReadLimits {
                records_max: 10,
                bytes_max: 16,
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(b.next, Offset(1), "one oversized record still comes");
    assert_eq!(out[0].len(), 400);
}

#[test]
fn record_too_large_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let err = log
        .append_batch(&[payload(0), Bytes::from(vec![0u8; 513])])
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { len: 513, max: 512 }));
    assert_eq!(log.head(), Offset(0));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), small_config()).unwrap();
    let err = Log::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn a_directory_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = Log::open(dir.path(), small_config()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotALog { .. }), "{msg}");
    assert!(msg.contains("notes.txt"), "{msg}");
    // and nothing was written into it
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_log_whose_creation_a_crash_cut_short_opens() {
    // The crash came between writing the meta file's temporary copy and renaming
    // it (half written, even): the directory was never a log, nor anything else.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log.meta.tmp"), "rumq-comm").unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.append(payload(0)).unwrap(), Offset(0));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "log.meta"), "{names:?}");
    assert!(!names.iter().any(|n| n == "log.meta.tmp"), "{names:?}");
}

#[test]
fn a_wrong_meta_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log.meta"), "something else\n").unwrap();
    let err = Log::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err}");
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let err = Log::open(file.join("log"), small_config()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("plain-file"), "{msg}");
}

#[test]
fn an_unwritable_directory_gives_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    // root ignores permission bits; the test means something only for other users.
    if std::fs::write(ro.join("probe"), "x").is_ok() {
        return;
    }
    let err = Log::open(&ro, small_config()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ro") && msg.to_lowercase().contains("permission"),
        "{msg}"
    );
}

/// `always` syncs every append; under `interval` no call of the owner syncs: `tick`,
/// once the interval has passed, hands the active segment to the background thread,
/// and its sync alone brings the synced offset up to the head.
#[test]
fn fsync_always_and_interval_work() {
    for fsync in [Fsync::Always, Fsync::Interval] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            fsync,
            fsync_interval_ms: 1,
            ..small_config()
        };
        let mut log = Log::open(dir.path(), config.clone()).unwrap();
        log.append_batch(&(0..50).map(payload).collect::<Vec<_>>())
            .unwrap();
        if fsync == Fsync::Always {
            assert!(!log.has_unsynced());
            assert_eq!(log.synced_to(), log.head());
        } else {
            wait_for_background_sync(&mut log);
            assert!(!log.has_unsynced());
        }
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.head(), Offset(50));
    }
}

/// Tick `log` (never `sync`) until the background sync has reached its head; fails
/// after 10 s or 10,000 ticks.
fn wait_for_background_sync(log: &mut Log) {
    let head = log.head();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ticks = 0;
    loop {
        log.tick().unwrap();
        if log.synced_to() == head && !log.has_unsynced() {
            return;
        }
        ticks += 1;
        assert!(
            ticks < 10_000 && Instant::now() < deadline,
            "the background sync never reached the head ({head}): synced to {} after {ticks} ticks",
            log.synced_to()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sparse_index_reads_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 200,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    log.append_batch(&(0..300).map(payload).collect::<Vec<_>>())
        .unwrap();
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    for start in [0u64, 1, 5, 17, 150, 299] {
        assert_eq!(
            read_all(&log, Offset(start)),
            (start..300).map(payload).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_full_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_bytes_max: 8 * 4,
        segment_bytes_max: 1 << 20,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    log.append_batch(&(0..10).map(payload).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(log.stats().segments, 3);
    assert_eq!(read_all(&log, Offset(0)).len(), 10);
}

#[test]
fn verify_reads_catches_bit_rot_in_a_sealed_segment() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        verify_reads: true,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    log.append_batch(&(0..100).map(payload).collect::<Vec<_>>())
        .unwrap();
    log.close().unwrap();
    // Flip a payload byte of record 1 in the first (sealed) segment.
    let first = dir.path().join(format!("{:020}.log", 0));
    let at = (commitlog::record::HEADER_BYTES * 2 + payload(0).len()) as u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    let limits = ReadLimits {
        records_max: 1,
        bytes_max: 1 << 20,
    };
    match log.read(Offset(1), limits, &mut Vec::new()) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, Offset(1)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Its neighbours still read.
    assert!(log.read(Offset(0), limits, &mut Vec::new()).is_ok());
    assert!(log.read(Offset(2), limits, &mut Vec::new()).is_ok());
}

/// The active segment's file is allocated at its full size ahead of the appends (so
/// they need not allocate blocks), the blocks past the data read as nothing, and
/// sealing gives them back.
#[cfg(target_os = "linux")]
#[test]
fn the_active_segment_is_allocated_ahead_and_trimmed_when_sealed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        fsync: Fsync::Interval,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    log.append(payload(0)).unwrap();
    let data = dir.path().join("00000000000000000000.log");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.len(), config.segment_bytes_max);
    assert!(
        meta.blocks() * 512 >= config.segment_bytes_max,
        "{} bytes allocated",
        meta.blocks() * 512
    );
    log.close().unwrap();
    let frame = (commitlog::record::HEADER_BYTES + payload(0).len()) as u64;
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.len(), frame);
    assert!(meta.blocks() * 512 < config.segment_bytes_max);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log, Offset(0)), vec![payload(0)]);
}

/// Pages of `path` in the page cache, by `mincore(2)` over a mapping of the file.
#[cfg(target_os = "linux")]
fn resident_pages(path: &std::path::Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY (test): the file is not truncated while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let page = 4096;
    let mut vec = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    vec.iter().filter(|v| **v & 1 == 1).count()
}

/// Drop-behind lets the kernel drop the pages of synced records no reader needs, and
/// of nothing else; what was dropped still reads back intact, from disk.
#[cfg(target_os = "linux")]
#[test]
fn pages_behind_the_readers_are_dropped_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        record_bytes_max: 1 << 17,
        tail_bytes_max: 0,
        fsync: Fsync::Interval,
        fsync_interval_ms: 3_600_000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let record = |i: u64| Bytes::from(vec![i as u8 + 1; 64 * 1024 - 8]);
    for i in 0..64 {
        log.append(record(i)).unwrap();
    }
    // 16 records of 64 KiB to a 1 MiB segment: segments at 0, 16, 32 and 48.
    let seg = |base: u64| dir.path().join(format!("{base:020}.log"));
    let all = |base: u64| resident_pages(&seg(base)) == 256;
    assert!(all(0) && all(16) && all(48), "just written, all cached");

    // The newest segment is not synced yet: only the sealed ones can go, once the
    // background sync of their seal is done. Asked for again and again, as the
    // router does every 100 ms (after `tick`, which notes what the syncs finished).
    let gone = |base: u64| resident_pages(&seg(base)) == 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        log.tick().unwrap();
        log.drop_cache_below(Offset(64));
        if gone(0) && gone(16) && gone(32) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sealed segments dropped"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(all(48), "unsynced pages stay");

    // Once synced, up to the lowest offset needed, whole pages only.
    log.sync().unwrap();
    log.drop_cache_below(Offset(56));
    while resident_pages(&seg(48)) != 128 {
        assert!(
            std::time::Instant::now() < deadline,
            "half the active segment dropped"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let mut out = Vec::new();
    let limits = ReadLimits {
        records_max: 64,
        bytes_max: 8 << 20,
    };
    let mut at = Offset(0);
    while at < Offset(64) {
        at = log.read(at, limits, &mut out).unwrap().next;
    }
    assert_eq!(out, (0..64).map(record).collect::<Vec<_>>());
}

/// Record `i` of a log with small and large records mixed, in runs of either kind.
fn mixed_record(i: u64) -> Bytes {
    let len = if i % 5 < 2 {
        100 + i as usize
    } else {
        20_000 + 97 * i as usize
    };
    Bytes::from(
        (0..len)
            .map(|j| (i as usize * 7 + j) as u8)
            .collect::<Vec<_>>(),
    )
}

/// `read_records` gives large records read from a segment by reference (their head in
/// memory, the rest as a range of the file) and everything else whole, within the
/// same limits as `read`, from any offset, across segments.
#[test]
fn large_records_are_given_by_reference_from_segments() {
    use commitlog::{ByReference, Record};
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 256 * 1024,
        record_bytes_max: 64 * 1024,
        tail_bytes_max: 100 * 1024,
        fsync: Fsync::Never,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    let record = mixed_record;
    let n = 60;
    for i in 0..n {
        log.append(record(i)).unwrap();
    }
    let by_ref = ByReference {
        min_bytes: 16 * 1024,
        head_bytes: 50,
    };
    // The tail holds the newest records whose payloads fit in its 100 KiB.
    let mut tail_start = n;
    let mut in_tail = 0;
    while tail_start > 0 && in_tail + record(tail_start - 1).len() <= 100 * 1024 {
        tail_start -= 1;
        in_tail += record(tail_start).len();
    }
    for limits in [
        ReadLimits {
            records_max: 1,
            bytes_max: 1,
        },
        ReadLimits {
            records_max: 3,
            bytes_max: 1 << 20,
        },
        ReadLimits {
            records_max: 100,
            bytes_max: 60_000,
        },
    ] {
        for from in 0..n {
            let mut got: Vec<Record> = Vec::new();
            let mut whole: Vec<Bytes> = Vec::new();
            let b = log
                .read_records(Offset(from), limits, by_ref, &mut got)
                .unwrap();
            let w = log.read(Offset(from), limits, &mut whole).unwrap();
            assert_eq!(
                b, w,
                "the same records as `read` from {from} with {limits:?}"
            );
            assert_eq!(got.len(), whole.len());
            for (k, (r, bytes)) in got.iter().zip(&whole).enumerate() {
                let i = from + k as u64;
                assert_eq!(r.len(), bytes.len());
                assert_eq!(r.load().unwrap(), *bytes, "record {i}");
                let expect_ref = bytes.len() >= by_ref.min_bytes && i < tail_start;
                match r.rest() {
                    Some(rest) => {
                        assert!(expect_ref, "record {i} by reference");
                        assert_eq!(r.head().len(), by_ref.head_bytes);
                        assert_eq!(rest.read().unwrap(), bytes.slice(by_ref.head_bytes..));
                    }
                    None => assert!(!expect_ref, "record {i} whole"),
                }
            }
        }
    }
}
