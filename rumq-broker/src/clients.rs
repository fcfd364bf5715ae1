//! The clients connected now, for the admin API: who, from where, with which protocol
//! and keep alive, since when, and a handle that closes each ([`Kick`]).
//!
//! A connection is entered once its CONNECT is accepted and leaves when it ends
//! (`ConnState::tell_router`), so the map holds at most `limits.max_connections`
//! entries. It is touched twice per connection, never per message, and only kept when
//! the admin API is on (`Shared::clients`): about 200 bytes a connection, which a
//! fleet of idle connections would otherwise pay for nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use router::ConnectionId;
use serde::Serialize;

use crate::replies::Kick;

/// One connected client, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// The connection's id (as in the logs, `c<N>`).
    #[serde(serialize_with = "as_text")]
    pub connection: ConnectionId,
    /// The client id (assigned by the broker when the client sent none).
    pub client_id: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// "3.1", "3.1.1" or "5.0".
    pub protocol: &'static str,
    /// The keep alive it is held to, in seconds (0: none).
    pub keep_alive: u16,
    /// When it connected, in ms since the Unix epoch.
    pub connected_at_ms: u64,
    #[serde(skip)]
    kick: Kick,
}

impl ClientInfo {
    /// A client, closable with `kick`.
    pub fn new(
        conn: ConnectionId,
        client_id: String,
        peer: Option<SocketAddr>,
        (protocol, keep_alive): (&'static str, u16),
        connected_at_ms: u64,
        kick: Kick,
    ) -> ClientInfo {
        ClientInfo {
            connection: conn,
            client_id,
            peer,
            protocol,
            keep_alive,
            connected_at_ms,
            kick,
        }
    }
}

fn as_text<S: serde::Serializer>(id: &ConnectionId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// The clients connected now (see the module docs).
#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<BTreeMap<ConnectionId, ClientInfo>>,
}

impl Clients {
    fn map(&self) -> MutexGuard<'_, BTreeMap<ConnectionId, ClientInfo>> {
        // Each critical section is one insert, remove or read.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection was accepted.
    pub fn add(&self, conn: ConnectionId, info: ClientInfo) {
        self.map().insert(conn, info);
    }

    /// A connection ended.
    pub fn remove(&self, conn: ConnectionId) {
        self.map().remove(&conn);
    }

    /// How many, and `limit` of them from the `offset`-th, oldest connection first.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<ClientInfo>) {
        let map = self.map();
        let page = map.values().skip(offset).take(limit).cloned().collect();
        (map.len(), page)
    }

    /// The connections of `client_id` (one, unless a takeover is under way).
    pub fn by_client_id(&self, client_id: &str) -> Vec<ClientInfo> {
        self.map()
            .values()
            .filter(|c| c.client_id == client_id)
            .cloned()
            .collect()
    }

    /// Close every connection of `client_id`; how many were asked to close.
    pub fn kick(&self, client_id: &str) -> usize {
        self.by_client_id(client_id)
            .iter()
            .filter(|c| c.kick.kick())
            .count()
    }
}
