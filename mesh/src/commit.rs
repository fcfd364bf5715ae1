//! What a log's writer may call committed: the highest offset below which
//! `ack_copies` nodes (itself among them) hold every record.
//!
//! The writer learns what each follower holds from its fetches (a fetch from offset
//! `n` says the follower holds everything below `n`) and what it holds itself from
//! its own appends (synced first under `fsync = "always"`). The commit is the
//! `ack_copies`-th highest of those ends: with three nodes and `ack_copies = 2`, the
//! second highest. It never moves back, even when a follower's report does (a
//! restarted follower starts a new replica from what it kept): what was
//! acknowledged stays acknowledged.

use std::collections::BTreeMap;

use commitlog::Offset;

use crate::ids::NodeId;

/// A writer's view of its log's copies (see the module docs).
#[derive(Debug, Clone)]
pub struct CommitTracker {
    ack_copies: usize,
    /// The end of the writer's own log.
    own: Offset,
    /// The end each follower reported last; a follower not heard from holds nothing
    /// (the log's start).
    followers: BTreeMap<NodeId, Offset>,
    commit: Offset,
}

impl CommitTracker {
    /// A log starting at `start`, copied by `followers`, committed at `ack_copies`
    /// copies (at least 1: the writer's own). With more copies asked than there are
    /// nodes nothing ever commits; configuration refuses that before.
    pub fn new(
        ack_copies: usize,
        followers: impl IntoIterator<Item = NodeId>,
        start: Offset,
    ) -> CommitTracker {
        CommitTracker {
            ack_copies: ack_copies.max(1),
            own: start,
            followers: followers.into_iter().map(|n| (n, start)).collect(),
            commit: start,
        }
    }

    /// The commit: every record below it is held by `ack_copies` nodes.
    pub fn commit(&self) -> Offset {
        self.commit
    }

    /// The writer's own log now ends at `end` (appended, and synced where the
    /// configuration asks): the new commit, if it moved.
    pub fn local_end(&mut self, end: Offset) -> Option<Offset> {
        self.own = self.own.max(end);
        self.recompute()
    }

    /// `node` fetched from `end`: it holds everything below. A follower cannot hold
    /// what the writer has not written, so more than that counts as the writer's end.
    /// Nodes that do not follow this log are ignored. The new commit, if it moved.
    pub fn follower_end(&mut self, node: NodeId, end: Offset) -> Option<Offset> {
        let own = self.own;
        let held = self.followers.get_mut(&node)?;
        *held = end.min(own);
        self.recompute()
    }

    /// The lowest end among the followers: what the slowest one still needs starts
    /// there. `None` without followers.
    pub fn slowest_end(&self) -> Option<Offset> {
        self.followers.values().copied().min()
    }

    /// How many records each follower is behind the writer.
    pub fn lags(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.followers
            .iter()
            .map(|(n, end)| (*n, self.own.distance_from(*end)))
    }

    fn recompute(&mut self) -> Option<Offset> {
        let mut ends: Vec<Offset> = self.followers.values().copied().collect();
        ends.push(self.own);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let kth = ends.get(self.ack_copies - 1).copied()?;
        (kth > self.commit).then(|| {
            self.commit = kth;
            kth
        })
    }
}

#[cfg(test)]
mod tests;
