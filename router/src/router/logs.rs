//! The logs a router reads, by [`LogRef`]: its own, and in a cluster the replicas
//! (`replication`), each with where what it offered its sessions ends.

use commitlog::Offset;
use mesh::LogId;

use super::replication::{Mesh, Replica};
use crate::storage::Storage;
use crate::LogRef;

/// The logs a router reads, by [`LogRef`].
pub(crate) struct Logs<'a, S> {
    own: &'a S,
    /// The own log's id, in a cluster.
    own_id: Option<LogId>,
    /// Where what the own log offered its sessions ends: its commit in a cluster
    /// (fan-out waits for it), its head on one node.
    own_end: Offset,
    replicas: &'a [Replica<S>],
}

// By hand: derived, they would ask `S: Copy`.
impl<S> Clone for Logs<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Logs<'_, S> {}

impl<'a, S: Storage> Logs<'a, S> {
    /// The router's logs: `own`, and those of `mesh` in a cluster.
    pub fn new(own: &'a S, mesh: Option<&'a Mesh<S>>) -> Self {
        Logs {
            own,
            own_id: mesh.map(Mesh::own),
            own_end: mesh.map_or_else(|| own.head(), Mesh::commit),
            replicas: mesh.map_or(&[], |m| &m.replicas[..]),
        }
    }

    /// The storage of `log`, if the router reads it.
    pub fn get(self, log: LogRef) -> Option<&'a S> {
        match log.0.checked_sub(1) {
            None => Some(self.own),
            Some(i) => (self.replicas.get(usize::from(i))).and_then(|r| r.storage.open()),
        }
    }

    /// Whether `log` is a replica this node retired (`retire`).
    pub fn is_retired(self, log: LogRef) -> bool {
        (log.0.checked_sub(1))
            .and_then(|i| self.replicas.get(usize::from(i)))
            .is_some_and(|r| r.storage.is_retired())
    }

    /// The id of `log`, in a cluster.
    pub fn id(self, log: LogRef) -> Option<LogId> {
        match log.0.checked_sub(1) {
            None => self.own_id,
            Some(i) => self.replicas.get(usize::from(i)).map(|r| r.id),
        }
    }

    /// The ref of log `id`, if the router reads it.
    pub fn find(self, id: LogId) -> Option<LogRef> {
        if self.own_id == Some(id) {
            return Some(LogRef::OWN);
        }
        let i = self.replicas.iter().position(|r| r.id == id)?;
        u16::try_from(i + 1).ok().map(LogRef)
    }

    /// A session waits for `log` to be offered up to its place (see `scan`): it
    /// is woken once more of it is.
    pub fn wait_for(self, log: LogRef) {
        if let Some(r) = log
            .0
            .checked_sub(1)
            .and_then(|i| self.replicas.get(usize::from(i)))
        {
            r.waited_on.set(true);
        }
    }

    /// The replicas' refs, in order.
    pub fn replica_refs(self) -> impl Iterator<Item = LogRef> {
        (1..=self.replicas.len()).filter_map(|i| u16::try_from(i).ok().map(LogRef))
    }

    /// Where the records of `log` offered to live sessions end: a session that
    /// scans the log catches up there, never above (what lies above is offered
    /// once committed, and a session that had read it would get it twice).
    pub fn end(self, log: LogRef) -> Offset {
        match log.0.checked_sub(1) {
            None => self.own_end,
            Some(i) => self
                .replicas
                .get(usize::from(i))
                .map_or(Offset(0), |r| r.fanned),
        }
    }
}
