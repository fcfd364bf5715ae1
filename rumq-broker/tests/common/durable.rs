//! MQTT 3.1.1 clients from raw packets that keep their session state across a
//! broker's deaths exactly as the protocol says (resend unacknowledged PUBLISHes
//! with DUP and pending PUBRELs; remember inbound QoS 2 ids until PUBREL) and record
//! precisely what was acknowledged and received: `tests/kill_restart.rs` (one
//! broker) and `tests/cluster_chaos.rs` (a cluster whose nodes die) drive them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ack_packet, publish_packet, subscribe_packet, take_packet, ConnectOpts, RawPacket};

/// Unacknowledged publishes a publisher keeps in flight.
pub const WINDOW: usize = 64;
/// A connection that shows nothing for this long is treated as dead.
pub const SILENCE: Duration = Duration::from_secs(5);

/// A connection that ends when the broker dies.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

#[derive(Debug)]
pub struct Gone;

impl Conn {
    pub async fn open(port: u16, client_id: &str) -> Result<(Conn, bool), Gone> {
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
        if connack.body[1] != 0 {
            // Refused (a cluster without a majority for a moment): try again later,
            // as a broker that is down.
            return Err(Gone);
        }
        Ok((c, connack.body[0] & 1 == 1))
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        match tokio::time::timeout(SILENCE, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    pub async fn recv(&mut self) -> Result<RawPacket, Gone> {
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
    pub fn buffered(&mut self) -> Vec<RawPacket> {
        std::iter::from_fn(|| take_packet(&mut self.buf)).collect()
    }
}

pub fn pkid_of(p: &RawPacket) -> u16 {
    u16::from_be_bytes([p.body[0], p.body[1]])
}

/// A publisher's session, kept across broker deaths.
pub struct Publisher {
    pub id: String,
    pub topic: String,
    pub qos: u8,
    pub next_seq: u64,
    pub next_pkid: u16,
    /// Packet id → (sequence, PUBREC received).
    pub inflight: BTreeMap<u16, (u64, bool, u32)>,
    /// Connections made so far: each message's payload names the one it was first
    /// sent on (`<connection>:<sequence>`), for the order a subscriber checks.
    pub connections: u32,
    /// Sequences sent again on a later connection (their order is not checked).
    pub resent: std::collections::BTreeSet<u64>,
    /// Per connection made: the first sequence sent on it, its port and when it
    /// opened (for a failure's report: where a lost message was published).
    pub starts: Vec<(u64, u16, std::time::SystemTime)>,
    /// Sequences acknowledged (PUBACK, or PUBREC for QoS 2), indexed by sequence:
    /// dense, so a soak of hundreds of millions of messages fits in memory.
    pub acked: Vec<bool>,
}

impl Publisher {
    pub fn new(n: u8, qos: u8) -> Publisher {
        Publisher {
            id: format!("kr-pub-{n}"),
            topic: format!("kr/{n}"),
            qos,
            next_seq: 0,
            next_pkid: 1,
            inflight: BTreeMap::new(),
            connections: 0,
            resent: std::collections::BTreeSet::new(),
            starts: Vec::new(),
            acked: Vec::new(),
        }
    }

    pub fn ack(&mut self, seq: u64) {
        let i = seq as usize;
        if self.acked.len() <= i {
            self.acked.resize(i + 1, false);
        }
        self.acked[i] = true;
    }

    /// Where sequence `seq` was first sent: its connection, port and when that
    /// connection opened.
    pub fn origin(&self, seq: u64) -> String {
        let i = self.starts.partition_point(|(first, _, _)| *first <= seq);
        match i
            .checked_sub(1)
            .and_then(|i| Some((i, self.starts.get(i)?)))
        {
            Some((i, (_, port, at))) => {
                format!("connection {} (port {port}, opened {at:?})", i + 1)
            }
            None => "no connection".to_owned(),
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.iter().filter(|a| **a).count()
    }

    pub fn publish(&self, (seq, connection): (u64, u32), pkid: u16, dup: bool) -> Vec<u8> {
        publish_packet(
            &self.topic,
            format!("{connection}:{seq}").as_bytes(),
            self.qos,
            false,
            dup,
            pkid,
        )
    }

    /// Publish until `stop`, then until everything in flight is acknowledged (or the
    /// broker dies).
    pub async fn run(&mut self, port: u16, stop: Arc<AtomicBool>) -> Result<(), Gone> {
        let (mut c, _) = Conn::open(port, &self.id).await?;
        self.connections += 1;
        (self.starts).push((self.next_seq, port, std::time::SystemTime::now()));
        // Resume the session: unacknowledged PUBLISHes again with DUP, and PUBRELs
        // for those the broker already has (MQTT 3.1.1 §4.4), in the order they were
        // first sent (§4.6): sequence order, which packet ids lose once they wrap.
        let mut out = Vec::new();
        let mut resend: Vec<(&u16, &(u64, bool, u32))> = self.inflight.iter().collect();
        resend.sort_by_key(|(_, (seq, _, _))| *seq);
        let mut again = Vec::new();
        for (pkid, (seq, released, connection)) in resend {
            if *released {
                out.extend(ack_packet(0x62, *pkid));
            } else {
                out.extend(self.publish((*seq, *connection), *pkid, true));
                again.push(*seq);
            }
        }
        self.resent.extend(again);
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
                out.extend(self.publish((seq, self.connections), pkid, false));
                self.inflight.insert(pkid, (seq, false, self.connections));
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
                        if let Some((seq, _, _)) = self.inflight.remove(&pkid) {
                            self.ack(seq);
                        }
                    }
                    0x50 => {
                        if let Some((seq, released, _)) = self.inflight.get_mut(&pkid) {
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
pub struct Subscriber {
    pub id: String,
    pub qos: u8,
    pub subscribed: bool,
    /// Inbound QoS 2 ids received and not yet released: a PUBLISH with one of these
    /// is the same message again (the client's half of exactly once).
    pub awaiting_rel: HashSet<u16>,
    /// Per publisher (topic `kr/<n>`, n = 1, 2), times each sequence was received.
    pub received: [Vec<u8>; 2],
    /// Per publisher, the highest sequence seen so far, and how often a sequence
    /// was first seen after a higher one (out of publish order).
    pub highest: [Option<u64>; 2],
    pub misordered: [u64; 2],
    /// Per publisher, sequences below this are all received (for `has_all`).
    pub complete_below: [usize; 2],
    /// In this connection, per publisher, the highest sequence first seen; and
    /// the sequences first seen below it (out of the order they were published
    /// in, whichever node or connection the publisher used): `(publisher,
    /// sequence)`.
    pub in_connection: [Option<u64>; 2],
    pub out_of_order: Vec<(usize, u64)>,
    /// The port of each connection made so far, and when it opened (for a
    /// failure's report).
    pub ports: Vec<u16>,
    pub opened: Vec<std::time::SystemTime>,
}

impl Subscriber {
    pub fn new(n: u8, qos: u8) -> Subscriber {
        Subscriber {
            id: format!("kr-sub-{n}"),
            qos,
            subscribed: false,
            awaiting_rel: HashSet::new(),
            received: [Vec::new(), Vec::new()],
            highest: [None, None],
            misordered: [0, 0],
            complete_below: [0, 0],
            in_connection: [None, None],
            out_of_order: Vec::new(),
            ports: Vec::new(),
            opened: Vec::new(),
        }
    }

    pub fn times(&self, publisher: usize, seq: usize) -> u8 {
        self.received[publisher].get(seq).copied().unwrap_or(0)
    }

    /// A message received: `payload` is `<publisher's connection>:<sequence>`.
    pub fn record(&mut self, topic: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let (connection, seq) = text.split_once(':').expect("connection:sequence");
        let (connection, seq): (u32, u64) = (connection.parse().unwrap(), seq.parse().unwrap());
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
        if *n == 2 && self.qos == 2 && p == 1 {
            eprintln!(
                "{}: connection {} (port {:?}): {topic} {connection}:{seq} a second time",
                self.id,
                self.ports.len(),
                self.ports.last()
            );
        }
        if *n == 1 {
            if self.highest[p].is_some_and(|h| h > seq) {
                self.misordered[p] += 1;
            }
            self.highest[p] = Some(self.highest[p].map_or(seq, |h| h.max(seq)));
            let highest = self.in_connection[p].get_or_insert(seq);
            if *highest > seq {
                if self.out_of_order.len() < 4 {
                    eprintln!(
                        "{}: connection {} (port {:?}): {topic} {connection}:{seq} after {}",
                        self.id,
                        self.ports.len(),
                        self.ports.last(),
                        *highest
                    );
                }
                self.out_of_order.push((p, seq));
            }
            *highest = (*highest).max(seq);
        }
    }

    /// Holds every sequence acknowledged to each publisher (`want[p][seq]`).
    pub fn has_all(&mut self, want: &[Vec<bool>]) -> bool {
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
    pub async fn run(
        &mut self,
        port: u16,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
        done: impl Fn(&mut Subscriber) -> bool,
    ) -> Result<(), Gone> {
        let (mut c, present) = Conn::open(port, &self.id).await?;
        self.in_connection = [None, None];
        self.ports.push(port);
        self.opened.push(std::time::SystemTime::now());
        let mut ready = ready;
        if self.subscribed {
            assert!(present, "{}: the session must survive the crash", self.id);
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
        } else {
            // (Its SUBACK may come after messages: a SUBSCRIBE whose SUBACK was
            // lost with a node is in the session that the next node carries on.)
            c.send(&subscribe_packet(1, &[("kr/#", self.qos)])).await?;
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
                            self.record(&publish.topic, &publish.payload);
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
                    9 => {
                        assert_eq!(p.body[2], self.qos, "{p:?}");
                        self.subscribed = true;
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    other => panic!("{}: unexpected packet type {other}", self.id),
                }
            }
            c.send(&out).await?;
            out.clear();
        }
    }
}
