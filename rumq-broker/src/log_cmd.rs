//! `rumq-broker log inspect DIR` and `rumq-broker log tail DIR`: a log directory
//! read without starting the broker and without changing a byte (as Kafka's
//! `kafka-dump-log` does). DIR is a log directory, or a data directory, whose
//! `messages/` (and for `inspect`, `state/`) are then read.
//!
//! `inspect` lists each segment with its offsets, record count, size, and how it
//! ends, checking every record's CRC. It exits 1 when a log is damaged: a segment
//! with corrupt bytes, a torn write before the last segment, or offsets with a gap
//! between segments. A torn end of the last segment is what a crash mid-write
//! leaves (the broker cuts it off at its next start), so it is reported, not
//! counted. `tail` prints the stored messages, optionally only those whose topic
//! matches a filter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use commitlog::inspect::{scan_segment, segments, SegmentReport, Tail};
use commitlog::Offset;

/// `rumq-broker log ...`
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// List segments, offsets and record counts, checking every CRC.
    Inspect {
        /// A log directory, or a data directory (its messages/ and state/).
        dir: PathBuf,
        /// Frames claiming more bytes than this count as corrupt.
        #[arg(long, default_value_t = 256 * 1024 * 1024)]
        record_bytes_max: u32,
    },
    /// Print stored messages: offset, time, QoS, retain, topic, payload.
    Tail {
        /// A log directory, or a data directory (its messages/).
        dir: PathBuf,
        /// Only messages whose topic matches this filter (`+` and `#` allowed).
        #[arg(long)]
        topic: Option<String>,
        /// The last N messages (of those matching).
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

/// Run `log inspect` or `log tail`.
pub fn run(cmd: &LogCommand) -> ExitCode {
    let result = match cmd {
        LogCommand::Inspect {
            dir,
            record_bytes_max,
        } => inspect(dir, *record_bytes_max),
        LogCommand::Tail { dir, topic, lines } => tail(dir, topic.as_deref(), *lines),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rumq-broker log: {e}");
            ExitCode::from(2)
        }
    }
}

/// The log directories DIR names: itself, or a data directory's logs.
fn log_dirs(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let inside: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.join(n))
        .filter(|d| d.is_dir())
        .collect();
    if inside.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        inside
    }
}

fn inspect(dir: &Path, record_bytes_max: u32) -> Result<ExitCode, String> {
    let mut damaged = false;
    for log in log_dirs(dir, &["messages", "state"]) {
        let found = segments(&log).map_err(|e| e.to_string())?;
        println!("{}: {} segments", log.display(), found.len());
        println!(
            "  {:>20}  {:>20}  {:>10}  {:>12}  end",
            "first", "next", "records", "bytes"
        );
        let mut reports: Vec<SegmentReport> = Vec::new();
        for (base, path) in &found {
            let r = scan_segment(path, *base, record_bytes_max, |_, _| {})
                .map_err(|e| e.to_string())?;
            println!(
                "  {:>20}  {:>20}  {:>10}  {:>12}  {}",
                r.base.0,
                r.next().0,
                r.records,
                r.bytes,
                describe(r.tail)
            );
            reports.push(r);
        }
        damaged |= problems(&reports);
    }
    if damaged {
        println!("damaged: see the lines marked DAMAGED above");
        return Ok(ExitCode::FAILURE);
    }
    println!("every record's CRC checked: intact");
    Ok(ExitCode::SUCCESS)
}

/// Print what is wrong across a log's segments; whether anything is.
fn problems(reports: &[SegmentReport]) -> bool {
    let mut damaged = false;
    for (i, r) in reports.iter().enumerate() {
        let last = i + 1 == reports.len();
        let name = r.path.display();
        match r.tail {
            Tail::Corrupt { at } => {
                println!("  DAMAGED {name}: bytes at {at} are not a record");
                damaged = true;
            }
            Tail::Torn { at } if !last => {
                println!("  DAMAGED {name}: a record cut short at {at}, in a segment followed by others");
                damaged = true;
            }
            Tail::Torn { at } => println!(
                "  note {name}: a record cut short at {at} (a crash mid-write); the broker cuts it off at its next start"
            ),
            Tail::Clean | Tail::Zeros { .. } => {}
        }
        if let Some(next) = reports.get(i + 1) {
            if next.base != r.next() {
                println!(
                    "  DAMAGED {name}: ends at offset {}, the next segment begins at {}",
                    r.next().0,
                    next.base.0
                );
                damaged = true;
            }
        }
    }
    damaged
}

fn describe(tail: Tail) -> String {
    match tail {
        Tail::Clean => "clean".into(),
        Tail::Zeros { bytes } => format!("clean, {bytes} bytes preallocated"),
        Tail::Torn { at } => format!("torn at byte {at}"),
        Tail::Corrupt { at } => format!("CORRUPT at byte {at}"),
    }
}

fn tail(dir: &Path, filter: Option<&str>, lines: usize) -> Result<ExitCode, String> {
    if let Some(f) = filter {
        router::topic::validate_filter(f).map_err(|e| format!("--topic {f:?}: {e}"))?;
    }
    let log = log_dirs(dir, &["messages"]).remove(0);
    let mut kept: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for (base, path) in segments(&log).map_err(|e| e.to_string())? {
        scan_segment(&path, base, u32::MAX, |offset, record| {
            if let Some(line) = message_line(offset, &record, filter) {
                if kept.len() == lines {
                    kept.pop_front();
                }
                if lines > 0 {
                    kept.push_back(line);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    }
    for line in kept {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One message as a line, if it matches `filter`.
fn message_line(offset: Offset, record: &bytes::Bytes, filter: Option<&str>) -> Option<String> {
    if let Some(f) = router::Fence::decode(record) {
        return filter.is_none().then(|| {
            format!(
                "{offset} (fence: what follows comes after log {} up to {})",
                f.after, f.end
            )
        });
    }
    let m = match router::Message::decode(record) {
        Ok(m) => m,
        Err(e) => return Some(format!("{offset} (not a message: {e})")),
    };
    let topic = m.topic_str();
    if filter.is_some_and(|f| !router::topic::matches(f, topic)) {
        return None;
    }
    Some(format!(
        "{offset} {} qos={} retain={} {topic} {}",
        m.time_ms,
        m.qos as u8,
        u8::from(m.retain),
        payload_text(&m.payload)
    ))
}

/// The payload as text when it is UTF-8 without control characters, else as hex.
fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}
