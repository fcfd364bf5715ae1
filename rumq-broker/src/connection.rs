//! One client connection: a tokio task that frames and decodes what the client sends,
//! turns it into router events, and writes the router's replies back.
//!
//! It holds no broker state beyond the connection itself: the protocol version, the
//! keepalive, the count of inbound publishes awaiting acknowledgement (so that a fast
//! publisher is paced by the log, not buffered), and its buffers. Deliveries are
//! pulled: after writing a batch it asks the router for the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use router::{
    CloseReason, ConnectCode, ConnectionId, DisconnectReason, Event, Message, Origin, QoS, Reply,
    TopicInterner,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use crate::config::Config;
use crate::driver::ToRouter;
use crate::protocol::{self, ConnectPacket, Encoder, Inbound, ProtocolError};

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Topic interning, shared with the router.
    pub topics: Arc<TopicInterner>,
    /// The router's request channel.
    pub router: mpsc::Sender<ToRouter>,
    next_conn: AtomicU64,
}

impl Shared {
    /// Shared state for connections.
    pub fn new(
        config: Arc<Config>,
        topics: Arc<TopicInterner>,
        router: mpsc::Sender<ToRouter>,
    ) -> Self {
        Shared {
            config,
            topics,
            router,
            next_conn: AtomicU64::new(1),
        }
    }
}

/// Why a connection ended, for the log line and the will.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client sent DISCONNECT")]
    ClientDisconnect,
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
}

/// Bytes reserved for a read. The read buffer is allocated when the socket is
/// readable and dropped once everything in it was decoded, so an idle connection
/// holds no buffer: fleets keep thousands of mostly idle connections open.
const READ_BUF_BYTES: usize = 4096;

/// Serve one accepted socket until it closes.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let id = ConnectionId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let peer = stream.peer_addr().ok();
    let span =
        tracing::info_span!("conn", id = %id, peer = ?peer, client_id = tracing::field::Empty);
    async move {
        let mut c = Connection {
            id,
            stream,
            shared,
            read_buf: BytesMut::new(),
            encoder: Encoder::new(),
            chunks: Vec::new(),
            inflight_in: 0,
            keep_alive: None,
            persistent_id: None,
        };
        c.run(shutdown).await;
    }
    .instrument(span)
    .await;
}

struct Connection {
    id: ConnectionId,
    stream: TcpStream,
    shared: Arc<Shared>,
    read_buf: BytesMut,
    encoder: Encoder,
    chunks: Vec<Bytes>,
    inflight_in: usize,
    keep_alive: Option<Duration>,
    /// The client id when the session is persistent: written into its QoS 2 records
    /// so crash recovery can tell a retransmission from a new message.
    persistent_id: Option<String>,
}

impl Connection {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) {
        let limits = self.shared.config.limits.clone();
        let connect = match timeout(
            Duration::from_millis(limits.connect_timeout_ms),
            self.read_connect(),
        )
        .await
        {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => return,
            Ok(Err(end)) => {
                tracing::info!(reason = %end, "connection closed before CONNECT completed");
                return;
            }
            Err(_) => {
                tracing::info!("no CONNECT within connect_timeout_ms; closing");
                return;
            }
        };
        tracing::Span::current().record("client_id", connect.client_id.as_str());
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        if let Some(code) = self.authenticate(&connect) {
            self.encoder.connack(false, code);
            let _ = self.write_out().await;
            tracing::info!(code, "connection refused");
            return;
        }
        self.keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        self.persistent_id = (!connect.clean_session).then(|| connect.client_id.clone());

        let (tx, mut rx) = mpsc::channel(limits.inflight_in_max + 64);
        let will = match connect.will.as_ref().map(|w| self.will(w)).transpose() {
            Ok(w) => w,
            Err(()) => {
                self.encoder.connack(false, 3);
                let _ = self.write_out().await;
                return;
            }
        };
        let request = ToRouter::Connect {
            conn: self.id,
            connect: router::Connect {
                client_id: connect.client_id.clone(),
                clean_session: connect.clean_session,
                will,
            },
            replies: tx,
        };
        if self.shared.router.send(request).await.is_err() {
            return;
        }
        let end = self.serve_connected(&mut rx, &mut shutdown).await;
        let reason = match end {
            End::ClientDisconnect => DisconnectReason::Normal,
            _ => DisconnectReason::Abrupt,
        };
        match &end {
            End::ClientDisconnect | End::Eof => tracing::debug!(reason = %end, "connection closed"),
            _ => tracing::info!(reason = %end, "connection closed"),
        }
        let _ = self
            .shared
            .router
            .send(ToRouter::Event(Event::Disconnect {
                conn: self.id,
                reason,
            }))
            .await;
    }

    /// Read until a CONNECT; `Ok(None)` when the client went away quietly.
    async fn read_connect(&mut self) -> Result<Option<ConnectPacket>, End> {
        loop {
            match protocol::decode(
                &mut self.read_buf,
                false,
                self.shared.config.limits.max_packet_size,
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
                    self.encoder.connack(false, 1);
                    let _ = self.write_out().await;
                    return Err(End::Protocol(ProtocolError::UnsupportedVersion(level)));
                }
                Err(e) => return Err(End::Protocol(e)),
            }
            self.read_buf.reserve(READ_BUF_BYTES);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// `Some(return code)` when the client may not connect.
    fn authenticate(&self, c: &ConnectPacket) -> Option<u8> {
        let auth = &self.shared.config.auth;
        match (&c.username, &c.password) {
            (None, _) if !auth.allow_anonymous => Some(5),
            (None, _) => None,
            (Some(_), _) if auth.users.is_empty() => None,
            (Some(user), password) => {
                let ok = auth
                    .users
                    .get(user)
                    .is_some_and(|p| password.as_deref() == Some(p.as_bytes()));
                (!ok).then_some(4)
            }
        }
    }

    fn will(&self, w: &protocol::LastWill) -> Result<router::Will, ()> {
        let topic = self.shared.topics.intern(&w.topic).map_err(|e| {
            tracing::warn!(error = %e, "cannot accept will");
        })?;
        Ok(router::Will {
            topic,
            qos: w.qos,
            retain: w.retain,
            record: Message::encode_framed(
                w.qos,
                w.retain,
                now_ms(),
                None,
                &w.topic,
                &[],
                &w.payload,
            ),
        })
    }

    async fn serve_connected(
        &mut self,
        rx: &mut mpsc::Receiver<Vec<Reply>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        // The first reply is the CONNACK.
        let Some(first) = rx.recv().await else {
            return End::RouterGone;
        };
        let mut accepted = false;
        for r in &first {
            if let Reply::ConnAck { code, .. } = r {
                accepted = *code == ConnectCode::Accepted;
            }
        }
        if let Some(end) = self.write_replies(first).await {
            return end;
        }
        if !accepted {
            return End::Closed(CloseReason::ProtocolError);
        }
        if let Err(end) = self.send(Event::Pull { conn: self.id }).await {
            return end;
        }
        let max_packet = self.shared.config.limits.max_packet_size;
        let inflight_in_max = self.shared.config.limits.inflight_in_max;
        let mut deadline = self.keep_alive.map(|k| Instant::now() + k);
        loop {
            let can_read = self.inflight_in < inflight_in_max;
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Shutdown,
                replies = rx.recv() => {
                    let Some(replies) = replies else { return End::RouterGone };
                    if let Some(end) = self.write_replies(replies).await {
                        return end;
                    }
                }
                ready = self.stream.readable(), if can_read => {
                    if let Err(e) = ready {
                        return End::Io(e);
                    }
                    // The buffer exists only while there are bytes to read: an idle
                    // connection holds none (see the note on READ_BUF_BYTES).
                    // Room for the rest of a large packet whose header already came,
                    // so it arrives in one read rather than in 4 KiB pieces.
                    let want = protocol::bytes_missing(&self.read_buf, max_packet).max(READ_BUF_BYTES);
                    if self.read_buf.capacity() - self.read_buf.len() < want / 2 {
                        self.read_buf.reserve(want);
                    }
                    match self.stream.try_read_buf(&mut self.read_buf) {
                        Ok(0) => return End::Eof,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return End::Io(e),
                    }
                    deadline = self.keep_alive.map(|k| Instant::now() + k);
                    loop {
                        match protocol::decode(&mut self.read_buf, true, max_packet) {
                            Ok(Some(p)) => {
                                if let Some(end) = self.inbound(p).await {
                                    return end;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return End::Protocol(e),
                        }
                    }
                    if !self.encoder.is_empty() {
                        if let Some(end) = self.write_out().await {
                            return end;
                        }
                    }
                    if self.read_buf.is_empty() {
                        self.read_buf = BytesMut::new();
                    }
                }
                _ = sleep_until(deadline) => return End::KeepAlive,
            }
        }
    }

    async fn send(&self, event: Event) -> Result<(), End> {
        self.shared
            .router
            .send(ToRouter::Event(event))
            .await
            .map_err(|_| End::RouterGone)
    }

    async fn inbound(&mut self, packet: Inbound) -> Option<End> {
        let conn = self.id;
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
            } => {
                let tid = match self.shared.topics.intern(&topic) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, topic, "publish refused");
                        return Some(End::TopicLimit);
                    }
                };
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
                        record: Message::encode_framed(
                            qos,
                            retain,
                            now_ms(),
                            match (qos, pkid, &self.persistent_id) {
                                (QoS::ExactlyOnce, Some(p), Some(id)) => Some(Origin {
                                    client_id: id,
                                    pkid: p.0,
                                }),
                                _ => None,
                            },
                            &topic,
                            &[],
                            &payload,
                        ),
                    },
                }
            }
            Inbound::PubAck(pkid) => Event::PubAck { conn, pkid },
            Inbound::PubRec(pkid) => Event::PubRec { conn, pkid },
            Inbound::PubRel(pkid) => Event::PubRel { conn, pkid },
            Inbound::PubComp(pkid) => Event::PubComp { conn, pkid },
            Inbound::Subscribe { pkid, filters } => Event::Subscribe {
                conn,
                pkid,
                filters,
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
            Inbound::Disconnect => return Some(End::ClientDisconnect),
        };
        self.send(event).await.err()
    }

    /// Encode and write a batch of replies; ask for more data after a delivery.
    async fn write_replies(&mut self, replies: Vec<Reply>) -> Option<End> {
        let mut delivered = false;
        let mut close = None;
        for r in &replies {
            match r {
                Reply::PubAck(_) | Reply::PubRec(_) => {
                    self.inflight_in = self.inflight_in.saturating_sub(1)
                }
                Reply::Deliver(_) => delivered = true,
                Reply::Close(reason) => close = Some(*reason),
                _ => {}
            }
            self.encoder.reply(r);
        }
        if let Some(end) = self.write_out().await {
            return Some(end);
        }
        if let Some(reason) = close {
            return Some(End::Closed(reason));
        }
        if delivered {
            if let Err(end) = self.send(Event::Pull { conn: self.id }).await {
                return Some(end);
            }
        }
        None
    }

    /// Write everything encoded, with vectored writes.
    async fn write_out(&mut self) -> Option<End> {
        self.encoder.take(&mut self.chunks);
        let limit = Duration::from_millis(self.shared.config.limits.write_timeout_ms);
        let result = timeout(limit, write_all_chunks(&mut self.stream, &mut self.chunks)).await;
        self.chunks.clear();
        self.encoder.shrink();
        match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(End::Io(e)),
            Err(_) => Some(End::WriteTimeout),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_all_chunks(stream: &mut TcpStream, chunks: &mut [Bytes]) -> std::io::Result<()> {
    // At most this many buffers per writev (IOV_MAX is 1024 on Linux).
    const IOV_MAX: usize = 1024;
    let mut first = 0;
    let mut skip = 0usize; // bytes of chunks[first] already written
    while first < chunks.len() {
        let end = (first + IOV_MAX).min(chunks.len());
        let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(end - first);
        slices.push(std::io::IoSlice::new(&chunks[first][skip..]));
        for c in &chunks[first + 1..end] {
            slices.push(std::io::IoSlice::new(c));
        }
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < chunks.len() {
            let left = chunks[first].len() - skip;
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
