//! Heap allocations per message on the publish and delivery paths, counted by a
//! global allocator that wraps the system one. Not a timing: the counts are exact
//! and repeatable.
//!
//! `cargo bench -p benches --bench allocs` (or `-- --test` for a tiny run). Each stage
//! runs once to warm up (buffers grow to their working size), then is measured:
//!
//! | stage | what runs |
//! |---|---|
//! | decode | `protocol::decode` of a 3.1.1 PUBLISH (what a connection does per packet) |
//! | record | `NewMessage::framed_in`: the stored record the connection builds, in an arena sized to one read (~4 KiB, ~50 packets here) |
//! | append | `Router::handle(Publish)` + `flush`: staging, one append per batch, fan-out |
//! | deliver | `Event::Pull` until everything is delivered: reads from the tail, batches |
//! | encode | `Encoder::reply` + `take`: the PUBLISH bytes for each delivery |

#![allow(clippy::expect_used)] // a bench: a setup failure should stop it loudly

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use commitlog::{Log, LogConfig};
use router::{
    Connect, ConnectionId, Event, NewMessage, PacketId, Publication, QoS, Reply, Router,
    RouterConfig, Subscription,
};
use rumq_broker::interner::TopicInterner;
use rumq_broker::protocol::{self, Encoder, Inbound, Version};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

const PUB: ConnectionId = ConnectionId(1);
const SUB: ConnectionId = ConnectionId(2);

fn publish_packet(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let mut p = vec![0x32, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// Allocations per message of each stage, over `n` messages.
struct Counts {
    decode: f64,
    record: f64,
    append: f64,
    deliver: f64,
    encode: f64,
}

/// One measured round of every stage over `n` messages, each stage fed by the one
/// before.
fn round(
    router: &mut Router<Log>,
    topics: &TopicInterner,
    encoder: &mut Encoder,
    n: usize,
) -> Counts {
    let per = |a: u64| a as f64 / n as f64;
    let (packets, decode) = decode_stage(n);
    let (mut events, record) = record_stage(&packets, topics, n);
    let append = append_stage(router, &mut events);
    // The acks go to the publisher; set them aside uncounted (the vector, kept,
    // then holds the deliveries without growing while they are counted).
    let mut out: Vec<(ConnectionId, Reply)> = router.drain_outbox().collect();
    out.clear();
    let deliver = deliver_stage(router, n, &mut out);
    let encode = encode_stage(encoder, &out);
    Counts {
        decode: per(decode),
        record: per(record),
        append: per(append),
        deliver: per(deliver),
        encode: per(encode),
    }
}

/// decode: `n` PUBLISH packets out of one buffer; the packets and the allocations.
fn decode_stage(n: usize) -> (Vec<Inbound>, u64) {
    let mut wire = BytesMut::new();
    for i in 0..n {
        wire.put_slice(&publish_packet(
            "sensors/42/temp",
            (i % 60_000 + 1) as u16,
            &[7u8; 64],
        ));
    }
    let mut packets = Vec::with_capacity(n);
    let a0 = allocs();
    while let Ok(Some(p)) = protocol::decode(&mut wire, Some(Version::V311), 1 << 20) {
        packets.push(p);
    }
    (packets, allocs() - a0)
}

/// record: the stored record and the router event a connection builds for each
/// PUBLISH; the events and the allocations.
fn record_stage(packets: &[Inbound], topics: &TopicInterner, n: usize) -> (Vec<Event>, u64) {
    let mut events = Vec::with_capacity(n);
    // As a connection does for one read: an arena sized to what it read.
    let mut arena = BytesMut::new();
    let a0 = allocs();
    for p in packets {
        if let Inbound::Publish {
            topic,
            qos,
            pkid,
            payload,
            ..
        } = p
        {
            // One read of a fast publisher holds ~4 KiB: ~50 of these packets.
            let record = NewMessage::new(*qos, false, 1, topic.as_str(), payload)
                .framed_in(&mut arena, 8192);
            let Ok(tid) = topics.intern(topic.as_str()) else {
                continue;
            };
            events.push(Event::Publish {
                conn: PUB,
                pkid: *pkid,
                message: Publication {
                    topic: tid,
                    qos: *qos,
                    retain: false,
                    record,
                },
            });
        }
    }
    (events, allocs() - a0)
}

/// append: the router takes every publish and flushes; the allocations.
fn append_stage(router: &mut Router<Log>, events: &mut Vec<Event>) -> u64 {
    let a0 = allocs();
    for e in events.drain(..) {
        router.handle(e);
    }
    router.flush();
    allocs() - a0
}

/// deliver: the subscriber pulls, and acknowledges, until it has `n` deliveries;
/// every reply goes to `out`. The allocations.
fn deliver_stage(router: &mut Router<Log>, n: usize, out: &mut Vec<(ConnectionId, Reply)>) -> u64 {
    let mut deliveries = Vec::new();
    let a0 = allocs();
    let mut got = 0;
    while got < n {
        router.handle(Event::Pull { conn: SUB });
        router.flush();
        for (conn, r) in router.drain_outbox() {
            if let (true, Reply::Deliver(d)) = (conn == SUB, &r) {
                got += d.len();
                for item in d {
                    if let Some(pkid) = item.pkid {
                        deliveries.push(pkid);
                    }
                }
            }
            out.push((conn, r));
        }
        for pkid in deliveries.drain(..) {
            router.handle(Event::PubAck {
                conn: SUB,
                pkid: PacketId(pkid.0),
            });
        }
    }
    allocs() - a0
}

/// encode: the bytes of every reply in `out`; the allocations.
fn encode_stage(encoder: &mut Encoder, out: &[(ConnectionId, Reply)]) -> u64 {
    let mut chunks = Vec::new();
    let a0 = allocs();
    for (_, r) in out {
        encoder.reply(r);
        encoder.take(&mut chunks);
        chunks.clear();
    }
    allocs() - a0
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let n = if test_mode { 2_000 } else { 100_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("log");
    let topics = Arc::new(TopicInterner::new(1000));
    let mut router = Router::new(RouterConfig::default(), log);
    router.handle(Event::Connect {
        conn: PUB,
        connect: Connect::v3("pub", true, None),
    });
    router.handle(Event::Connect {
        conn: SUB,
        connect: Connect::v3("sub", true, None),
    });
    router.handle(Event::Subscribe {
        conn: SUB,
        pkid: PacketId(1),
        filters: vec![Subscription::new("sensors/+/temp", QoS::AtLeastOnce)],
        id: None,
    });
    router.flush();
    router.drain_outbox().for_each(drop);
    let mut encoder = Encoder::new();
    round(&mut router, &topics, &mut encoder, n);
    let c = round(&mut router, &topics, &mut encoder, n);
    println!(
        "heap allocations per message, QoS 1, 64 B payload, {n} messages (after a warm-up round):"
    );
    println!("| stage | allocations per message |");
    println!("|---|---|");
    for (stage, v) in [
        ("decode (3.1.1 PUBLISH)", c.decode),
        ("record (NewMessage::framed_in)", c.record),
        ("append (router: stage, append, fan out)", c.append),
        ("deliver (router: pull, read, batch)", c.deliver),
        ("encode (PUBLISH bytes)", c.encode),
    ] {
        println!("| {stage} | {v:.3} |");
    }
}
