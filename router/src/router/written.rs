//! A stream this node writes (its message log or its session journal) as its
//! followers see it: what each holds, from its fetches (the commit follows), the
//! fetches parked until there is something to send, and the commit each was last
//! told.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use commitlog::{Offset, ReadLimits};
use mesh::{CommitTracker, LogId, NodeId, Stream};

use super::peer::PeerReply;
use crate::storage::Storage;

/// One written stream's followers.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) tracker: CommitTracker,
    /// Fetches waiting for records, one per follower.
    parked: Vec<Parked>,
    /// The commit each follower was last told: a fetch is answered at once while
    /// its follower knows less than the commit, even with no record to send (a
    /// follower that holds everything must still learn that it is committed).
    told: BTreeMap<NodeId, Offset>,
}

#[derive(Debug, Clone, Copy)]
struct Parked {
    peer: NodeId,
    from: Offset,
    bytes_max: u32,
    since: SystemTime,
}

impl Written {
    /// A stream that ends at `head`, followed by `followers`, committed once
    /// `ack_copies` nodes hold a record.
    pub(super) fn new(ack_copies: usize, followers: &[NodeId], head: Offset) -> Written {
        Written {
            tracker: CommitTracker::new(ack_copies, followers.to_vec(), head),
            parked: Vec::new(),
            // Nothing is committed above the stream's start yet: nothing to tell.
            told: followers.iter().map(|f| (*f, head)).collect(),
        }
    }

    /// `peer` fetches from `from` (it holds everything below): its fetch is parked,
    /// in place of the one before. True when the commit moved.
    pub(super) fn fetched(
        &mut self,
        peer: NodeId,
        from: Offset,
        bytes_max: u32,
        now: SystemTime,
    ) -> bool {
        let moved = self.tracker.follower_end(peer, from).is_some();
        self.parked.retain(|p| p.peer != peer);
        self.parked.push(Parked {
            peer,
            from,
            bytes_max,
            since: now,
        });
        moved
    }

    /// The link to `peer` was reset: its parked fetch went with it.
    pub(super) fn link_up(&mut self, peer: NodeId) {
        self.parked.retain(|p| p.peer != peer);
    }

    /// Answer, into `outbox`, the parked fetches that have records of `storage`
    /// (which holds `stream` of `log`) to read or the commit to learn, and those
    /// held for `wait` (a heartbeat).
    pub(super) fn answer<S: Storage>(
        &mut self,
        storage: &S,
        (log, stream): (LogId, Stream),
        (now, wait): (SystemTime, Duration),
        outbox: &mut Vec<(NodeId, PeerReply)>,
    ) {
        let head = storage.head();
        let commit = self.tracker.commit();
        let mut answered = Vec::new();
        let told = &mut self.told;
        self.parked.retain(|p| {
            let waited = now.duration_since(p.since).is_ok_and(|d| d >= wait);
            let behind = told.get(&p.peer).is_none_or(|t| *t < commit);
            if p.from < head || behind || waited {
                told.insert(p.peer, commit);
                answered.push(*p);
                false
            } else {
                true
            }
        });
        for p in answered {
            let mut records = Vec::new();
            let limits = ReadLimits {
                records_max: usize::MAX,
                bytes_max: p.bytes_max as usize,
            };
            let Some(base) = read_for_follower(storage, stream, &p, limits, &mut records) else {
                continue;
            };
            let reply = PeerReply::Records {
                log,
                stream,
                base,
                commit,
                records,
            };
            outbox.push((p.peer, reply));
        }
    }
}

/// Read `stream` from where follower `p` fetches, into `records`; the offset of
/// the first. A follower of the messages that lags past what this node still holds
/// (retention removed it: past `hold_bytes_max`, or a follower away for long) gets
/// what it holds from its earliest on, and goes on from there (its copy skips the
/// rest: `Router::replicated_in`). One of the journal gets nothing (a journal copy
/// must begin at a checkpoint): `None`, its fetch is not answered.
fn read_for_follower<S: Storage>(
    storage: &S,
    stream: Stream,
    p: &Parked,
    limits: ReadLimits,
    records: &mut Vec<Bytes>,
) -> Option<Offset> {
    let from = match storage.read(p.from, limits, records) {
        Ok(batch) => return Some(batch.first),
        Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) if stream == Stream::Messages => {
            tracing::warn!(peer = %p.peer, from = %p.from, %earliest, "a follower lags past what this node still holds of its log; it goes on from the earliest held, without the rest");
            earliest
        }
        Err(commitlog::Error::OffsetOutOfRange { earliest, .. }) => {
            tracing::error!(peer = %p.peer, %stream, from = %p.from, %earliest, "a follower needs records of the journal this node no longer holds (its compaction removed them); it no longer replicates the journal");
            return None;
        }
        Err(e) => {
            tracing::error!(peer = %p.peer, %stream, from = %p.from, error = %e, "cannot read a stream for a follower");
            records.clear();
            return Some(p.from);
        }
    };
    records.clear();
    match storage.read(from, limits, records) {
        Ok(batch) => Some(batch.first),
        Err(e) => {
            tracing::error!(peer = %p.peer, %from, error = %e, "cannot read the log for a follower");
            records.clear();
            Some(p.from)
        }
    }
}
