//! One client connection: a tokio task that frames and decodes what the client sends,
//! turns it into router events, and writes the router's replies back.
//!
//! It holds no broker state beyond the connection itself: the protocol version, the
//! keepalive, the count of inbound publishes awaiting acknowledgement (so that a fast
//! publisher is paced by the log, not buffered), MQTT 5's per-connection state (topic
//! aliases, the receive-maximum quota), and its buffers. Deliveries are pulled: after
//! writing a batch it asks the router for the next one.
//!
//! Everything that differs between MQTT 3.1.1 and 5.0 ends here: the router gets
//! the same events from both and its replies are encoded for each (`protocol`).
//!
//! Memory: fleets keep tens of thousands of mostly idle connections open, so what an
//! idle connection holds is kept small. Its task waits on the socket and the reply
//! queue (which also brings shutdown and keep-alive expiry) by polling them
//! (`poll_wake`), which stores no future for either; the work a wake-up starts (decoding a read, writing
//! replies, the handshake, the goodbye) runs in a boxed future that exists only
//! while it runs, so its state is not part of the task's size when idle. Buffers
//! are allocated per read and per write, and MQTT 5's state only for MQTT 5 clients.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use commitlog::FileRange;
use router::{
    CloseReason, ConnectCode, ConnectionId, DisconnectReason, Event, IdSet, NewMessage, Origin,
    QoS, Reply, TopicId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::Instrument;

use crate::config::Config;
use crate::driver::{RouterTx, ToRouter};
use crate::parking::{Lot, Parkable, Reservation};
use crate::protocol::alias::InboundAliases;
use crate::protocol::{
    self, reason, return_code, Chunk, ConnAckProperties, ConnectPacket, Encoder, IdleEncoder,
    Inbound, ProtocolError, Version,
};
use crate::replies::{reply_queue, Received, ReplyReceiver};
use rumq_broker::interner::TopicInterner;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Topic interning, shared with the router.
    pub topics: Arc<TopicInterner>,
    /// The router's request channel.
    pub router: RouterTx,
    /// Where quiet connections park (none: they keep their tasks).
    pub lot: Option<Lot<Parked>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// Shared state for connections.
    pub fn new(
        config: Arc<Config>,
        topics: Arc<TopicInterner>,
        router: RouterTx,
        lot: Option<Lot<Parked>>,
    ) -> Self {
        Shared {
            config,
            topics,
            router,
            lot,
            next_conn: AtomicU64::new(1),
        }
    }
}

/// Why a connection ended, for the log line and the will.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client sent DISCONNECT")]
    ClientDisconnect,
    #[error("client sent DISCONNECT asking for its will to be published")]
    ClientDisconnectWithWill,
    #[error("client closed the connection")]
    Eof,
    #[error("socket error: {0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Protocol(ProtocolError),
    #[error("keepalive expired")]
    KeepAlive,
    #[error("client stopped reading (write timeout)")]
    WriteTimeout,
    #[error("closed by the router: {0:?}")]
    Closed(CloseReason),
    #[error("router stopped")]
    RouterGone,
    #[error("server shutting down")]
    Shutdown,
    #[error("topic limit reached")]
    TopicLimit,
    #[error("more QoS 1/2 publishes unacknowledged than the receive maximum")]
    ReceiveMaximumExceeded,
    #[error("connection refused")]
    Refused,
}

impl End {
    /// The MQTT 5 DISCONNECT reason code the broker sends before closing, if any
    /// (none when the client left or the socket is gone).
    fn reason_code(&self) -> Option<u8> {
        match self {
            End::ClientDisconnect
            | End::ClientDisconnectWithWill
            | End::Eof
            | End::Io(_)
            | End::WriteTimeout
            | End::Refused => None,
            End::Protocol(e) => Some(e.reason_code()),
            End::KeepAlive => Some(reason::KEEP_ALIVE_TIMEOUT),
            End::Closed(CloseReason::SessionTakenOver) => Some(reason::SESSION_TAKEN_OVER),
            End::Closed(CloseReason::StorageFailure) | End::TopicLimit => {
                Some(reason::QUOTA_EXCEEDED)
            }
            End::Closed(CloseReason::ProtocolError) => Some(reason::PROTOCOL_ERROR),
            End::RouterGone => Some(reason::UNSPECIFIED_ERROR),
            End::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            End::ReceiveMaximumExceeded => Some(reason::RECEIVE_MAXIMUM_EXCEEDED),
        }
    }
}

/// Bytes reserved for a read. The read buffer is allocated when the socket is
/// readable and dropped once everything in it was decoded, so an idle connection
/// holds no buffer: fleets keep thousands of mostly idle connections open.
const READ_BUF_BYTES: usize = 4096;

/// Serve one accepted socket until it closes (or the server shuts down: the router
/// says so through the reply queue). `permit` counts it against `max_connections`
/// until then.
pub fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> {
    let id = ConnectionId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let peer = stream.peer_addr().ok();
    let span =
        tracing::info_span!("conn", id = %id, peer = ?peer, client_id = tracing::field::Empty);
    // Built here rather than inside the task, so the task's future does not hold
    // the socket twice (once as the argument, once in the connection).
    let c = Connection {
        stream,
        read_buf: BytesMut::new(),
        encoder: Encoder::new(),
        inflight_in: 0,
        state: ConnState {
            id,
            shared,
            persistent_id: None,
            version: None,
            connacked: false,
            session_expiry: 0,
            v5: None,
            published: None,
        },
    };
    c.run(permit, None).instrument(span)
}

/// A connection without a task, waiting in the parking lot (`parking.rs`): what it
/// keeps, its socket (unregistered from tokio), its reply queue and its permit. One
/// slot of the lot each, so kept small: no buffers (they are empty when it parks).
#[derive(Debug)]
pub struct Parked {
    idle: Idle,
    socket: std::net::TcpStream,
    rx: ReplyReceiver,
    permit: OwnedSemaphorePermit,
    span: tracing::Span,
}

impl Parkable for Parked {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    fn resume(self) {
        let Parked {
            idle,
            socket,
            rx,
            permit,
            span,
        } = self;
        // Bytes waiting are a sign of life: the lot saw them, but tokio's fresh
        // registration has not yet, and a keep-alive verdict reached before would
        // find nothing to read and close a live client.
        if socket.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) {
            rx.renew_keep_alive();
        }
        // Registered here (the lot runs on the runtime) rather than in the task, so
        // that the task does not hold the parked form of the connection as well.
        match TcpStream::from_std(socket) {
            Ok(stream) => {
                let conn = idle.into_connection(stream);
                tokio::spawn(conn.run(permit, Some(rx)).instrument(span));
            }
            Err(e) => {
                tokio::spawn(idle.lost(rx, permit, e).instrument(span));
            }
        }
    }
}

/// What a parked connection keeps of its [`Connection`]: no socket, no buffers (it
/// parks only with none in use), no publishes in flight.
#[derive(Debug)]
struct Idle {
    state: ConnState,
    encoder: IdleEncoder,
}

impl Idle {
    /// The connection again, on `stream`.
    fn into_connection(self, stream: TcpStream) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::new(),
            encoder: self.encoder.resume(),
            inflight_in: 0,
            state: self.state,
        }
    }

    /// The socket was lost while parking or resuming: the connection ends abruptly.
    async fn lost(self, rx: ReplyReceiver, permit: OwnedSemaphorePermit, e: std::io::Error) {
        tracing::info!(reason = %End::Io(e), "connection closed");
        self.state.tell_router(DisconnectReason::Abrupt, &rx).await;
        drop(permit);
    }
}

/// How serving a connected client stopped.
enum Served {
    End(End),
    /// Quiet for `listener.park_after_ms`: park if nothing is in hand.
    Park,
}

/// What one connection holds while it has a task (see the module docs on memory;
/// parked, it keeps an [`Idle`]).
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet decoded (the start of a packet); no allocation when
    /// there are none.
    read_buf: BytesMut,
    encoder: Encoder,
    inflight_in: usize,
    state: ConnState,
}

/// What a connection keeps for its whole life, with a task or parked.
#[derive(Debug)]
struct ConnState {
    id: ConnectionId,
    shared: Arc<Shared>,
    /// The client id when the session is persistent: written into its QoS 2 records
    /// so crash recovery can tell a retransmission from a new message.
    persistent_id: Option<String>,
    /// The protocol version, once CONNECT was accepted.
    version: Option<Version>,
    /// A CONNACK was sent.
    connacked: bool,
    /// The session expiry interval the client asked for (MQTT 5 DISCONNECT may
    /// change it, but not from 0).
    session_expiry: u32,
    /// MQTT 5 only.
    v5: Option<Box<V5State>>,
    /// Topics this connection published to, bounded by
    /// `limits.topics_per_connection_max`; allocated with the first publish.
    // Boxed on purpose: 8 bytes in every connection rather than 48.
    #[allow(clippy::box_collection)]
    published: Option<Box<IdSet<TopicId>>>,
}

impl ConnState {
    /// Tell the router the connection is gone (MQTT 5: with the session expiry it
    /// ended with), and note in the reply queue that it was told (unless the router
    /// is gone too).
    async fn tell_router(&self, reason: DisconnectReason, rx: &ReplyReceiver) {
        let v5 = self.version == Some(Version::V5);
        let told = self
            .shared
            .router
            .send(ToRouter::Event(Event::Disconnect {
                conn: self.id,
                reason,
                session_expiry: v5.then_some(self.session_expiry),
            }))
            .await;
        if told.is_ok() {
            rx.said_goodbye();
        }
    }

    /// How long the connection may be quiet before it is asked to park; none when
    /// connections do not park.
    fn park_after(&self) -> Option<Duration> {
        let ms = self.shared.config.listener.park_after_ms;
        (ms > 0 && self.shared.lot.is_some()).then(|| Duration::from_millis(ms))
    }
}

impl Connection {
    /// What the connection keeps while parked, and its socket. Only when nothing is
    /// in use: no partial packet, no publish awaiting its ack, nothing to write.
    fn into_idle(self) -> (Idle, TcpStream) {
        let idle = Idle {
            state: self.state,
            encoder: self.encoder.idle(),
        };
        (idle, self.stream)
    }
}

/// What only an MQTT 5 connection keeps.
#[derive(Default, Debug)]
struct V5State {
    /// Topic aliases the client set.
    aliases: InboundAliases,
    /// Packet ids of the client's QoS 1/2 publishes not yet fully acknowledged,
    /// bounded by the receive maximum we announced.
    quota: IdSet<u16>,
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

/// What woke an idle connection.
enum Wake {
    Received(Received),
    Readable,
    Io(std::io::Error),
}

impl Connection {
    /// Read the CONNECT, refuse it or hand it to the router; the reply queue and the
    /// server keep alive to announce when accepted. Kept apart from `run` so that
    /// nothing of the CONNECT stays in the task while the connection is served.
    async fn handshake(&mut self) -> Option<(ReplyReceiver, Option<u16>)> {
        let limits = self.state.shared.config.limits.clone();
        let connect = match timeout(
            Duration::from_millis(limits.connect_timeout_ms),
            self.read_connect(),
        )
        .await
        {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => return None,
            Ok(Err(end)) => {
                tracing::info!(reason = %end, "connection closed before CONNECT completed");
                return None;
            }
            Err(_) => {
                tracing::info!("no CONNECT within connect_timeout_ms; closing");
                return None;
            }
        };
        tracing::Span::current().record("client_id", connect.client_id.as_str());
        self.release_read_buf();
        let v5 = connect.version == Version::V5;
        if v5 {
            self.encoder.set_version(
                Version::V5,
                connect.topic_alias_max,
                connect.request_problem_info,
            );
            self.encoder.set_max_packet_size(connect.max_packet_size);
        }
        if let Some((v3, v5_code, why)) = self.refusal(&connect) {
            if v5 {
                let props = ConnAckProperties {
                    reason_string: Some(why.into()),
                    ..ConnAckProperties::default()
                };
                self.encoder.connack_v5(false, v5_code, &props);
            } else {
                self.encoder.connack(false, v3);
            }
            let _ = self.write_out().await;
            tracing::info!(
                code = if v5 { v5_code } else { v3 },
                why,
                "connection refused"
            );
            return None;
        }
        let mut keep_alive = connect.keep_alive;
        if limits.keep_alive_max_secs > 0
            && (keep_alive == 0 || keep_alive > limits.keep_alive_max_secs)
        {
            // 3.1.1 has no way to say so: its client is held to the limit all the same.
            keep_alive = limits.keep_alive_max_secs;
        }
        // 3.1.1 §3.1.2.10: one and a half times the keep alive without a packet.
        let keep_alive_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        self.state.persistent_id = (connect.session_expiry > 0).then(|| connect.client_id.clone());
        self.state.session_expiry = connect.session_expiry;
        if v5 {
            self.state.v5 = Some(Box::new(V5State {
                aliases: InboundAliases::new(limits.topic_alias_max),
                quota: IdSet::default(),
            }));
        }

        // Replies waiting at once: acks for the publishes it may have in flight and
        // their PUBCOMPs, PUBRELs for its whole outbound window (a reconnect resends
        // them all at once), one delivery batch, and room for subscription acks.
        let inflight_out = self.state.shared.config.router.inflight_max;
        let (tx, rx) = reply_queue(
            2 * limits.inflight_in_max + 2 * inflight_out + 256,
            keep_alive_limit,
            self.state.park_after(),
        );
        let will = match connect.will.as_ref().map(|w| self.will(w)).transpose() {
            Ok(w) => w,
            Err(()) => {
                if v5 {
                    self.encoder.connack_v5(
                        false,
                        reason::QUOTA_EXCEEDED,
                        &ConnAckProperties::default(),
                    );
                } else {
                    self.encoder.connack(false, return_code::SERVER_UNAVAILABLE);
                }
                let _ = self.write_out().await;
                return None;
            }
        };
        let request = ToRouter::Connect {
            conn: self.state.id,
            connect: router::Connect {
                client_id: connect.client_id.clone(),
                clean_start: connect.clean_session,
                session_expiry: connect.session_expiry,
                receive_maximum: connect.receive_maximum,
                max_packet_size: connect.max_packet_size,
                will,
                will_delay: connect.will.as_ref().map_or(0, |w| w.delay_secs),
            },
            replies: tx,
        };
        if self.state.shared.router.send(request).await.is_err() {
            return None;
        }
        self.state.version = Some(connect.version);
        Some((rx, (keep_alive != connect.keep_alive).then_some(keep_alive)))
    }

    /// The connection's task: from the CONNECT (or from the parking lot, with its
    /// reply queue) until it ends or parks. Not an `async fn`: its arguments would
    /// be stored twice in the future (as arguments and as locals), and every idle
    /// connection carries this future (see the module docs on memory). The block
    /// below uses what it captured in place.
    fn run(
        self,
        permit: OwnedSemaphorePermit,
        resumed: Option<ReplyReceiver>,
    ) -> impl Future<Output = ()> + Send {
        let mut conn = self;
        async move {
            let mut rx = match resumed {
                Some(rx) => rx,
                None => {
                    // Boxed, like all the work below.
                    let Some((mut rx, keep_alive)) = Box::pin(conn.handshake()).await else {
                        return;
                    };
                    if let Err(end) = Box::pin(conn.start(&mut rx, keep_alive)).await {
                        return Box::pin(conn.goodbye(end, &rx)).await;
                    }
                    rx
                }
            };
            let end = loop {
                match conn.serve_connected(&mut rx).await {
                    Served::End(end) => break end,
                    Served::Park => {
                        let Some(lot) = conn.state.shared.lot.clone() else {
                            continue;
                        };
                        if conn.in_hand() {
                            continue;
                        }
                        let Some(spot) = lot.reserve() else {
                            // The lot is gone (its task ended): stop asking.
                            rx.never_park();
                            continue;
                        };
                        // Nothing waiting in the queue either (else it carries on).
                        if !rx.park(spot.waker()) {
                            continue;
                        }
                        return conn.park(spot, rx, permit);
                    }
                }
            };
            Box::pin(conn.goodbye(end, &rx)).await;
        }
    }

    /// Something is in hand that parking would drop: a publish awaiting its ack, a
    /// partial packet, bytes not yet written.
    fn in_hand(&self) -> bool {
        self.inflight_in > 0 || !self.read_buf.is_empty() || !self.encoder.is_empty()
    }

    /// Give up the task and the socket's registration with tokio until the client
    /// or the router has something (see `parking.rs`); the queue already wakes the
    /// lot.
    fn park(self, spot: Reservation<'_, Parked>, rx: ReplyReceiver, permit: OwnedSemaphorePermit) {
        let (idle, stream) = self.into_idle();
        let socket = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                drop(spot);
                let span = tracing::Span::current();
                tokio::spawn(idle.lost(rx, permit, e).instrument(span));
                return;
            }
        };
        let parked = Parked {
            idle,
            socket,
            rx,
            permit,
            span: tracing::Span::current(),
        };
        match spot.park(parked) {
            // Logged once the lot's lock is released.
            Ok(()) => tracing::trace!("parked"),
            Err(p) => {
                // Its socket cannot be watched: it keeps a task from now on.
                p.rx.never_park();
                p.resume();
            }
        }
    }

    /// Say why (MQTT 5), and tell the router the connection is gone (noting in the
    /// reply queue that it was told, see `ReplySender::abandoned`).
    async fn goodbye(&mut self, end: End, rx: &ReplyReceiver) {
        let v5 = self.state.version == Some(Version::V5);
        if let (true, true, Some(code)) = (v5, self.state.connacked, end.reason_code()) {
            // MQTT 5: say why before closing (§4.13.2); not before a CONNACK
            // (MQTT-3.2.0-1), as when the server shuts down during the handshake.
            self.encoder.disconnect_v5(code, &end.to_string());
            let _ = self.write_out().await;
        }
        let reason = match end {
            End::ClientDisconnect => DisconnectReason::Normal,
            _ => DisconnectReason::Abrupt,
        };
        match &end {
            End::ClientDisconnect | End::Eof => tracing::debug!(reason = %end, "connection closed"),
            _ => tracing::info!(reason = %end, "connection closed"),
        }
        self.state.tell_router(reason, rx).await;
        if let Some(lot) = &self.state.shared.lot {
            lot.note_ended();
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
        let auth = &self.state.shared.config.auth;
        match (&c.username, &c.password) {
            (None, _) if !auth.allow_anonymous => Some((
                return_code::NOT_AUTHORIZED,
                reason::NOT_AUTHORIZED,
                "anonymous clients are not allowed",
            )),
            (None, _) => None,
            (Some(_), _) if auth.users.is_empty() => None,
            (Some(user), password) => {
                let ok = auth
                    .users
                    .get(user)
                    .is_some_and(|p| password.as_deref() == Some(p.as_bytes()));
                (!ok).then_some((
                    return_code::BAD_USER_NAME_OR_PASSWORD,
                    reason::BAD_USER_NAME_OR_PASSWORD,
                    "bad user name or password",
                ))
            }
        }
    }

    fn will(&self, w: &protocol::LastWill) -> Result<router::Will, ()> {
        let topic = self.state.shared.topics.intern(&w.topic).map_err(|e| {
            tracing::warn!(error = %e, "cannot accept will");
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
    async fn start(
        &mut self,
        rx: &mut ReplyReceiver,
        server_keep_alive: Option<u16>,
    ) -> Result<(), End> {
        // The first reply is the CONNACK.
        let first = loop {
            match rx.recv().await {
                Received::Replies(r) => break r,
                Received::Shutdown => return Err(End::Shutdown),
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

    /// Serve until the connection ends or is asked to park.
    async fn serve_connected(&mut self, rx: &mut ReplyReceiver) -> Served {
        let inflight_in_max = self.state.shared.config.limits.inflight_in_max;
        let end = loop {
            let can_read = self.inflight_in < inflight_in_max;
            let wake = std::future::poll_fn(|cx| self.poll_wake(cx, rx, can_read)).await;
            match wake {
                Wake::Received(Received::Park) => return Served::Park,
                Wake::Received(Received::Shutdown) => break End::Shutdown,
                Wake::Received(Received::KeepAliveExpired) => {
                    // The sweep saw no read for 1.5 × the keep alive. That is not the
                    // client's doing if the broker was not reading (paced by the log,
                    // or a long write): bytes waiting in the socket are a sign of life.
                    if !can_read {
                        rx.renew_keep_alive();
                        continue;
                    }
                    match Box::pin(self.read_and_forward()).await {
                        Ok(true) => rx.renew_keep_alive(),
                        Ok(false) => break End::KeepAlive,
                        Err(end) => break end,
                    }
                }
                Wake::Received(Received::Gone) => break End::RouterGone,
                Wake::Received(Received::Replies(replies)) => {
                    if let Some(end) = Box::pin(self.write_replies(replies, rx, true)).await {
                        break end;
                    }
                }
                Wake::Readable => match Box::pin(self.read_and_forward()).await {
                    Ok(true) => {
                        rx.touch();
                        // Let the other connections on this thread have a turn before
                        // reading again. A client that keeps its socket full is
                        // otherwise read for tokio's whole budget (128 reads) at a
                        // time, while the subscribers on this thread wait with their
                        // deliveries: relaying 64 KiB messages, the subscriber fell
                        // up to 3 GB behind the publisher, and its reads kept that
                        // much page cache from being dropped (docs/performance.md).
                        tokio::task::yield_now().await;
                    }
                    Ok(false) => {}
                    Err(end) => break end,
                },
                Wake::Io(e) => break End::Io(e),
            }
        };
        Served::End(end)
    }

    /// What wakes an idle connection, in order: the reply queue (replies, the
    /// server shutting down, the keep alive expired: see `replies.rs`), then bytes
    /// from the client while its in-flight publishes are under the limit (otherwise
    /// it waits, paced by the log). Polled rather than `select!`ed so that no future
    /// is stored for either.
    fn poll_wake(
        &self,
        cx: &mut Context<'_>,
        rx: &mut ReplyReceiver,
        can_read: bool,
    ) -> Poll<Wake> {
        if let Poll::Ready(r) = rx.poll_recv(cx) {
            return Poll::Ready(Wake::Received(r));
        }
        if can_read {
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Wake::Readable),
                Poll::Ready(Err(e)) => return Poll::Ready(Wake::Io(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Read what the socket has, decode it, and send the router everything decoded
    /// as one request (one channel send, one wake-up), in order; whatever ends the
    /// connection comes after what preceded it. `Ok(false)`: nothing was there.
    async fn read_and_forward(&mut self) -> Result<bool, End> {
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
                    if let Some(end) = self.inbound(p, &mut batch) {
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
        self.send_events(batch.events).await?;
        if let Some(end) = ended {
            return Err(end);
        }
        if !self.encoder.is_empty() {
            if let Some(end) = self.write_out().await {
                return Err(end);
            }
        }
        self.release_read_buf();
        Ok(true)
    }

    /// An idle connection holds no read buffer (see the note on READ_BUF_BYTES).
    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
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

    async fn send(&self, event: Event) -> Result<(), End> {
        self.state
            .shared
            .router
            .send(ToRouter::Event(event))
            .await
            .map_err(|_| End::RouterGone)
    }

    /// Send the events decoded from one read: one request for all of them.
    async fn send_events(&mut self, mut events: Vec<Event>) -> Result<(), End> {
        let request = match events.len() {
            0 => return Ok(()),
            1 => match events.pop() {
                Some(e) => ToRouter::Event(e),
                None => return Ok(()),
            },
            _ => ToRouter::Events(events),
        };
        self.state
            .shared
            .router
            .send(request)
            .await
            .map_err(|_| End::RouterGone)
    }

    /// Turn a packet into a router event (queued in `batch`), or answer it here.
    fn inbound(&mut self, packet: Inbound, batch: &mut Decoded) -> Option<End> {
        let conn = self.state.id;
        let event = match packet {
            Inbound::Connect(_) => {
                return Some(End::Protocol(ProtocolError::Violation("second CONNECT")))
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
                let resolved = match &mut self.state.v5 {
                    Some(state) => state.aliases.resolve(topic, properties.topic_alias),
                    None => InboundAliases::resolve_without(topic, properties.topic_alias),
                };
                let topic = match resolved {
                    Ok(t) => t,
                    Err(e) => return Some(End::Protocol(e)),
                };
                if let (Some(state), Some(p)) = (&mut self.state.v5, pkid) {
                    // MQTT 5 §4.9: past our receive maximum is a protocol breach; a
                    // retransmission of an id in flight is not a new one.
                    let max = self.state.shared.config.limits.inflight_in_max;
                    if !state.quota.contains(&p.0) && state.quota.len() >= max {
                        return Some(End::ReceiveMaximumExceeded);
                    }
                    state.quota.insert(p.0);
                }
                let tid = match self.state.shared.topics.intern(topic.as_str()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, %topic, "publish refused");
                        return Some(End::TopicLimit);
                    }
                };
                let published = self.state.published.get_or_insert_with(Box::default);
                if !published.contains(&tid) {
                    let max = self.state.shared.config.limits.topics_per_connection_max;
                    if published.len() >= max {
                        tracing::warn!(
                            %topic,
                            max,
                            "publish refused: topics_per_connection_max reached"
                        );
                        return Some(End::TopicLimit);
                    }
                    published.insert(tid);
                }
                if qos != QoS::AtMostOnce {
                    self.inflight_in += 1;
                }
                Event::Publish {
                    conn,
                    pkid,
                    message: router::Publication {
                        topic: tid,
                        qos,
                        retain,
                        record: NewMessage {
                            origin: match (qos, pkid, &self.state.persistent_id) {
                                (QoS::ExactlyOnce, Some(p), Some(id)) => Some(Origin {
                                    client_id: id,
                                    pkid: p.0,
                                }),
                                _ => None,
                            },
                            expiry_secs: properties.expiry_secs,
                            properties: &properties.forward,
                            ..NewMessage::new(qos, retain, now_ms(), topic.as_str(), &payload)
                        }
                        .framed_in(&mut batch.arena, batch.arena_hint),
                    },
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
            Inbound::Subscribe { pkid, filters, id } => Event::Subscribe {
                conn,
                pkid,
                filters,
                id,
            },
            Inbound::Unsubscribe { pkid, filters } => Event::Unsubscribe {
                conn,
                pkid,
                filters,
            },
            Inbound::PingReq => {
                self.encoder.pingresp();
                return None;
            }
            Inbound::Disconnect {
                session_expiry,
                publish_will,
            } => {
                if let Some(secs) = session_expiry {
                    if self.state.session_expiry == 0 && secs != 0 {
                        // §3.14.2.2.2: a session that ends with its connection
                        // cannot be given a life after it.
                        return Some(End::Protocol(ProtocolError::Violation(
                            "DISCONNECT sets a session expiry after CONNECT had 0",
                        )));
                    }
                    self.state.session_expiry = secs;
                }
                return Some(if publish_will {
                    End::ClientDisconnectWithWill
                } else {
                    End::ClientDisconnect
                });
            }
            Inbound::Auth { .. } => {
                // Only an enhanced authentication exchange started by CONNECT may
                // send AUTH, and none is configured (§4.12).
                return Some(End::Protocol(ProtocolError::Violation(
                    "AUTH without an authentication method",
                )));
            }
        };
        batch.events.push(event);
        None
    }

    /// Encode and write a batch of replies; after a delivery, hand the delivery
    /// credit back before writing it. Not `credited`: the batch with the CONNACK,
    /// whose delivery (a resumed session's unacknowledged messages) the router sends
    /// without a credit; the credit starts with the `Pull` that follows it.
    async fn write_replies(
        &mut self,
        replies: Vec<Reply>,
        rx: &ReplyReceiver,
        credited: bool,
    ) -> Option<End> {
        let mut delivered = false;
        let mut close = None;
        self.encoder.set_now(now_ms());
        for r in &replies {
            match r {
                Reply::PubAck(id, reason) | Reply::PubRec(id, reason) => {
                    self.inflight_in = self.inflight_in.saturating_sub(1);
                    let done = matches!(r, Reply::PubAck(..)) || !reason.is_success();
                    if let (true, Some(state)) = (done, &mut self.state.v5) {
                        state.quota.remove(&id.0);
                    }
                    if !reason.is_success() && self.state.version != Some(Version::V5) {
                        // 3.1.1 cannot refuse a publish: closing tells the client
                        // it was not stored.
                        close = close.or(Some(CloseReason::StorageFailure));
                    }
                }
                Reply::PubComp { pkid, .. } => {
                    if let Some(state) = &mut self.state.v5 {
                        state.quota.remove(&pkid.0);
                    }
                }
                Reply::Deliver(_) => delivered = true,
                Reply::Close(reason) => close = Some(*reason),
                _ => {}
            }
            self.encoder.reply(r);
        }
        if let Some(state) = &mut self.state.v5 {
            if state.quota.is_empty() && state.quota.capacity() > 0 {
                // An idle connection keeps no table.
                state.quota = IdSet::default();
            }
        }
        // Hand the delivery credit back before writing this batch: the router
        // prepares the next one while this write is under way, and a message
        // published meanwhile is queued for us at once instead of waiting for the
        // write and a round trip through the router. At most one batch waits in the
        // queue behind the one being written: the router delivers once per credit.
        // Only when messages wait does the credit need an event to wake the router.
        if credited && delivered && close.is_none() && rx.give_back_credit() {
            if let Err(end) = self
                .send(Event::Pull {
                    conn: self.state.id,
                })
                .await
            {
                return Some(end);
            }
        }
        if let Some(end) = self.write_out().await {
            return Some(end);
        }
        close.map(End::Closed)
    }

    /// Write everything encoded, with vectored writes.
    async fn write_out(&mut self) -> Option<End> {
        let mut chunks = Vec::new();
        self.encoder.take(&mut chunks);
        let limit = Duration::from_millis(self.state.shared.config.limits.write_timeout_ms);
        let result = timeout(limit, write_all_chunks(&mut self.stream, &chunks)).await;
        self.encoder.shrink();
        match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(End::Io(e)),
            Err(_) => Some(End::WriteTimeout),
        }
    }
}

/// Write `chunks` in order: runs of bytes with vectored writes, file ranges with
/// `sendfile`.
async fn write_all_chunks(stream: &mut TcpStream, chunks: &[Chunk]) -> std::io::Result<()> {
    let mut i = 0;
    while i < chunks.len() {
        let end = chunks[i..]
            .iter()
            .position(|c| matches!(c, Chunk::File(_)))
            .map_or(chunks.len(), |p| i + p);
        write_all_bytes(stream, &chunks[i..end]).await?;
        if let Some(Chunk::File(range)) = chunks.get(end) {
            send_file(stream, range).await?;
        }
        i = end + 1;
    }
    Ok(())
}

/// Write runs of in-memory chunks (`Chunk::File`s are not expected here) with
/// vectored writes.
async fn write_all_bytes(stream: &mut TcpStream, chunks: &[Chunk]) -> std::io::Result<()> {
    // At most this many buffers per writev (IOV_MAX is 1024 on Linux).
    const IOV_MAX: usize = 1024;
    let mut first = 0;
    let mut skip = 0usize; // bytes of chunks[first] already written
    while first < chunks.len() {
        let end = (first + IOV_MAX).min(chunks.len());
        let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(end - first);
        for (k, c) in chunks[first..end]
            .iter()
            .filter_map(Chunk::in_memory)
            .enumerate()
        {
            slices.push(std::io::IoSlice::new(if k == 0 { &c[skip..] } else { c }));
        }
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < chunks.len() {
            let left = chunks[first].in_memory().map_or(0, Bytes::len) - skip;
            if n < left {
                skip += n;
                break;
            }
            n -= left;
            first += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// Send a range of a log segment's file with `sendfile(2)`: the kernel copies from
/// the page cache to the socket, and the bytes never enter our memory.
#[cfg(target_os = "linux")]
async fn send_file(stream: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = range.pos() + range.len() as u64;
    let mut pos = range.pos();
    while pos < end {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let mut offset = libc::off_t::try_from(pos)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let count = usize::try_from(end - pos).unwrap_or(usize::MAX);
            // SAFETY: both descriptors are open for the call (the stream and the
            // range, which holds its file, are borrowed), and `offset` is a local the
            // kernel may write.
            let n = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    range.file().as_raw_fd(),
                    &raw mut offset,
                    count,
                )
            };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
        });
        match sent {
            // The file ends before the range does: it was cut (never by the log
            // while a range is out); the packet cannot be completed.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Elsewhere: read the range and write it.
#[cfg(not(target_os = "linux"))]
async fn send_file(stream: &mut TcpStream, range: &FileRange) -> std::io::Result<()> {
    stream.write_all(&range.read()?).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection is one task holding this future: a field or an await
    /// added carelessly (a `select!` over stored futures, an unboxed `.await` on a
    /// large one) multiplies across every connection of a fleet (until it parks).
    /// Measured at 480 bytes (the task adds tokio's header).
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().into(),
            ..Config::default()
        };
        let topics = Arc::new(TopicInterner::new(10));
        let router = crate::server::open_router(&config).unwrap();
        let (router, _thread) = crate::driver::channel(router, 1, 1, true);
        let shared = Arc::new(Shared::new(Arc::new(config), topics, router, None));
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = serve(stream, shared, permit);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 768, "connection task future is {size} bytes");
    }
}
