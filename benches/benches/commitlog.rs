//! Criterion benchmarks of the commitlog, each next to a raw-file baseline doing the
//! same system calls on the same bytes, so a result reads as "log / raw".
//!
//! | group | what | baseline |
//! |---|---|---|
//! | `append` | `append` (single) and `append_batch` (batched) of 64 B, 1 KiB, 64 KiB records, `fsync` never / always | `write_all` of pre-framed bytes to an `O_APPEND` file (+ `sync_data` per call for `always`) |
//! | `read` | sequential `read` of the whole log with 1024 records / 1 MiB per call: page-cached, cold (page cache dropped), in-memory tail | `read_exact_at` of the segment files in the chunks the log reads, into a fresh `Vec` per call |
//! | `index` | dense (`index_interval_bytes = 0`) vs sparse (4096) index: random reads of 1 and 100 records of 64 B, batched appends | - |
//!
//! Throughput counts payload bytes (1 KiB, 64 KiB records) or records (64 B records),
//! the same for a log bench and its baseline, so the ratio of their rates is the ratio
//! of their times. Every fixture lives in a temporary directory under `/tmp`; append
//! benches start a fresh log (or file) whenever the current one reaches
//! [`Scale::append_bound`], outside the timed region, so disk use stays bounded.
//!
//! `cargo bench -p benches --bench commitlog -- --test` (or `cargo test --benches`)
//! runs every bench once on small fixtures.

// A bench that cannot build its fixture has nothing to measure: it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{Fsync, Log, LogConfig, Offset, ReadLimits};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use tempfile::TempDir;

/// Bytes of framing the log writes in front of each payload.
const HEADER: usize = commitlog::record::HEADER_BYTES;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Records per `append_batch` call (fewer for large records: see [`batch_len`]).
const BATCH: usize = 256;
/// The read limits of the sequential read benches.
const READ_LIMITS: ReadLimits = ReadLimits {
    records_max: 1024,
    bytes_max: MIB,
};

/// Fixture sizes: real ones for `cargo bench`, tiny ones for criterion's test mode.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// An append bench starts a new log (file) once this many bytes are in it.
    append_bound: u64,
    /// Payload bytes of the 1 KiB-record read fixture.
    read_1k_bytes: usize,
    /// Payload bytes of the 64 B-record read fixture.
    read_64_bytes: usize,
    /// Records in each index fixture.
    index_records: usize,
}

impl Scale {
    fn get() -> Scale {
        // Criterion runs each bench once ("test mode") with `--test`, and also when
        // not given `--bench` (`cargo test --benches`).
        let args: Vec<String> = std::env::args().collect();
        let test = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        if test {
            Scale {
                append_bound: 8 * MIB as u64,
                read_1k_bytes: 2 * MIB,
                read_64_bytes: MIB,
                index_records: 20_000,
            }
        } else {
            Scale {
                append_bound: 256 * MIB as u64,
                read_1k_bytes: 256 * MIB,
                read_64_bytes: 64 * MIB,
                index_records: 1 << 20,
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers

fn tmpdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("rumq-bench-")
        .tempdir_in("/tmp")
        .expect("create a temporary directory under /tmp")
}

/// `n` distinct payloads of `size` pseudo-random, non-zero bytes.
fn payloads(n: usize, size: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = XorShift(seed | 1);
    (0..n)
        .map(|_| {
            let v: Vec<u8> = (0..size).map(|_| (rng.next() as u8) | 1).collect();
            Bytes::from(v)
        })
        .collect()
}

/// The bytes the log writes for `payload`, with a dummy checksum: the raw baselines
/// write exactly as many bytes as the log but compute no CRC.
fn raw_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0xA5; HEADER - 4]);
    out.extend_from_slice(payload);
}

#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The segment data files (`*.log`) of a log directory, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && p.file_stem().is_some_and(|s| s.len() == 20)
        })
        .collect();
    v.sort();
    v
}

/// The segment index files (`*.index`) of a log directory.
fn index_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect()
}

/// Write `files` back and drop them from the page cache, so the next read comes from
/// the disk (or whatever caches the disk below this kernel).
fn drop_page_cache(files: &[PathBuf]) {
    for path in files {
        let f = File::open(path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: posix_fadvise only reads its integer arguments; `f` is an open fd.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", path.display());
    }
}

fn size_label(size: usize) -> String {
    if size >= KIB {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}

/// Rates of small records are read in records/s, those of larger ones in bytes/s.
fn throughput(size: usize, records: u64) -> Throughput {
    if size < KIB {
        Throughput::Elements(records)
    } else {
        Throughput::Bytes(records * size as u64)
    }
}

fn fsync_label(f: Fsync) -> &'static str {
    match f {
        Fsync::Never => "never",
        Fsync::Interval => "interval",
        Fsync::Always => "always",
    }
}

// ---------------------------------------------------------------------------------
// append

/// Records per append call in batched mode: 256, fewer for big records so that a
/// batch stays around 2 MiB.
fn batch_len(size: usize) -> usize {
    BATCH.min((2 * MIB / size).max(1))
}

/// One thing that can be appended to, one call at a time.
trait Sink {
    /// Make one append call (of one record or one batch).
    fn call(&mut self);
    /// Bytes written to the current file(s), framing included.
    fn written(&self) -> u64;
    /// Start over on a fresh, empty directory, primed so the next call is a steady one.
    fn reset(&mut self);
}

struct LogSink {
    config: LogConfig,
    records: Vec<Bytes>,
    /// The same records framed by their producer (`append_framed`), when set.
    framed: Option<Vec<Framed>>,
    single: bool,
    call_bytes: u64,
    next: usize,
    written: u64,
    // Dropped in this order: the log before its directory.
    log: Option<Log>,
    dir: Option<TempDir>,
}

impl LogSink {
    fn new(config: LogConfig, size: usize, batch: usize, single: bool) -> LogSink {
        let records = payloads(batch, size, 0x5eed ^ size as u64);
        let frames: u64 = records.iter().map(|r| (HEADER + r.len()) as u64).sum();
        let mut s = LogSink {
            config,
            records,
            framed: None,
            single,
            call_bytes: if single {
                (HEADER + size) as u64
            } else {
                frames
            },
            next: 0,
            written: 0,
            log: None,
            dir: None,
        };
        s.reset();
        s
    }
}

impl Sink for LogSink {
    #[inline]
    fn call(&mut self) {
        let log = self.log.as_mut().unwrap();
        if self.single {
            let r = self.records[self.next].clone();
            self.next = (self.next + 1) % self.records.len();
            black_box(log.append(r).unwrap());
        } else if let Some(framed) = &self.framed {
            black_box(log.append_framed(framed).unwrap());
        } else {
            black_box(log.append_batch(&self.records).unwrap());
        }
        self.written += self.call_bytes;
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn reset(&mut self) {
        self.log = None;
        self.dir = None;
        let dir = tmpdir();
        self.log = Some(Log::open(dir.path(), self.config.clone()).unwrap());
        self.dir = Some(dir);
        self.written = 0;
        // The first append creates the segment (and fsyncs the directory): not timed.
        self.call();
    }
}

struct RawSink {
    /// One frame per record (single) or one buffer with the whole batch (batched).
    bufs: Vec<Vec<u8>>,
    sync: bool,
    next: usize,
    written: u64,
    file: Option<File>,
    dir: Option<TempDir>,
}

impl RawSink {
    fn new(size: usize, batch: usize, single: bool, sync: bool) -> RawSink {
        let records = payloads(batch, size, 0x5eed ^ size as u64);
        let bufs = if single {
            records
                .iter()
                .map(|r| {
                    let mut v = Vec::new();
                    raw_frame(r, &mut v);
                    v
                })
                .collect()
        } else {
            let mut v = Vec::new();
            for r in &records {
                raw_frame(r, &mut v);
            }
            vec![v]
        };
        let mut s = RawSink {
            bufs,
            sync,
            next: 0,
            written: 0,
            file: None,
            dir: None,
        };
        s.reset();
        s
    }
}

impl Sink for RawSink {
    #[inline]
    fn call(&mut self) {
        let mut f = self.file.as_ref().unwrap();
        let buf = &self.bufs[self.next];
        self.next = (self.next + 1) % self.bufs.len();
        f.write_all(buf).unwrap();
        if self.sync {
            f.sync_data().unwrap();
        }
        self.written += buf.len() as u64;
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn reset(&mut self) {
        self.file = None;
        self.dir = None;
        let dir = tmpdir();
        let path = dir.path().join("raw.log");
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        if self.sync {
            File::open(dir.path()).unwrap().sync_all().unwrap();
        }
        self.file = Some(file);
        self.dir = Some(dir);
        self.written = 0;
        self.call();
    }
}

/// Time `iters` calls, starting a fresh sink (untimed) whenever the next call would
/// take it past `bound` bytes.
fn timed_calls(sink: &mut impl Sink, iters: u64, call_bytes: u64, bound: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if sink.written() + call_bytes > bound {
            sink.reset();
        }
        let room = (bound.saturating_sub(sink.written()) / call_bytes).max(1);
        let n = left.min(room);
        let start = Instant::now();
        for _ in 0..n {
            sink.call();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn append_config(fsync: Fsync, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        // Large segments: rolls do not dominate (the sink restarts before one).
        segment_bytes_max: 1 << 30,
        // Room for a dense index of 256 MiB of 64 B records (3.7 M entries).
        index_bytes_max: 64 * MIB as u64,
        index_interval_bytes,
        fsync,
        ..LogConfig::default()
    }
}

/// Bench one log append case and its raw baseline.
fn bench_append_pair(
    g: &mut BenchmarkGroup<'_, WallTime>,
    scale: Scale,
    size: usize,
    single: bool,
    fsync: Fsync,
) {
    let batch = batch_len(size);
    let per_call = if single { 1 } else { batch };
    let call_bytes = ((HEADER + size) * per_call) as u64;
    let mode = if single { "single" } else { "batched" };
    let label = size_label(size);
    g.throughput(throughput(size, per_call as u64));

    let mut log: Option<LogSink> = None;
    g.bench_function(
        BenchmarkId::new(format!("log/{mode}/{}", fsync_label(fsync)), &label),
        |b| {
            let sink = log
                .get_or_insert_with(|| LogSink::new(append_config(fsync, 0), size, batch, single));
            b.iter_custom(|iters| timed_calls(sink, iters, call_bytes, scale.append_bound));
        },
    );
    drop(log);

    if !single {
        // Records framed (and checksummed) by their producer, as the broker's
        // connection tasks do: what remains on the log's thread.
        let mut log: Option<LogSink> = None;
        g.bench_function(
            BenchmarkId::new(format!("log-framed/{mode}/{}", fsync_label(fsync)), &label),
            |b| {
                let sink = log.get_or_insert_with(|| {
                    let mut s = LogSink::new(append_config(fsync, 0), size, batch, single);
                    s.framed = Some(s.records.iter().map(|r| Framed::new(r)).collect());
                    s
                });
                b.iter_custom(|iters| timed_calls(sink, iters, call_bytes, scale.append_bound));
            },
        );
        drop(log);
    }

    let mut raw: Option<RawSink> = None;
    g.bench_function(
        BenchmarkId::new(format!("raw/{mode}/{}", fsync_label(fsync)), &label),
        |b| {
            let sink = raw
                .get_or_insert_with(|| RawSink::new(size, batch, single, fsync == Fsync::Always));
            b.iter_custom(|iters| timed_calls(sink, iters, call_bytes, scale.append_bound));
        },
    );
}

fn bench_append(c: &mut Criterion) {
    let scale = Scale::get();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for size in [64, KIB, 64 * KIB] {
        for single in [true, false] {
            bench_append_pair(&mut g, scale, size, single, Fsync::Never);
        }
    }
    // One fdatasync per call: batched for every size, single for 1 KiB only.
    for size in [64, KIB, 64 * KIB] {
        if size == KIB {
            bench_append_pair(&mut g, scale, size, true, Fsync::Always);
        }
        bench_append_pair(&mut g, scale, size, false, Fsync::Always);
    }
    g.finish();
}

// ---------------------------------------------------------------------------------
// read

/// A log filled with `records` records of `size` bytes, never synced by the log.
struct ReadFixture {
    size: usize,
    log: Log,
    dir: TempDir,
}

impl ReadFixture {
    /// `tail`: keep every record in the in-memory tail as well.
    fn build(size: usize, payload_bytes: usize, tail: bool) -> ReadFixture {
        let records = (payload_bytes / size).max(1);
        let dir = tmpdir();
        let config = LogConfig {
            tail_bytes_max: if tail { payload_bytes + MIB } else { 0 },
            fsync: Fsync::Never,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config).unwrap();
        // One buffer sliced into records: distinct memory per record, one allocation.
        let mut rng = XorShift(0xfeed ^ size as u64);
        let all: Vec<u8> = (0..records * size)
            .map(|_| (rng.next() as u8) | 1)
            .collect();
        let all = Bytes::from(all);
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..records {
            batch.push(all.slice(i * size..(i + 1) * size));
            if batch.len() == BATCH || i + 1 == records {
                log.append_batch(&batch).unwrap();
                batch.clear();
            }
        }
        assert_eq!(log.head(), Offset(records as u64));
        ReadFixture { size, log, dir }
    }

    /// Read the whole log, `READ_LIMITS` at a time.
    fn read_all(&self) {
        let mut out = Vec::with_capacity(READ_LIMITS.records_max);
        let mut from = self.log.earliest();
        loop {
            out.clear();
            let batch = self.log.read(from, READ_LIMITS, &mut out).unwrap();
            if batch.is_empty() {
                break;
            }
            black_box(&out);
            from = batch.next;
        }
        assert_eq!(from, self.log.head());
    }

    /// The chunk the log's disk reads use for these records: whichever of the record
    /// and byte limits binds first.
    fn raw_chunk(&self) -> usize {
        (READ_LIMITS.records_max * (HEADER + self.size)).min(READ_LIMITS.bytes_max)
    }

    /// The baseline: `pread` the segment files, in the log's chunks, into a fresh
    /// zeroed `Vec` per call as the log does.
    fn raw_read_all(&self, files: &[File]) {
        let chunk = self.raw_chunk();
        for f in files {
            let len = f.metadata().unwrap().len();
            let mut pos = 0u64;
            while pos < len {
                let n = (chunk as u64).min(len - pos) as usize;
                let mut v = vec![0u8; n];
                f.read_exact_at(&mut v, pos).unwrap();
                black_box(&v);
                pos += n as u64;
            }
        }
    }

    fn open_segments(&self) -> Vec<File> {
        segment_files(self.dir.path())
            .iter()
            .map(|p| File::open(p).unwrap())
            .collect()
    }

    fn all_files(&self) -> Vec<PathBuf> {
        let mut v = segment_files(self.dir.path());
        v.extend(index_files(self.dir.path()));
        v
    }
}

fn timed_passes(iters: u64, mut before: impl FnMut(), mut pass: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        before();
        let start = Instant::now();
        pass();
        total += start.elapsed();
    }
    total
}

fn bench_read(c: &mut Criterion) {
    let scale = Scale::get();
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        // One pass over a few hundred MiB takes tens to hundreds of milliseconds.
        .sampling_mode(SamplingMode::Flat);

    for (size, bytes, cold) in [
        (KIB, scale.read_1k_bytes, true),
        (64, scale.read_64_bytes, false),
    ] {
        let label = size_label(size);
        let records = (bytes / size).max(1) as u64;
        g.throughput(throughput(size, records));

        // Page-cached and cold reads: the tail is disabled, every read is a pread.
        let disk: RefCell<Option<ReadFixture>> = RefCell::new(None);
        let with_disk = |f: &mut dyn FnMut(&ReadFixture)| {
            let mut d = disk.borrow_mut();
            let fx = d.get_or_insert_with(|| ReadFixture::build(size, bytes, false));
            f(fx);
        };
        g.bench_function(BenchmarkId::new("log/cached", &label), |b| {
            with_disk(&mut |fx| {
                b.iter_custom(|iters| timed_passes(iters, || {}, || fx.read_all()));
            });
        });
        g.bench_function(BenchmarkId::new("raw/cached", &label), |b| {
            with_disk(&mut |fx| {
                let files = fx.open_segments();
                b.iter_custom(|iters| timed_passes(iters, || {}, || fx.raw_read_all(&files)));
            });
        });
        if cold {
            g.bench_function(BenchmarkId::new("log/cold", &label), |b| {
                with_disk(&mut |fx| {
                    let files = fx.all_files();
                    b.iter_custom(|iters| {
                        timed_passes(iters, || drop_page_cache(&files), || fx.read_all())
                    });
                });
            });
            g.bench_function(BenchmarkId::new("raw/cold", &label), |b| {
                with_disk(&mut |fx| {
                    let paths = fx.all_files();
                    let files = fx.open_segments();
                    b.iter_custom(|iters| {
                        timed_passes(
                            iters,
                            || drop_page_cache(&paths),
                            || fx.raw_read_all(&files),
                        )
                    });
                });
            });
        }
        drop(disk);

        // Everything in the in-memory tail: no system call.
        let mut tail: Option<ReadFixture> = None;
        g.bench_function(BenchmarkId::new("log/tail", &label), |b| {
            let fx = tail.get_or_insert_with(|| ReadFixture::build(size, bytes, true));
            b.iter_custom(|iters| timed_passes(iters, || {}, || fx.read_all()));
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------
// index

/// A log of 64 B records with a dense or sparse index, tail disabled.
struct IndexFixture {
    log: Log,
    /// Random offsets to read from, each with 100 records after it.
    offsets: Vec<Offset>,
    _dir: TempDir,
}

impl IndexFixture {
    fn build(records: usize, index_interval_bytes: u32) -> IndexFixture {
        let dir = tmpdir();
        let config = LogConfig {
            tail_bytes_max: 0,
            fsync: Fsync::Never,
            index_interval_bytes,
            // The default (8 MiB, 1 M entries) would roll a dense segment every 1 M
            // records of 64 B; keep one segment per fixture.
            index_bytes_max: 16 * MIB as u64,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config).unwrap();
        let pool = payloads(BATCH, 64, 0x1dec5);
        let mut left = records;
        while left > 0 {
            let n = left.min(BATCH);
            log.append_batch(&pool[..n]).unwrap();
            left -= n;
        }
        let stats = log.stats();
        let data = (records * (HEADER + 64)) as u64;
        let index = stats.bytes - data;
        let on_disk: u64 = index_files(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        eprintln!(
            "index fixture: interval {index_interval_bytes} B, {records} records of 64 B, \
             {} segment(s): data {data} B, index {index} B ({} entries, {:.3} B/record; \
             active index file preallocated to {on_disk} B)",
            stats.segments,
            index / 8,
            index as f64 / records as f64,
        );
        let mut rng = XorShift(0xabcdef);
        let span = (records.saturating_sub(100)).max(1) as u64;
        let offsets: Vec<Offset> = (0..4096).map(|_| Offset(rng.next() % span)).collect();
        for n in [1, 100] {
            let mut out = Vec::new();
            let limits = ReadLimits {
                records_max: n,
                bytes_max: MIB,
            };
            let batch = log.read(offsets[0], limits, &mut out).unwrap();
            assert_eq!(
                (batch.first, batch.len(), out.len()),
                (offsets[0], n as u64, n)
            );
            assert_eq!(out[0], pool[(offsets[0].0 % BATCH as u64) as usize]);
        }
        IndexFixture {
            log,
            offsets,
            _dir: dir,
        }
    }

    fn random_reads(&self, iters: u64, records_max: usize) -> Duration {
        let limits = ReadLimits {
            records_max,
            bytes_max: MIB,
        };
        let mut out = Vec::with_capacity(records_max);
        let start = Instant::now();
        for i in 0..iters as usize {
            out.clear();
            let from = self.offsets[i % self.offsets.len()];
            black_box(self.log.read(from, limits, &mut out).unwrap());
            black_box(&out);
        }
        start.elapsed()
    }
}

fn bench_index(c: &mut Criterion) {
    let scale = Scale::get();
    let mut g = c.benchmark_group("index");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, interval) in [("dense", 0u32), ("sparse", 4096)] {
        let fixture: RefCell<Option<IndexFixture>> = RefCell::new(None);
        for n in [1usize, 100] {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(format!("read{n}/64B"), name), |b| {
                let mut f = fixture.borrow_mut();
                let fx =
                    f.get_or_insert_with(|| IndexFixture::build(scale.index_records, interval));
                b.iter_custom(|iters| fx.random_reads(iters, n));
            });
        }
        drop(fixture);

        // What the index costs on the write side.
        let call_bytes = ((HEADER + 64) * BATCH) as u64;
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut sink: Option<LogSink> = None;
        g.bench_function(BenchmarkId::new("append/batched/never/64B", name), |b| {
            let s = sink.get_or_insert_with(|| {
                LogSink::new(append_config(Fsync::Never, interval), 64, BATCH, false)
            });
            b.iter_custom(|iters| timed_calls(s, iters, call_bytes, scale.append_bound));
        });
    }
    g.finish();
}

criterion_group!(benches, bench_append, bench_read, bench_index);
criterion_main!(benches);
