//! Shared helpers for the black-box tests: start the real `rumq-broker` binary on a
//! free loopback port with a fresh data directory, talk to it with raw bytes over a
//! socket, with `rumqttc`, or with the mosquitto command-line clients; `stock` says
//! whether a stock client is installed.
//!
//! Every wait has a timeout, so a hang fails the test instead of blocking it.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumq_broker::protocol::framing::{decode_varint, put_varint, Varint};
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, Incoming, MqttOptions, Outgoing, Publish, QoS,
    SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod certs;
mod cluster;
mod durable;
mod mqtt;
mod partition;
mod procs;
mod proxy;
mod raw;
mod stock;
mod tmpfs;
pub use certs::*;
pub use cluster::*;
pub use durable::*;
pub use mqtt::*;
pub use partition::*;
pub use procs::*;
pub use proxy::*;
pub use raw::*;
pub use stock::*;
pub use tmpfs::*;

/// How long to wait for something that is expected to happen promptly.
pub const STEP: Duration = Duration::from_secs(3);
/// How long to wait to be reasonably sure that something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);
/// How long the broker may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// Starting again on a data directory reads what it holds (a cluster node's soak
/// keeps tens of logs): longer.
const RESTART: Duration = Duration::from_secs(30);

/// The path of the binary under test.
pub fn broker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rumq-broker")
}

/// Lines the broker wrote to stderr, shared with the thread that reads them.
#[derive(Debug, Default)]
struct LogBuf {
    text: Mutex<String>,
    changed: Condvar,
}

/// A running broker process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The data directory it was given.
    pub data_dir: PathBuf,
    log: Arc<LogBuf>,
    exited: Option<ExitStatus>,
    /// Holds the config file (and the data directory when the broker owns it).
    _scratch: tempfile::TempDir,
}

impl Broker {
    /// A broker with the built-in default configuration and its own data directory.
    pub fn start() -> Broker {
        Broker::launch(None, None, "info")
    }

    /// A broker with `config` (TOML) and its own data directory.
    pub fn with_config(config: &str) -> Broker {
        Broker::launch(None, Some(config), "info")
    }

    /// As [`Broker::with_config`], logging at `level` (a tracing filter).
    pub fn with_config_logging(config: &str, level: &str) -> Broker {
        Broker::launch(None, Some(config), level)
    }

    /// A broker whose connections park after 100 ms of quiet
    /// (`listener.park_after_ms`), logging each parking (see [`parked_line`]).
    pub fn parking() -> Broker {
        Broker::with_config_logging(
            "[listener]\npark_after_ms = 100\n",
            "info,rumq_broker::connection=trace",
        )
    }

    /// A broker on the given data directory (to restart on the same data).
    pub fn start_in(data_dir: &Path, config: Option<&str>) -> Broker {
        Broker::launch_within(Some(data_dir), config, "info", RESTART)
    }

    fn launch(data_dir: Option<&Path>, config: Option<&str>, level: &str) -> Broker {
        Broker::launch_within(data_dir, config, level, STARTUP)
    }

    fn launch_within(
        data_dir: Option<&Path>,
        config: Option<&str>,
        level: &str,
        within: Duration,
    ) -> Broker {
        let scratch = tempfile::tempdir().expect("tempdir");
        let data_dir = data_dir.map_or_else(|| scratch.path().join("data"), Path::to_path_buf);
        let mut cmd = Command::new(broker_bin());
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-level")
            .arg(level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(text) = config {
            let path = scratch.path().join("rumq.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd.spawn().expect("spawn rumq-broker");
        let log = collect_lines(child.stderr.take().expect("stderr"));
        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            log,
            exited: None,
            _scratch: scratch,
        };
        let deadline = Instant::now() + within;
        loop {
            let text = broker.stderr();
            if let Some(addr) = parse_listening(&text) {
                broker.addr = addr;
                return broker;
            }
            if let Some(status) = broker.child.try_wait().expect("try_wait") {
                broker.exited = Some(status);
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "rumq-broker exited ({status}) before listening:\n{}",
                    broker.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rumq-broker did not log `listening` within {within:?}:\n{text}"
            );
            broker.wait_log_change(Duration::from_millis(50));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lock().clone()
    }

    fn wait_log_change(&self, d: Duration) {
        let text = self.log.lock();
        let _unused = self
            .log
            .changed
            .wait_timeout(text, d)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// Wait until stderr contains `needle` at least `n` times; panics after `within`.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.stderr().matches(needle).count();
            if seen >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` {seen} times, not {n}, within {within:?}:\n{}",
                self.stderr()
            );
            self.wait_log_change(Duration::from_millis(50));
        }
    }

    /// The address on the first line of the log with `marker` (its `addr=` field),
    /// once there is one.
    pub fn logged_addr(&self, marker: &str) -> SocketAddr {
        self.wait_for_log(marker, STEP);
        let log = self.stderr();
        let line = log.lines().find(|l| l.contains(marker)).unwrap();
        let addr = line.split("addr=").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Wait until stderr contains `needle`; panics after `within`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        self.log.wait_for(needle, within, "broker log");
    }

    /// Send SIGTERM (with the `kill` utility) and wait for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        self.wait_exit(within)
    }

    /// SIGKILL it (no chance to flush or close anything) and reap it.
    pub fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.child.kill().expect("SIGKILL the broker");
        let status = self.child.wait().expect("wait for the broker");
        self.exited = Some(status);
    }

    /// Wait for the process to exit on its own; panics (and kills it) after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                // Let the reader thread drain the pipe (it ends at EOF).
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until && Arc::strong_count(&self.log) > 1 {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "rumq-broker did not exit within {within:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- rumq-broker stderr ----\n{}----------------------------",
                self.stderr()
            );
        }
    }
}

/// Collect a child's output line by line in a thread.
fn collect_lines(r: impl Read + Send + 'static) -> Arc<LogBuf> {
    let log = Arc::new(LogBuf::default());
    let writer = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut text = writer.lock();
            text.push_str(&line);
            text.push('\n');
            writer.changed.notify_all();
        }
    });
    log
}

impl LogBuf {
    /// The text, even after a panic while it was held (a failed wait asserts with
    /// it locked): a `Broker` dropped while its test unwinds still prints its log,
    /// rather than panicking again, which would abort the test binary and leave
    /// other brokers running.
    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_for(&self, needle: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        let mut text = self.lock();
        while !text.contains(needle) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "{what} has no {needle:?} after {within:?}:\n{text}"
            );
            text = self
                .changed
                .wait_timeout(text, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

fn parse_listening(text: &str) -> Option<SocketAddr> {
    let at = text.find("listening addr=")?;
    let rest = &text[at + "listening addr=".len()..];
    let end = rest.find(|c: char| c.is_whitespace())?;
    rest[..end].parse().ok()
}
