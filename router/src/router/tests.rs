//! Scenario tests: drive the state machine with events, over a real commitlog in a
//! temporary directory, and assert on the replies.

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

#[test]
fn connect_assigns_ids() {
    let mut h = harness(RouterConfig::default());
    assert_eq!(h.connect(C1, "a", true), vec![accepted(false)]);
    match &h.connect(C2, "", true)[..] {
        [Reply::ConnAck {
            code: ConnectCode::Accepted,
            assigned_client_id: Some(id),
            ..
        }] => assert!(id.starts_with("rumq-")),
        other => panic!("{other:?}"),
    }
    // (3.1.1 refuses an empty id with a persistent session at the connection;
    // MQTT 5 gets one assigned.)
    match &h.connect(C3, "", false)[..] {
        [Reply::ConnAck {
            code: ConnectCode::Accepted,
            assigned_client_id: Some(id),
            ..
        }] => assert!(id.starts_with("rumq-")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn puback_only_after_the_append() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "t", QoS::AtLeastOnce, false, 7, b"x");
    assert_eq!(h.router.storage().head(), Offset(0), "not appended yet");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubAck(PacketId(7), PubReason::NoMatchingSubscribers)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
}

#[test]
fn pubsub_in_order_with_effective_qos() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    assert_eq!(
        h.subscribe(C1, "a/+", QoS::AtLeastOnce),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![SubscribeCode::Granted(QoS::AtLeastOnce)]
        }]
    );
    assert!(h.pull(C1).is_empty(), "nothing yet; the pull waits");
    h.connect(C2, "pub", true);
    h.publish(C2, "a/b", QoS::ExactlyOnce, false, 1, b"one");
    h.publish(C2, "a/c", QoS::AtMostOnce, false, 0, b"two");
    h.publish(C2, "b/c", QoS::AtMostOnce, false, 0, b"not matched");
    h.router.flush();
    // The waiting pull was answered at the flush.
    let d: Vec<Delivery> = h.deliveries(C1);
    assert_eq!(payloads(&d), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(d[0].qos, QoS::AtLeastOnce, "min(2, 1)");
    assert!(d[0].pkid.is_some() && !d[0].dup && !d[0].retain);
    assert_eq!((d[1].qos, d[1].pkid), (QoS::AtMostOnce, None));
}

#[test]
fn qos2_inbound_is_stored_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", false);
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::NoMatchingSubscribers)]
    );
    // Retransmitted before PUBREL: acknowledged, not stored again.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::Success)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    h.release(C1, 9, true);
    // After release the id is free again: a new message.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"y");
    h.router.flush();
    assert_eq!(h.router.storage().head(), Offset(2));
}

#[test]
fn a_pubrel_for_an_id_not_awaiting_release_is_completed_as_unknown() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    h.take(C1);
    h.release(C1, 9, true);
    // A retransmission whose PUBCOMP the client lost.
    h.release(C1, 9, false);
}

#[test]
fn qos2_retransmission_before_the_append_is_stored_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    // Both arrive in one drain, before the flush appends the first.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![
            Reply::PubRec(PacketId(9), PubReason::NoMatchingSubscribers),
            Reply::PubRec(PacketId(9), PubReason::Success)
        ]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    // Still remembered after the flush until PUBREL.
    h.publish(C1, "t", QoS::ExactlyOnce, false, 9, b"x");
    h.router.flush();
    assert_eq!(
        h.take(C1),
        vec![Reply::PubRec(PacketId(9), PubReason::Success)]
    );
    assert_eq!(h.router.storage().head(), Offset(1));
    h.release(C1, 9, true);
}

#[test]
fn outbound_qos2_flow() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::ExactlyOnce, false, 1, b"x");
    h.router.flush();
    let d = h.pull(C1);
    let pkid = d[0].pkid.unwrap();
    h.router.handle(Event::PubRec { conn: C1, pkid });
    assert_eq!(h.take(C1), vec![Reply::PubRel(pkid)]);
    h.router.handle(Event::PubComp { conn: C1, pkid });
    let saved = h.router.snapshot();
    assert!(saved.sessions.iter().all(|s| s.inflight.is_empty()));
}

#[test]
fn inflight_limit_holds_back_until_acked() {
    let mut h = harness(RouterConfig {
        inflight_max: 2,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    for i in 0..5u8 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i]);
    }
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![vec![0], vec![1]]);
    assert!(h.pull(C1).is_empty(), "window full");
    h.router.handle(Event::PubAck {
        conn: C1,
        pkid: d[0].pkid.unwrap(),
    });
    let next: Vec<Delivery> = h.deliveries(C1);
    assert_eq!(payloads(&next), vec![vec![2]]);
}

#[test]
fn persistent_session_gets_what_was_published_while_offline() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "cmd/#", QoS::ExactlyOnce);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    h.connect(C2, "pub", true);
    h.publish(C2, "cmd/1", QoS::AtLeastOnce, false, 1, b"q1");
    h.publish(C2, "cmd/2", QoS::AtMostOnce, false, 0, b"q0 is not kept");
    h.publish(C2, "cmd/3", QoS::ExactlyOnce, false, 2, b"q2");
    h.router.flush();
    assert_eq!(h.connect(C3, "dev", false), vec![accepted(true)]);
    let d = h.pull(C3);
    assert_eq!(payloads(&d), vec![b"q1".to_vec(), b"q2".to_vec()]);
    assert_eq!(d[1].qos, QoS::ExactlyOnce);
}

#[test]
fn unacked_messages_are_redelivered_with_dup_on_reconnect() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"m");
    h.router.flush();
    let first = h.pull(C1);
    disconnect_with(&mut h, C1, DisconnectReason::Abrupt);
    let replies = h.connect(C3, "dev", false);
    assert_eq!(replies[0], accepted(true));
    match &replies[1] {
        Reply::Deliver(d) => {
            assert_eq!(d.len(), 1);
            assert!(d[0].dup);
            assert_eq!(d[0].pkid, first[0].pkid);
            assert_eq!(d[0].record, first[0].record);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn clean_session_forgets_everything() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    assert_eq!(h.connect(C2, "dev", true), vec![accepted(false)]);
    disconnect_with(&mut h, C2, DisconnectReason::Normal);
    assert_eq!(h.router.session_count(), 0);
    assert_eq!(h.router.subscription_count(), 0);
}

#[test]
fn takeover_closes_the_old_connection_and_fires_its_will() {
    let mut h = harness(RouterConfig::default());
    h.connect(C3, "watcher", true);
    h.subscribe(C3, "will/#", QoS::AtMostOnce);
    h.pull(C3);
    let will = h.will("will/dev", QoS::AtMostOnce, b"gone");
    h.connect_with_will(C1, "dev", false, Some(will));
    // CONNACK leaves after the old connection's will was appended.
    assert_eq!(h.connect(C2, "dev", false), vec![accepted(true)]);
    assert_eq!(h.router.storage().head(), Offset(1));
    let old = h.take(C1);
    assert_eq!(old, vec![Reply::Close(CloseReason::SessionTakenOver)]);
    let got: Vec<Delivery> = h.deliveries(C3);
    assert_eq!(payloads(&got), vec![b"gone".to_vec()]);
    // The old connection's late disconnect changes nothing.
    disconnect_with(&mut h, C1, DisconnectReason::Abrupt);
    let still = h.subscribe(C2, "x", QoS::AtMostOnce);
    assert!(
        matches!(still[..], [Reply::SubAck { .. }]),
        "C2 still connected"
    );
}

#[test]
fn will_fires_on_abrupt_disconnect_only() {
    for (reason, expect) in [
        (DisconnectReason::Abrupt, 1u64),
        (DisconnectReason::Normal, 0),
    ] {
        let mut h = harness(RouterConfig::default());
        let will = h.will("w", QoS::AtLeastOnce, b"bye");
        h.connect_with_will(C1, "dev", true, Some(will));
        h.router.handle(Event::Disconnect {
            conn: C1,
            reason,
            session_expiry: None,
        });
        h.router.flush();
        assert_eq!(h.router.storage().head(), Offset(expect), "{reason:?}");
    }
}

#[test]
fn retained_set_replace_clear() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 1, b"old");
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 2, b"new");
    h.publish(C1, "r/2", QoS::AtMostOnce, true, 0, b"other");
    h.router.flush();
    h.connect(C2, "sub", true);
    h.subscribe(C2, "r/#", QoS::ExactlyOnce);
    let mut d = h.pull(C2);
    d.sort_by_key(|d| d.record.head().clone());
    let mut p = payloads(&d);
    p.sort();
    assert_eq!(p, vec![b"new".to_vec(), b"other".to_vec()]);
    assert!(d.iter().all(|d| d.retain));
    // Clear r/1 with an empty retained payload.
    h.publish(C1, "r/1", QoS::AtMostOnce, true, 0, b"");
    h.router.flush();
    h.connect(C3, "sub2", true);
    h.subscribe(C3, "r/#", QoS::AtMostOnce);
    assert_eq!(payloads(&h.pull(C3)), vec![b"other".to_vec()]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "a/#", QoS::AtMostOnce);
    h.subscribe(C1, "a/+", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "a/b", QoS::AtLeastOnce, false, 1, b"x");
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].qos, QoS::AtLeastOnce);
}

#[test]
fn invalid_filter_gets_failure() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    assert_eq!(
        h.subscribe(C1, "a/#/b", QoS::AtMostOnce),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![SubscribeCode::InvalidFilter]
        }]
    );
}

/// A router whose sessions leave their queue after 3 messages and catch up from the
/// log `scan` records at a time.
fn slow_subscriber_harness(scan: usize) -> Harness {
    harness(RouterConfig {
        session_queue_max: 3,
        deliver_records_max: 4,
        scan_records_max: scan,
        ..RouterConfig::default()
    })
}

/// Pull until a pull brings nothing; the payloads, in order.
fn pull_until_empty(h: &mut Harness, conn: ConnectionId) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let d = h.pull(conn);
        if d.is_empty() {
            break;
        }
        got.extend(payloads(&d));
    }
    got
}

#[test]
fn a_slow_subscriber_falls_back_to_the_log_and_loses_nothing() {
    let mut h = slow_subscriber_harness(5);
    h.connect(C1, "slow", true);
    h.subscribe(C1, "t/#", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    for i in 0..50u8 {
        // Interleave a topic the subscriber does not want.
        h.publish(C2, "t/x", QoS::AtMostOnce, false, 0, &[i]);
        h.publish(C2, "u/x", QoS::AtMostOnce, false, 0, &[100 + i]);
    }
    h.router.flush();
    let got = pull_until_empty(&mut h, C1);
    assert_eq!(got, (0..50u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(h
        .router
        .sessions
        .values()
        .all(|s| s.live || s.conn.is_none()));
}

#[test]
fn catching_up_from_the_log_matches_runs_of_one_topic_and_their_ends() {
    // Scanning remembers the previous record's match: runs of one topic, and the
    // switches between a wanted and an unwanted topic, must come out exact.
    let mut h = slow_subscriber_harness(7);
    h.connect(C1, "slow", true);
    h.subscribe(C1, "t/+", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    let mut want = Vec::new();
    for i in 0..60u8 {
        let topic = match i % 12 {
            0..=3 => "t/a",
            4..=6 => "u/a",
            7 | 8 => "t/b",
            9 => "t/a",
            _ => "t",
        };
        h.publish(C2, topic, QoS::AtMostOnce, false, 0, &[i]);
        if topic.starts_with("t/") {
            want.push(vec![i]);
        }
    }
    h.router.flush();
    let got = pull_until_empty(&mut h, C1);
    assert_eq!(got, want);
}

#[test]
fn unsubscribe_stops_delivery() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.router.handle(Event::Unsubscribe {
        conn: C1,
        pkid: PacketId(4),
        filters: vec!["t".into()],
    });
    assert_eq!(
        h.take(C1),
        vec![Reply::UnsubAck {
            pkid: PacketId(4),
            codes: vec![UnsubscribeCode::Success]
        }]
    );
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"x");
    h.router.flush();
    assert!(h.pull(C1).is_empty());
}

#[test]
fn acks_keep_arrival_order_across_staging() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", false);
    h.publish(C1, "t", QoS::AtLeastOnce, false, 1, b"a");
    h.router.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(2),
        filters: vec![Subscription::new("x", QoS::AtMostOnce)],
        id: None,
    });
    h.publish(C1, "t", QoS::AtLeastOnce, false, 3, b"b");
    h.router.flush();
    let r = h.take(C1);
    assert_eq!(
        r[0],
        Reply::PubAck(PacketId(1), PubReason::NoMatchingSubscribers)
    );
    assert!(matches!(
        r[1],
        Reply::SubAck {
            pkid: PacketId(2),
            ..
        }
    ));
    assert_eq!(
        r[2],
        Reply::PubAck(PacketId(3), PubReason::NoMatchingSubscribers)
    );
}

#[test]
fn sessions_and_retained_messages_survive_a_restart() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t/#", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t/1", QoS::AtLeastOnce, false, 1, b"a");
    h.publish(C2, "t/2", QoS::ExactlyOnce, false, 2, b"b");
    h.router.flush();
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![b"a".to_vec(), b"b".to_vec()]);
    let (pa, pb) = (d[0].pkid.unwrap(), d[1].pkid.unwrap());
    h.router.handle(Event::PubAck { conn: C1, pkid: pa });
    h.router.handle(Event::PubRec { conn: C1, pkid: pb });
    assert_eq!(h.take(C1), vec![Reply::PubRel(pb)]);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    // Published while "dev" is offline.
    h.publish(C2, "t/3", QoS::AtLeastOnce, false, 3, b"c");
    h.publish(C2, "t/r", QoS::AtLeastOnce, true, 4, b"r");
    h.router.flush();
    // An inbound QoS 2 publish stored but not released.
    h.connect(C3, "pub2", false);
    h.publish(C3, "u", QoS::ExactlyOnce, false, 5, b"q2");
    h.router.flush();
    assert_eq!(
        h.take(C3),
        vec![Reply::PubRec(PacketId(5), PubReason::NoMatchingSubscribers)]
    );
    disconnect_with(&mut h, C3, DisconnectReason::Abrupt);
    let head = h.router.storage().head();

    // Shut down, restart on the same log with a fresh topic table.
    assert_eq!(
        h.router.snapshot().sessions.len(),
        2,
        "clean sessions are not saved"
    );
    let mut h = h.restart();

    // "dev": session present, the QoS 2 release resumes, then what it missed, in order.
    assert_eq!(
        h.connect(C1, "dev", false),
        vec![accepted(true), Reply::PubRel(pb)]
    );
    h.router.handle(Event::PubComp { conn: C1, pkid: pb });
    let d = h.pull(C1);
    assert_eq!(payloads(&d), vec![b"c".to_vec(), b"r".to_vec()]);
    assert!(d
        .iter()
        .all(|d| !d.dup && !d.retain && d.qos == QoS::AtLeastOnce));
    // Its subscription is still there.
    h.connect(C2, "pub", true);
    h.publish(C2, "t/4", QoS::AtLeastOnce, false, 6, b"d");
    h.router.flush();
    h.take(C2);
    assert_eq!(payloads(&h.pull(C1)), vec![b"d".to_vec()]);

    // The retained message is still retained.
    h.connect(ConnectionId(4), "late", true);
    h.subscribe(ConnectionId(4), "t/r", QoS::AtLeastOnce);
    let d = h.pull(ConnectionId(4));
    assert_eq!(payloads(&d), vec![b"r".to_vec()]);
    assert!(d[0].retain);

    // "pub2" still has its unreleased QoS 2 id: a retransmission is not stored again.
    assert_eq!(h.connect(C3, "pub2", false), vec![accepted(true)]);
    h.publish(C3, "u", QoS::ExactlyOnce, false, 5, b"q2");
    h.router.flush();
    assert_eq!(
        h.take(C3),
        vec![Reply::PubRec(PacketId(5), PubReason::Success)]
    );
    assert_eq!(
        h.router.storage().head(),
        head.add(1),
        "only t/4 was appended"
    );
}

#[test]
fn an_unacked_delivery_survives_a_restart_with_dup() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "dev", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"m");
    h.publish(C2, "t", QoS::AtLeastOnce, false, 2, b"n");
    h.router.flush();
    let first = h.pull(C1);
    assert_eq!(payloads(&first), vec![b"m".to_vec(), b"n".to_vec()]);
    // Only the second is acknowledged; the connection is still up at shutdown.
    h.router.handle(Event::PubAck {
        conn: C1,
        pkid: first[1].pkid.unwrap(),
    });
    let mut h = h.restart();
    let replies = h.connect(C3, "dev", false);
    assert_eq!(replies[0], accepted(true));
    match &replies[1..] {
        [Reply::Deliver(d)] => {
            assert_eq!(d.len(), 1);
            assert!(d[0].dup);
            assert_eq!(d[0].pkid, first[0].pkid);
            assert_eq!(d[0].record, first[0].record);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.pull(C3).is_empty(),
        "the acknowledged one is not sent again"
    );
}

#[test]
fn a_byte_budget_cut_keeps_the_rest_queued_in_order() {
    let mut h = harness(RouterConfig {
        deliver_bytes_max: 100,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    for i in 0..10u8 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, u16::from(i) + 1, &[i; 40]);
    }
    h.router.flush();
    let mut got = Vec::new();
    for _ in 0..20 {
        let d = h.pull(C1);
        if d.is_empty() {
            break;
        }
        assert!(d.len() < 10, "the budget cut the batch");
        got.extend(payloads(&d));
    }
    assert_eq!(got, (0..10u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
}

#[test]
fn subscriptions_past_the_limit_are_refused_but_replacements_are_not() {
    let mut h = harness(RouterConfig {
        subscriptions_max: 2,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", true);
    h.router.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![
            Subscription::new("a", QoS::AtMostOnce),
            Subscription::new("b", QoS::AtMostOnce),
            Subscription::new("c", QoS::AtMostOnce),
            Subscription::new("a", QoS::AtLeastOnce),
        ],
        id: None,
    });
    assert_eq!(
        h.take(C1),
        vec![Reply::SubAck {
            pkid: PacketId(1),
            codes: vec![
                SubscribeCode::Granted(QoS::AtMostOnce),
                SubscribeCode::Granted(QoS::AtMostOnce),
                SubscribeCode::QuotaExceeded,
                SubscribeCode::Granted(QoS::AtLeastOnce),
            ]
        }]
    );
    assert_eq!(h.router.subscription_count(), 2);
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

#[test]
fn after_a_crash_every_acked_message_reaches_persistent_sessions() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "online", false);
    h.subscribe(C1, "t/#", QoS::AtLeastOnce);
    h.connect(C3, "offline", false);
    h.subscribe(C3, "t/#", QoS::ExactlyOnce);
    disconnect(&mut h, C3);
    h.connect(C2, "pub", true);
    for i in 0..20u16 {
        h.publish(C2, "t/x", QoS::AtLeastOnce, false, i + 1, &[i as u8]);
    }
    assert_eq!(h.take(C2).len(), 20, "all acknowledged");
    // "online" got and acked the first 5; the rest were in flight or queued.
    let d = h.pull(C1);
    for delivery in &d[..5] {
        h.router.handle(Event::PubAck {
            conn: C1,
            pkid: delivery.pkid.unwrap(),
        });
    }
    h.take(C1);
    let mut h = h.crash();

    // "online": the 15 unacknowledged come back (in flight ones with DUP), in order.
    let replies = h.connect(C1, "online", false);
    assert_eq!(replies[0], accepted(true));
    let mut got: Vec<Delivery> = replies[1..]
        .iter()
        .flat_map(|r| match r {
            Reply::Deliver(d) => d.clone(),
            _ => Vec::new(),
        })
        .collect();
    got.extend(h.pull(C1));
    let want: Vec<Vec<u8>> = (5..20u8).map(|i| vec![i]).collect();
    assert_eq!(payloads(&got), want);
    // "offline": all 20, once each.
    assert_eq!(h.connect(C3, "offline", false), vec![accepted(true)]);
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    assert_eq!(payloads(&h.pull(C3)), want);
    // The subscriptions are back too.
    h.connect(C2, "pub", true);
    h.publish(C2, "t/y", QoS::AtLeastOnce, false, 1, b"after");
    h.take(C2);
    assert_eq!(payloads(&h.pull(C3)), vec![b"after".to_vec()]);
}

#[test]
fn after_a_crash_outbound_qos2_resumes_without_a_second_copy() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::ExactlyOnce);
    h.connect(C2, "pub", true);
    for i in 1..=3u16 {
        h.publish(C2, "t", QoS::ExactlyOnce, false, i, &[i as u8]);
    }
    h.take(C2);
    let d = h.pull(C1);
    assert_eq!(d.len(), 3);
    // 1: completed. 2: PUBREC'd (PUBREL sent). 3: only sent.
    let [p1, p2, p3] = [d[0].pkid.unwrap(), d[1].pkid.unwrap(), d[2].pkid.unwrap()];
    h.router.handle(Event::PubRec { conn: C1, pkid: p1 });
    h.router.handle(Event::PubComp { conn: C1, pkid: p1 });
    h.router.handle(Event::PubRec { conn: C1, pkid: p2 });
    assert_eq!(h.take(C1), vec![Reply::PubRel(p1), Reply::PubRel(p2)]);
    let mut h = h.crash();
    let replies = h.connect(C1, "sub", false);
    // 3 again with the same id and DUP (the client dedups it), then the PUBREL of 2.
    match &replies[..] {
        [a, Reply::Deliver(d), Reply::PubRel(rel)] => {
            assert_eq!(*a, accepted(true));
            assert_eq!(d.len(), 1);
            assert_eq!((d[0].pkid, d[0].dup), (Some(p3), true));
            assert_eq!(payloads(d), vec![vec![3u8]]);
            assert_eq!(*rel, p2);
        }
        other => panic!("{other:?}"),
    }
    assert!(h.pull(C1).is_empty(), "nothing is sent under a new id");
}

#[test]
fn after_a_crash_inbound_qos2_ids_survive_even_between_append_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::default();
    {
        let (mut r, _, _, journal_full) = faulty(dir.path());
        r.handle(connect_event(C1, "pub", false));
        // Stored and PUBREC'd normally.
        r.handle(publish_qos2(&topics, 1, b"one"));
        let replies: Vec<_> = r.drain_outbox().collect();
        let pubrec = Reply::PubRec(PacketId(1), PubReason::NoMatchingSubscribers);
        assert!(replies.contains(&(C1, pubrec)), "{replies:?}");
        // Appended, but the journal does not take the commit (no PUBREC leaves),
        // and the process dies before it is repaired.
        journal_full.set(true);
        r.handle(publish_qos2(&topics, 2, b"two"));
        let replies: Vec<_> = r.drain_outbox().collect();
        assert!(
            !replies
                .iter()
                .any(|(_, r)| matches!(r, Reply::PubRec(PacketId(2), _))),
            "{replies:?}"
        );
        assert_eq!(r.storage().head(), Offset(2));
    }
    let mut h = open(RouterConfig::default(), dir);
    h.topics = topics;
    assert_eq!(h.connect(C1, "pub", false), vec![accepted(true)]);
    // Both retransmissions are recognised: PUBREC, nothing stored again.
    h.router.handle(publish_qos2(&h.topics, 1, b"one"));
    h.router.handle(publish_qos2(&h.topics, 2, b"two"));
    assert_eq!(
        h.take(C1),
        vec![
            Reply::PubRec(PacketId(1), PubReason::Success),
            Reply::PubRec(PacketId(2), PubReason::Success)
        ]
    );
    assert_eq!(h.router.storage().head(), Offset(2));
    // Released, the ids are free for new messages.
    h.router.handle(Event::PubRel {
        conn: C1,
        pkid: PacketId(2),
    });
    h.take(C1);
    let mut h = h.crash();
    h.connect(C1, "pub", false);
    h.router.handle(publish_qos2(&h.topics, 2, b"new"));
    h.take(C1);
    assert_eq!(h.router.storage().head(), Offset(3));
}

/// A QoS 2 PUBLISH to "q" from `C1`, client "pub", whose record names its origin.
fn publish_qos2(topics: &Topics, pkid: u16, payload: &[u8]) -> Event {
    Event::Publish {
        conn: C1,
        pkid: Some(PacketId(pkid)),
        message: Publication {
            topic: topics.intern("q").unwrap(),
            qos: QoS::ExactlyOnce,
            retain: false,
            record: NewMessage {
                origin: Some(Origin {
                    client_id: "pub",
                    pkid,
                }),
                ..NewMessage::new(QoS::ExactlyOnce, false, 0, "q", payload)
            }
            .framed(),
        },
    }
}

#[test]
fn checkpoints_compact_the_journal_and_lose_nothing() {
    let mut h = harness(RouterConfig {
        journal_checkpoint_bytes: 4 * 1024,
        ..RouterConfig::default()
    });
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "keep", QoS::AtLeastOnce, true, 1, b"retained");
    for round in 0..600u16 {
        h.publish(C2, "t", QoS::AtLeastOnce, false, round + 2, b"m");
        h.take(C2);
        for d in h.pull(C1) {
            h.router.handle(Event::PubAck {
                conn: C1,
                pkid: d.pkid.unwrap(),
            });
        }
    }
    h.take(C1);
    assert!(h.router.stats().checkpoints > 2, "{:?}", h.router.stats());
    let journal_bytes = h.router.journal_storage().unwrap().stats().bytes;
    assert!(
        journal_bytes < 200 * 1024,
        "journal not compacted: {journal_bytes} bytes"
    );
    // Unacked state after many checkpoints survives a crash.
    h.publish(C2, "t", QoS::AtLeastOnce, false, 999, b"last");
    h.take(C2);
    let mut h = h.crash();
    assert_eq!(h.connect(C1, "sub", false), vec![accepted(true)]);
    assert_eq!(payloads(&h.pull(C1)), vec![b"last".to_vec()]);
    h.connect(C3, "late", true);
    h.subscribe(C3, "keep", QoS::AtLeastOnce);
    assert_eq!(payloads(&h.pull(C3)), vec![b"retained".to_vec()]);
}

/// Large messages a subscriber reads back from a segment come by reference (the rest
/// of the payload left in the file, for the connection to `sendfile`); one whose topic
/// does not fit in the head read is read whole. Either way the subscriber gets what
/// was published, and an unacknowledged one is resent after a restart.
#[test]
fn large_messages_read_back_from_segments_come_by_reference() {
    let log_config = || LogConfig {
        tail_bytes_max: 0,
        ..LogConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut h = open_with_log(RouterConfig::default(), log_config(), dir);
    h.connect(C1, "sub", false);
    h.subscribe(C1, "#", QoS::AtLeastOnce);
    assert!(h.pull(C1).is_empty(), "nothing yet; the pull waits");
    h.connect(C2, "pub", true);
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let long_topic = "t/".repeat(400);
    h.publish(C2, "big", QoS::AtLeastOnce, false, 1, &big);
    h.publish(C2, &long_topic, QoS::AtLeastOnce, false, 2, &big);
    h.publish(C2, "small", QoS::AtLeastOnce, false, 3, b"s");
    h.router.flush();
    let mut d = h.deliveries(C1);
    loop {
        let more = h.pull(C1);
        if more.is_empty() {
            break;
        }
        d.extend(more);
    }
    let want = vec![big.clone(), big.clone(), b"s".to_vec()];
    // (Compared without printing 80 KB on failure.)
    assert!(
        payloads(&d) == want,
        "{} deliveries, not what was published",
        d.len()
    );
    assert!(d[0].record.rest().is_some(), "by reference");
    assert!(
        d[1].record.rest().is_none(),
        "the topic is past the head: read whole"
    );
    assert!(d[2].record.rest().is_none(), "small: whole");
    let topic = Message::decode(d[1].record.head()).unwrap();
    assert_eq!(topic.topic_str(), long_topic);

    // Offline, the session keeps the offset, not the segment file; on its return
    // the message is read again and resent.
    disconnect(&mut h, C1);
    let session = h
        .router
        .sessions
        .values()
        .find(|s| s.conn.is_none())
        .unwrap();
    assert!(session.inflight.values().all(|i| i.record.rest().is_none()));
    let resent = delivered(h.connect(C1, "sub", false));
    assert_resent(&resent, &want);

    // Unacknowledged: resent after a restart (read again from the log).
    let dir = h._dir;
    drop(h.router);
    let mut h = open_with_log(RouterConfig::default(), log_config(), dir);
    let again = delivered(h.connect(C1, "sub", false));
    assert_resent(&again, &want);
}

/// A log whose appends fail while `full` is set, as on a full disk.
#[derive(Debug)]
struct Faulty {
    log: Log,
    full: Rc<Cell<bool>>,
}

impl Storage for Faulty {
    fn append(&mut self, records: &[Framed]) -> commitlog::Result<std::ops::Range<Offset>> {
        if self.full.get() {
            return Err(commitlog::Error::Io {
                op: "write",
                path: self.log.dir().to_path_buf(),
                source: std::io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        self.log.append_framed(records)
    }
    fn read(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<Bytes>,
    ) -> commitlog::Result<commitlog::ReadBatch> {
        self.log.read(from, limits, out)
    }
    fn read_records(
        &self,
        from: Offset,
        limits: ReadLimits,
        by_ref: commitlog::ByReference,
        out: &mut Vec<commitlog::Record>,
    ) -> commitlog::Result<commitlog::ReadBatch> {
        self.log.read_records(from, limits, by_ref, out)
    }
    fn head(&self) -> Offset {
        self.log.head()
    }
    fn tick(&mut self) -> commitlog::Result<()> {
        self.log.tick()
    }
    fn apply_retention(
        &mut self,
        now: SystemTime,
        hold_back: Option<Offset>,
    ) -> commitlog::Result<commitlog::RetentionReport> {
        self.log.apply_retention(now, hold_back)
    }
    fn remove_before(&mut self, offset: Offset) -> commitlog::Result<usize> {
        self.log.remove_before(offset)
    }
    fn offset_within(&self, bytes: u64) -> Offset {
        self.log.offset_within(bytes)
    }
    fn drop_cache_below(&mut self, offset: Offset) {
        self.log.drop_cache_below(offset);
    }
}

use std::cell::Cell;
use std::rc::Rc;

/// Switches that make the message log / the journal "full".
type Switch = Rc<Cell<bool>>;

/// A router over a message log and a journal that can each be made "full".
fn faulty(dir: &std::path::Path) -> (Router<Faulty>, Topics, Switch, Switch) {
    let (log_full, journal_full) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let log = Faulty {
        log: Log::open(dir.join("messages"), LogConfig::default()).unwrap(),
        full: log_full.clone(),
    };
    let journal = Faulty {
        log: Log::open(dir.join("state"), LogConfig::default()).unwrap(),
        full: journal_full.clone(),
    };
    let router = Router::open(RouterConfig::default(), log, journal).unwrap();
    (router, Topics::default(), log_full, journal_full)
}

fn publish_event(topics: &Topics, conn: ConnectionId, pkid: u16, payload: &[u8]) -> Event {
    Event::Publish {
        conn,
        pkid: Some(PacketId(pkid)),
        message: Publication {
            topic: topics.intern("t").unwrap(),
            qos: QoS::AtLeastOnce,
            retain: false,
            record: NewMessage::new(QoS::AtLeastOnce, false, 0, "t", payload).framed(),
        },
    }
}

fn connect_event(conn: ConnectionId, id: &str, clean: bool) -> Event {
    Event::Connect {
        conn,
        connect: Connect::v3(id, clean, None),
    }
}

#[test]
fn a_full_disk_closes_publishers_keeps_subscribers_served_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, topics, log_full, _) = faulty(dir.path());
    r.handle(connect_event(C1, "sub", true));
    r.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    r.handle(connect_event(C2, "pub", true));
    r.handle(publish_event(&topics, C2, 1, b"stored"));
    r.drain_outbox().for_each(drop);
    log_full.set(true);
    r.handle(publish_event(&topics, C2, 2, b"refused"));
    let out: Vec<_> = r.drain_outbox().collect();
    assert_eq!(
        out,
        vec![(C2, Reply::PubAck(PacketId(2), PubReason::StorageFailure))],
        "a refusal, not a PUBACK, for what was not stored"
    );
    r.handle(Event::Disconnect {
        conn: C2,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    });
    // The subscriber still gets what is stored.
    r.handle(Event::Pull { conn: C1 });
    let out: Vec<_> = r.drain_outbox().collect();
    match &out[..] {
        [(c, Reply::Deliver(d))] if *c == C1 => assert_eq!(payloads(d), vec![b"stored".to_vec()]),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.stats().storage_errors, 1);
    // Space returns: the next publish is stored and acknowledged, nothing to restart.
    log_full.set(false);
    r.handle(connect_event(C3, "pub", true));
    r.handle(publish_event(&topics, C3, 3, b"again"));
    let out: Vec<_> = r.drain_outbox().collect();
    assert!(
        out.contains(&(C3, Reply::PubAck(PacketId(3), PubReason::Success))),
        "{out:?}"
    );
    assert_eq!(r.storage().head(), Offset(2));
}

#[test]
fn a_journal_failure_holds_back_persistent_replies_then_a_checkpoint_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, topics, _, journal_full) = faulty(dir.path());
    r.handle(connect_event(C1, "durable", false));
    r.handle(connect_event(C2, "clean", true));
    r.drain_outbox().for_each(drop);
    journal_full.set(true);
    // The durable session's SUBACK would promise a subscription the journal lacks.
    r.handle(Event::Subscribe {
        conn: C1,
        pkid: PacketId(1),
        filters: vec![Subscription::new("t", QoS::AtLeastOnce)],
        id: None,
    });
    r.handle(publish_event(&topics, C2, 1, b"m"));
    let out: Vec<_> = r.drain_outbox().collect();
    assert!(
        out.contains(&(C1, Reply::Close(CloseReason::StorageFailure))),
        "{out:?}"
    );
    assert!(
        out.contains(&(C2, Reply::PubAck(PacketId(1), PubReason::Success))),
        "clean sessions go on: {out:?}"
    );
    assert!(!out
        .iter()
        .any(|(c, r)| *c == C1 && matches!(r, Reply::SubAck { .. })));
    r.handle(Event::Disconnect {
        conn: C1,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    });
    // Space returns: the next flush rewrites the journal whole.
    journal_full.set(false);
    let checkpoints = r.stats().checkpoints;
    r.flush();
    assert_eq!(r.stats().checkpoints, checkpoints + 1);
    drop(r);
    // After a crash, the subscription made in memory during the failure is there.
    let (r, _, _, _) = faulty(dir.path());
    let saved = r.snapshot();
    assert_eq!(saved.sessions.len(), 1);
    assert_eq!(
        saved.sessions[0].filters,
        vec![("t".to_string(), SubOptions::qos(QoS::AtLeastOnce))]
    );
}

#[test]
fn a_cleared_retained_message_stays_cleared_after_a_crash() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 1, b"set");
    h.publish(C1, "r/2", QoS::AtLeastOnce, true, 2, b"kept");
    h.publish(C1, "r/1", QoS::AtLeastOnce, true, 3, b"");
    h.take(C1);
    let mut h = h.crash();
    h.connect(C2, "late", true);
    h.subscribe(C2, "r/+", QoS::AtLeastOnce);
    assert_eq!(payloads(&h.pull(C2)), vec![b"kept".to_vec()]);
}

#[test]
fn a_message_for_a_connection_without_its_credit_asks_for_the_credit_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    assert!(
        h.pull(C1).is_empty(),
        "the first Pull: the router holds the credit"
    );
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"1");
    assert_eq!(payloads(&h.deliveries(C1)), vec![b"1".to_vec()]);
    assert!(h.credit_wanted().is_empty(), "nothing waits");
    // The credit is out with that batch: the next message asks for it, once.
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"2");
    assert!(h.deliveries(C1).is_empty());
    assert_eq!(h.credit_wanted(), vec![C1]);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"3");
    assert!(h.credit_wanted().is_empty(), "asked already");
    // The credit comes back (the driver takes it where the connection parked it).
    assert_eq!(payloads(&h.pull(C1)), vec![b"2".to_vec(), b"3".to_vec()]);
    assert!(h.credit_wanted().is_empty());
}

#[test]
fn a_batch_that_leaves_messages_behind_asks_for_its_credit_back_before_it_leaves() {
    let config = RouterConfig {
        deliver_records_max: 2,
        ..RouterConfig::default()
    };
    let mut h = harness(config);
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    for i in 0..3u8 {
        h.publish(C2, "t", QoS::AtMostOnce, false, 0, &[i]);
    }
    assert_eq!(h.credit_wanted(), vec![C1], "before the first Pull");
    assert_eq!(payloads(&h.pull(C1)), vec![vec![0], vec![1]]);
    assert_eq!(h.credit_wanted(), vec![C1], "one message left behind");
    assert_eq!(payloads(&h.pull(C1)), vec![vec![2]]);
    assert!(h.credit_wanted().is_empty(), "nothing left behind");
}

#[test]
fn a_new_connection_of_a_session_starts_without_the_old_ones_credit() {
    // The session outlives the connection; the new one starts without a credit
    // until its own first Pull, and the router asks the new connection for it.
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    assert!(h.pull(C1).is_empty());
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"1");
    assert_eq!(h.deliveries(C1).len(), 1);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    h.connect(C3, "sub", false);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"2");
    assert!(h.deliveries(C3).is_empty(), "no credit yet");
    assert_eq!(h.credit_wanted(), vec![C3]);
    assert_eq!(payloads(&h.pull(C3)), vec![b"2".to_vec()]);
}

mod v5;

#[test]
fn a_snapshot_keeps_an_inflight_log_record_by_its_offset_only_as_replay_does() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtLeastOnce, false, 1, b"x");
    h.router.flush();
    // Delivered from the in-memory tail, so the record is in memory now.
    assert_eq!(payloads(&h.pull(C1)), vec![b"x".to_vec()]);
    let saved = h.router.snapshot();
    let inflight = &saved.sessions[0].inflight;
    assert_eq!(inflight.len(), 1);
    assert_eq!(inflight[0].offset, Some(Offset(0)));
    assert!(
        inflight[0].record.is_empty(),
        "saved absent, read back by offset"
    );
    // A crash and replay of the journal rebuild the same state.
    let h = h.crash();
    assert_eq!(h.router.snapshot(), saved);
}
