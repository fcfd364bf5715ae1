//! `rumq-broker log inspect` and `log tail` on a real broker's data directory: what
//! was published is listed and printed; a flipped byte is reported as damage (exit
//! 1), a torn end of the last segment only noted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn log(args: &[&str], dir: &Path) -> (Output, String) {
    let out = run_with_timeout(
        Command::new(broker_bin()).arg("log").args(args).arg(dir),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// A data directory with five messages in it, the broker stopped.
fn data_with_messages() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(&dir.path().join("data"), None);
    let port = broker.port();
    for i in 1..=3 {
        mosquitto_pub(
            port,
            &[
                "-t",
                "sensors/kitchen/temp",
                "-q",
                "1",
                "-m",
                &format!("2{i}.5"),
            ],
        );
    }
    mosquitto_pub(
        port,
        &["-t", "sensors/hall/temp", "-q", "1", "-r", "-m", "19"],
    );
    mosquitto_pub(port, &["-t", "other", "-q", "1", "-m", "x"]);
    assert!(broker.terminate(STEP).success());
    dir
}

#[test]
fn inspect_lists_the_logs_and_tail_prints_the_matching_messages() {
    let dir = data_with_messages();
    let data = dir.path().join("data");
    let (out, text) = log(&["inspect"], &data);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("messages: 1 segments"), "{text}");
    let row = text.lines().nth(2).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..3], ["0", "5", "5"], "first, next, records: {row}");
    assert!(text.contains("every record's CRC checked: intact"));

    let (out, text) = log(&["tail", "--topic", "sensors/+/temp", "-n", "2"], &data);
    assert!(out.status.success());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("2 ") && lines[0].ends_with("sensors/kitchen/temp \"23.5\""),
        "{text}"
    );
    assert!(
        lines[1].contains("retain=1 sensors/hall/temp \"19\""),
        "{text}"
    );
    let (out, _) = log(&["tail", "--topic", "bad/#/filter"], &data);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_flipped_byte_is_damage_and_a_torn_end_only_a_note() {
    let dir = data_with_messages();
    let messages = dir.path().join("data").join("messages");
    let segment = std::fs::read_dir(&messages)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;

    // The last record cut short, as a crash mid-write leaves it.
    std::fs::write(&segment, &bytes[..end - 2]).unwrap();
    let (out, text) = log(&["inspect"], &messages);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("note") && text.contains("cut short"),
        "{text}"
    );
    assert!(text.contains(" 4 "), "four records left: {text}");

    // A byte flipped inside the first record.
    bytes[40] ^= 0xff;
    std::fs::write(&segment, &bytes[..end]).unwrap();
    let (out, text) = log(&["inspect"], &messages);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DAMAGED") && text.contains("not a record"),
        "{text}"
    );
}
