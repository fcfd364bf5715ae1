//! Tests over a real commitlog in a temporary directory: the harness here, the
//! tests by concern in `tests/` (the scripted scenarios on `MemStorage` are in
//! `router/tests/scenarios/`).

use std::cell::RefCell;
use std::collections::HashMap;

use commitlog::{Log, LogConfig, Offset, ReadLimits};

use super::*;
use crate::event::{
    CloseReason, Connect, ConnectCode, Delivery, DisconnectReason, PubReason, RetainHandling,
    SubscribeCode, Subscription, UnsubscribeCode, Will, NEVER_EXPIRES,
};
use crate::{Message, NewMessage, Origin, PacketId, SubOptions};

struct Harness {
    router: Router<Log>,
    config: RouterConfig,
    topics: Topics,
    /// Replies drained from the router and not taken yet (see `take`).
    pending: Vec<(ConnectionId, Reply)>,
    _dir: tempfile::TempDir,
}

/// Topic ids as the broker's connections intern them: the router keys its match
/// cache by them and reads names from the records.
#[derive(Debug, Default)]
pub(super) struct Topics(RefCell<HashMap<String, TopicId>>);

impl Topics {
    pub(super) fn intern(&self, name: &str) -> Option<TopicId> {
        let mut ids = self.0.borrow_mut();
        let next = TopicId(u32::try_from(ids.len()).ok()?);
        Some(*ids.entry(name.to_owned()).or_insert(next))
    }
}

const C1: ConnectionId = ConnectionId(1);
const C2: ConnectionId = ConnectionId(2);
const C3: ConnectionId = ConnectionId(3);

fn harness(config: RouterConfig) -> Harness {
    open(config, tempfile::tempdir().unwrap())
}

/// A router over a message log and a session journal in `dir` (as the broker opens
/// them), with a fresh topic table.
fn open(config: RouterConfig, dir: tempfile::TempDir) -> Harness {
    open_with_log(config, LogConfig::default(), dir)
}

/// As `open`, with this message log config.
fn open_with_log(config: RouterConfig, log_config: LogConfig, dir: tempfile::TempDir) -> Harness {
    let log = Log::open(dir.path().join("messages"), log_config).unwrap();
    // Small journal segments, so checkpoints visibly remove old ones.
    let journal_config = LogConfig {
        segment_bytes_max: 64 * 1024,
        record_bytes_max: 60 * 1024,
        ..LogConfig::default()
    };
    let journal = Log::open(dir.path().join("state"), journal_config).unwrap();
    Harness {
        router: Router::open(config.clone(), log, journal).unwrap(),
        config,
        topics: Topics::default(),
        pending: Vec::new(),
        _dir: dir,
    }
}

impl Harness {
    fn connect(&mut self, conn: ConnectionId, id: &str, clean: bool) -> Vec<Reply> {
        self.connect_with_will(conn, id, clean, None)
    }

    fn connect_with_will(
        &mut self,
        conn: ConnectionId,
        id: &str,
        clean: bool,
        will: Option<Will>,
    ) -> Vec<Reply> {
        self.router.handle(Event::Connect {
            conn,
            connect: Connect::v3(id, clean, will),
        });
        self.take(conn)
    }

    /// The connections whose delivery credit the router asked for since last time.
    fn credit_wanted(&mut self) -> Vec<ConnectionId> {
        self.router.flush();
        self.router.drain_credit_wanted().collect()
    }

    /// A will on `topic` (not retained).
    fn will(&self, topic: &str, qos: QoS, payload: &[u8]) -> Will {
        Will {
            topic: self.topics.intern(topic).unwrap(),
            qos,
            retain: false,
            record: self.record(topic, qos, false, payload),
        }
    }

    fn record(&self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) -> Framed {
        NewMessage::new(qos, retain, 0, topic, payload).framed()
    }

    fn publish(
        &mut self,
        conn: ConnectionId,
        topic: &str,
        qos: QoS,
        retain: bool,
        pkid: u16,
        payload: &[u8],
    ) {
        let record = self.record(topic, qos, retain, payload);
        let tid = self.topics.intern(topic).unwrap();
        self.router.handle(Event::Publish {
            conn,
            pkid: (qos != QoS::AtMostOnce).then_some(PacketId(pkid)),
            message: Publication {
                topic: tid,
                qos,
                retain,
                record,
            },
        });
    }

    fn subscribe(&mut self, conn: ConnectionId, filter: &str, qos: QoS) -> Vec<Reply> {
        self.router.handle(Event::Subscribe {
            conn,
            pkid: PacketId(1),
            filters: vec![Subscription::new(filter, qos)],
            id: None,
        });
        self.router.flush();
        self.take(conn)
    }

    /// Send PUBREL for `pkid` and check the one reply is a PUBCOMP saying whether a
    /// message was awaiting release.
    fn release(&mut self, conn: ConnectionId, pkid: u16, known: bool) {
        self.router.handle(Event::PubRel {
            conn,
            pkid: PacketId(pkid),
        });
        let pkid = PacketId(pkid);
        assert_eq!(self.take(conn), vec![Reply::PubComp { pkid, known }]);
    }

    /// Replies to `conn` (others are kept).
    fn take(&mut self, conn: ConnectionId) -> Vec<Reply> {
        self.pending.extend(self.router.drain_outbox());
        let mut mine = Vec::new();
        self.pending.retain(|(c, r)| {
            let is_mine = *c == conn;
            if is_mine {
                mine.push(r.clone());
            }
            !is_mine
        });
        mine
    }

    /// Flush, close both logs cleanly and reopen them: a broker restart.
    fn restart(self) -> Harness {
        let Harness {
            mut router, _dir, ..
        } = self;
        router.flush();
        let (log, journal) = router.into_storage();
        log.close().unwrap();
        journal.unwrap().close().unwrap();
        open(RouterConfig::default(), _dir)
    }

    /// Drop everything without closing, as a killed process would leave the files,
    /// and reopen: recovery. Replies not drained before are lost with the process.
    fn crash(self) -> Harness {
        let Harness {
            router,
            config,
            _dir,
            ..
        } = self;
        drop(router);
        open(config, _dir)
    }

    /// Deliveries sent to `conn` so far (other replies to it are dropped).
    fn deliveries(&mut self, conn: ConnectionId) -> Vec<Delivery> {
        delivered(self.take(conn))
    }

    /// Pull once and return what was delivered.
    fn pull(&mut self, conn: ConnectionId) -> Vec<Delivery> {
        self.router.handle(Event::Pull { conn });
        self.router.flush();
        self.deliveries(conn)
    }
}

/// The deliveries among `replies`.
fn delivered(replies: Vec<Reply>) -> Vec<Delivery> {
    replies
        .into_iter()
        .flat_map(|r| match r {
            Reply::Deliver(d) => d,
            _ => Vec::new(),
        })
        .collect()
}

/// `resent` are retransmissions (DUP) of exactly the messages `want` holds.
fn assert_resent(resent: &[Delivery], want: &[Vec<u8>]) {
    assert!(resent.iter().all(|d| d.dup), "resent");
    assert!(
        payloads(resent) == want,
        "{} resent, not what was published",
        resent.len()
    );
}

fn payloads(d: &[Delivery]) -> Vec<Vec<u8>> {
    d.iter()
        .map(|d| {
            Message::decode(&d.record.load().unwrap())
                .unwrap()
                .payload
                .to_vec()
        })
        .collect()
}

fn accepted(present: bool) -> Reply {
    Reply::ConnAck {
        code: ConnectCode::Accepted,
        session_present: present,
        assigned_client_id: None,
    }
}

fn disconnect(h: &mut Harness, conn: ConnectionId) {
    disconnect_with(h, conn, DisconnectReason::Abrupt);
}

fn disconnect_with(h: &mut Harness, conn: ConnectionId, reason: DisconnectReason) {
    h.router.handle(Event::Disconnect {
        conn,
        reason,
        session_expiry: None,
    });
}

/// The node that writes `own`, one of three (1, 2 and 3) in a cluster with
/// `ack_copies = 2`, with a session journal; started 1,000 s after the epoch.
fn journaled_node(own: ::mesh::LogId) -> Router<crate::MemStorage> {
    journaled_node_with(own, RouterConfig::default())
}

/// The same, with `config`.
fn journaled_node_with(own: ::mesh::LogId, config: RouterConfig) -> Router<crate::MemStorage> {
    journaled_node_of(own, config, 2)
}

/// The same, with `ack_copies`.
fn journaled_node_of(
    own: ::mesh::LogId,
    config: RouterConfig,
    ack_copies: usize,
) -> Router<crate::MemStorage> {
    use crate::{MemStorage, MeshConfig};
    let mut r =
        Router::open(config, MemStorage::new(), MemStorage::new()).expect("a journal in memory");
    let followers = (1..=3).map(::mesh::NodeId).filter(|n| *n != own.node);
    r.join_mesh(MeshConfig {
        own,
        ack_copies,
        followers: followers.collect(),
        fetch_bytes_max: 1 << 20,
        fetch_wait: std::time::Duration::from_millis(500),
        failure_timeout: std::time::Duration::from_secs(3),
        superseded_keep: std::time::Duration::from_secs(60),
        started: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000),
    });
    r
}

/// Peer `peer` holds `held` records of `log`, `r`'s earlier run's log, and
/// nothing past them: `r` is synced with it there, which a restarted node's
/// CONNECTs wait for (`earlier_tail`).
fn confirmed_by(r: &mut Router<crate::MemStorage>, peer: u8, log: ::mesh::LogId, held: u64) {
    r.handle_peer(crate::PeerEvent::Relayed {
        peer: ::mesh::NodeId(peer),
        log,
        stream: ::mesh::Stream::Messages,
        base: Offset(held),
        commit: Offset(held),
        records: Vec::new(),
    });
}

/// Tick `r` up to `to` as a running node does (every 100 ms here; a longer gap
/// between ticks is a stall, see `Router::not_listening`).
fn tick_to<S: Storage>(r: &mut Router<S>, to: SystemTime) {
    let step = std::time::Duration::from_millis(100);
    let mut at = r.now;
    for _ in 0..100_000 {
        if at == SystemTime::UNIX_EPOCH || at + step >= to {
            break;
        }
        at += step;
        r.tick(at);
    }
    r.tick(to);
}

mod catch_up;
mod credit;
mod earlier_tail;
mod faults;
mod fence;
mod flow;
mod inspect;
mod journal_stream;
mod lag;
mod mesh;
mod rejoin;
mod restart;
mod retire;
mod session_move;
mod system;
mod three_copies;
mod v5;
mod wills;
