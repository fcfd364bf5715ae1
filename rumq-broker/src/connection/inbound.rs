//! The connection's reading half: what the socket has is read, decoded and turned
//! into router events, sent as one request per read. Publishes become records
//! here (framed into one arena per read) once they pass what MQTT and the limits
//! ask of them (topic aliases, the receive maximum, the topic limits); PINGREQ is
//! answered here; DISCONNECT, AUTH and a second CONNECT end the connection.

use bytes::BytesMut;
use router::{Event, NewMessage, Origin, PacketId, PubReason, QoS, Reply, TopicId};
use tokio::sync::mpsc::error::TrySendError;

use super::{now_ms, ConnState, Connection, End, ToRouter, LOG_TARGET};
use crate::protocol::alias::InboundAliases;
use crate::protocol::{self, Inbound, ProtocolError, PublishProperties, TopicName};

/// Bytes reserved for a read. The read buffer is allocated when the socket is
/// readable and dropped once everything in it was decoded, so an idle connection
/// holds no buffer: fleets keep thousands of mostly idle connections open.
pub(super) const READ_BUF_BYTES: usize = 4096;

/// Events decoded from one read as one request to the router; none for none.
fn one_request(mut events: Vec<Event>) -> Option<ToRouter> {
    match events.len() {
        0 => None,
        1 => events.pop().map(ToRouter::Event),
        _ => Some(ToRouter::Events(events)),
    }
}

/// What one read decoded, sent to the router as one request.
struct Decoded {
    events: Vec<Event>,
    /// Where the read's publishes are framed as records: one allocation for the
    /// batch (see `NewMessage::framed_in`).
    arena: BytesMut,
    /// The size of a fresh arena block: the bytes the read left to decode.
    arena_hint: usize,
}

impl Connection {
    /// Read what the socket has, decode it, and send the router everything decoded
    /// as one request (one channel send, one wake-up), in order; whatever ends the
    /// connection comes after what preceded it. `Ok(false)`: nothing was there.
    pub(super) async fn read_and_forward(&mut self) -> Result<bool, End> {
        let max_packet = self.state.shared.config.limits.max_packet_size;
        // Room for the rest of a large packet whose header already came, so it
        // arrives in one read rather than in 4 KiB pieces.
        let want = protocol::bytes_missing(&self.read_buf, max_packet).max(READ_BUF_BYTES);
        if self.read_buf.capacity() - self.read_buf.len() < want / 2 {
            self.read_buf.reserve(want);
        }
        match self.stream.try_read_buf(&mut self.read_buf) {
            Ok(0) => return Err(End::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.release_read_buf();
                return Ok(false);
            }
            Err(e) => return Err(End::Io(e)),
        }
        let (events, ended) = self.decode_read();
        self.send_events(events).await?;
        self.after_forward(ended).await?;
        Ok(true)
    }

    /// What follows sending a read's events: the end the read brought, else the
    /// answers decoding queued (PINGRESP), written.
    pub(super) async fn after_forward(&mut self, ended: Option<End>) -> Result<(), End> {
        if let Some(end) = ended {
            return Err(end);
        }
        if !self.encoder.is_empty() {
            if let Some(end) = self.write_out().await {
                return Err(end);
            }
        }
        self.release_read_buf();
        Ok(())
    }

    /// Decode the whole packets in the read buffer into events, in order, stopping at
    /// the first packet that ends the connection (returned after them).
    pub(super) fn decode_read(&mut self) -> (Vec<Event>, Option<End>) {
        let max_packet = self.state.shared.config.limits.max_packet_size;
        // Records are a little larger than their packets (~20 bytes each): room
        // for a read full of small publishes.
        let mut batch = Decoded {
            events: Vec::new(),
            arena: BytesMut::new(),
            arena_hint: self.read_buf.len() + self.read_buf.len() / 4 + 512,
        };
        let mut ended = None;
        loop {
            match protocol::decode(&mut self.read_buf, self.state.version, max_packet) {
                Ok(Some(p)) => {
                    if let Err(end) = self.inbound(p, &mut batch) {
                        ended = Some(end);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    ended = Some(End::Protocol(e));
                    break;
                }
            }
        }
        (batch.events, ended)
    }

    /// An idle connection holds no read buffer (see the note on READ_BUF_BYTES).
    pub(super) fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    /// Send the events decoded from one read: one request for all of them.
    async fn send_events(&mut self, events: Vec<Event>) -> Result<(), End> {
        let Some(request) = one_request(events) else {
            return Ok(());
        };
        self.state
            .shared
            .router
            .send(request)
            .await
            .map_err(|_| End::RouterGone)
    }

    /// As `send_events`, without waiting: `Ok(Some(request))` if the router's
    /// channel is full (for the task to send, first).
    pub(super) fn try_send_events(&mut self, events: Vec<Event>) -> Result<Option<ToRouter>, End> {
        let Some(request) = one_request(events) else {
            return Ok(None);
        };
        match self.state.shared.router.try_send(request) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(request)) => Ok(Some(request)),
            Err(TrySendError::Closed(_)) => Err(End::RouterGone),
        }
    }

    /// Turn a packet into a router event (queued in `batch`), or answer it here;
    /// `Err`: the packet ends the connection.
    fn inbound(&mut self, packet: Inbound, batch: &mut Decoded) -> Result<(), End> {
        let conn = self.state.id;
        let event = match packet {
            Inbound::Connect(_) => {
                return Err(End::Protocol(ProtocolError::Violation("second CONNECT")))
            }
            Inbound::Publish {
                topic,
                qos,
                retain,
                pkid,
                payload,
                dup: _,
                properties,
            } => {
                let publish = (topic, qos, retain, pkid);
                match self.publish_event(publish, &payload, properties, batch)? {
                    Some(event) => event,
                    None => return Ok(()),
                }
            }
            Inbound::PubAck(pkid) => Event::PubAck { conn, pkid },
            Inbound::PubRec {
                pkid,
                refused: false,
            } => Event::PubRec { conn, pkid },
            Inbound::PubRec {
                pkid,
                refused: true,
            } => Event::PubRecRefused { conn, pkid },
            Inbound::PubRel(pkid) => Event::PubRel { conn, pkid },
            Inbound::PubComp(pkid) => Event::PubComp { conn, pkid },
            Inbound::Subscribe {
                pkid,
                mut filters,
                id,
            } => {
                if let Some(acl) = self.state.acl.as_mut() {
                    let granted = acl.granted();
                    for f in &mut filters {
                        f.authorized = granted.may_subscribe(&f.filter);
                    }
                }
                Event::Subscribe {
                    conn,
                    pkid,
                    filters,
                    id,
                }
            }
            Inbound::Unsubscribe { pkid, filters } => Event::Unsubscribe {
                conn,
                pkid,
                filters,
            },
            Inbound::PingReq => {
                self.encoder.pingresp();
                return Ok(());
            }
            Inbound::Disconnect {
                session_expiry,
                publish_will,
            } => return Err(self.state.client_disconnect(session_expiry, publish_will)),
            Inbound::Auth { .. } => {
                // Only an enhanced authentication exchange started by CONNECT may
                // send AUTH, and none is configured (§4.12).
                return Err(End::Protocol(ProtocolError::Violation(
                    "AUTH without an authentication method",
                )));
            }
        };
        batch.events.push(event);
        Ok(())
    }
}

impl Connection {
    /// A PUBLISH as the router's event: its topic admitted (`admit_publish`) and
    /// allowed by the ACL, its record framed into `batch`'s arena. `None`: refused
    /// here (and answered).
    #[inline]
    fn publish_event(
        &mut self,
        (topic, qos, retain, pkid): (TopicName, QoS, bool, Option<PacketId>),
        payload: &[u8],
        properties: PublishProperties,
        batch: &mut Decoded,
    ) -> Result<Option<Event>, End> {
        let (topic, tid) = self
            .state
            .admit_publish(topic, properties.topic_alias, pkid)?;
        if !self.state.may_write(topic.as_str()) {
            self.refuse_publish(qos, pkid, topic.as_str());
            return Ok(None);
        }
        if qos != QoS::AtMostOnce {
            self.inflight_in += 1;
        }
        Ok(Some(Event::Publish {
            conn: self.state.id,
            pkid,
            message: router::Publication {
                topic: tid,
                qos,
                retain,
                record: NewMessage {
                    origin: self.state.origin(qos, pkid),
                    expiry_secs: properties.expiry_secs,
                    properties: &properties.forward,
                    ..NewMessage::new(qos, retain, now_ms(), topic.as_str(), payload)
                }
                .framed_in(&mut batch.arena, batch.arena_hint),
            },
        }))
    }

    /// A PUBLISH the ACL does not allow: dropped, and answered (MQTT 5: 0x87;
    /// 3.1.1: a plain ack, as Mosquitto does, so the client does not send it again).
    fn refuse_publish(&mut self, qos: QoS, pkid: Option<PacketId>, topic: &str) {
        tracing::debug!(target: LOG_TARGET, topic, "publish not authorized; dropped");
        let Some(pkid) = pkid else {
            return;
        };
        if let Some(state) = &mut self.state.v5 {
            state.quota.remove(&pkid.0);
        }
        let reply = match qos {
            QoS::ExactlyOnce => Reply::PubRec(pkid, PubReason::NotAuthorized),
            _ => Reply::PubAck(pkid, PubReason::NotAuthorized),
        };
        self.encoder.reply(&reply);
    }
}

impl ConnState {
    /// Whether the client may publish to `topic`: not a `$SYS` topic (those are
    /// the broker's own), and as far as the ACL, if any, allows.
    fn may_write(&mut self, topic: &str) -> bool {
        !router::is_system_topic(topic)
            && self
                .acl
                .as_mut()
                .is_none_or(|a| a.granted().may_write(topic))
    }

    /// What a PUBLISH passes before it becomes a record, in this order: its topic
    /// alias resolved, its packet id within our receive maximum (both MQTT 5), its
    /// topic interned and within the connection's topic limit. Its topic and the
    /// topic's id.
    fn admit_publish(
        &mut self,
        topic: TopicName,
        alias: Option<u16>,
        pkid: Option<PacketId>,
    ) -> Result<(TopicName, TopicId), End> {
        let topic = self.resolve_alias(topic, alias).map_err(End::Protocol)?;
        self.take_receive_quota(pkid)?;
        let tid = self.intern_published(&topic)?;
        Ok((topic, tid))
    }

    /// The topic a topic alias stands for (MQTT 5), or sets; a 3.1.1 client may
    /// use none.
    fn resolve_alias(
        &mut self,
        topic: TopicName,
        alias: Option<u16>,
    ) -> Result<TopicName, ProtocolError> {
        match &mut self.v5 {
            Some(state) => state.aliases.resolve(topic, alias),
            None => InboundAliases::resolve_without(topic, alias),
        }
    }

    /// Count a QoS 1/2 publish against the receive maximum we announced (MQTT 5).
    fn take_receive_quota(&mut self, pkid: Option<PacketId>) -> Result<(), End> {
        if let (Some(state), Some(p)) = (&mut self.v5, pkid) {
            // MQTT 5 §4.9: past our receive maximum is a protocol breach; a
            // retransmission of an id in flight is not a new one.
            let max = self.shared.config.limits.inflight_in_max;
            if !state.quota.contains(&p.0) && state.quota.len() >= max {
                return Err(End::ReceiveMaximumExceeded);
            }
            state.quota.insert(p.0);
        }
        Ok(())
    }

    /// The id of a topic published to, within the interner's limit and
    /// `limits.topics_per_connection_max` topics for this connection.
    fn intern_published(&mut self, topic: &TopicName) -> Result<TopicId, End> {
        let tid = match self.shared.topics.intern(topic.as_str()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, %topic, "publish refused");
                return Err(End::TopicLimit);
            }
        };
        let published = self.published.get_or_insert_with(Box::default);
        if !published.contains(&tid) {
            let max = self.shared.config.limits.topics_per_connection_max;
            if published.len() >= max {
                tracing::warn!(
                target: LOG_TARGET,
                    %topic,
                    max,
                    "publish refused: topics_per_connection_max reached"
                );
                return Err(End::TopicLimit);
            }
            published.insert(tid);
        }
        Ok(tid)
    }

    /// Where a publish comes from, written into its record: for a QoS 2 publish
    /// on a persistent session, so that crash recovery can tell a retransmission
    /// from a new message.
    fn origin(&self, qos: QoS, pkid: Option<PacketId>) -> Option<Origin<'_>> {
        match (qos, pkid, &self.persistent_id) {
            (QoS::ExactlyOnce, Some(p), Some(id)) => Some(Origin {
                client_id: id,
                pkid: p.0,
            }),
            _ => None,
        }
    }

    /// The client's DISCONNECT, with the session expiry it may set (MQTT 5).
    fn client_disconnect(&mut self, session_expiry: Option<u32>, publish_will: bool) -> End {
        if let Some(secs) = session_expiry {
            if self.session_expiry == 0 && secs != 0 {
                // §3.14.2.2.2: a session that ends with its connection
                // cannot be given a life after it.
                return End::Protocol(ProtocolError::Violation(
                    "DISCONNECT sets a session expiry after CONNECT had 0",
                ));
            }
            self.session_expiry = secs;
        }
        if publish_will {
            End::ClientDisconnectWithWill
        } else {
            End::ClientDisconnect
        }
    }
}
