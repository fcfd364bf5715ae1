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
//!
//! | module | owns |
//! |---|---|
//! | this one | the task (`serve`, `run`), what connections share, the wait on the socket and the reply queue |
//! | `handshake` | CONNECT: validation, authentication, CONNACK, what the router is told |
//! | `inbound` | reading, decoding, publishes to records, events to the router |
//! | `outbound` | replies encoded and written, the delivery credit handed back |
//! | `parked` | a connection without a task, in the parking lot |
//! | `end` | why a connection ended, and the reason code it is told |

mod end;
mod handshake;
mod inbound;
mod outbound;
mod parked;
mod stream;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use router::{ConnectionId, DisconnectReason, Event, IdSet, TopicId};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::acl::{AclSource, ConnAcl};
use crate::clients::Clients;
use crate::config::Config;
use crate::driver::{RouterTx, ToRouter};
use crate::metrics::EdgeCounters;
use crate::owners::Owners;
use crate::parking::Lot;
use crate::passwords::Checker;
use crate::protocol::alias::InboundAliases;
use crate::protocol::{Encoder, Version};
use crate::replies::{Received, ReplyReceiver};
use crate::tls::Edge;
use end::End;
use parked::FirstStep;
pub use parked::Parked;
use rumq_broker::interner::TopicInterner;
use stream::Stream;

/// The target of every log line about a connection, the submodules' too: the one
/// they had before the connection was split into them, which log filters and
/// searches name (`rumq_broker::connection: parked`).
const LOG_TARGET: &str = "rumq_broker::connection";

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Topic interning, shared with the router.
    pub topics: Arc<TopicInterner>,
    /// The router's request channel.
    pub router: RouterTx,
    /// Where quiet connections park, by connection thread (none: they keep their
    /// tasks); see `conn_threads`.
    pub lots: Vec<Option<Lot<Parked>>>,
    /// The password file's checks (none: user names are not checked).
    pub passwords: Option<Arc<Checker>>,
    /// What the metrics endpoint reads of the edge.
    pub counters: Arc<EdgeCounters>,
    /// The clients connected now, kept only for the admin API (`clients.rs`).
    pub clients: Option<Arc<Clients>>,
    /// In a cluster, the claims a CONNECT makes on its client id (`owners.rs`).
    pub owners: Option<Owners>,
    /// Who may publish and subscribe to what (`acl.rs`); none: everyone, everything.
    pub acl: Option<Arc<AclSource>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// Shared state for connections.
    pub fn new(
        config: Arc<Config>,
        topics: Arc<TopicInterner>,
        router: RouterTx,
        lots: Vec<Option<Lot<Parked>>>,
    ) -> Self {
        Shared {
            config,
            topics,
            router,
            lots,
            passwords: None,
            counters: Arc::default(),
            clients: None,
            owners: None,
            acl: None,
            next_conn: AtomicU64::new(1),
        }
    }
}

/// Serve one accepted socket until it closes (or the server shuts down: the router
/// says so through the reply queue). `permit` counts it against `max_connections`
/// until then. `thread` is the connection thread it runs on (`conn_threads`), whose
/// parking lot it uses.
pub fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    thread: u16,
) -> impl Future<Output = ()> {
    let (id, span) = new_span(&stream, &shared);
    // Built here rather than inside the task, so the task's future does not hold
    // the socket twice (once as the argument, once in the connection).
    let c = Connection::new(Stream::Tcp(stream), id, shared, thread);
    c.run(permit, None).instrument(span)
}

/// As [`serve`], on a listener with an edge (TLS, WebSockets): its handshake first,
/// within `limits.connect_timeout_ms`. A client that does not finish it in time, or
/// that it refuses (not TLS, no certificate the listener's client CA vouches for, an
/// upgrade to another path or without the `mqtt` subprotocol), is closed with one
/// log line.
pub fn serve_edge(
    stream: TcpStream,
    (shared, permit, thread): (Arc<Shared>, OwnedSemaphorePermit, u16),
    edge: Edge,
) -> impl Future<Output = ()> {
    let (id, span) = new_span(&stream, &shared);
    async move {
        let limit = Duration::from_millis(shared.config.limits.connect_timeout_ms);
        let max_packet = shared.config.limits.max_packet_size;
        let stream = match tokio::time::timeout(limit, Stream::open(stream, edge, max_packet)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                EdgeCounters::add(&shared.counters.refused_tls);
                tracing::info!(target: LOG_TARGET, error = %e, "handshake failed; closing");
                return;
            }
            Err(_) => {
                EdgeCounters::add(&shared.counters.refused_tls);
                tracing::info!(target: LOG_TARGET, "no handshake within connect_timeout_ms; closing");
                return;
            }
        };
        let c = Connection::new(stream, id, shared, thread);
        c.run(permit, None).await;
    }
    .instrument(span)
}

/// A new connection's id, and the span its lines are logged in.
fn new_span(stream: &TcpStream, shared: &Shared) -> (ConnectionId, tracing::Span) {
    let id = ConnectionId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let peer = stream.peer_addr().ok();
    let span =
        tracing::info_span!("conn", id = %id, peer = ?peer, client_id = tracing::field::Empty);
    (id, span)
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
    stream: Stream,
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
    /// The connection thread it runs on, for good (`conn_threads`).
    thread: u16,
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
    /// What the ACL grants this client, with an ACL file (boxed: 8 bytes without).
    acl: Option<Box<ConnAcl>>,
}

impl ConnState {
    /// Tell the router the connection is gone (MQTT 5: with the session expiry it
    /// ended with), and note in the reply queue that it was told (unless the router
    /// is gone too).
    async fn tell_router(&self, reason: DisconnectReason, rx: &ReplyReceiver) {
        if let Some(clients) = &self.shared.clients {
            clients.remove(self.id);
        }
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
        (ms > 0 && self.lot().is_some()).then(|| Duration::from_millis(ms))
    }

    /// The parking lot of the connection's thread, if connections park.
    fn lot(&self) -> Option<&Lot<Parked>> {
        self.shared
            .lots
            .get(usize::from(self.thread))
            .and_then(Option::as_ref)
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

/// What woke an idle connection.
enum Wake {
    Received(Received),
    Readable,
    Io(std::io::Error),
}

impl Connection {
    /// A connection on `stream`, before its CONNECT.
    fn new(stream: Stream, id: ConnectionId, shared: Arc<Shared>, thread: u16) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::new(),
            encoder: Encoder::new(),
            inflight_in: 0,
            state: ConnState {
                id,
                shared,
                thread,
                persistent_id: None,
                version: None,
                connacked: false,
                session_expiry: 0,
                v5: None,
                published: None,
                acl: None,
            },
        }
    }

    /// The connection's task: from the CONNECT (or from the parking lot, with its
    /// reply queue) until it ends or parks. Not an `async fn`: its arguments would
    /// be stored twice in the future (as arguments and as locals), and every idle
    /// connection carries this future (see the module docs on memory). The block
    /// below uses what it captured in place.
    fn run(
        self,
        permit: OwnedSemaphorePermit,
        resumed: Option<(ReplyReceiver, Option<Box<FirstStep>>)>,
    ) -> impl Future<Output = ()> + Send {
        let mut conn = self;
        async move {
            let mut rx = match resumed {
                Some((rx, first)) => {
                    if let Err(end) = Box::pin(conn.finish_resume(first)).await {
                        return Box::pin(conn.goodbye(end, &rx)).await;
                    }
                    rx
                }
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
                        let Some(lot) = conn.state.lot().cloned() else {
                            continue;
                        };
                        if conn.in_hand() {
                            continue;
                        }
                        if !conn.stream.parks() {
                            rx.never_park();
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

    /// Say why (MQTT 5), and tell the router the connection is gone (noting in the
    /// reply queue that it was told, see `ReplySender::abandoned`).
    async fn goodbye(&mut self, end: End, rx: &ReplyReceiver) {
        let v5 = self.state.version == Some(Version::V5);
        if let (true, true, Some(code)) = (v5, self.state.connacked, end.reason_code()) {
            // MQTT 5: say why before closing (§4.13.2); not before a CONNACK
            // (MQTT-3.2.0-1), as when the server shuts down during the handshake.
            self.encoder.disconnect_v5(code, &end.to_string());
            if self.write_out().await.is_none() {
                self.linger().await;
            }
        }
        let reason = match end {
            End::ClientDisconnect => DisconnectReason::Normal,
            _ => DisconnectReason::Abrupt,
        };
        tracing::info!(reason = %end, "connection closed");
        self.state.tell_router(reason, rx).await;
        if let Some(lot) = self.state.lot() {
            lot.note_ended();
        }
    }

    /// After the broker's DISCONNECT: close the sending side (the client's stack gets
    /// a FIN after the DISCONNECT) and read and drop what the client still sends, until
    /// it closes too, or for at most `limits.disconnect_linger_ms` and
    /// `disconnect_linger_bytes`. Closing a socket with unread bytes sends a reset
    /// instead, and a client that writes on (a PUBREL, a PINGREQ) before it reads
    /// would then fail on its write without having read why it was disconnected.
    async fn linger(&mut self) {
        let limits = &self.state.shared.config.limits;
        let until =
            tokio::time::Instant::now() + Duration::from_millis(limits.disconnect_linger_ms);
        let mut left = limits.disconnect_linger_bytes;
        if self.stream.shutdown().await.is_err() {
            return;
        }
        while left > 0 {
            self.read_buf.clear();
            self.read_buf.reserve(4096);
            let read = tokio::time::timeout_at(until, self.stream.read_buf(&mut self.read_buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        self.read_buf = BytesMut::new();
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
                Wake::Received(Received::Kicked) => break End::Kicked,
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
        &mut self,
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

    /// Send the router one event.
    async fn send(&self, event: Event) -> Result<(), End> {
        self.state
            .shared
            .router
            .send(ToRouter::Event(event))
            .await
            .map_err(|_| End::RouterGone)
    }
}

/// Wall-clock milliseconds since the Unix epoch (a record's time, the encoder's
/// clock for message expiry).
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
        let shared = Arc::new(Shared::new(Arc::new(config), topics, router, vec![]));
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = serve(stream, shared, permit, 0);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 768, "connection task future is {size} bytes");
    }
}
