//! The router's driver: owns the [`Router`] (and through it the commitlog), takes
//! requests from the connections over one bounded channel, and hands each connection
//! its replies through that connection's own bounded queue (`replies`).
//!
//! The router thread takes the requests waiting, up to `drain_max + 1`, before
//! flushing, so publishes that arrive together are appended together (one write, one
//! fsync under `fsync = "always"`), and their acknowledgements leave together. When
//! none wait it parks, and a connection that then sends a light request applies it
//! itself, on its own thread, rather than pay for two cross-core wake-ups (see
//! [`Driver`]). Either way one thread at a time runs the router.
//!
//! It also owns what concerns every connection at once, through their reply
//! queues: the keep-alive sweep (every 250 ms), ending connections whose task is
//! gone without a `Disconnect` (same sweep), and, on `Shutdown`, telling each
//! connection to close.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use commitlog::timing::Histogram;
use commitlog::Log;
use mesh::{LogId, NodeId};
use router::{ConnectionId, DisconnectReason, Event, IdMap, PeerEvent, PeerReply, Reply, Router};
use tokio::sync::mpsc;

use crate::cluster_node::PeerSide;
use crate::metrics::RouterSnapshot;
use crate::replies::{PushError, ReplySender};

/// A connection's reply queue, router side.
pub type ReplyTx = ReplySender;

/// What connections (and the server, at shutdown) send to the router.
#[derive(Debug)]
pub enum ToRouter {
    /// A new client connection, with the channel for its replies.
    Connect {
        /// The connection.
        conn: ConnectionId,
        /// Its validated CONNECT.
        connect: router::Connect,
        /// Where its replies go.
        replies: ReplyTx,
    },
    /// Any other event.
    Event(Event),
    /// Several events from one connection's read, in order.
    Events(Vec<Event>),
    /// The server is shutting down: tell every connection, now and from now on.
    Shutdown,
    /// The counters for a metrics scrape (`metrics.rs`).
    Stats(tokio::sync::oneshot::Sender<RouterSnapshot>),
    /// `$SYS` topics and payloads to publish (`sys.rs`).
    System(Vec<(String, bytes::Bytes)>),
    /// Read the router's state for the admin API (`admin.rs`).
    Inspect(Inspect),
    /// A data link to `peer` is up: what the router sends the peer goes to `tx`
    /// (`cluster.rs`).
    PeerLink {
        /// The peer.
        peer: NodeId,
        /// The link's queue.
        tx: mpsc::Sender<PeerReply>,
    },
    /// What a data link brought.
    Peer(PeerEvent),
    /// A peer announced the log it writes: replicate it.
    Replica(LogId),
}

/// A read of the router's state, run on whichever thread runs the router; it sends
/// what it read back on a channel of its own.
pub struct Inspect(pub Box<dyn ReadRouter>);

/// What an [`Inspect`] runs.
pub trait ReadRouter: FnOnce(&Router<Log>) + Send {}
impl<F: FnOnce(&Router<Log>) + Send> ReadRouter for F {}

impl std::fmt::Debug for Inspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspect")
    }
}

/// How long a scrape or an admin read waits for the router's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests a connection applies itself, at most, when it finds the router thread
/// asleep; more than that and it wakes the thread instead.
const INLINE_REQUESTS_MAX: usize = 64;
/// The most events one light request carries (see [`ToRouter::is_light`]).
const LIGHT_EVENTS_MAX: usize = 8;
/// The most record bytes one light request carries.
const LIGHT_BYTES_MAX: usize = 16 * 1024;

impl ToRouter {
    /// Whether a connection may apply this request itself when the router thread is
    /// asleep: a few events with small messages. A large batch is work for the router
    /// thread, whose core is the one the connections are not using; `Shutdown` is the
    /// router thread's alone.
    fn is_light(&self) -> bool {
        let weight = |e: &Event| match e {
            Event::Publish { message, .. } => message.record.frame().len(),
            _ => 0,
        };
        match self {
            ToRouter::Connect { .. } => true,
            ToRouter::Event(e) => weight(e) <= LIGHT_BYTES_MAX,
            ToRouter::Events(es) => {
                es.len() <= LIGHT_EVENTS_MAX
                    && es.iter().map(weight).sum::<usize>() <= LIGHT_BYTES_MAX
            }
            // A peer's fetch, or a few records for a replica: as light as a publish
            // (the hops of a replicated message are most of its latency).
            ToRouter::Peer(
                PeerEvent::Fetched { .. }
                | PeerEvent::LinkUp { .. }
                | PeerEvent::Moved { .. }
                | PeerEvent::SharedNodes { .. }
                | PeerEvent::WillClaimed { .. }
                | PeerEvent::Done { .. },
            ) => true,
            ToRouter::Peer(
                PeerEvent::Replicated { records, .. } | PeerEvent::Relayed { records, .. },
            ) => {
                records.len() <= LIGHT_EVENTS_MAX
                    && records.iter().map(|r| r.frame().len()).sum::<usize>() <= LIGHT_BYTES_MAX
            }
            // Opening a replica's files, registering a link: the router thread's.
            ToRouter::Shutdown | ToRouter::PeerLink { .. } | ToRouter::Replica(_) => false,
            ToRouter::Stats(_) => true,
            // A $SYS round (deliveries to every subscriber) and an admin read are the
            // router thread's: the task that asks serves HTTP or times the rounds.
            ToRouter::System(_) | ToRouter::Inspect(_) => false,
        }
    }
}

/// The router and what its iterations use, owned by whoever holds the lock: the
/// router thread, or a connection that found it asleep.
struct Core {
    router: Router<Log>,
    conns: Conns,
    batches: IdMap<ConnectionId, Vec<Reply>>,
    rx: mpsc::Receiver<ToRouter>,
}

impl Core {
    /// Apply up to `max` waiting requests, append what they brought, and hand out
    /// the replies; with `light_only`, stop after the first request that is not
    /// light (applied: the order is kept). How many were applied; `None` once every
    /// sender is gone and nothing is left.
    fn iterate(&mut self, max: usize, light_only: bool) -> Option<usize> {
        let began = Instant::now();
        let mut applied = 0;
        while applied < max {
            let msg = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if applied == 0 => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let last = light_only && !msg.is_light();
            apply(&mut self.router, &mut self.conns, msg);
            applied += 1;
            if last {
                break;
            }
        }
        if applied > 0 {
            self.router.flush();
            dispatch(&mut self.router, &mut self.conns, &mut self.batches);
            self.conns.iterations.observe(began.elapsed());
        }
        Some(applied)
    }

    /// The periodic work due at `now`, done by the router thread only.
    fn periodic(&mut self, now: Now) {
        let Core {
            router,
            conns,
            batches,
            ..
        } = self;
        if conns.sweep_due(now.mono) {
            conns.sweep_queues(now.mono);
            if end_abandoned(router, conns) {
                dispatch(router, conns, batches);
            }
        }
        if let Some(p) = conns.peers.as_mut() {
            p.take_opened(router);
        }
        // By the clock, busy or not: timers, the interval fsync and retention must not
        // wait for a quiet moment.
        if now.mono.saturating_duration_since(conns.ticked) >= TICK {
            conns.ticked = now.mono;
            router.tick(now.wall);
            dispatch(router, conns, batches);
        }
    }
}

/// What the router thread and the connections share: the router behind a lock, and
/// whether the router thread sleeps.
///
/// Why a connection may run the router itself: handing a request to a sleeping
/// thread on another core, and the replies back, costs two wake-ups of an idle
/// core. On a virtual machine whose idle cores halt, each is about 50 µs, against
/// about 2 µs for a wake-up on the same core (docs/performance.md), and it is most
/// of a lightly loaded broker's latency. So a connection that sends a light request
/// (`ToRouter::is_light`) and finds the router thread asleep takes the lock and
/// applies what waits, on its own thread, where the replies' wake-ups are local
/// too. Under load the router thread is awake, requests are larger, and it does
/// the work on its own core as before; the router is still run by one thread at a
/// time, and it still does no network I/O.
struct Driver {
    core: Mutex<Option<Core>>,
    /// The router thread found nothing to do and parks (or is about to).
    asleep: AtomicBool,
    /// The router thread, to unpark.
    thread: OnceLock<std::thread::Thread>,
    /// Connections may apply light requests themselves.
    inline: bool,
    drain_max: usize,
}

impl Driver {
    /// After a request was queued: nothing if the router thread is awake (it takes
    /// it); if asleep, apply what waits here when this request is light and the lock
    /// is free (up to the first heavy request), else wake the thread.
    fn sent(&self, light: bool) {
        // Pairs with the fence in `RouterThread::run` (between announcing sleep and
        // looking at the channel a last time): either that look sees this request,
        // or this load sees `asleep`.
        fence(Ordering::SeqCst);
        if !self.asleep.load(Ordering::Relaxed) {
            return;
        }
        if light && self.inline {
            if let Ok(mut guard) = self.core.try_lock() {
                if let Some(core) = guard.as_mut() {
                    core.iterate(INLINE_REQUESTS_MAX, true);
                    if core.rx.is_empty() {
                        return;
                    }
                }
            }
        }
        // Awake from now on, as far as the light requests sent meanwhile are
        // concerned: they are left to it, heavy ones above all (relaying 64 KiB
        // messages, a connection that found the thread asleep took the copies of a
        // batch the publisher had just queued, on the busier core).
        self.asleep.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// The router's request channel, sending side; cloned into every connection.
#[derive(Clone)]
pub struct RouterTx {
    tx: mpsc::Sender<ToRouter>,
    driver: Arc<Driver>,
}

impl std::fmt::Debug for RouterTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterTx")
            .field("capacity", &self.tx.capacity())
            .finish_non_exhaustive()
    }
}

impl RouterTx {
    /// Queue a request (waiting while the channel is full); see [`Driver`] for who
    /// applies it. An error once the router is gone.
    pub async fn send(&self, msg: ToRouter) -> Result<(), mpsc::error::SendError<ToRouter>> {
        let light = msg.is_light();
        self.tx.send(msg).await?;
        self.driver.sent(light);
        Ok(())
    }

    /// The counters a metrics scrape reads (`ToRouter::Stats`); `None` when the
    /// router is gone or did not answer within [`ANSWER_TIMEOUT`].
    pub async fn stats(&self) -> Option<RouterSnapshot> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(ToRouter::Stats(tx)).await.ok()?;
        tokio::time::timeout(ANSWER_TIMEOUT, rx).await.ok()?.ok()
    }

    /// Run `read` on the router's thread (`ToRouter::Inspect`) and return what it
    /// read; `None` as for [`RouterTx::stats`].
    pub async fn inspect<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Router<Log>) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inspect = Inspect(Box::new(move |r| {
            let _ = tx.send(read(r));
        }));
        self.send(ToRouter::Inspect(inspect)).await.ok()?;
        tokio::time::timeout(ANSWER_TIMEOUT, rx).await.ok()?.ok()
    }

    /// Queue a request if the channel has room (see [`RouterTx::send`]); the request
    /// back if it has none.
    pub fn try_send(&self, msg: ToRouter) -> Result<(), mpsc::error::TrySendError<ToRouter>> {
        let light = msg.is_light();
        self.tx.try_send(msg)?;
        self.driver.sent(light);
        Ok(())
    }

    /// Queue a request from a thread outside the runtime, for the router thread to
    /// apply.
    #[cfg(test)]
    pub fn blocking_send(&self, msg: ToRouter) -> Result<(), mpsc::error::SendError<ToRouter>> {
        self.tx.blocking_send(msg)?;
        self.driver.sent(false);
        Ok(())
    }
}

/// The router thread's side: see [`RouterThread::run`].
pub struct RouterThread(Arc<Driver>);

/// The router's request channel (room for `capacity` requests) and the thread side
/// that serves it. The router thread applies up to `drain_max + 1` requests per
/// iteration; with `inline`, connections apply light requests themselves while it
/// sleeps (see [`Driver`]).
#[cfg(test)]
pub fn channel(
    router: Router<Log>,
    capacity: usize,
    drain_max: usize,
    inline: bool,
) -> (RouterTx, RouterThread) {
    channel_with_peers(router, (capacity, drain_max), inline, None)
}

/// As [`channel`], for a node of a cluster (`peers`).
pub fn channel_with_peers(
    router: Router<Log>,
    (capacity, drain_max): (usize, usize),
    inline: bool,
    peers: Option<PeerSide>,
) -> (RouterTx, RouterThread) {
    let (tx, rx) = mpsc::channel(capacity);
    let mut conns = Conns::new(Instant::now());
    conns.peers = peers;
    let core = Core {
        router,
        conns,
        batches: IdMap::default(),
        rx,
    };
    let driver = Arc::new(Driver {
        core: Mutex::new(Some(core)),
        asleep: AtomicBool::new(false),
        thread: OnceLock::new(),
        inline,
        drain_max,
    });
    (
        RouterTx {
            tx,
            driver: driver.clone(),
        },
        RouterThread(driver),
    )
}

impl RouterThread {
    /// Run the router until every sender is gone; returns it (for a clean close of
    /// the message log and the session journal), or `None` if it panicked on a
    /// connection's thread. It takes up to `drain_max + 1` requests, appends them
    /// together (one write, one fsync under `fsync = "always"`, their
    /// acknowledgements leaving together), and parks when none wait.
    pub fn run(self) -> Option<Router<Log>> {
        let driver = self.0;
        let _ = driver.thread.set(std::thread::current());
        loop {
            // A connection that panicked while it held the lock left the router in
            // an unknown state: stop as if the router thread had panicked there.
            let Ok(mut guard) = driver.core.lock() else {
                tracing::error!("the router panicked on a connection thread; stopping it");
                break;
            };
            let Some(core) = guard.as_mut() else { break };
            let Some(applied) = core.iterate(driver.drain_max + 1, false) else {
                break;
            };
            // The clock is read here, at the edge, once per iteration; what runs
            // on it is handed the time.
            let now = Now::read();
            core.periodic(now);
            if applied > 0 {
                continue;
            }
            driver.asleep.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if core.rx.is_empty() {
                let next_tick =
                    TICK.saturating_sub(now.mono.saturating_duration_since(core.conns.ticked));
                drop(guard);
                // Unparked by the next request a connection does not apply itself;
                // by itself for the next tick.
                std::thread::park_timeout(next_tick);
            }
            driver.asleep.store(false, Ordering::Relaxed);
        }
        // Poisoned: the router is not closed cleanly; the logs recover at the next
        // start, as after a crash.
        let Core {
            mut router,
            mut conns,
            mut batches,
            rx,
        } = driver.core.lock().ok().and_then(|mut guard| guard.take())?;
        drop(rx);
        // The runtime cancels the tasks still running after the shutdown grace:
        // their connections end here, wills published.
        end_abandoned(&mut router, &mut conns);
        router.flush();
        dispatch(&mut router, &mut conns, &mut batches);
        let stats = router.stats();
        tracing::info!(?stats, "router stopped");
        Some(router)
    }
}

/// How often the keep alives of all connections are checked (a connection is
/// closed at most this much later than 1.5 × its keep alive), and quiet ones asked
/// to park.
const QUEUE_SWEEP: Duration = Duration::from_millis(250);

/// How often the router ticks (`Router::tick`: timers, the interval fsync,
/// retention). The router thread keeps this time itself, busy or not, waking from
/// its park for it. (A ticker task used to send a `Tick` through the channel: a
/// wake-up of the connection thread every 20 ms, and a request that marked the
/// router thread awake, leaving it the light requests sent until it was.)
const TICK: Duration = Duration::from_millis(20);

/// The time, read once per iteration of the router thread: monotonic for the
/// driver's own periods, wall-clock for the router (message expiry, session timers,
/// retention by age).
#[derive(Debug, Clone, Copy)]
struct Now {
    mono: Instant,
    wall: SystemTime,
}

impl Now {
    fn read() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The connections' reply queues, and when the periodic work last ran.
struct Conns {
    queues: IdMap<ConnectionId, ReplyTx>,
    /// Shutdown was asked for: a connection that arrives now is told at once.
    shutting_down: bool,
    /// When the queues were last swept (keep alives, quiet connections).
    swept: Instant,
    /// When the router last ticked.
    ticked: Instant,
    /// Scratch for `dispatch`: the parked credits taken for the router.
    credits_taken: Vec<ConnectionId>,
    /// In a cluster: the replicas' directory and the peers' data links.
    peers: Option<PeerSide>,
    /// How long iterations that applied requests took (metrics).
    iterations: Histogram,
}

impl Conns {
    fn new(now: Instant) -> Conns {
        Conns {
            queues: IdMap::default(),
            shutting_down: false,
            swept: now,
            ticked: now,
            credits_taken: Vec::new(),
            peers: None,
            iterations: Histogram::default(),
        }
    }

    /// True once every `QUEUE_SWEEP`: time for the sweeps below.
    fn sweep_due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.swept) < QUEUE_SWEEP {
            return false;
        }
        self.swept = now;
        true
    }

    /// Tell the connections whose clients went quiet for too long to close, and
    /// those quiet for `listener.park_after_ms` to park (one pass over all of them).
    fn sweep_queues(&self, now: Instant) {
        for tx in self.queues.values() {
            if !tx.check_keep_alive(now) {
                tx.check_idle(now);
            }
        }
    }
}

/// End, as an abrupt disconnect, every connection whose task is gone without having
/// sent its `Disconnect` (see [`ReplySender::abandoned`]). Their wills are published,
/// clean sessions end, and nothing holds retention back for them any more. True if
/// there were any (their replies are then in the router's outbox).
fn end_abandoned(router: &mut Router<Log>, conns: &mut Conns) -> bool {
    let abandoned: Vec<ConnectionId> = conns
        .queues
        .iter()
        .filter(|(_, tx)| tx.abandoned())
        .map(|(conn, _)| *conn)
        .collect();
    if abandoned.is_empty() {
        return false;
    }
    for conn in abandoned {
        tracing::warn!(%conn, "connection task ended without a disconnect; ending its session's connection");
        let disconnect = Event::Disconnect {
            conn,
            reason: DisconnectReason::Abrupt,
            session_expiry: None,
        };
        apply(router, conns, ToRouter::Event(disconnect));
    }
    router.flush();
    true
}

/// Disconnect `conn` as if its network connection dropped, and forget its queue (a
/// `Disconnect` the connection sends later is for a connection the router no longer
/// knows, and is ignored).
fn apply(router: &mut Router<Log>, conns: &mut Conns, msg: ToRouter) {
    match msg {
        ToRouter::Connect {
            conn,
            connect,
            replies,
        } => {
            if conns.shutting_down {
                // Too late to connect: no session is opened or taken over; the
                // connection closes without a CONNACK.
                replies.shut_down();
                return;
            }
            conns.queues.insert(conn, replies);
            router.handle(Event::Connect { conn, connect });
        }
        ToRouter::Event(event) => {
            let gone = match &event {
                Event::Disconnect { conn, .. } => Some(*conn),
                Event::Pull { conn } => {
                    // The credit came in the event: whatever the router asked for
                    // it is about to be sent.
                    if let Some(tx) = conns.queues.get(conn) {
                        tx.credit_arrived();
                    }
                    None
                }
                _ => None,
            };
            router.handle(event);
            if let Some(conn) = gone {
                // Replies still queued for it are dropped with the sender.
                conns.queues.remove(&conn);
            }
        }
        ToRouter::Events(events) => {
            for e in events {
                apply(router, conns, ToRouter::Event(e));
            }
        }
        ToRouter::Shutdown => {
            conns.shutting_down = true;
            for tx in conns.queues.values() {
                tx.shut_down();
            }
        }
        ToRouter::PeerLink { peer, tx } => {
            if let Some(p) = conns.peers.as_mut() {
                p.link_up(peer, tx);
                router.handle_peer(PeerEvent::LinkUp { peer });
            }
        }
        ToRouter::Peer(event) => router.handle_peer(event),
        ToRouter::Replica(log) => {
            if let Some(p) = conns.peers.as_mut() {
                p.open_replica(router, log);
            }
        }
        ToRouter::Inspect(Inspect(read)) => read(router),
        ToRouter::System(messages) => {
            for (topic, payload) in messages {
                router.publish_system(&topic, &payload);
            }
        }
        ToRouter::Stats(tx) => {
            let _ = tx.send(snapshot(router, conns));
        }
    }
}

/// What a metrics scrape (or the admin API's `/cluster`) reads.
fn snapshot(router: &Router<Log>, conns: &Conns) -> RouterSnapshot {
    RouterSnapshot {
        iterations: conns.iterations.snapshot(),
        backlog_max: router.backlog_max(),
        mesh: router.mesh_status(),
        links_up: (conns.peers.as_ref())
            .map(|p| p.links_up().iter().map(|n| n.0).collect())
            .unwrap_or_default(),
        stats: router.stats(),
        sessions: router.session_count() as u64,
        connected: router.connected_count() as u64,
        subscriptions: router.subscription_count() as u64,
        retained: router.retained_count() as u64,
        log: Some(router.storage().stats()),
        journal: router.journal_storage().map(Log::stats),
    }
}

/// Rounds of handing parked credits back to the router within one dispatch. One
/// suffices: a credit is parked only while the router had nothing for its connection,
/// and a batch that leaves messages behind asks for its credit before it leaves (so
/// it comes back with a `Pull`). The bound guards against a broken invariant.
const CREDIT_ROUNDS_MAX: usize = 4;

/// Hand the router's replies to the connections. First the credits the router asked
/// for: those the connections parked go back into the router as `Pull`s (their
/// batches join this dispatch), the others are marked wanted, so their connections
/// return them with a `Pull`; both before any batch is handed over.
fn dispatch(
    router: &mut Router<Log>,
    conns: &mut Conns,
    batches: &mut IdMap<ConnectionId, Vec<Reply>>,
) {
    for round in 0.. {
        for (conn, reply) in router.drain_outbox() {
            batches.entry(conn).or_default().push(reply);
        }
        // A scratch list kept with the queues: no allocation per dispatch.
        let mut taken = std::mem::take(&mut conns.credits_taken);
        taken.extend(router.drain_credit_wanted().filter(|conn| {
            conns
                .queues
                .get(conn)
                .is_some_and(ReplySender::take_or_want_credit)
        }));
        let none = taken.is_empty();
        for conn in taken.drain(..) {
            router.handle(Event::Pull { conn });
        }
        conns.credits_taken = taken;
        if none {
            break;
        }
        if round + 1 == CREDIT_ROUNDS_MAX {
            // Their batches leave with the next dispatch (at the latest the next tick's).
            tracing::error!("delivery credits parked again while dispatching; leaving the rest to the next dispatch");
            debug_assert!(
                false,
                "a delivery credit was parked while its batch was asked for"
            );
            break;
        }
    }
    if let Some(p) = conns.peers.as_mut() {
        for (peer, reply) in router.drain_peer_outbox() {
            p.send(peer, reply);
        }
        if let Some(groups) = router.take_shared_groups_changed() {
            p.shared_groups(groups);
        }
        for client_id in router.drain_released() {
            p.released(client_id);
        }
        for (client_id, from) in router.drain_will_claims() {
            p.claim_will(client_id, from);
        }
    }
    // Deliveries first, acknowledgements after: each push may wake a task, and the
    // runtime runs woken tasks in that order, so a subscriber's messages do not wait
    // behind the PUBACK of the publish that carried them.
    for (conn, replies) in batches.iter_mut() {
        if replies.iter().any(|r| matches!(r, Reply::Deliver(_))) {
            hand_over(conns, *conn, replies);
        }
    }
    for (conn, mut replies) in batches.drain() {
        if !replies.is_empty() {
            hand_over(conns, conn, &mut replies);
        }
    }
}

/// Push one connection's replies to its queue (leaving `replies` empty).
fn hand_over(conns: &Conns, conn: ConnectionId, replies: &mut Vec<Reply>) {
    let Some(tx) = conns.queues.get(&conn) else {
        replies.clear();
        return;
    };
    match tx.push(replies) {
        Ok(()) => {}
        Err(PushError::Full) => {
            // Its queue is sized so this cannot happen to a connection that
            // keeps reading; drop it rather than buffer for it. The connection
            // closes and sends its Disconnect (or, if its task is gone, the sweep
            // ends it): the queue stays until then, like a closed one.
            tracing::error!(%conn, "connection not taking replies; closing it");
            tx.close();
        }
        // Its Disconnect is on the way, or (abandoned) the next sweep sends one:
        // either way the queue stays until then.
        Err(PushError::Closed) => {}
    }
    replies.clear();
}

#[cfg(test)]
mod tests;
