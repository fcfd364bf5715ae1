//! Crash images: the files a crash (process kill, power loss) can leave, built by hand
//! from a real log, then reopened. Reopen must return exactly the intact prefix, never
//! garbage or zeros, and appends must continue at the right offset.
// Test helpers unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use commitlog::record::HEADER_BYTES;
use commitlog::{Log, Offset};
use common::{payload, read_all};
use proptest::prelude::*;

/// The shared small config, but with `fsync = "interval"`: under `never` segments are
/// not preallocated, and the images below include preallocated ones.
fn config() -> commitlog::LogConfig {
    commitlog::LogConfig {
        fsync: commitlog::Fsync::Interval,
        ..common::small_config()
    }
}

/// Write `n` records, drop the log without closing it (an unclean shutdown), and
/// return the paths of the last segment's data and index files and the offsets and
/// data-file end positions of its records.
fn crashed_log(dir: &Path, n: u64) -> (PathBuf, PathBuf, Vec<(u64, u64)>) {
    let mut log = Log::open(dir, config()).unwrap();
    for i in 0..n {
        log.append(payload(i)).unwrap();
    }
    drop(log);
    let (data, index) = last_segment(dir);
    let base: u64 = data.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut ends = Vec::new();
    let mut pos = 0u64;
    for i in base..n {
        pos += (HEADER_BYTES + payload(i).len()) as u64;
        ends.push((i, pos));
    }
    // The active segment was preallocated (sparse, zeros past the data), which
    // recovery must cut like any torn tail; `an_untouched_crash_image_recovers`
    // covers that image. The hand-made images below start from the data alone.
    let config = config();
    assert!(config.preallocate);
    assert_eq!(
        std::fs::metadata(&data).unwrap().len(),
        config.segment_bytes_max
    );
    OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(pos)
        .unwrap();
    (data, index, ends)
}

/// The files in `dir` with extension `ext` ("log" or "index"), oldest segment first.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

fn last_segment(dir: &Path) -> (PathBuf, PathBuf) {
    let data = files(dir, "log").pop().unwrap();
    (data.clone(), data.with_extension("index"))
}

/// Reopen and check: exactly records `0..expect` are there, and the next append gets
/// offset `expect`.
fn assert_recovers_to(dir: &Path, expect: u64) {
    let mut log = Log::open(dir, config()).unwrap();
    assert_eq!(log.head(), Offset(expect));
    assert_eq!(
        read_all(&log, Offset(0)),
        (0..expect).map(payload).collect::<Vec<_>>()
    );
    assert_eq!(log.append(payload(expect)).unwrap(), Offset(expect));
    log.close().unwrap();
    // And once more after a clean close.
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(log.head(), Offset(expect + 1));
    assert_eq!(read_all(&log, Offset(0)).len() as u64, expect + 1);
}

/// The number of records whose frames end at or before `cut`.
fn intact_before(ends: &[(u64, u64)], base: u64, cut: u64) -> u64 {
    ends.iter()
        .filter(|(_, end)| *end <= cut)
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(base)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Process killed mid-append: the data file ends part-way through a record, or
    /// (preallocated) the torn record is followed by zeros to the segment's full size.
    #[test]
    fn torn_tail_of_data_file(n in 1u64..200, cut_frac in 0.0f64..1.0, preallocated: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (data, _, ends) = crashed_log(dir.path(), n);
        let base = ends[0].0;
        let len = ends.last().unwrap().1;
        let cut = (len as f64 * cut_frac) as u64;
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.set_len(cut).unwrap();
        if preallocated {
            f.set_len(config().segment_bytes_max).unwrap();
        }
        assert_recovers_to(dir.path(), intact_before(&ends, base, cut));
    }

    /// Power loss after the file grew but before its pages were written: the end of
    /// the data file reads as zeros.
    #[test]
    fn zero_filled_data_tail(n in 1u64..200, cut_frac in 0.0f64..1.0, zeros in 1u64..300) {
        let dir = tempfile::tempdir().unwrap();
        let (data, _, ends) = crashed_log(dir.path(), n);
        let base = ends[0].0;
        let len = ends.last().unwrap().1;
        let cut = (len as f64 * cut_frac) as u64;
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.set_len(cut).unwrap();
        f.set_len(cut + zeros).unwrap();
        assert_recovers_to(dir.path(), intact_before(&ends, base, cut));
    }

    /// The index was not closed cleanly: its tail (from any entry on) is zeros.
    #[test]
    fn zeroed_index_tail(n in 1u64..200, from_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let (_, index, _) = crashed_log(dir.path(), n);
        let len = std::fs::metadata(&index).unwrap().len();
        let from = ((len as f64 * from_frac) as u64) / 8 * 8;
        let f = OpenOptions::new().write(true).open(&index).unwrap();
        f.write_all_at(&vec![0u8; (len - from) as usize], from).unwrap();
        assert_recovers_to(dir.path(), n);
    }

    /// A flipped byte in the last record: that record is dropped, nothing before it.
    #[test]
    fn flipped_byte_in_last_record(n in 1u64..200, at_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let (data, _, ends) = crashed_log(dir.path(), n);
        let end = ends.last().unwrap().1;
        let start = if ends.len() > 1 { ends[ends.len() - 2].1 } else { 0 };
        let at = start + ((end - start - 1) as f64 * at_frac) as u64;
        let f = OpenOptions::new().read(true).write(true).open(&data).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
        assert_recovers_to(dir.path(), n - 1);
    }

    /// The index claims more than the data holds (the data file lost its end, the
    /// index did not): the data decides.
    #[test]
    fn data_shorter_than_index_says_after_clean_close(n in 2u64..200, cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config()).unwrap();
        for i in 0..n {
            log.append(payload(i)).unwrap();
        }
        log.close().unwrap(); // clean: the next open would trust the index...
        let (data, _) = last_segment(dir.path());
        let base: u64 = data.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let mut ends = Vec::new();
        let mut pos = 0;
        for i in base..n {
            pos += (HEADER_BYTES + payload(i).len()) as u64;
            ends.push((i, pos));
        }
        let cut = (pos as f64 * cut_frac) as u64;
        // ...but the data file was cut behind its back.
        OpenOptions::new().write(true).open(&data).unwrap().set_len(cut).unwrap();
        assert_recovers_to(dir.path(), intact_before(&ends, base, cut));
    }
}

/// The image a kill leaves with preallocation on: the active segment's file at full
/// size, zeros after the last record. Reopen finds exactly the records, trims the
/// zeros, and a clean close leaves the file at its data.
#[test]
fn an_untouched_crash_image_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for i in 0..120 {
        log.append(payload(i)).unwrap();
    }
    drop(log);
    let (data, _) = last_segment(dir.path());
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 1024);
    assert_recovers_to(dir.path(), 120);
    // Clean close: every data file ends at its data (the cheap check of a clean
    // open would otherwise fail and fall back to a scan).
    let mut log = Log::open(dir.path(), config()).unwrap();
    log.append(payload(121)).unwrap();
    log.close().unwrap();
    for p in files(dir.path(), "log") {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len < 1024, "{} not trimmed", p.display());
    }
}

/// Under `fsync = "never"` nothing is preallocated: a data file is as long as its
/// data, so a power loss can only shorten it, never leave holes inside it.
#[test]
fn under_fsync_never_segments_are_not_preallocated() {
    let dir = tempfile::tempdir().unwrap();
    let never = common::small_config();
    assert_eq!(never.fsync, commitlog::Fsync::Never);
    assert!(never.preallocate);
    let mut log = Log::open(dir.path(), never).unwrap();
    let mut data_len = 0;
    for i in 0..3 {
        log.append(payload(i)).unwrap();
        data_len += (HEADER_BYTES + payload(i).len()) as u64;
    }
    drop(log);
    let (data, _) = last_segment(dir.path());
    assert_eq!(std::fs::metadata(&data).unwrap().len(), data_len);
}

/// A crash in a roll after the next segment was created but before the sealed one's
/// trim reached the disk: an older segment still has zeros after its data. It is
/// scanned, cut to its records, and nothing is lost or shifted.
#[test]
fn a_sealed_segment_still_preallocated_after_a_crash_is_cut_to_its_records() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 120);
    let logs = files(dir.path(), "log");
    let data_len = std::fs::metadata(&logs[0]).unwrap().len();
    assert!(data_len < 1024);
    OpenOptions::new()
        .write(true)
        .open(&logs[0])
        .unwrap()
        .set_len(1024)
        .unwrap();
    assert_recovers_to(dir.path(), 120);
    assert_eq!(std::fs::metadata(&logs[0]).unwrap().len(), data_len);
}

/// A last segment whose index filled up is opened as the active one (and extended to
/// its preallocated size) but never appended to again: the open seals it, so it is
/// not left with zeros that every later open would have to scan past.
#[test]
fn a_last_segment_with_a_full_index_is_trimmed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = commitlog::LogConfig {
        index_bytes_max: 4 * 8, // four records per segment
        ..config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..4 {
        log.append(payload(i)).unwrap();
    }
    log.close().unwrap();
    let data_len: u64 = (0..4)
        .map(|i| (HEADER_BYTES + payload(i).len()) as u64)
        .sum();
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.append(payload(4)).unwrap(), Offset(4));
    log.close().unwrap();
    let logs = files(dir.path(), "log");
    assert_eq!(logs.len(), 2);
    assert_eq!(std::fs::metadata(&logs[0]).unwrap().len(), data_len);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(
        read_all(&log, Offset(0)),
        (0..5).map(payload).collect::<Vec<_>>()
    );
}

#[test]
fn missing_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (_, index, _) = crashed_log(dir.path(), 120);
    std::fs::remove_file(&index).unwrap();
    assert_recovers_to(dir.path(), 120);
}

#[test]
fn missing_index_of_a_sealed_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 120);
    let first = files(dir.path(), "index");
    std::fs::remove_file(&first[0]).unwrap();
    assert_recovers_to(dir.path(), 120);
}

#[test]
fn empty_last_segment_left_by_a_crash_after_create() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 50);
    // A crash between creating the next segment's files and writing to it.
    std::fs::File::create(dir.path().join(format!("{:020}.log", 50))).unwrap();
    assert_recovers_to(dir.path(), 50);
}

#[test]
fn leftover_index_without_data_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 50);
    let stray = dir.path().join(format!("{:020}.index", 9999));
    std::fs::write(&stray, [0u8; 64]).unwrap();
    assert_recovers_to(dir.path(), 50);
    assert!(!stray.exists());
}

/// A sealed segment that lost its end (power loss with `fsync = "never"`): the records
/// after it survive, the lost offsets become a hole that readers skip, and offsets are
/// never reused.
#[test]
fn sealed_segment_cut_short_leaves_a_hole_not_a_reuse() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 120);
    let logs = files(dir.path(), "log");
    let first = &logs[0];
    let second_base: u64 = logs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Keep only the first record of segment 0.
    let keep = (HEADER_BYTES + payload(0).len()) as u64;
    OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(keep)
        .unwrap();

    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.head(), Offset(120));
    let mut out = Vec::new();
    let limits = commitlog::ReadLimits {
        records_max: 1000,
        bytes_max: 1 << 20,
    };
    let b = log.read(Offset(0), limits, &mut out).unwrap();
    assert_eq!((b.first, b.next), (Offset(0), Offset(1)));
    out.clear();
    let b = log.read(Offset(1), limits, &mut out).unwrap();
    assert_eq!(b.first, Offset(second_base), "the hole is skipped");
    assert_eq!(out[0], payload(second_base));
    assert_eq!(log.append(payload(120)).unwrap(), Offset(120));
}

/// The base offset in a segment file's name.
fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Power loss while the segment sealed last was still being synced in the background
/// (`fsync = "interval"` hands a seal's fsync to its thread): its trimmed size and its
/// index reached the disk, a record in the middle did not (zeros). The cheap check of
/// a sealed segment would trust it; recovery scans it in full instead, keeps the
/// records before the zeros, skips the rest of it as a hole, and keeps the active
/// segment after it.
#[test]
fn the_segment_sealed_last_is_scanned_in_full_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    crashed_log(dir.path(), 120);
    let logs = files(dir.path(), "log");
    assert!(logs.len() >= 3, "{} segments", logs.len());
    let sealed = &logs[logs.len() - 2];
    let (base, next) = (base_of(sealed), base_of(&logs[logs.len() - 1]));
    let mut starts = Vec::new();
    let mut pos = 0u64;
    for i in base..next {
        starts.push(pos);
        pos += (HEADER_BYTES + payload(i).len()) as u64;
    }
    assert_eq!(
        std::fs::metadata(sealed).unwrap().len(),
        pos,
        "trimmed when sealed"
    );
    let lost = base + (next - base) / 2;
    let at = starts[(lost - base) as usize];
    let zeros = vec![0u8; HEADER_BYTES + payload(lost).len()];
    OpenOptions::new()
        .write(true)
        .open(sealed)
        .unwrap()
        .write_all_at(&zeros, at)
        .unwrap();

    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.head(), Offset(120));
    let limits = commitlog::ReadLimits {
        records_max: 1000,
        bytes_max: 1 << 20,
    };
    let mut found = Vec::new();
    let mut from = Offset(0);
    loop {
        let mut out = Vec::new();
        let b = log.read(from, limits, &mut out).unwrap();
        if out.is_empty() {
            break;
        }
        for (i, record) in (b.first.0..b.next.0).zip(&out) {
            assert_eq!(*record, payload(i), "record {i}");
            found.push(i);
        }
        from = b.next;
    }
    let expected: Vec<u64> = (0..lost).chain(next..120).collect();
    assert_eq!(found, expected);
    assert_eq!(log.append(payload(120)).unwrap(), Offset(120));
}
