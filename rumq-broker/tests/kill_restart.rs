//! Nothing acknowledged is lost: rounds of publishers sending QoS 1 and QoS 2 at full
//! speed while the broker is SIGKILLed at a random moment and restarted on the same
//! data directory. Persistent subscribers must end up with every message whose
//! publisher got a PUBACK / PUBREC: QoS 1 at least once, QoS 2 exactly once, and
//! each publisher's messages first seen in publish order.
//!
//! The clients speak MQTT 3.1.1 from raw packets, because they must keep their own
//! session state across the broker's deaths exactly as the protocol says (resend
//! unacknowledged PUBLISHes with DUP and pending PUBRELs; remember inbound QoS 2 ids
//! until PUBREL) and record precisely what was acknowledged.
//!
//! CI runs a few short rounds. A soak: `RUMQ_SOAK_SECS=600 cargo test -p rumq-broker
//! --release --test kill_restart -- --nocapture` (it prints the totals).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ack_packet, publish_packet, subscribe_packet, take_packet, Broker, ConnectOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Unacknowledged publishes a publisher keeps in flight.
const WINDOW: usize = 64;
/// A connection that shows nothing for this long is treated as dead.
const SILENCE: Duration = Duration::from_secs(5);

/// A connection that ends when the broker dies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Gone;

impl Conn {
    async fn open(port: u16, client_id: &str) -> Result<(Conn, bool), Gone> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|_| Gone)?;
        stream.set_nodelay(true).map_err(|_| Gone)?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        c.send(&ConnectOpts::new(client_id).clean(false).encode())
            .await?;
        let connack = c.recv().await?;
        assert_eq!(connack.first, 0x20, "CONNACK expected: {connack:?}");
        assert_eq!(connack.body[1], 0, "connection refused: {connack:?}");
        Ok((c, connack.body[0] & 1 == 1))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        match tokio::time::timeout(SILENCE, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    async fn recv(&mut self) -> Result<common::RawPacket, Gone> {
        loop {
            if let Some(p) = take_packet(&mut self.buf) {
                return Ok(p);
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout(SILENCE, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return Err(Gone),
            }
        }
    }

    /// Every whole packet already buffered.
    fn buffered(&mut self) -> Vec<common::RawPacket> {
        std::iter::from_fn(|| take_packet(&mut self.buf)).collect()
    }
}

fn pkid_of(p: &common::RawPacket) -> u16 {
    u16::from_be_bytes([p.body[0], p.body[1]])
}

/// A publisher's session, kept across broker deaths.
struct Publisher {
    id: String,
    topic: String,
    qos: u8,
    next_seq: u64,
    next_pkid: u16,
    /// Packet id → (sequence, PUBREC received).
    inflight: BTreeMap<u16, (u64, bool)>,
    /// Sequences acknowledged (PUBACK, or PUBREC for QoS 2), indexed by sequence:
    /// dense, so a soak of hundreds of millions of messages fits in memory.
    acked: Vec<bool>,
}

impl Publisher {
    fn new(n: u8, qos: u8) -> Publisher {
        Publisher {
            id: format!("kr-pub-{n}"),
            topic: format!("kr/{n}"),
            qos,
            next_seq: 0,
            next_pkid: 1,
            inflight: BTreeMap::new(),
            acked: Vec::new(),
        }
    }

    fn ack(&mut self, seq: u64) {
        let i = seq as usize;
        if self.acked.len() <= i {
            self.acked.resize(i + 1, false);
        }
        self.acked[i] = true;
    }

    fn acked_count(&self) -> usize {
        self.acked.iter().filter(|a| **a).count()
    }

    fn publish(&self, seq: u64, pkid: u16, dup: bool) -> Vec<u8> {
        publish_packet(
            &self.topic,
            seq.to_string().as_bytes(),
            self.qos,
            false,
            dup,
            pkid,
        )
    }

    /// Publish until `stop`, then until everything in flight is acknowledged (or the
    /// broker dies).
    async fn run(&mut self, port: u16, stop: Arc<AtomicBool>) -> Result<(), Gone> {
        let (mut c, _) = Conn::open(port, &self.id).await?;
        // Resume the session: unacknowledged PUBLISHes again with DUP, and PUBRELs
        // for those the broker already has (MQTT 3.1.1 §4.4), in the order they were
        // first sent (§4.6): sequence order, which packet ids lose once they wrap.
        let mut out = Vec::new();
        let mut resend: Vec<(&u16, &(u64, bool))> = self.inflight.iter().collect();
        resend.sort_by_key(|(_, (seq, _))| *seq);
        for (pkid, (seq, released)) in resend {
            if *released {
                out.extend(ack_packet(0x62, *pkid));
            } else {
                out.extend(self.publish(*seq, *pkid, true));
            }
        }
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && self.inflight.is_empty() {
                let _ = c.send(&[0xe0, 0x00]).await;
                return Ok(());
            }
            while !stopping && self.inflight.len() < WINDOW {
                let (seq, pkid) = (self.next_seq, self.next_pkid);
                self.next_seq += 1;
                self.next_pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                out.extend(self.publish(seq, pkid, false));
                self.inflight.insert(pkid, (seq, false));
            }
            if !out.is_empty() {
                c.send(&out).await?;
                out.clear();
            }
            let first = c.recv().await?;
            for p in std::iter::once(first).chain(c.buffered()) {
                let pkid = pkid_of(&p);
                match p.first {
                    0x40 => {
                        if let Some((seq, _)) = self.inflight.remove(&pkid) {
                            self.ack(seq);
                        }
                    }
                    0x50 => {
                        if let Some((seq, released)) = self.inflight.get_mut(&pkid) {
                            *released = true;
                            let seq = *seq;
                            self.ack(seq);
                        }
                        out.extend(ack_packet(0x62, pkid));
                    }
                    0x70 => {
                        self.inflight.remove(&pkid);
                    }
                    other => panic!("{}: unexpected packet {other:#x}", self.id),
                }
            }
        }
    }
}

/// A subscriber's session, kept across broker deaths.
struct Subscriber {
    id: String,
    qos: u8,
    subscribed: bool,
    /// Inbound QoS 2 ids received and not yet released: a PUBLISH with one of these
    /// is the same message again (the client's half of exactly once).
    awaiting_rel: HashSet<u16>,
    /// Per publisher (topic `kr/<n>`, n = 1, 2), times each sequence was received.
    received: [Vec<u8>; 2],
    /// Per publisher, the highest sequence seen so far, and how often a sequence
    /// was first seen after a higher one (out of publish order).
    highest: [Option<u64>; 2],
    misordered: [u64; 2],
    /// Per publisher, sequences below this are all received (for `has_all`).
    complete_below: [usize; 2],
}

impl Subscriber {
    fn new(n: u8, qos: u8) -> Subscriber {
        Subscriber {
            id: format!("kr-sub-{n}"),
            qos,
            subscribed: false,
            awaiting_rel: HashSet::new(),
            received: [Vec::new(), Vec::new()],
            highest: [None, None],
            misordered: [0, 0],
            complete_below: [0, 0],
        }
    }

    fn times(&self, publisher: usize, seq: usize) -> u8 {
        self.received[publisher].get(seq).copied().unwrap_or(0)
    }

    fn record(&mut self, topic: &str, seq: u64) {
        let p = match topic {
            "kr/1" => 0,
            "kr/2" => 1,
            other => panic!("{}: message on an unexpected topic {other}", self.id),
        };
        let i = seq as usize;
        if self.received[p].len() <= i {
            self.received[p].resize(i + 1, 0);
        }
        let n = &mut self.received[p][i];
        *n = n.saturating_add(1);
        if *n == 1 {
            if self.highest[p].is_some_and(|h| h > seq) {
                self.misordered[p] += 1;
            }
            self.highest[p] = Some(self.highest[p].map_or(seq, |h| h.max(seq)));
        }
    }

    /// Holds every sequence acknowledged to each publisher (`want[p][seq]`).
    fn has_all(&mut self, want: &[Vec<bool>]) -> bool {
        for (p, acked) in want.iter().enumerate() {
            let mut i = self.complete_below[p];
            while i < acked.len() && (!acked[i] || self.times(p, i) > 0) {
                i += 1;
            }
            self.complete_below[p] = i;
            if i < acked.len() {
                return false;
            }
        }
        true
    }

    /// Receive (and acknowledge) until `done` says so or the broker dies.
    async fn run(
        &mut self,
        port: u16,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        done: impl Fn(&mut Subscriber) -> bool,
    ) -> Result<(), Gone> {
        let (mut c, present) = Conn::open(port, &self.id).await?;
        if self.subscribed {
            assert!(present, "{}: the session must survive the crash", self.id);
        } else {
            c.send(&subscribe_packet(1, &[("kr/#", self.qos)])).await?;
            let suback = c.recv().await?;
            assert_eq!(suback.first, 0x90);
            assert_eq!(suback.body[2], self.qos, "{suback:?}");
            self.subscribed = true;
        }
        if let Some(r) = ready {
            let _ = r.send(());
        }
        let mut out = Vec::new();
        loop {
            if done(self) {
                let _ = c.send(&[0xe0, 0x00]).await;
                return Ok(());
            }
            let first = match tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
                Ok(p) => p?,
                Err(_) => continue,
            };
            for p in std::iter::once(first).chain(c.buffered()) {
                match p.kind() {
                    3 => {
                        let publish = p.publish();
                        let fresh = publish.qos < 2 || self.awaiting_rel.insert(publish.pkid);
                        if fresh {
                            let seq: u64 =
                                String::from_utf8(publish.payload).unwrap().parse().unwrap();
                            self.record(&publish.topic, seq);
                        }
                        match publish.qos {
                            1 => out.extend(ack_packet(0x40, publish.pkid)),
                            2 => out.extend(ack_packet(0x50, publish.pkid)),
                            _ => {}
                        }
                    }
                    6 => {
                        let pkid = pkid_of(&p);
                        self.awaiting_rel.remove(&pkid);
                        out.extend(ack_packet(0x70, pkid));
                    }
                    other => panic!("{}: unexpected packet type {other}", self.id),
                }
            }
            c.send(&out).await?;
            out.clear();
        }
    }
}

/// Sleep between `lo` and `hi` milliseconds (a cheap xorshift, seeded per call site).
fn jitter(seed: &mut u64, lo: u64, hi: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(lo + *seed % (hi - lo))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill_at_any_moment() {
    let soak = soak_duration();
    let min_rounds = 4;
    let data = tempfile::tempdir().unwrap();
    let mut seed = std::process::id() as u64 | 1;
    let mut sessions = Sessions::new();
    let started = Instant::now();
    let mut round = 0u32;
    let mut kills = 0u32;
    loop {
        let last = match soak {
            Some(d) => started.elapsed() >= d,
            None => round + 1 >= min_rounds,
        };
        let mut broker = Broker::start_in(data.path(), None);
        let running = sessions.start(broker.port()).await;
        if last {
            tokio::time::sleep(jitter(&mut seed, 300, 800)).await;
            sessions.stop_publishers(running.stop, running.pubs).await;
            // Subscribers end once they hold everything acknowledged. They are
            // reconnected afresh so that `done` sees the final acked sets.
            broker.kill();
            sessions.join_subscribers(running.subs).await;
            sessions.receive_everything_acked(data.path()).await;
            kills += 1;
            break;
        }
        // Kill at a random moment while everything is in full flow.
        tokio::time::sleep(jitter(&mut seed, 150, 1200)).await;
        broker.kill();
        kills += 1;
        sessions.join_publishers(running.pubs).await;
        sessions.join_subscribers(running.subs).await;
        // Order is checked as it goes, so a failure names its round.
        sessions.assert_in_order(round, &broker);
        round += 1;
    }
    let report = sessions.assert_nothing_lost(round + 1, kills, started);
    println!("{report}");
}

/// `RUMQ_SOAK_SECS`: run rounds for this long instead of a few.
fn soak_duration() -> Option<Duration> {
    std::env::var("RUMQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Every client's session, carried from one life of the broker to the next.
struct Sessions {
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
}

/// The clients running against one life of the broker.
struct Running {
    /// Tells the publishers to stop once everything in flight is acknowledged.
    stop: Arc<AtomicBool>,
    /// Each publisher and whether its run ended well (not by the broker's death).
    pubs: Vec<JoinHandle<(Publisher, bool)>>,
    subs: Vec<JoinHandle<Subscriber>>,
}

impl Sessions {
    fn new() -> Sessions {
        Sessions {
            publishers: vec![Publisher::new(1, 1), Publisher::new(2, 2)],
            subscribers: vec![Subscriber::new(1, 1), Subscriber::new(2, 2)],
        }
    }

    /// Run every client against the broker on `port` until it dies (the
    /// publishers: or until told to stop).
    async fn start(&mut self, port: u16) -> Running {
        // Subscribers first (in the first round their SUBACK must precede any publish).
        let mut subs = Vec::new();
        for mut s in self.subscribers.drain(..) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let handle = tokio::spawn(async move {
                let _ = s.run(port, Some(tx), |_| false).await;
                s
            });
            let _ = rx.await;
            subs.push(handle);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pubs: Vec<_> = self
            .publishers
            .drain(..)
            .map(|mut p| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let ok = p.run(port, stop).await.is_ok();
                    (p, ok)
                })
            })
            .collect();
        Running { stop, pubs, subs }
    }

    /// Take the publishers' sessions back after the broker's death.
    async fn join_publishers(&mut self, pubs: Vec<JoinHandle<(Publisher, bool)>>) {
        for h in pubs {
            self.publishers.push(h.await.unwrap().0);
        }
    }

    /// Take the subscribers' sessions back after the broker's death.
    async fn join_subscribers(&mut self, subs: Vec<JoinHandle<Subscriber>>) {
        for h in subs {
            self.subscribers.push(h.await.unwrap());
        }
    }

    /// Stop the publishers; each must end with everything it sent acknowledged,
    /// the broker alive throughout.
    async fn stop_publishers(
        &mut self,
        stop: Arc<AtomicBool>,
        pubs: Vec<JoinHandle<(Publisher, bool)>>,
    ) {
        stop.store(true, Ordering::Relaxed);
        for h in pubs {
            let (p, ok) = h.await.unwrap();
            assert!(ok, "{}: the broker went away in the last round", p.id);
            self.publishers.push(p);
        }
    }

    /// Restart the broker on `data` and reconnect every subscriber until it holds
    /// every message acknowledged to the publishers, within 30 s.
    async fn receive_everything_acked(&mut self, data: &Path) {
        let want: Arc<Vec<Vec<bool>>> =
            Arc::new(self.publishers.iter().map(|p| p.acked.clone()).collect());
        let broker = Broker::start_in(data, None);
        let port = broker.port();
        let mut handles = Vec::new();
        for mut s in self.subscribers.drain(..) {
            let want = want.clone();
            handles.push(tokio::spawn(async move {
                let res = tokio::time::timeout(
                    Duration::from_secs(30),
                    s.run(port, None, move |s| s.has_all(&want)),
                )
                .await;
                assert!(
                    matches!(res, Ok(Ok(()))),
                    "{}: did not receive every acknowledged message",
                    s.id
                );
                s
            }));
        }
        self.join_subscribers(handles).await;
        drop(broker);
    }

    /// Every subscriber so far saw each publisher's messages in publish order.
    fn assert_in_order(&self, round: u32, broker: &Broker) {
        for s in &self.subscribers {
            assert_eq!(
                s.misordered,
                [0, 0],
                "round {round}: {} saw messages out of publish order; broker log:\n{}",
                s.id,
                broker.stderr()
            );
        }
    }

    /// Every subscriber holds every acknowledged message, in order, and at QoS 2
    /// once; returns the totals.
    fn assert_nothing_lost(&self, rounds: u32, kills: u32, started: Instant) -> String {
        let acked: usize = self.publishers.iter().map(Publisher::acked_count).sum();
        let mut report = format!(
            "{rounds} rounds, {kills} SIGKILLs, {acked} messages acknowledged ({}) in {:.1?}",
            self.publishers
                .iter()
                .map(|p| format!("{} QoS {}: {}", p.topic, p.qos, p.acked_count()))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed()
        );
        assert!(acked > 0, "nothing was published: {report}");
        for s in &self.subscribers {
            let (lost, duplicated) = self.losses_of(s);
            let total: u64 = s.received.iter().flatten().map(|n| u64::from(*n)).sum();
            report += &format!(
                "\n{} (QoS {}): received {total}, lost {lost}, QoS 2 duplicates {duplicated}",
                s.id, s.qos
            );
            assert_eq!(lost, 0, "{report}");
            assert_eq!(duplicated, 0, "{report}");
        }
        report
    }

    /// Acknowledged messages `s` never received, and messages it received more than
    /// once where exactly once was promised; asserts publish order on the way.
    fn losses_of(&self, s: &Subscriber) -> (usize, usize) {
        let mut lost = 0;
        let mut duplicated = 0;
        for (i, p) in self.publishers.iter().enumerate() {
            lost += (0..p.acked.len())
                .filter(|seq| p.acked[*seq] && s.times(i, *seq) == 0)
                .count();
            // Exactly once: QoS 2 from the publisher and granted to the subscriber.
            if p.qos == 2 && s.qos == 2 {
                duplicated += s.received[i].iter().filter(|n| **n > 1).count();
            }
            assert_eq!(
                s.misordered[i], 0,
                "{} saw {}'s messages out of publish order",
                s.id, p.topic
            );
        }
        (lost, duplicated)
    }
}
