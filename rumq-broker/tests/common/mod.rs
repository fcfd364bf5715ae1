//! Shared helpers for the black-box tests: start the real `rumq-broker` binary on a
//! free loopback port with a fresh data directory, talk to it with raw bytes over a
//! socket, with `rumqttc`, or with the mosquitto command-line clients; `stock` says
//! whether a stock client is installed.
//!
//! Every wait has a timeout, so a hang fails the test instead of blocking it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

mod stock;
pub use stock::*;

/// How long to wait for something that is expected to happen promptly.
pub const STEP: Duration = Duration::from_secs(3);
/// How long to wait to be reasonably sure that something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);
/// How long the broker may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);

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
        Broker::launch(Some(data_dir), config, "info")
    }

    fn launch(data_dir: Option<&Path>, config: Option<&str>, level: &str) -> Broker {
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
        let deadline = Instant::now() + STARTUP;
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
                "rumq-broker did not log `listening` within {STARTUP:?}:\n{text}"
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

// ---------------------------------------------------------------------------------
// Raw MQTT over a socket
// ---------------------------------------------------------------------------------

/// Append MQTT's variable-length "remaining length" (the broker's own varint
/// writer).
pub fn put_remaining_length(out: &mut Vec<u8>, len: usize) {
    let mut varint = BytesMut::new();
    put_varint(&mut varint, len);
    out.extend_from_slice(&varint);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

/// A whole packet from a first byte and a body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// What goes into a raw CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// "MQTT" (3.1.1) or "MQIsdp" (3.1).
    pub protocol: &'static str,
    /// Protocol level: 4 for 3.1.1, 3 for 3.1.
    pub level: u8,
    /// Client id.
    pub client_id: String,
    /// Clean session flag.
    pub clean: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// Will: topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
}

impl ConnectOpts {
    /// MQTT 3.1.1, clean session, keepalive off.
    pub fn new(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol: "MQTT",
            level: 4,
            client_id: client_id.into(),
            clean: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
        }
    }

    /// Set the clean session flag.
    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    /// Set the keep alive (seconds).
    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    /// Set a will.
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some((topic.into(), payload.to_vec(), qos, retain));
        self
    }

    /// The CONNECT packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, self.protocol.as_bytes());
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some((_, _, qos, retain)) = &self.will {
            flags |= 0x04 | (qos << 3);
            if *retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, payload, _, _)) = &self.will {
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut body, p);
        }
        packet(0x10, &body)
    }
}

/// The line a [`Broker::parking`] logs when `client_id`'s connection parks.
pub fn parked_line(client_id: &str) -> String {
    format!("client_id=\"{client_id}\"}}: rumq_broker::connection: parked")
}

/// A PUBLISH packet.
pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// A SUBSCRIBE packet.
pub fn subscribe_packet(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    packet(0x82, &body)
}

/// An UNSUBSCRIBE packet.
pub fn unsubscribe_packet(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    packet(0xa2, &body)
}

/// PUBACK, PUBREC, PUBREL (first byte 0x62), PUBCOMP: a packet id.
pub fn ack_packet(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
/// PINGRESP.
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];
/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];
/// CONNACK accepted, no session present.
pub const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// CONNACK accepted, session present.
pub const CONNACK_SESSION: [u8; 4] = [0x20, 0x02, 0x01, 0x00];

/// One packet read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// The first byte (type and flags).
    pub first: u8,
    /// Everything after the remaining length.
    pub body: Vec<u8>,
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic.
    pub topic: String,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RawPacket {
    /// The packet type (upper 4 bits).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet as on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        packet(self.first, &self.body)
    }

    /// Decode as PUBLISH; panics if it is not one.
    pub fn publish(&self) -> RawPublish {
        assert_eq!(self.kind(), 3, "expected PUBLISH, got {self:?}");
        let qos = (self.first >> 1) & 0x03;
        let tlen = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8(self.body[2..2 + tlen].to_vec()).unwrap();
        let mut at = 2 + tlen;
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([self.body[at], self.body[at + 1]]);
            at += 2;
        }
        RawPublish {
            dup: self.first & 0x08 != 0,
            qos,
            retain: self.first & 0x01 != 0,
            topic,
            pkid,
            payload: self.body[at..].to_vec(),
        }
    }
}

/// Take one whole packet off the front of `buf`, if it holds one.
pub fn take_packet(buf: &mut Vec<u8>) -> Option<RawPacket> {
    let (len, i) = match decode_varint(buf.get(1..)?) {
        Varint::Value { value, len } => (usize::try_from(value).unwrap(), 1 + len),
        Varint::Incomplete => return None,
        Varint::TooLong => panic!("broker sent a bad remaining length"),
    };
    if buf.len() < i + len {
        return None;
    }
    let first = buf[0];
    let body = buf[i..i + len].to_vec();
    buf.drain(..i + len);
    Some(RawPacket { first, body })
}

/// A client that speaks raw bytes.
#[derive(Debug)]
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Open a TCP connection.
    pub async fn open(port: u16) -> Raw {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Open a connection, send CONNECT and return the CONNACK's 4 bytes.
    pub async fn connect(port: u16, opts: &ConnectOpts) -> (Raw, Vec<u8>) {
        let mut raw = Raw::open(port).await;
        raw.send(&opts.encode()).await;
        let connack = raw.recv().await;
        assert_eq!(connack.kind(), 2, "expected CONNACK, got {connack:?}");
        (raw, connack.bytes())
    }

    /// Like [`Raw::connect`] but asserts the CONNACK is "accepted, no session".
    pub async fn connected(port: u16, opts: &ConnectOpts) -> Raw {
        let (raw, connack) = Raw::connect(port, opts).await;
        assert_eq!(connack, CONNACK_OK, "CONNACK for {opts:?}");
        raw
    }

    /// Write bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    fn take_packet(&mut self) -> Option<RawPacket> {
        take_packet(&mut self.buf)
    }

    /// The next packet within `within`; `None` on timeout. Panics if the connection
    /// closes.
    pub async fn recv_within(&mut self, within: Duration) -> Option<RawPacket> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(p) = self.take_packet() {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("connection closed while waiting for a packet"),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("read error while waiting for a packet: {e}"),
            }
        }
    }

    /// The next packet; panics after [`STEP`].
    pub async fn recv(&mut self) -> RawPacket {
        self.recv_within(STEP)
            .await
            .expect("no packet from the broker in time")
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> RawPublish {
        self.recv().await.publish()
    }

    /// Assert nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(p) = self.recv_within(d).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Write bytes; the error if the write fails (the connection was reset).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
    }

    /// Wait until the broker closes the connection (EOF or reset) and return how long
    /// that took. Panics if it stays open for `within` or if a packet arrives.
    pub async fn expect_closed(&mut self, within: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the connection to close, got bytes {:02x?}",
                self.buf
            );
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// rumqttc
// ---------------------------------------------------------------------------------

/// rumqttc options for a client of `port` with a 30 s keepalive (clean session).
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A connected rumqttc client whose event loop runs in a task that forwards events.
/// It does not reconnect: the first error ends it.
#[derive(Debug)]
pub struct Mqtt {
    /// The client handle.
    pub client: AsyncClient,
    /// The CONNACK it got.
    pub connack: ConnAck,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    pending: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Mqtt {
    /// Connect with a clean session; panics unless accepted.
    pub async fn connect(port: u16, client_id: &str) -> Mqtt {
        Mqtt::connect_with(options(port, client_id)).await
    }

    /// Connect with `opts`; panics unless accepted.
    pub async fn connect_with(opts: MqttOptions) -> Mqtt {
        match Mqtt::try_connect(opts).await {
            Ok(m) => m,
            Err(e) => panic!("connect failed: {e:?}"),
        }
    }

    /// Connect with `opts`: the client, or the error the event loop reported.
    pub async fn try_connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let first = tokio::time::timeout(STEP, eventloop.poll())
            .await
            .expect("no CONNACK in time")?;
        let connack = match first {
            Event::Incoming(Incoming::ConnAck(c)) => c,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        Ok(Mqtt {
            client,
            connack,
            events,
            pending: VecDeque::new(),
            task,
        })
    }

    /// The next event; panics on timeout or connection error.
    async fn next(&mut self, what: &str) -> Event {
        match tokio::time::timeout(STEP, self.events.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e:?}"),
            Ok(Some(Ok(ev))) => ev,
        }
    }

    /// Wait for an incoming packet for which `want` returns `Some`; publishes seen on
    /// the way are kept for [`Mqtt::recv_publish`].
    async fn wait_for<T>(&mut self, what: &str, mut want: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            if let Event::Incoming(p) = self.next(what).await {
                if let Some(t) = want(&p) {
                    return t;
                }
                if let Incoming::Publish(publish) = p {
                    self.pending.push_back(publish);
                }
            }
        }
    }

    /// The next PUBLISH received.
    pub async fn recv_publish(&mut self) -> Publish {
        if let Some(p) = self.pending.pop_front() {
            return p;
        }
        self.wait_for("a PUBLISH", |p| match p {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Assert no PUBLISH arrives for `d`.
    pub async fn expect_no_publish(&mut self, d: Duration) {
        assert!(self.pending.is_empty(), "unexpected {:?}", self.pending);
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(Event::Incoming(Incoming::Publish(p))))) => {
                    panic!("expected no PUBLISH, got {p:?}")
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("connection error: {e:?}"),
                Ok(None) => panic!("event loop ended"),
            }
        }
    }

    /// Subscribe and return the SUBACK's return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        self.wait_for("SUBACK", |p| match p {
            Incoming::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribe and assert it was granted at `qos`.
    pub async fn subscribed(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
    }

    /// Unsubscribe and wait for UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        self.wait_for("UNSUBACK", |p| {
            matches!(p, Incoming::UnsubAck(_)).then_some(())
        })
        .await;
    }

    /// Publish; for QoS 1 and 2 wait for PUBACK / PUBCOMP (one publish in flight).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {
                // Wait until it was written, so that order against other clients
                // holds.
                loop {
                    if let Event::Outgoing(Outgoing::Publish(_)) = self.next("publish").await {
                        return;
                    }
                }
            }
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| {
                    matches!(p, Incoming::PubComp(_)).then_some(())
                })
                .await
            }
        }
    }

    /// Send DISCONNECT and wait until the broker closes the connection.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("broker did not close the connection after DISCONNECT"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Drop the TCP connection without DISCONNECT.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Wait for the connection to end with an error (the broker closed it).
    pub async fn closed(&mut self) -> ConnectionError {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("connection still open after {STEP:?}"),
                Ok(None) => panic!("event loop ended without an error"),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Expect a PUBLISH with exactly these fields (packet id and dup aside).
#[track_caller]
pub fn assert_publish(p: &Publish, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        (topic, payload, qos, retain),
        "{p:?}"
    );
    assert!(!p.dup, "unexpected DUP: {p:?}");
}

// ---------------------------------------------------------------------------------
// Child processes (mosquitto clients, the broker's CLI)
// ---------------------------------------------------------------------------------

/// Run a command to completion with a timeout; kills it and panics when it hangs.
pub fn run_with_timeout(cmd: &mut Command, within: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Lowercase hex of `bytes` (mosquitto_sub's `%x`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `mosquitto_sub -d` whose subscription the broker has acknowledged.
/// Messages are printed as `MSG|<qos>|<retain>|<topic>|<payload hex>`.
#[derive(Debug)]
pub struct MosquittoSub {
    child: Child,
    out: Arc<LogBuf>,
    err: Arc<LogBuf>,
}

/// The `-F` format [`MosquittoSub`] passes.
pub const MOSQ_FORMAT: &str = "MSG|%q|%r|%t|%x";

impl MosquittoSub {
    /// Start `mosquitto_sub -h 127.0.0.1 -p PORT -d -F ... ARGS` and wait for its SUBACK.
    pub fn start(port: u16, args: &[&str]) -> MosquittoSub {
        StockClient::Mosquitto.require();
        // Line-buffered stdout, so that the debug lines arrive as they are printed.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-d",
                "-F",
                MOSQ_FORMAT,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = collect_lines(child.stdout.take().unwrap());
        let err = collect_lines(child.stderr.take().unwrap());
        let sub = MosquittoSub { child, out, err };
        sub.out
            .wait_for("received SUBACK", STEP, "mosquitto_sub output");
        sub
    }

    /// Wait for it to exit (it should be run with -C and -W) and return its exit status
    /// and message lines (`MSG|...`, without the prefix).
    pub fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.out.lock(),
                self.err.lock()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // Let the reader threads reach EOF.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until
            && (Arc::strong_count(&self.out) > 1 || Arc::strong_count(&self.err) > 1)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = self
            .out
            .text
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("MSG|").map(str::to_string))
            .collect();
        (status, lines)
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `mosquitto_pub -h 127.0.0.1 -p PORT ARGS` and assert it succeeded.
pub fn mosquitto_pub(port: u16, args: &[&str]) {
    let out = run_with_timeout(
        StockClient::Mosquitto
            .command("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        STEP,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP/1.1 request (`method path`, with a bearer `token` if given) on a fresh
/// connection to `addr`: the status code and the body, within [`STEP`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: rumq\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(STEP, s.read_to_string(&mut response))
        .await
        .expect("no HTTP response in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// Run `rumq-broker passwd FILE USER --password-stdin [extra...]` with `password` on
/// its standard input; its output (it must end within [`STEP`] × 3).
pub fn passwd(file: &Path, user: &str, password: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = Command::new(broker_bin())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .arg("--password-stdin")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rumq-broker passwd");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + STEP * 3;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rumq-broker passwd did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A password file in `dir` with `users` and their passwords, made by the binary.
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("passwd");
    for (user, password) in users {
        let out = passwd(&file, user, password, &[]);
        assert!(
            out.status.success(),
            "passwd {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

/// A client that is subscribed to `healthy/#` and publishes there itself.
pub struct Healthy {
    m: Mqtt,
    n: u32,
}

impl Healthy {
    pub async fn new(port: u16) -> Healthy {
        let mut m = Mqtt::connect(port, "healthy").await;
        m.subscribed("healthy/#", QoS::AtLeastOnce).await;
        Healthy { m, n: 0 }
    }

    /// Publish a fresh message and receive exactly it.
    pub async fn check(&mut self) {
        self.n += 1;
        let payload = format!("still fine {}", self.n);
        self.m
            .publish("healthy/t", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        let p = self.m.recv_publish().await;
        assert_publish(&p, "healthy/t", payload.as_bytes(), QoS::AtLeastOnce, false);
    }
}
