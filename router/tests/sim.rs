//! A seeded simulation of three routers in a cluster (docs/mesh.md, step 5): no
//! threads, no clocks, no sockets. Each node has a publisher and a persistent
//! subscriber to `t/#`; the network between the nodes delivers peer messages in a
//! random order, duplicates some answers, and now and then resets a link, losing
//! what was on it. For the odd seeds a node also crashes now
//! and then (one at a time) and starts again as a new run from what its "disk"
//! held (`restart`): its clients reconnect to it, the publisher sending again what
//! was not acknowledged.
//!
//! Checked after every step:
//! - an acknowledged publish is held by at least `ack_copies` nodes (2, or 3 for one
//!   seed in three);
//! - a message reaches a subscriber only once `ack_copies` nodes hold it;
//! - each subscriber gets each publisher's messages in order (first seen, per
//!   publisher connection, within a subscriber connection), never twice without
//!   crashes (QoS 1 may repeat what a crash left unacknowledged);
//! - every replica is byte-identical to its writer's log, as far as it goes.
//!
//! And at the end, once the network has settled: every acknowledged publish reached
//! every subscriber on every node.
//!
//! `cargo test -p router --test sim` runs the fixed seeds; `RUMQ_SIM_SEEDS=N` adds N
//! more; `RUMQ_SIM_SEED=S` runs seed S alone; `RUMQ_SIM_VERBOSE=1` prints what
//! each seed did, `RUMQ_SIM_TRACE=info` (a tracing filter) the routers' log lines.
//! A failure names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::record::Framed;
use commitlog::{Offset, ReadLimits};
use mesh::{Incarnation, LogId, NodeId, Stream};

#[path = "sim/restart.rs"]
mod restart;
use router::{
    Connect, ConnectionId, Event, MemStorage, MeshConfig, Message, NewMessage, PacketId, PeerEvent,
    PeerReply, Publication, QoS, Reply, Router, RouterConfig, Storage, Subscription, TopicId,
};

const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const STEPS: usize = 1500;
const FIXED_SEEDS: [u64; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xdead_beef, 0x5eed_5eed];

/// xorshift64*: small, seeded, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn log_of(node: NodeId) -> LogId {
    run_of(node, 1)
}

/// Node `node`'s log of its run `run`.
fn run_of(node: NodeId, run: u32) -> LogId {
    LogId {
        node,
        incarnation: Incarnation(run),
    }
}

const PUBLISHER: ConnectionId = ConnectionId(1);
const SUBSCRIBER: ConnectionId = ConnectionId(2);

/// A message on the wire between two nodes.
#[derive(Debug, Clone)]
struct InFlight {
    from: NodeId,
    to: NodeId,
    reply: PeerReply,
}

struct Sim {
    rng: Rng,
    nodes: Vec<Router<MemStorage>>,
    wire: Vec<InFlight>,
    now: SystemTime,
    /// Per node: the next sequence number its publisher uses, and the packet ids
    /// awaiting PUBACK with their sequence numbers.
    next_seq: Vec<u32>,
    awaiting: Vec<BTreeMap<u16, u32>>,
    /// Acknowledged publishes: (publishing node, sequence number).
    acked: BTreeSet<(u8, u32)>,
    /// Per subscriber node: what it received (publisher, sequence), and in its
    /// current connection, per publisher connection (node, run), the last
    /// sequence first seen.
    received: Vec<BTreeSet<(u8, u32)>>,
    last_seq: Vec<BTreeMap<(u8, u32), u32>>,
    /// Links reset (what was on them lost).
    resets: usize,
    /// Copies before a commit: 2, or 3 for one seed in three (a follower then waits
    /// to be told; with 2 its own copy and the writer's suffice).
    ack_copies: usize,
    /// Whether nodes crash in this seed; per node its run (incarnation) and
    /// whether it is down; each earlier run's log as its writer left it.
    crashing: bool,
    runs: Vec<u32>,
    down: Vec<bool>,
    frozen: BTreeMap<LogId, MemStorage>,
    crashes: usize,
    /// Messages a subscriber got again (QoS 1, after a crash).
    repeats: usize,
}

/// Message `seq` of node `node`'s publisher, sent in the node's run `run`.
fn payload(node: NodeId, run: u32, seq: u32) -> Vec<u8> {
    format!("{} {run} {seq}", node.0).into_bytes()
}

fn parse(payload: &[u8]) -> (u8, u32, u32) {
    let s = std::str::from_utf8(payload).expect("utf-8 payload");
    let mut f = s.split(' ').map(|f| f.parse::<u32>().expect("a number"));
    let (n, run, seq) = (f.next(), f.next(), f.next());
    let n = n.and_then(|n| u8::try_from(n).ok()).expect("node");
    (n, run.expect("run"), seq.expect("seq"))
}

/// A router for `own`, in the cluster of `NODES`, started at `started`.
fn boot(own: LogId, ack_copies: usize, started: SystemTime) -> Router<MemStorage> {
    let mut r = Router::open(
        RouterConfig::default(),
        MemStorage::new(),
        MemStorage::new(),
    )
    .expect("a journal in memory");
    r.join_mesh(MeshConfig {
        own,
        ack_copies,
        followers: NODES.into_iter().filter(|o| *o != own.node).collect(),
        fetch_bytes_max: 512,
        fetch_wait: Duration::from_millis(200),
        failure_timeout: std::time::Duration::from_secs(1),
        superseded_keep: std::time::Duration::from_secs(2),
        started,
    });
    r
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let ack_copies = if seed.is_multiple_of(3) { 3 } else { 2 };
        let mut nodes = Vec::new();
        for n in NODES {
            let mut r = boot(log_of(n), ack_copies, SystemTime::UNIX_EPOCH);
            for o in NODES.into_iter().filter(|o| *o != n) {
                r.add_replica(log_of(o), MemStorage::new())
                    .expect("replica");
                assert!(r.add_journal_replica(log_of(o), MemStorage::new()));
            }
            for (conn, id) in [(PUBLISHER, "pub"), (SUBSCRIBER, "sub")] {
                r.handle(Event::Connect {
                    conn,
                    connect: Connect::v3(format!("{id}-{}", n.0), conn == PUBLISHER, None),
                });
            }
            r.handle(Event::Subscribe {
                conn: SUBSCRIBER,
                pkid: PacketId(1),
                filters: vec![Subscription::new("t/#", QoS::AtLeastOnce)],
                id: None,
            });
            r.handle(Event::Pull { conn: SUBSCRIBER });
            nodes.push(r);
        }
        let mut sim = Sim {
            rng: Rng::new(seed),
            nodes,
            wire: Vec::new(),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            next_seq: vec![0; NODES.len()],
            awaiting: vec![BTreeMap::new(); NODES.len()],
            acked: BTreeSet::new(),
            received: vec![BTreeSet::new(); NODES.len()],
            last_seq: vec![BTreeMap::new(); NODES.len()],
            resets: 0,
            ack_copies,
            crashing: seed % 2 == 1,
            runs: vec![1; NODES.len()],
            down: vec![false; NODES.len()],
            frozen: BTreeMap::new(),
            crashes: 0,
            repeats: 0,
        };
        for i in 0..NODES.len() {
            sim.collect(i);
        }
        sim
    }

    /// Take node `i`'s output: replies to its clients (acks, deliveries, which the
    /// subscriber acknowledges and pulls on), and peer messages onto the wire.
    fn collect(&mut self, i: usize) {
        if self.down[i] {
            return;
        }
        for _ in 0..16 {
            let out: Vec<_> = self.nodes[i].drain_outbox().collect();
            let wanted: Vec<_> = self.nodes[i].drain_credit_wanted().collect();
            if out.is_empty() && wanted.is_empty() {
                break;
            }
            for (conn, reply) in out {
                self.client_gets(i, conn, reply);
            }
            for conn in wanted {
                self.nodes[i].handle(Event::Pull { conn });
            }
        }
        let from = NODES[i];
        for (to, reply) in self.nodes[i].drain_peer_outbox().collect::<Vec<_>>() {
            self.wire.push(InFlight { from, to, reply });
        }
    }

    fn client_gets(&mut self, i: usize, conn: ConnectionId, reply: Reply) {
        match reply {
            Reply::PubAck(pkid, _) if conn == PUBLISHER => {
                let seq = self.awaiting[i]
                    .remove(&pkid.0)
                    .expect("ack of a publish in flight");
                let copies = self.copies(NODES[i], &payload(NODES[i], self.runs[i], seq));
                assert!(
                    copies >= self.ack_copies,
                    "publish {}/{seq} acked with {copies} copies",
                    i + 1
                );
                self.acked.insert((NODES[i].0, seq));
            }
            Reply::Deliver(items) if conn == SUBSCRIBER => {
                for d in items {
                    let m = Message::decode(d.record.head()).expect("a stored message");
                    let (node, run, seq) = parse(&m.payload);
                    let copies = self.copies(NodeId(node), &m.payload);
                    if copies < self.ack_copies {
                        self.dump(&(node, seq));
                    }
                    assert!(
                        copies >= self.ack_copies,
                        "{node}/{seq} (run {run}) delivered on node {} with {copies} copies",
                        i + 1
                    );
                    if !self.received[i].insert((node, seq)) {
                        assert!(self.crashing, "{node}/{seq} twice on node {}", i + 1);
                        self.repeats += 1;
                    } else {
                        let last = self.last_seq[i].insert((node, run), seq);
                        assert!(
                            last.is_none_or(|l| l < seq),
                            "{node}/{seq} (run {run}) after {last:?} on node {}",
                            i + 1
                        );
                    }
                    if let Some(p) = d.pkid {
                        self.nodes[i].handle(Event::PubAck { conn, pkid: p });
                    }
                }
            }
            _ => {}
        }
    }

    /// How many nodes hold the record of `payload` in one of `origin`'s logs (a
    /// node that is down holds what its "disk" does).
    fn copies(&self, origin: NodeId, payload: &[u8]) -> usize {
        let idx = NODES.iter().position(|n| *n == origin).expect("a node");
        let current = self.runs[idx];
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, r)| {
                (1..=current).any(|run| {
                    let log = if *j == idx && run == current {
                        Some(r.storage())
                    } else {
                        r.replica(run_of(origin, run))
                    };
                    log.is_some_and(|l| records(l).iter().any(|rec| holds(rec, payload)))
                })
            })
            .count()
    }

    /// Node `i`'s clock time in milliseconds (what its records are stamped).
    fn now_ms(&self) -> u64 {
        let since = self.now.duration_since(SystemTime::UNIX_EPOCH);
        since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn publish(&mut self, i: usize) {
        if self.awaiting[i].len() >= 8 || self.down[i] {
            return;
        }
        let seq = self.next_seq[i];
        self.next_seq[i] += 1;
        let pkid = (seq % 60_000) as u16 + 1;
        self.awaiting[i].insert(pkid, seq);
        self.send(i, pkid, seq);
    }

    /// Node `i`'s publisher sends message `seq` as `pkid`.
    fn send(&mut self, i: usize, pkid: u16, seq: u32) {
        let topic = format!("t/{}", self.rng.below(3));
        let body = payload(NODES[i], self.runs[i], seq);
        let record =
            NewMessage::new(QoS::AtLeastOnce, false, self.now_ms(), &topic, &body).framed();
        self.nodes[i].handle(Event::Publish {
            conn: PUBLISHER,
            pkid: Some(PacketId(pkid)),
            message: Publication {
                topic: TopicId(0),
                qos: QoS::AtLeastOnce,
                retain: false,
                record,
            },
        });
    }

    /// Hand one message on the wire to its node.
    fn deliver(&mut self, k: usize, duplicate: bool) {
        let m = if duplicate {
            self.wire[k].clone()
        } else {
            self.wire.swap_remove(k)
        };
        let to = NODES.iter().position(|n| *n == m.to).expect("a node");
        if self.down[to] {
            return;
        }
        let event = match m.reply {
            PeerReply::Fetch { stream, log, from } => PeerEvent::Fetched {
                stream,
                peer: m.from,
                log,
                from,
                bytes_max: 1 << 20,
            },
            PeerReply::Records {
                stream,
                log,
                base,
                commit,
                records,
            } => {
                let records = records.iter().map(|p| Framed::new(p)).collect();
                if log.node == m.from {
                    PeerEvent::Replicated {
                        stream,
                        log,
                        base,
                        commit,
                        records,
                    }
                } else {
                    // From that peer's copy of a gone writer's log (`relay`), as
                    // the broker's data link tells them apart.
                    PeerEvent::Relayed {
                        peer: m.from,
                        stream,
                        log,
                        base,
                        commit,
                        records,
                    }
                }
            }
            PeerReply::Done { log } => PeerEvent::Done { peer: m.from, log },
        };
        self.nodes[to].handle_peer(event);
        self.nodes[to].flush();
        self.collect(to);
    }

    /// Lose what is on the wire between two nodes, and tell both the link is back.
    fn reset_link(&mut self) {
        let a = NODES[self.rng.below(3)];
        let b = NODES[self.rng.below(3)];
        if a == b {
            return;
        }
        let (i, j) = (self.index(a), self.index(b));
        if self.down[i] || self.down[j] {
            return;
        }
        self.resets += 1;
        self.wire
            .retain(|m| !((m.from == a && m.to == b) || (m.from == b && m.to == a)));
        for (x, y) in [(a, b), (b, a)] {
            let i = NODES.iter().position(|n| *n == x).expect("a node");
            self.nodes[i].handle_peer(PeerEvent::LinkUp { peer: y });
            self.collect(i);
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=24 => {
                let i = self.rng.below(3);
                self.publish(i);
                self.nodes[i].flush();
                self.collect(i);
            }
            25..=84 if !self.wire.is_empty() => {
                let k = self.rng.below(self.wire.len());
                self.deliver(k, false);
            }
            85..=87 if !self.wire.is_empty() => {
                let k = self.rng.below(self.wire.len());
                if matches!(
                    self.wire[k].reply,
                    PeerReply::Records {
                        stream: Stream::Messages,
                        ..
                    }
                ) {
                    self.deliver(k, true);
                }
            }
            88..=89 => self.reset_link(),
            90 if self.crashing && !self.down.contains(&true) => {
                let i = self.rng.below(3);
                self.crash(i);
            }
            91 => {
                if let Some(i) = self.down.iter().position(|d| *d) {
                    self.restart(i);
                }
            }
            _ => self.tick(),
        }
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(50);
        for i in 0..NODES.len() {
            if !self.down[i] {
                self.nodes[i].tick(self.now);
                self.collect(i);
            }
        }
    }

    /// Where message `(node, seq)` is held, and each node's logs and sessions:
    /// for a failing seed.
    fn dump(&self, (node, seq): &(u8, u32)) {
        for (j, r) in self.nodes.iter().enumerate() {
            eprintln!("node {}: {:?}", j + 1, r.mesh_status());
            eprintln!("  sessions: {:?}", r.sessions_page(0, 10).1);
            let own = self.index(NodeId(*node));
            for run in 1..=self.runs[own] {
                let log = run_of(NodeId(*node), run);
                let held = if j == own && run == self.runs[own] {
                    Some(r.storage())
                } else {
                    r.replica(log)
                };
                let Some(held) = held else { continue };
                for (at, rec) in records(held).iter().enumerate() {
                    let m = Message::decode(rec);
                    if m.as_ref().is_ok_and(|m| parse(&m.payload).2 == *seq) {
                        eprintln!("  {node}/{seq} in {log} at {at}");
                    }
                }
            }
        }
    }

    fn index(&self, node: NodeId) -> usize {
        NODES.iter().position(|n| *n == node).expect("a node")
    }

    /// Every replica is a prefix of its writer's log, byte for byte (an earlier
    /// run's log as the crash left it); every copy of a node's current journal
    /// equals it where both hold records.
    fn check_replicas(&self) {
        for (i, n) in NODES.iter().enumerate() {
            for run in 1..=self.runs[i] {
                let log = run_of(*n, run);
                let writer = if run == self.runs[i] {
                    self.nodes[i].storage()
                } else {
                    &self.frozen[&log]
                };
                let own = records(writer);
                for (j, r) in self.nodes.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let Some(copy) = r.replica(log) else {
                        continue;
                    };
                    let copy = records(copy);
                    assert!(
                        copy.len() <= own.len(),
                        "node {} holds more of log {log} than its writer",
                        j + 1
                    );
                    assert_eq!(
                        copy[..],
                        own[..copy.len()],
                        "node {}'s replica of log {log}",
                        j + 1
                    );
                }
            }
            self.check_journal(i);
        }
    }

    /// Every copy of node `i`'s current journal agrees with it.
    fn check_journal(&self, i: usize) {
        let log = run_of(NODES[i], self.runs[i]);
        let journal = self.nodes[i].journal_storage().expect("a journal");
        // Each side may have dropped what precedes a checkpoint.
        let theirs: BTreeMap<Offset, &Bytes> = journal.records().collect();
        for (j, r) in self.nodes.iter().enumerate() {
            let Some(copy) = r.journal_replica(log).filter(|_| i != j) else {
                continue;
            };
            assert!(copy.head() <= journal.head());
            for (offset, record) in copy.records() {
                if offset >= journal.earliest() {
                    assert_eq!(
                        Some(&record),
                        theirs.get(&offset),
                        "node {}'s replica of journal {log} at {offset}",
                        j + 1
                    );
                }
            }
        }
    }

    /// No new faults: deliver everything and tick until nothing moves.
    fn settle(&mut self) {
        while let Some(i) = self.down.iter().position(|d| *d) {
            self.restart(i);
        }
        for _ in 0..10_000 {
            // Parked fetches answer at their wait: tick past it before calling the
            // network quiet.
            for _ in 0..10 {
                if !self.wire.is_empty() {
                    break;
                }
                self.tick();
            }
            if self.wire.is_empty() {
                return;
            }
            let k = self.rng.below(self.wire.len());
            self.deliver(k, false);
            let done = self.awaiting.iter().all(BTreeMap::is_empty)
                && (0..NODES.len()).all(|i| self.received[i].len() == self.acked.len());
            if done {
                return;
            }
        }
    }
}

fn records(log: &MemStorage) -> Vec<Bytes> {
    let mut out = Vec::new();
    let limits = ReadLimits {
        records_max: usize::MAX,
        bytes_max: usize::MAX,
    };
    log.read(Offset(0), limits, &mut out).expect("read");
    out
}

fn holds(record: &Bytes, payload: &[u8]) -> bool {
    Message::decode(record).is_ok_and(|m| m.payload[..] == *payload)
}

fn run(seed: u64) {
    if let Ok(filter) = std::env::var("RUMQ_SIM_TRACE") {
        // Each router's log lines, for a seed replayed alone.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    }
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step();
        sim.check_replicas();
    }
    sim.settle();
    sim.check_replicas();
    // Publishing is a quarter of the steps, at most 8 in flight per publisher
    // (and nothing is acknowledged while a node is down under ack_copies 3; a
    // restarted node holds its CONNECTs until every other node has said how far
    // it holds its earlier log, up to twice failure_timeout when one is down too).
    let least = if sim.crashing { 10 } else { 100 };
    assert!(
        sim.acked.len() > least,
        "seed {seed}: only {} acknowledged",
        sim.acked.len()
    );
    if std::env::var_os("RUMQ_SIM_VERBOSE").is_some() {
        eprintln!(
            "seed {seed}: ack_copies {}, {} acknowledged, {} resets, {} crashes, {} repeated",
            sim.ack_copies,
            sim.acked.len(),
            sim.resets,
            sim.crashes,
            sim.repeats
        );
    }
    for (i, got) in sim.received.iter().enumerate() {
        let missing: Vec<_> = sim.acked.difference(got).take(5).collect();
        if !missing.is_empty() {
            sim.dump(missing[0]);
            let all: Vec<_> = sim.acked.difference(got).collect();
            eprintln!("node {} misses {all:?}", i + 1);
            for (j, got) in sim.received.iter().enumerate() {
                eprintln!(
                    "node {} misses {}",
                    j + 1,
                    sim.acked.difference(got).count()
                );
            }
        }
        assert!(
            missing.is_empty(),
            "seed {seed}: node {} never got {missing:?}",
            i + 1
        );
    }
}

fn run_seed(seed: u64) {
    let result = std::panic::catch_unwind(|| run(seed));
    if let Err(e) = result {
        eprintln!("sim failed with seed {seed}: replay with RUMQ_SIM_SEED={seed}");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn three_nodes_lose_nothing_acknowledged_under_a_shuffling_lossy_network() {
    if let Some(seed) = std::env::var("RUMQ_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed);
        return;
    }
    for seed in FIXED_SEEDS {
        run_seed(seed);
    }
    let more: u64 = std::env::var("RUMQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    for k in 0..more {
        run_seed(base.wrapping_add(k));
    }
}
