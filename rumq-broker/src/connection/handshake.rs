//! The handshake: the CONNECT read within `limits.connect_timeout_ms`, checked
//! (protocol rules, enhanced authentication, user names and passwords), refused
//! with a CONNACK in the client's version or handed to the router with the
//! connection's reply queue; then the router's CONNACK written, and the first
//! deliveries asked for.

use std::time::Duration;

use router::{ConnectCode, Event, IdSet, NewMessage, Reply};
use tokio::time::timeout;

use super::inbound::READ_BUF_BYTES;
use super::{now_ms, ConnState, Connection, End, ToRouter, V5State, LOG_TARGET};
use crate::acl::ConnAcl;
use crate::clients::ClientInfo;
use crate::metrics::EdgeCounters;
use crate::owners::Claimed;
use crate::protocol::alias::InboundAliases;
use crate::protocol::{
    self, reason, return_code, ConnAckProperties, ConnectPacket, Inbound, ProtocolError, Version,
};
use crate::replies::{reply_queue, Received, ReplyReceiver, ReplySender};

impl Connection {
    /// Read the CONNECT, refuse it or hand it to the router; the reply queue and the
    /// server keep alive to announce when accepted. Kept apart from `run` so that
    /// nothing of the CONNECT stays in the task while the connection is served.
    pub(super) async fn handshake(&mut self) -> Option<(ReplyReceiver, Option<u16>)> {
        let mut connect = self.connect_in_time().await?;
        if let Some(cn) = self.stream.cert_user() {
            // The certificate says who the client is (`use_cn_as_username`).
            connect.username = Some(cn.to_string());
            connect.password = None;
        }
        tracing::Span::current().record("client_id", connect.client_id.as_str());
        self.release_read_buf();
        let v5 = connect.version == Version::V5;
        self.encode_for(&connect);
        let refused = match self.refusal(&connect) {
            Some(r) => Some(r),
            None => {
                let refused = self.authenticate(&connect).await;
                if refused.is_some() {
                    EdgeCounters::add(&self.state.shared.counters.refused_auth);
                }
                refused
            }
        };
        if let Some((v3, v5_code, why)) = refused {
            self.refuse(v3, v5_code, Some(why.into())).await;
            tracing::info!(
                target: LOG_TARGET,
                code = if v5 { v5_code } else { v3 },
                why,
                "connection refused"
            );
            return None;
        }
        if !self.apply_acl(&connect).await {
            return None;
        }
        let keep_alive = self.keep_alive(connect.keep_alive);
        self.state.adopt(&connect);
        let (tx, rx) = self.reply_queue_for(keep_alive);
        let Ok(will) = connect.will.as_ref().map(|w| self.will(w)).transpose() else {
            self.refuse(
                return_code::SERVER_UNAVAILABLE,
                reason::QUOTA_EXCEEDED,
                None,
            )
            .await;
            return None;
        };
        let claimed = self.claim(&connect.client_id).await?;
        let request = ToRouter::Connect {
            conn: self.state.id,
            connect: router_connect(&connect, will, claimed),
            replies: tx,
        };
        if self.state.shared.router.send(request).await.is_err() {
            return None;
        }
        self.state.version = Some(connect.version);
        if let Some(clients) = &self.state.shared.clients {
            let info = ClientInfo::new(
                self.state.id,
                connect.client_id.clone(),
                self.stream.peer_addr().ok(),
                (version_name(connect.version), keep_alive),
                now_ms(),
                rx.kick_handle(),
            );
            clients.add(self.state.id, info);
        }
        Some((rx, (keep_alive != connect.keep_alive).then_some(keep_alive)))
    }

    /// The CONNECT, if it comes within `limits.connect_timeout_ms` (why not is
    /// logged).
    async fn connect_in_time(&mut self) -> Option<ConnectPacket> {
        let limit = Duration::from_millis(self.state.shared.config.limits.connect_timeout_ms);
        match timeout(limit, self.read_connect()).await {
            Ok(Ok(Some(c))) => Some(c),
            Ok(Ok(None)) => None,
            Ok(Err(end)) => {
                tracing::info!(target: LOG_TARGET, reason = %end, "connection closed before CONNECT completed");
                None
            }
            Err(_) => {
                tracing::info!(target: LOG_TARGET, "no CONNECT within connect_timeout_ms; closing");
                None
            }
        }
    }

    /// Read until a CONNECT; `Ok(None)` when the client went away quietly.
    async fn read_connect(&mut self) -> Result<Option<ConnectPacket>, End> {
        loop {
            let v5 = protocol::is_v5_connect(&self.read_buf);
            match protocol::decode(
                &mut self.read_buf,
                None,
                self.state.shared.config.limits.max_packet_size,
            ) {
                Ok(Some(Inbound::Connect(c))) => return Ok(Some(c)),
                Ok(Some(_)) => {
                    return Err(End::Protocol(ProtocolError::Violation(
                        "first packet is not CONNECT",
                    )))
                }
                Ok(None) => {}
                Err(ProtocolError::UnsupportedVersion(level)) => {
                    // 3.1.1 §3.1.2.2: answer 0x01 and close.
                    self.encoder
                        .connack(false, return_code::UNACCEPTABLE_PROTOCOL_VERSION);
                    let _ = self.write_out().await;
                    return Err(End::Protocol(ProtocolError::UnsupportedVersion(level)));
                }
                Err(e) => {
                    if v5 {
                        // MQTT 5 §4.13.1: a CONNACK with the reason, then close.
                        self.encoder.set_version(Version::V5, 0, true);
                        let props = ConnAckProperties {
                            reason_string: Some(e.to_string()),
                            ..ConnAckProperties::default()
                        };
                        self.encoder.connack_v5(false, e.reason_code(), &props);
                        let _ = self.write_out().await;
                    }
                    return Err(End::Protocol(e));
                }
            }
            self.read_buf.reserve(READ_BUF_BYTES);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// From the CONNECT on, encode for the client's version (3.1.1 until then) and
    /// within the packet size it accepts.
    fn encode_for(&mut self, connect: &ConnectPacket) {
        if connect.version == Version::V5 {
            self.encoder.set_version(
                Version::V5,
                connect.topic_alias_max,
                connect.request_problem_info,
            );
            self.encoder.set_max_packet_size(connect.max_packet_size);
        }
    }

    /// Refuse the CONNECT: a CONNACK with the 3.1.1 return code or the MQTT 5
    /// reason code (and `why` as its reason string), written before the connection
    /// closes.
    async fn refuse(&mut self, v3: u8, v5: u8, why: Option<String>) {
        if self.encoder.version() == Version::V5 {
            let props = ConnAckProperties {
                reason_string: why,
                ..ConnAckProperties::default()
            };
            self.encoder.connack_v5(false, v5, &props);
        } else {
            self.encoder.connack(false, v3);
        }
        let _ = self.write_out().await;
    }

    /// Why the client may not connect, as (3.1.1 return code, MQTT 5 reason code,
    /// explanation); `None` when it may.
    fn refusal(&self, c: &ConnectPacket) -> Option<(u8, u8, &'static str)> {
        if c.auth_method.is_some() {
            // No enhanced authentication method is configured (MQTT 5 §4.12).
            return Some((
                return_code::BAD_USER_NAME_OR_PASSWORD,
                reason::BAD_AUTHENTICATION_METHOD,
                "no enhanced authentication method is configured",
            ));
        }
        if c.version != Version::V5 && c.client_id.is_empty() && !c.clean_session {
            // 3.1.1 §3.1.3-8: an empty client id needs a clean session.
            return Some((
                return_code::IDENTIFIER_REJECTED,
                reason::CLIENT_ID_NOT_VALID,
                "an empty client id needs a clean session",
            ));
        }
        None
    }

    /// Whether the user name and password let the client in: anonymous clients if
    /// `auth.allow_anonymous`; with a password file, a user of it with their password
    /// (checked off this thread, `passwords.rs`); without one, any user name. As
    /// [`Self::refusal`].
    async fn authenticate(&self, c: &ConnectPacket) -> Option<(u8, u8, &'static str)> {
        let shared = &self.state.shared;
        let checked = match (&c.username, &shared.passwords) {
            (None, _) if !shared.config.auth.allow_anonymous => {
                return Some((
                    return_code::NOT_AUTHORIZED,
                    reason::NOT_AUTHORIZED,
                    "anonymous clients are not allowed",
                ))
            }
            (None, _) | (Some(_), None) => return None,
            // Vouched for by the listener's client CA.
            (Some(_), Some(_)) if self.stream.cert_user().is_some() => return None,
            (Some(user), Some(checker)) => {
                let password = c.password.as_deref().unwrap_or_default();
                checker.check(user, password).await
            }
        };
        (!checked).then_some((
            return_code::BAD_USER_NAME_OR_PASSWORD,
            reason::BAD_USER_NAME_OR_PASSWORD,
            "bad user name or password",
        ))
    }

    /// With an ACL file: what it grants this client, kept for the connection; a will
    /// whose topic it may not publish to (or any will on a `$SYS` topic) refuses the
    /// CONNECT (not authorized, as Mosquitto does). False when refused.
    async fn apply_acl(&mut self, connect: &ConnectPacket) -> bool {
        let system_will = connect
            .will
            .as_ref()
            .is_some_and(|w| router::is_system_topic(&w.topic));
        if system_will {
            let why = "a will may not be published to a $SYS topic";
            tracing::info!(target: LOG_TARGET, why, "connection refused");
            let (v3, v5) = (return_code::NOT_AUTHORIZED, reason::NOT_AUTHORIZED);
            self.refuse(v3, v5, Some(why.into())).await;
            return false;
        }
        let Some(source) = self.state.shared.acl.clone() else {
            return true;
        };
        let (user, client_id) = (connect.username.clone(), connect.client_id.clone());
        let mut acl = ConnAcl::new(source, user, client_id);
        if let Some(w) = &connect.will {
            if !acl.granted().may_write(&w.topic) {
                let why = "the will's topic is not allowed for this client";
                tracing::info!(target: LOG_TARGET, topic = %w.topic, why, "connection refused");
                let (v3, v5) = (return_code::NOT_AUTHORIZED, reason::NOT_AUTHORIZED);
                self.refuse(v3, v5, Some(why.into())).await;
                return false;
            }
        }
        self.state.acl = Some(Box::new(acl));
        true
    }

    /// In a cluster, make this node the owner of `client_id` (`owners.rs`) and say
    /// since when; 0 for a single node and for an empty id (the router assigns one
    /// unique in the cluster). `None`: the cluster could not, and the CONNECT was
    /// refused as "server unavailable".
    async fn claim(&mut self, client_id: &str) -> Option<Claimed> {
        let unclaimed = Claimed {
            since: 0,
            from: None,
        };
        let Some(owners) = self.state.shared.owners.clone() else {
            return Some(unclaimed);
        };
        if client_id.is_empty() {
            return Some(unclaimed);
        }
        match owners.claim(client_id).await {
            Ok(claimed) => Some(claimed),
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "cannot claim the client id in the cluster; CONNECT refused");
                let why = format!("the cluster cannot take this client id now: {e}");
                self.refuse(
                    return_code::SERVER_UNAVAILABLE,
                    reason::SERVER_UNAVAILABLE,
                    Some(why),
                )
                .await;
                None
            }
        }
    }

    /// The keep alive the client is held to: the one it asked for, within
    /// `limits.keep_alive_max_secs` when that is set.
    fn keep_alive(&self, asked: u16) -> u16 {
        let max = self.state.shared.config.limits.keep_alive_max_secs;
        if max > 0 && (asked == 0 || asked > max) {
            // 3.1.1 has no way to say so: its client is held to the limit all the same.
            return max;
        }
        asked
    }

    /// The connection's reply queue: closed after 1.5 × `keep_alive` without a
    /// read, and large enough for the replies that may wait at once.
    fn reply_queue_for(&self, keep_alive: u16) -> (ReplySender, ReplyReceiver) {
        // 3.1.1 §3.1.2.10: one and a half times the keep alive without a packet.
        let keep_alive_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        // Replies waiting at once: acks for the publishes it may have in flight and
        // their PUBCOMPs, PUBRELs for its whole outbound window (a reconnect resends
        // them all at once), one delivery batch, and room for subscription acks.
        let config = &self.state.shared.config;
        let inflight_out = config.router.inflight_max;
        reply_queue(
            2 * config.limits.inflight_in_max + 2 * inflight_out + 256,
            keep_alive_limit,
            self.state.park_after(),
        )
    }

    /// The will, as the router keeps it: its topic interned, its message framed as
    /// a record; `Err` (logged) when its topic cannot be interned.
    fn will(&self, w: &protocol::LastWill) -> Result<router::Will, ()> {
        let topic = self.state.shared.topics.intern(&w.topic).map_err(|e| {
            tracing::warn!(target: LOG_TARGET, error = %e, "cannot accept will");
        })?;
        Ok(router::Will {
            topic,
            qos: w.qos,
            retain: w.retain,
            record: NewMessage {
                expiry_secs: w.expiry_secs,
                properties: &w.properties,
                ..NewMessage::new(w.qos, w.retain, now_ms(), &w.topic, &w.payload)
            }
            .framed(),
        })
    }

    /// Write the CONNACK and ask for the first deliveries.
    pub(super) async fn start(
        &mut self,
        rx: &mut ReplyReceiver,
        server_keep_alive: Option<u16>,
    ) -> Result<(), End> {
        // The first reply is the CONNACK.
        let first = loop {
            match rx.recv().await {
                Received::Replies(r) => break r,
                Received::Shutdown => return Err(End::Shutdown),
                Received::Kicked => return Err(End::Kicked),
                Received::KeepAliveExpired => return Err(End::KeepAlive),
                Received::Gone => return Err(End::RouterGone),
                // Not before the CONNACK.
                Received::Park => {}
            }
        };
        let mut accepted = false;
        for r in &first {
            if let Reply::ConnAck {
                code,
                session_present,
                assigned_client_id,
            } = r
            {
                accepted = *code == ConnectCode::Accepted;
                if accepted {
                    // One line per connection at `info`: this one, and "connection
                    // closed" with its reason (`Connection::goodbye`).
                    let version = self.state.version.map(version_name);
                    let session_present = *session_present;
                    tracing::info!(target: LOG_TARGET, version, session_present, "connected");
                }
                self.connack(
                    accepted,
                    *session_present,
                    assigned_client_id,
                    server_keep_alive,
                );
            }
        }
        if let Some(end) = Box::pin(self.write_replies(first, rx, false)).await {
            return Err(end);
        }
        if !accepted {
            return Err(End::Refused);
        }
        Box::pin(self.send(Event::Pull {
            conn: self.state.id,
        }))
        .await
    }

    /// Encode the CONNACK for the router's answer.
    fn connack(
        &mut self,
        accepted: bool,
        session_present: bool,
        assigned_client_id: &Option<String>,
        server_keep_alive: Option<u16>,
    ) {
        if let (Some(id), Some(_)) = (assigned_client_id, &self.state.persistent_id) {
            // An MQTT 5 persistent session under an id the broker assigned.
            self.state.persistent_id = Some(id.clone());
        }
        self.state.connacked = true;
        let limits = &self.state.shared.config.limits;
        match (self.encoder.version(), accepted) {
            (Version::V5, _) => {
                let props = ConnAckProperties {
                    assigned_client_id: assigned_client_id.clone(),
                    server_keep_alive,
                    receive_maximum: u16::try_from(limits.inflight_in_max).unwrap_or(u16::MAX),
                    max_packet_size: u32::try_from(limits.max_packet_size).unwrap_or(u32::MAX),
                    topic_alias_max: limits.topic_alias_max,
                    shared_subscriptions: true,
                    reason_string: (!accepted).then(|| "server unavailable".to_string()),
                };
                let code = if accepted {
                    reason::SUCCESS
                } else {
                    reason::SERVER_UNAVAILABLE
                };
                self.encoder.connack_v5(session_present, code, &props);
            }
            (_, true) => self.encoder.connack(session_present, return_code::ACCEPTED),
            (_, false) => self.encoder.connack(false, return_code::SERVER_UNAVAILABLE),
        }
    }
}

impl ConnState {
    /// What the connection keeps of an accepted CONNECT: its session expiry, its
    /// client id when the session is persistent, and MQTT 5's state.
    fn adopt(&mut self, connect: &ConnectPacket) {
        self.persistent_id = (connect.session_expiry > 0).then(|| connect.client_id.clone());
        self.session_expiry = connect.session_expiry;
        if connect.version == Version::V5 {
            self.v5 = Some(Box::new(V5State {
                aliases: InboundAliases::new(self.shared.config.limits.topic_alias_max),
                quota: IdSet::default(),
            }));
        }
    }
}

/// What the router is told of a CONNECT.
fn router_connect(
    connect: &ConnectPacket,
    will: Option<router::Will>,
    claimed: Claimed,
) -> router::Connect {
    router::Connect {
        client_id: connect.client_id.clone(),
        clean_start: connect.clean_session,
        session_expiry: connect.session_expiry,
        receive_maximum: connect.receive_maximum,
        max_packet_size: connect.max_packet_size,
        will,
        will_delay: connect.will.as_ref().map_or(0, |w| w.delay_secs),
        owned_since: claimed.since,
        moved_from: claimed.from,
    }
}

/// How the logs name a protocol version.
fn version_name(v: Version) -> &'static str {
    match v {
        Version::V31 => "3.1",
        Version::V311 => "3.1.1",
        Version::V5 => "5.0",
    }
}
