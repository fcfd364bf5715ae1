//! Storage that fails: a full message log, a journal that cannot be written.

use std::cell::Cell;
use std::rc::Rc;

use super::*;

/// A log whose appends fail while `full` is set, as on a full disk.
#[derive(Debug)]
pub(super) struct Faulty {
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
    fn skip_to(&mut self, base: Offset) -> commitlog::Result<()> {
        self.log.skip_to(base).map(drop)
    }
    fn offset_within(&self, bytes: u64) -> Offset {
        self.log.offset_within(bytes)
    }
    fn drop_cache_below(&mut self, offset: Offset) {
        self.log.drop_cache_below(offset);
    }
    fn record_bytes_max(&self) -> u32 {
        self.log.config().record_bytes_max
    }
}

/// Switches that make the message log / the journal "full".
pub(super) type Switch = Rc<Cell<bool>>;

/// A router over a message log and a journal that can each be made "full".
pub(super) fn faulty(dir: &std::path::Path) -> (Router<Faulty>, Topics, Switch, Switch) {
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

pub(super) fn connect_event(conn: ConnectionId, id: &str, clean: bool) -> Event {
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
