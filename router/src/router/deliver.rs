//! Delivery batches: what a session's connection is sent when the router holds its
//! credit, from retained messages first, then its queue of matched offsets (read from
//! the log in runs), or a scan of the log for a session that fell behind.

use std::time::SystemTime;

use bytes::Bytes;
use commitlog::{ByReference, FileRange, Offset, ReadBatch, ReadLimits, Record};

use super::fence::{Fence, FENCE_FORMAT};
use super::logs::Logs;
use super::{Router, RouterStats};
use crate::event::{Delivery, Reply};
use crate::journal::{Journal, Op};
use crate::session::{Inflight, OutState, Queued, Session};
use crate::shared::{Availability, GroupId};
use crate::storage::Storage;
use crate::subscriptions::Grant;
use crate::{Layout, LogRef, Message, PacketId, Position, QoS, RouterConfig, SessionId};
use mesh::LogId;

/// Logs a session catches up on in one delivery batch, when they hold nothing for
/// it.
const SCAN_LOGS_MAX: usize = 16;

impl<S: Storage> Router<S> {
    pub(super) fn deliver_woken(&mut self) {
        let mut wake = std::mem::take(&mut self.wake);
        for sid in wake.drain(..) {
            self.deliver(sid);
        }
        self.wake = wake;
    }

    /// Send the session's connection a batch if it is waiting for one. A batch whose
    /// every message turned out to be gone (removed by retention, expired, too
    /// large) sends nothing: try the next, a bounded number of times.
    pub(super) fn deliver(&mut self, sid: SessionId) {
        for _ in 0..64 {
            if !self.deliver_once(sid) {
                break;
            }
        }
    }

    /// One delivery batch; true when it skipped messages and sent none (try again).
    pub(super) fn deliver_once(&mut self, sid: SessionId) -> bool {
        let Router {
            sessions,
            storage,
            journal,
            config,
            outbox,
            credit_wanted,
            read_buf,
            want_buf,
            stats,
            now,
            mesh,
            ..
        } = self;
        let logs = Logs::new(&*storage, mesh.as_deref());
        let Some(s) = sessions.get_mut(&sid) else {
            return false;
        };
        let Some(conn) = s.conn else {
            return false;
        };
        if !s.has_credit {
            return false;
        }
        let mut b = Batch::new(sid, s, journal.enabled(), *now, config);
        b.add_system(s, config);
        b.add_retained(s, journal, config);
        // Take what the window allows off the queue, then read it in runs of
        // consecutive offsets: one storage read per run, not per message (a lagging
        // subscriber is served from disk, and a syscall per message would dominate).
        let mut want = std::mem::take(want_buf);
        want.clear();
        let mut log = LogReader {
            logs,
            config,
            buf: read_buf,
            stats,
        };
        b.take_queued(s, &mut log, &mut want);
        let read = b.add_queued(s, journal, &mut log, &want);
        // What the byte budget left over goes back to the front, in order.
        for q in want.drain(read..).rev() {
            s.queue.push_front(q);
        }
        *want_buf = want;
        b.journal_resume(s, logs, journal);
        if let (Some(first), true) = (b.items.first_mut(), s.lost > 0) {
            first.lost_before = std::mem::take(&mut s.lost);
        }
        if b.items.is_empty() {
            return b.skipped > 0;
        }
        stats.delivered += b.items.len() as u64;
        for d in &b.items {
            stats.delivered_by_qos[d.qos as usize] += 1;
            stats.delivered_bytes_by_qos[d.qos as usize] += d.record.len() as u64;
        }
        s.has_credit = false;
        if s.has_backlog() {
            // Asked for before the batch leaves: the connection must return the
            // credit with a `Pull`, not park it.
            s.credit_asked = true;
            credit_wanted.push(conn);
        }
        outbox.push((conn, Reply::Deliver(b.items)));
        false
    }
}

/// What reading a session's messages from the logs uses.
struct LogReader<'a, S> {
    logs: Logs<'a, S>,
    config: &'a RouterConfig,
    buf: &'a mut Vec<Record>,
    stats: &'a mut RouterStats,
}

/// A delivery batch being put together for one session.
struct Batch {
    sid: SessionId,
    items: Vec<Delivery>,
    /// Record bytes taken so far (a batch stops at `deliver_bytes_max`).
    bytes: usize,
    /// Messages passed over: expired, too large, removed by retention, unreadable.
    skipped: usize,
    /// A persistent session with a journal: what is sent is journaled.
    durable: bool,
    /// QoS 1/2 messages the session may have in flight.
    inflight_max: usize,
    /// The session's subscriptions with an identifier (0: none to look up).
    max_ids: usize,
    /// Wall-clock time in ms since the epoch (message expiry).
    now_ms: u64,
}

impl Batch {
    fn new(
        sid: SessionId,
        s: &Session,
        journal: bool,
        now: SystemTime,
        config: &RouterConfig,
    ) -> Batch {
        let inflight_max = s.window(config.inflight_max);
        let now_ms = super::epoch_ms(now);
        Batch {
            sid,
            // Sized once: a batch grows by no reallocation.
            items: Vec::with_capacity(
                (s.queue.len() + s.retained.len() + s.system.len())
                    .clamp(1, config.deliver_records_max)
                    .min(inflight_max.max(1) + s.retained.len() + s.system.len()),
            ),
            bytes: 0,
            skipped: 0,
            durable: !s.clean && journal,
            inflight_max,
            max_ids: s.filters.values().filter(|o| o.id.is_some()).count(),
            now_ms,
        }
    }

    /// Add one message, unless it may not go (see `deliverable`); returns the
    /// packet id and QoS it is in flight with (QoS 1 and 2).
    fn add(&mut self, s: &mut Session, out: Outgoing) -> Option<(PacketId, QoS)> {
        if !deliverable(s, &out.record, self.now_ms, self.max_ids) {
            self.skipped += 1;
            return None;
        }
        let subscription_ids = ids_when(self.max_ids > 0, s, &out.record);
        push_delivery(
            s,
            &mut self.items,
            Outgoing {
                subscription_ids,
                ..out
            },
        )
    }

    /// The `$SYS` messages waiting (QoS 0, never journaled), first.
    fn add_system(&mut self, s: &mut Session, config: &RouterConfig) {
        while self.items.len() < config.deliver_records_max && self.bytes < config.deliver_bytes_max
        {
            let Some((record, retain)) = s.system.pop_front() else {
                break;
            };
            self.bytes += record.len();
            let out = Outgoing {
                record: Record::from(record),
                pos: None,
                qos: QoS::AtMostOnce,
                retain,
                shared: None,
                subscription_ids: Vec::new(),
            };
            self.add(s, out);
        }
    }

    /// The retained messages the session's new subscriptions matched, next.
    fn add_retained<S: Storage>(
        &mut self,
        s: &mut Session,
        journal: &mut Journal<S>,
        config: &RouterConfig,
    ) {
        while self.items.len() < config.deliver_records_max && self.bytes < config.deliver_bytes_max
        {
            let Some((_, qos)) = s.retained.front() else {
                break;
            };
            if *qos != QoS::AtMostOnce && s.inflight.len() >= self.inflight_max {
                break;
            }
            let Some((record, qos)) = s.retained.pop_front() else {
                break;
            };
            self.bytes += record.len();
            if self.durable {
                journal.push(&Op::Taken { sid: self.sid.0 });
            }
            let out = Outgoing {
                record: Record::from(record.clone()),
                pos: None,
                qos,
                retain: true,
                shared: None,
                subscription_ids: Vec::new(),
            };
            if let (true, Some((pkid, qos))) = (self.durable, self.add(s, out)) {
                journal.push(&Op::SentRecord {
                    sid: self.sid.0,
                    pkid: pkid.0,
                    qos,
                    record,
                });
            }
        }
    }

    /// Take off the session's queue (scanning the log for it when it is not live)
    /// what the batch and the in-flight window leave room for, into `want`.
    fn take_queued<S: Storage>(
        &self,
        s: &mut Session,
        log: &mut LogReader<'_, S>,
        want: &mut Vec<Queued>,
    ) {
        let mut window = self.inflight_max.saturating_sub(s.inflight.len());
        while self.items.len() + want.len() < log.config.deliver_records_max {
            if s.queue.is_empty() {
                // Each scan reads one log; one it catches up on without a match
                // moves on to the next (a bounded number of them).
                for _ in 0..SCAN_LOGS_MAX {
                    if s.is_live_everywhere() {
                        break;
                    }
                    let before = (s.behind.len(), s.behind.first().map(|(l, _)| *l));
                    scan(s, log.logs, log.config, log.buf, log.stats);
                    // (A fence moves the log it stopped on last: go on too.)
                    let after = (s.behind.len(), s.behind.first().map(|(l, _)| *l));
                    if !s.queue.is_empty() || after == before {
                        break;
                    }
                }
                if s.queue.is_empty() {
                    break;
                }
            }
            let Some(q) = s.queue.front().copied() else {
                break;
            };
            if q.qos != QoS::AtMostOnce {
                if window == 0 {
                    break;
                }
                window -= 1;
            }
            s.queue.pop_front();
            want.push(q);
        }
    }

    /// Read the messages in `want` from the log, a run of consecutive offsets per
    /// read, and add them until the byte budget is spent. How many of `want` were
    /// taken (the rest go back to the queue).
    fn add_queued<S: Storage>(
        &mut self,
        s: &mut Session,
        journal: &mut Journal<S>,
        log: &mut LogReader<'_, S>,
        want: &[Queued],
    ) -> usize {
        let LogReader {
            logs,
            config,
            buf: read_buf,
            stats,
        } = log;
        let mut k = 0;
        while k < want.len() && self.bytes < config.deliver_bytes_max {
            let first = want[k].pos;
            let run = 1 + want[k + 1..]
                .iter()
                .zip(&want[k..])
                .take_while(|(next, prev)| Some(next.pos) == prev.pos.next())
                .count();
            read_buf.clear();
            let limits = ReadLimits {
                records_max: run,
                bytes_max: config.deliver_bytes_max - self.bytes,
            };
            let read = match logs.get(first.log()) {
                Some(log) => read_messages(log, first.offset(), limits, read_buf),
                // A log this router no longer reads: as if retention removed it.
                None => Ok(ReadBatch {
                    first: first.offset(),
                    next: first.offset(),
                }),
            };
            match read {
                Ok(b) if b.first == first.offset() && !read_buf.is_empty() => {
                    let id = logs.id(first.log()).filter(|_| first.log() != LogRef::OWN);
                    for record in read_buf.drain(..) {
                        let q = want[k];
                        k += 1;
                        self.bytes += record.len();
                        self.add_from_log(s, journal, (q, id), record);
                    }
                }
                Ok(_) | Err(commitlog::Error::OffsetOutOfRange { .. }) => {
                    stats.lost_to_retention += 1;
                    s.lost += 1;
                    self.skipped += 1;
                    tracing::warn!(client_id = %s.client_id, offset = %first, "message removed by retention before delivery");
                    k += 1;
                }
                Err(e) => {
                    tracing::error!(client_id = %s.client_id, offset = %first, error = %e, "cannot read message; skipping it");
                    self.skipped += 1;
                    k += 1;
                }
            }
        }
        k
    }

    /// Add the queued message `q`, read from the log as `record` (`id`: the log,
    /// when it is a replica).
    fn add_from_log<S: Storage>(
        &mut self,
        s: &mut Session,
        journal: &mut Journal<S>,
        (q, id): (Queued, Option<LogId>),
        record: Record,
    ) {
        // A replica's offset is journaled with its log's id (`SentIn`); one the
        // router cannot name (no mesh) is journaled whole.
        let replica = q.pos.log() != LogRef::OWN;
        let whole = (self.durable && replica && id.is_none()).then(|| whole_record(&record));
        let out = Outgoing {
            record,
            pos: Some(q.pos),
            qos: q.qos,
            retain: q.retain,
            shared: q.shared,
            subscription_ids: Vec::new(),
        };
        if let (true, Some((pkid, qos))) = (self.durable, self.add(s, out)) {
            let (sid, pkid) = (self.sid.0, pkid.0);
            let offset = q.pos.offset();
            journal.push(&match (whole, id) {
                (Some(record), _) => Op::SentRecord {
                    sid,
                    pkid,
                    qos,
                    record,
                },
                (None, Some(log)) if replica => Op::SentIn {
                    sid,
                    pkid,
                    qos,
                    log,
                    offset,
                },
                (None, _) => Op::Sent {
                    sid,
                    pkid,
                    qos,
                    offset,
                },
            });
        }
    }

    /// Journal the session's new resume points where they moved: in the own log,
    /// and in each replica (a cluster's).
    fn journal_resume<S: Storage>(
        &self,
        s: &mut Session,
        logs: Logs<'_, S>,
        journal: &mut Journal<S>,
    ) {
        if !self.durable {
            return;
        }
        let resume = s.resume(LogRef::OWN, logs.end(LogRef::OWN));
        if resume != s.journaled_resume {
            s.journaled_resume = resume;
            journal.push(&Op::Resume {
                sid: self.sid.0,
                offset: resume,
            });
        }
        for log in logs.replica_refs() {
            let Some(id) = logs.id(log) else {
                continue;
            };
            let resume = s.resume(log, logs.end(log));
            if s.journaled_in(log) != Some(resume) {
                journal_place_in(journal, (self.sid, s), (log, id), resume);
            }
        }
    }
}

/// Journal that session `s` resumes reading replica `log` (`id`) at `at`.
pub(super) fn journal_place_in<S: Storage>(
    journal: &mut Journal<S>,
    (sid, s): (SessionId, &mut Session),
    (log, id): (LogRef, LogId),
    at: Offset,
) {
    s.set_journaled_in(log, at);
    journal.push(&Op::ResumeIn {
        sid: sid.0,
        log: id,
        offset: at,
    });
}

/// A record's bytes, read whole when it was given by reference (empty if that
/// read fails: logged).
fn whole_record(record: &Record) -> Bytes {
    match record.in_memory() {
        Some(b) => b.clone(),
        None => record.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read a replica's record whole to journal it");
            Bytes::new()
        }),
    }
}

/// The identifiers of `s`'s subscriptions matching `record`, when `s` has any
/// (`with_ids`, computed once per batch: looking costs a pass over its filters).
fn ids_when(with_ids: bool, s: &Session, record: &Record) -> Vec<u32> {
    if with_ids {
        s.ids_for_record(record)
    } else {
        Vec::new()
    }
}

/// How a shared group member stands for taking a message of `log` now: it must be
/// keeping up (live on that log, with room in its queue), since a member that reads
/// from the log does not see shared messages there.
pub(super) fn availability(s: Option<&Session>, log: LogRef, queue_max: usize) -> Availability {
    let keeping_up = |s: &Session| s.is_live(log) && s.queue.len() < queue_max;
    match s {
        Some(s) if keeping_up(s) && s.conn.is_some() => Availability::Online,
        Some(s) if keeping_up(s) && !s.clean => Availability::Offline,
        _ => Availability::No,
    }
}

/// Whether a record may go to this session now: not expired (MQTT 5 message
/// expiry), and not larger than the client's maximum packet size. A message that
/// may not is skipped as if delivered (§3.1.2.11.4).
fn deliverable(s: &Session, record: &Record, now_ms: u64, max_ids: usize) -> bool {
    let check_size = s.max_packet_size != u32::MAX
        && Message::packet_size_bound(record.len(), max_ids) > s.max_packet_size as usize;
    if !check_size && !Message::has_expiry(record.head()) {
        return true;
    }
    let Ok(m) = Message::decode(record.head()) else {
        return true;
    };
    // The payload's part left in the file, for a record given by reference.
    let unread = record.rest().map_or(0, FileRange::len);
    if m.expiry_left(now_ms) == Some(0) {
        tracing::debug!(client_id = %s.client_id, topic = m.topic_str(), "message expired before delivery");
        return false;
    }
    if check_size
        && m.v5_packet_size(s.ids_for_record(record).len()) + unread > s.max_packet_size as usize
    {
        tracing::debug!(client_id = %s.client_id, topic = m.topic_str(), max = s.max_packet_size, "message larger than the client's maximum packet size; not sent");
        return false;
    }
    true
}

/// Stored messages of at least this size are read from segments by reference: the
/// first bytes in memory, the rest sent by the connection with `sendfile` straight
/// from the page cache (one copy instead of a read into memory and a write out of
/// it). Below 16 KiB the system calls cost more than the copy saves (the same bound
/// as the commitlog's for referencing rather than copying payloads on append). The
/// head holds the fields the router and the encoder look at for any usual topic.
const BY_REFERENCE: ByReference = ByReference {
    min_bytes: 16 * 1024,
    head_bytes: 512,
};

/// The record at `offset`, whole; `None` when the log no longer has it (retention
/// removed it, or recovery left a hole there).
pub(super) fn read_one<S: Storage>(
    storage: &S,
    offset: Offset,
) -> commitlog::Result<Option<Bytes>> {
    let mut one = Vec::with_capacity(1);
    let limits = ReadLimits {
        records_max: 1,
        bytes_max: 1,
    };
    let batch = storage.read(offset, limits, &mut one)?;
    Ok(one.pop().filter(|_| batch.first == offset))
}

/// Read stored messages, large ones from segments by reference (`BY_REFERENCE`). A
/// record whose head is too short for the message's fields (a topic or properties
/// longer than the head) is read whole, so every record given can be decoded.
fn read_messages<S: Storage>(
    storage: &S,
    from: Offset,
    limits: ReadLimits,
    out: &mut Vec<Record>,
) -> commitlog::Result<commitlog::ReadBatch> {
    let start = out.len();
    let batch = storage.read_records(from, limits, BY_REFERENCE, out)?;
    for record in &mut out[start..] {
        if record.rest().is_some() && Layout::parse(record.head()).is_err() {
            match record.load() {
                Ok(whole) => *record = Record::from(whole),
                // Left as it is: the record is skipped as undecodable downstream.
                Err(e) => tracing::error!(error = %e, "cannot read a stored message whole"),
            }
        }
    }
    Ok(batch)
}

/// One message on its way to a session.
struct Outgoing {
    record: Record,
    /// Where it is (none for a retained message sent on subscribe).
    pos: Option<Position>,
    qos: QoS,
    retain: bool,
    shared: Option<GroupId>,
    subscription_ids: Vec<u32>,
}

/// Add a delivery to the batch; for QoS 1 and 2, returns the packet id and QoS it is
/// in flight with.
fn push_delivery(
    s: &mut Session,
    items: &mut Vec<Delivery>,
    out: Outgoing,
) -> Option<(PacketId, QoS)> {
    let Outgoing {
        record,
        pos,
        qos,
        retain,
        shared,
        subscription_ids,
    } = out;
    let pkid = if qos == QoS::AtMostOnce {
        None
    } else {
        // inflight_max < 65535 keeps an id free; if not, send at QoS 0 rather than stall.
        s.next_packet_id()
    };
    let qos = if pkid.is_none() { QoS::AtMostOnce } else { qos };
    if let Some(p) = pkid {
        s.inflight.insert(
            p.0,
            Inflight {
                record: record.clone(),
                pos,
                qos,
                state: OutState::Sent,
                shared,
            },
        );
    }
    items.push(Delivery {
        record,
        qos,
        pkid,
        dup: false,
        retain,
        subscription_ids,
        lost_before: 0,
    });
    pkid.map(|p| (p, qos))
}

/// Catch a session up with the first log it is behind on: read from its cursor and
/// queue what its filters match, until the queue is full, the read budget is spent,
/// or the head is reached (then it is live on that log again).
fn scan<S: Storage>(
    s: &mut Session,
    logs: Logs<'_, S>,
    config: &RouterConfig,
    buf: &mut Vec<Record>,
    stats: &mut RouterStats,
) {
    let Some(&(log, _)) = s.behind.first() else {
        return;
    };
    let end = logs.end(log);
    let Some(storage) = logs.get(log) else {
        // A log this router no longer reads (retired): nothing left to catch up
        // on there; what lay below its end is gone for this session.
        if let Some(cursor) = s.cursor(log).filter(|c| *c < end) {
            let lost = end.distance_from(cursor);
            stats.lost_to_retention += lost;
            s.lost += lost;
            tracing::warn!(client_id = %s.client_id, log = log.0, from = %cursor, to = %end, "a retired log held messages this session had not read");
        }
        s.caught_up(log);
        return;
    };
    let mut rounds = 4;
    while s.queue.len() < config.session_queue_max && rounds > 0 {
        let Some(cursor) = s.cursor(log) else {
            return;
        };
        if cursor > end && log != LogRef::OWN {
            // Its place is past what this node has offered of a replica (it moved
            // here ahead of this node's copy): it waits there, and never gets what
            // lies below its place again.
            logs.wait_for(log);
            s.scan_last(log);
            return;
        }
        if cursor >= end {
            s.caught_up(log);
            return;
        }
        rounds -= 1;
        buf.clear();
        let limits = ReadLimits {
            records_max: usize::try_from(end.distance_from(cursor))
                .map_or(config.scan_records_max, |n| n.min(config.scan_records_max)),
            bytes_max: 4 * 1024 * 1024,
        };
        let batch = match read_messages(storage, cursor, limits, buf) {
            Ok(b) => b,
            Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) => {
                let lost = earliest.distance_from(cursor);
                stats.lost_to_retention += lost;
                s.lost += lost;
                tracing::warn!(client_id = %s.client_id, from = %cursor, to = %earliest, "retention removed messages before this session read them");
                s.set_behind(log, earliest);
                continue;
            }
            Err(e) => {
                tracing::error!(client_id = %s.client_id, error = %e, "cannot read the log for a session");
                return;
            }
        };
        if batch.is_empty() {
            s.caught_up(log);
            return;
        }
        let (next, fenced) = queue_matches(s, (log, logs), batch.first, buf, config);
        s.set_behind(log, next);
        if fenced {
            // It reads the log the fence names first (see `fence`).
            s.scan_last(log);
            return;
        }
        if next >= end {
            s.caught_up(log);
        }
    }
}

/// Queue the records of `buf` (read from `log` at `first`) that the session's
/// filters match, until its queue holds `session_queue_max` or a fence stops it
/// (true: see `fence`); the offset after the last record looked at.
fn queue_matches<S: Storage>(
    s: &mut Session,
    (log, logs): (LogRef, Logs<'_, S>),
    first: Offset,
    buf: &[Record],
    config: &RouterConfig,
) -> (Offset, bool) {
    let queue_max = config.session_queue_max;
    let mut offset = first;
    // The match of the previous record's topic: runs of records on one topic are
    // common (a device's stream), and a byte comparison is much cheaper than
    // checking the topic against every filter of the session.
    let mut last: Option<(Bytes, Option<Grant>)> = None;
    for record in buf {
        if s.queue.len() >= queue_max {
            break;
        }
        // Parsed, not decoded: no reference count is touched per record.
        let record = record.head();
        if record.first() == Some(&FENCE_FORMAT) && fenced(s, record, logs) {
            return (offset, true);
        }
        if let Ok(m) = Layout::parse(record) {
            let topic = &record[m.topic.clone()];
            let matched = match &last {
                Some((last_topic, grant)) if last_topic[..] == *topic => *grant,
                _ => {
                    let grant = match std::str::from_utf8(topic) {
                        Ok(name) => s.matching(name),
                        Err(_) => {
                            debug_assert!(false, "Layout::parse checks the topic is UTF-8");
                            tracing::error!(%offset, "stored topic is not UTF-8; not matched");
                            None
                        }
                    };
                    last = Some((record.slice(m.topic), grant));
                    grant
                }
            };
            // No local cannot be honoured here: a record does not say which
            // session published it (see docs/architecture.md).
            if let (Some(grant), Some(pos)) = (matched, Position::new(log, offset)) {
                let qos = m.qos.min(grant.qos);
                if s.conn.is_some() || qos != QoS::AtMostOnce {
                    s.queue.push_back(Queued {
                        pos,
                        qos,
                        retain: m.retain && grant.retain_as_published,
                        shared: None,
                    });
                }
            }
        }
        offset = offset.add(1);
    }
    (offset, false)
}

/// Whether `record`, a fence, stops `s` reading on (see `fence`).
fn fenced<S: Storage>(s: &Session, record: &[u8], logs: Logs<'_, S>) -> bool {
    let Some(f) = Fence::decode(record) else {
        return false;
    };
    let Some(after) = logs.find(f.after) else {
        return false;
    };
    !f.lets_pass(s.cursor(after), after, logs)
}
