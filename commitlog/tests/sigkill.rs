//! The real crash: a child process appends as fast as it can and is SIGKILLed.
//!
//! In its own test binary because it forks: a forked child briefly shares the parent's
//! descriptors, including other tests' directory locks.
// Test helpers unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use commitlog::{Log, Offset};
use common::{payload, read_all, small_config};

/// The real thing: a child process appends as fast as it can and is SIGKILLed at a
/// random moment. Every append it reported as returned must be there after reopen.
#[test]
fn sigkill_during_appends_loses_no_returned_record() {
    if let Ok(dir) = std::env::var("COMMITLOG_CRASH_CHILD_DIR") {
        child_writer(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let progress = dir.path().join("progress");
        let logdir = dir.path().join("log");
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "sigkill_during_appends_loses_no_returned_record",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("COMMITLOG_CRASH_CHILD_DIR", &logdir)
            .env("COMMITLOG_CRASH_PROGRESS", &progress)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it has made some progress, then a bit more (varies per round).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read(&progress).map_or(0, |b| b.len()) < 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "child made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 + 37 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let b = std::fs::read(&progress).unwrap();
        let acked = u64::from_le_bytes(b[..8].try_into().unwrap());
        let log = Log::open(&logdir, small_config()).unwrap();
        let head = log.head().0;
        assert!(
            head >= acked,
            "round {round}: acked {acked} but head is {head}"
        );
        let all = read_all(&log, Offset(0));
        assert_eq!(all.len() as u64, head);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(*r, payload(i as u64), "round {round}: record {i}");
        }
    }
}

/// The child: append batches and record, after each returns, how many are acked.
fn child_writer(dir: &Path) {
    let progress = std::env::var("COMMITLOG_CRASH_PROGRESS").unwrap();
    let progress = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(progress)
        .unwrap();
    let mut log = Log::open(dir, small_config()).unwrap();
    let mut i = 0u64;
    loop {
        let batch: Vec<_> = (i..i + 1 + i % 5).map(payload).collect();
        let r = log.append_batch(&batch).unwrap();
        i = r.end.0;
        progress.write_all_at(&i.to_le_bytes(), 0).unwrap();
    }
}
