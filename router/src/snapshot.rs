//! The router's persistent state as plain data: the persistent sessions and the
//! retained messages. The journal writes it as a checkpoint and rebuilds it by
//! replay (see `journal`); [`Router::restore`](crate::Router::restore) puts it back.
//! The log already holds every message; this holds only what says who still needs
//! which of them.

use bytes::Bytes;
use commitlog::Offset;
use mesh::LogId;

use crate::{QoS, SubOptions};

/// The state carried over a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Retained messages, as stored records.
    pub retained: Vec<Bytes>,
    /// Persistent sessions.
    pub sessions: Vec<SavedSession>,
    /// In a cluster: the wills armed on the connections open when the journal
    /// ended (client id, will delay in seconds, the will in stored form).
    pub wills: Vec<(String, u32, Bytes)>,
}

/// One persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// The router's session id (journal ops refer to it).
    pub id: u32,
    /// Client id.
    pub client_id: String,
    /// Filters and their options.
    pub filters: Vec<(String, SubOptions)>,
    /// Session expiry interval, seconds.
    pub expiry_secs: u32,
    /// The first log offset it has not been offered yet: reading resumes here.
    /// (In the message log of the run that saved it.)
    pub resume: Offset,
    /// The same in other logs (a cluster's replicas, earlier runs' logs), by log;
    /// a log not named here is read from its start.
    pub resume_in: Vec<(LogId, Offset)>,
    /// Retained messages matched by a subscription and not yet sent.
    pub retained: Vec<(Bytes, QoS)>,
    /// Deliveries sent and not yet acknowledged (a record is empty when it is read
    /// back from the log at its offset).
    pub inflight: Vec<SavedInflight>,
    /// Inbound QoS 2 packet ids stored and not yet released.
    pub incoming_qos2: Vec<u16>,
}

/// One unacknowledged outbound delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedInflight {
    /// Packet id.
    pub pkid: u16,
    /// Effective QoS (1 or 2).
    pub qos: QoS,
    /// QoS 2: PUBREC received, PUBCOMP outstanding.
    pub released: bool,
    /// Its log offset (none for a retained message).
    pub offset: Option<Offset>,
    /// The log `offset` is in, when it is not the one the saving run wrote.
    pub log: Option<LogId>,
    /// The stored record.
    pub record: Bytes,
}

impl Snapshot {
    /// The logs besides the saving run's own that its sessions name a position in
    /// (in a cluster: the replicas and earlier runs' logs to open before
    /// restoring it).
    #[must_use]
    pub fn logs(&self) -> std::collections::BTreeSet<LogId> {
        let points = self
            .sessions
            .iter()
            .flat_map(|s| s.resume_in.iter().map(|(l, _)| *l));
        let inflight = (self.sessions.iter()).flat_map(|s| s.inflight.iter().filter_map(|i| i.log));
        points.chain(inflight).collect()
    }

    /// Nothing to carry over.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty()
    }
}
