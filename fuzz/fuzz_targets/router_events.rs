//! Random request sequences into the router, over a real message log and session
//! journal in a temporary directory, the way connections would send them (events only
//! from connected connections; a connection the router closes sends its Disconnect).
//!
//! Checks: nothing panics; a QoS 1/2 delivery never carries a packet id already in
//! flight on that connection; and at the end, after a "crash" (the router dropped
//! without closing anything) and `Router::open` on the same files, the replayed
//! persistent state equals the state the router held — the journal lost nothing and
//! invented nothing.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use commitlog::{Log, LogConfig, Offset};
use libfuzzer_sys::fuzz_target;
use router::{
    Connect, ConnectionId, DisconnectReason, Event, NewMessage, PacketId, Publication, QoS, Reply,
    Router, RouterConfig, Snapshot, Subscription, TopicId, NEVER_EXPIRES,
};

const CLIENTS: [&str; 3] = ["a", "b", "c"];
const TOPICS: [&str; 3] = ["t/1", "t/2", "u"];
const FILTERS: [&str; 4] = ["t/+", "#", "u", "t/1"];

fn config() -> RouterConfig {
    RouterConfig {
        inflight_max: 3,
        session_queue_max: 4,
        deliver_records_max: 3,
        scan_records_max: 5,
        journal_checkpoint_bytes: 1024,
        ..RouterConfig::default()
    }
}

fn open(dir: &std::path::Path) -> Router<Log> {
    let log_config = LogConfig {
        segment_bytes_max: 4096,
        record_bytes_max: 2048,
        ..LogConfig::default()
    };
    let log = Log::open(dir.join("messages"), log_config.clone()).expect("open log");
    let journal = Log::open(dir.join("state"), log_config).expect("open journal");
    Router::open(config(), log, journal).expect("replay")
}

fn qos(b: u8) -> QoS {
    QoS::from_u8(b % 3).unwrap_or(QoS::AtMostOnce)
}

/// The state as comparable data: the resume point may legitimately be behind after a
/// replay (it is written when a session delivers), and QoS 0 retained messages still
/// pending for an online session are not kept offline.
fn normalise(s: &Snapshot) -> (Vec<Bytes>, Vec<String>) {
    let mut retained = s.retained.clone();
    retained.sort();
    let sessions = s
        .sessions
        .iter()
        .map(|x| {
            let pending: Vec<_> = x.retained.iter().filter(|(_, q)| *q != QoS::AtMostOnce).collect();
            format!(
                "{} {} {} {:?} {:?} {:?} {:?}",
                x.id, x.client_id, x.expiry_secs, x.filters, pending, x.inflight, x.incoming_qos2
            )
        })
        .collect();
    (retained, sessions)
}

fn resumes(s: &Snapshot) -> BTreeMap<String, Offset> {
    s.sessions.iter().map(|x| (x.client_id.clone(), x.resume)).collect()
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut router = open(dir.path());
    let mut live: Vec<ConnectionId> = Vec::new();
    let mut next_conn = 1u64;
    let mut in_flight: HashMap<ConnectionId, HashSet<u16>> = HashMap::new();
    // What the driver does with the router's output: replies to the connections, and
    // the delivery credits it asks for handed back in as `Pull`s (as for credits the
    // connections parked; random `Pull`s stand for the others), round after round
    // until nothing is left; then a flush, so the journal holds all that memory does.
    let drain = |router: &mut Router<Log>,
                 live: &mut Vec<ConnectionId>,
                 in_flight: &mut HashMap<ConnectionId, HashSet<u16>>| {
        for _ in 0..8 {
            let out: Vec<_> = router.drain_outbox().collect();
            let wanted: Vec<_> = router.drain_credit_wanted().collect();
            if out.is_empty() && wanted.is_empty() {
                break;
            }
            for conn in wanted {
                router.handle(Event::Pull { conn });
            }
            for (conn, reply) in out {
                match reply {
                    Reply::Close(_) => {
                        live.retain(|c| *c != conn);
                        in_flight.remove(&conn);
                        router.handle(Event::Disconnect {
                            conn,
                            reason: DisconnectReason::Abrupt,
                            session_expiry: None,
                        });
                    }
                    Reply::Deliver(items) => {
                        let ids = in_flight.entry(conn).or_default();
                        for d in items {
                            if let Some(p) = d.pkid {
                                assert!(d.dup || ids.insert(p.0), "packet id {} reused while in flight", p.0);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        router.flush();
    };
    for chunk in data.chunks_exact(3) {
        let (op, x, y) = (chunk[0] % 12, chunk[1], chunk[2]);
        let pick = (!live.is_empty()).then(|| live[usize::from(x) % live.len()]);
        let pkid = PacketId(u16::from(y % 6) + 1);
        match (op, pick) {
            (0, _) => {
                let conn = ConnectionId(next_conn);
                next_conn += 1;
                live.push(conn);
                // A reconnect starts with a fresh view of the client's ids.
                in_flight.remove(&conn);
                router.handle(Event::Connect {
                    conn,
                    connect: Connect {
                        // 3.1.1's two kinds of session and MQTT 5's finite expiry,
                        // with a small receive maximum now and then.
                        session_expiry: [0, NEVER_EXPIRES, 3600, NEVER_EXPIRES][usize::from(x >> 1 & 3)],
                        receive_maximum: if x & 8 == 8 { 2 } else { u16::MAX },
                        ..Connect::v3(CLIENTS[usize::from(y) % CLIENTS.len()], x & 1 == 1, None)
                    },
                });
            }
            (1, Some(conn)) => {
                let topic = TOPICS[usize::from(y) % TOPICS.len()];
                let q = qos(x >> 2);
                let retain = y & 0x80 != 0;
                let payload: &[u8] = if y & 0x40 != 0 { b"" } else { b"p" };
                // As a connection interns it: one id per name.
                let tid = TopicId(u32::from(y) % TOPICS.len() as u32);
                let record = NewMessage::new(q, retain, 0, topic, payload).framed();
                router.handle(Event::Publish {
                    conn,
                    pkid: (q != QoS::AtMostOnce).then_some(pkid),
                    message: Publication {
                        topic: tid,
                        qos: q,
                        retain,
                        record,
                    },
                });
            }
            (2, Some(conn)) => {
                in_flight.entry(conn).or_default().remove(&pkid.0);
                router.handle(Event::PubAck { conn, pkid });
            }
            (3, Some(conn)) => router.handle(Event::PubRec { conn, pkid }),
            (4, Some(conn)) => router.handle(Event::PubRel { conn, pkid }),
            (5, Some(conn)) => {
                in_flight.entry(conn).or_default().remove(&pkid.0);
                router.handle(Event::PubComp { conn, pkid });
            }
            (6, Some(conn)) => router.handle(Event::Subscribe {
                conn,
                pkid,
                filters: vec![Subscription {
                    no_local: x & 1 == 1,
                    retain_as_published: x & 2 == 2,
                    ..Subscription::new(FILTERS[usize::from(y) % FILTERS.len()], qos(x >> 3))
                }],
                id: (x & 4 == 4).then_some(u32::from(y) + 1),
            }),
            (7, Some(conn)) => router.handle(Event::Unsubscribe {
                conn,
                pkid,
                filters: vec![FILTERS[usize::from(y) % FILTERS.len()].into()],
            }),
            (8, Some(conn)) => router.handle(Event::Pull { conn }),
            (9, Some(conn)) => {
                live.retain(|c| *c != conn);
                in_flight.remove(&conn);
                let reason = if y & 1 == 0 {
                    DisconnectReason::Normal
                } else {
                    DisconnectReason::Abrupt
                };
                router.handle(Event::Disconnect {
                    conn,
                    reason,
                    session_expiry: None,
                });
            }
            (10, _) => drain(&mut router, &mut live, &mut in_flight),
            (11, _) => {
                router.tick(std::time::SystemTime::now());
                // Now and then a round of $SYS topics, which must never reach the
                // journal (the replay below would differ), and a subscriber for them.
                if x & 0x80 != 0 {
                    let topic = ["$SYS/broker/uptime", "$SYS/broker/clients/connected"][usize::from(y & 1)];
                    router.publish_system(topic, &[y]);
                }
                if let (Some(conn), true) = (pick, x & 0x40 != 0) {
                    router.handle(Event::Subscribe {
                        conn,
                        pkid,
                        filters: vec![Subscription::new("$SYS/#", qos(y))],
                        id: None,
                    });
                }
            }
            _ => {}
        }
    }
    drain(&mut router, &mut live, &mut in_flight);
    let before = router.snapshot();
    drop(router);
    let after = open(dir.path()).snapshot();
    assert_eq!(normalise(&before), normalise(&after), "replay differs from memory");
    for (client, resume) in resumes(&after) {
        let was = resumes(&before).get(&client).copied();
        assert!(was.is_some_and(|w| resume <= w), "{client}: resume {resume} ahead of {was:?}");
    }
});
