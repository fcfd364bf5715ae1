//! The router thread's replies to one connection: a queue the router thread appends
//! to and the connection task empties whole.
//!
//! Not a tokio channel: a bounded `mpsc` channel allocates its first block of slots
//! (about 1 KiB) when it is created, and every connection has one for as long as it
//! lives, mostly idle. This queue costs a lock, a waker and an empty `Vec` until
//! replies arrive, and hands them over in one swap. It is bounded all the same: a
//! connection that stops taking replies is closed rather than buffered for.
//!
//! It also carries the server's shutdown and the keep-alive verdict to the
//! connection, so that an idle connection waits on nothing but this queue and its
//! socket (see `connection.rs` on why that matters): the connection notes when it
//! last read ([`ReplyReceiver::touch`], an atomic store), and the router thread
//! sweeps the queues a few times a second ([`ReplySender::check_keep_alive`]) instead
//! of every connection keeping a timer. The same sweep notices a connection that
//! has been quiet for a while (nothing read, nothing queued: `park_after`) and asks it
//! to park ([`Received::Park`]; see `parking.rs`). A parked connection's queue wakes
//! the parking lot instead of a task, and the sweep does not ask it again.
//! The receiver is polled ([`ReplyReceiver::poll_recv`]) rather than awaited: the
//! connection's idle wait then stores no future for it at all.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use router::Reply;

use crate::credit::CreditWord;

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The origin of `last_read_ms`.
    created: Instant,
    /// When the connection last read from its client, in ms after `created`.
    last_read_ms: AtomicU64,
    /// The connection is closed after this many ms without a read (1.5 × the keep
    /// alive); 0: never.
    keep_alive_ms: u64,
    /// The connection is asked to park after this many ms without a read or a
    /// reply; 0: never.
    park_after_ms: u64,
    /// Set when the receiver is dropped without `said_goodbye`: an atomic, so the
    /// router's sweep reads it without taking the lock.
    abandoned: AtomicBool,
    /// `ACTIVE`, `PARKED` or `NEVER_PARK`: read by the sweep without the lock, so
    /// that parked connections cost it an atomic load.
    parking: AtomicU8,
    /// Replies were pushed since the last sweep (the connection is not quiet).
    pushed: AtomicBool,
    /// When the sweep last found replies pushed, in ms after `created`.
    quiet_since_ms: AtomicU64,
    /// The connection's delivery credit word (see `credit`): here rather than in
    /// an allocation of its own.
    credit: CreditWord,
}

/// The connection has a task (it may be asked to park).
const ACTIVE: u8 = 0;
/// The connection is parked: the waker is the parking lot's; not asked again.
const PARKED: u8 = 1;
/// The connection cannot park (the lot is gone): not asked again.
const NEVER_PARK: u8 = 2;

#[derive(Debug)]
struct State {
    queue: Vec<Reply>,
    max: usize,
    /// The router side is gone: no more replies will come.
    sender_gone: bool,
    /// The connection is gone: replies are dropped.
    receiver_gone: bool,
    /// The connection sent the router its `Disconnect` before going (see
    /// [`ReplySender::abandoned`]).
    said_goodbye: bool,
    /// The server is shutting down: the connection should say so and close.
    shutdown: bool,
    /// An operator asked for the connection to be closed (the admin API).
    kicked: bool,
    /// The client sent nothing for longer than its keep alive allows.
    keep_alive_expired: bool,
    /// The sweep asks the connection to park.
    park: bool,
    /// The connection task waiting for any of the above.
    waker: Option<Waker>,
}

/// What the connection finds in its queue.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// Replies, in the order the router made them.
    Replies(Vec<Reply>),
    /// The server is shutting down.
    Shutdown,
    /// An operator closes the connection ([`Kick`]).
    Kicked,
    /// The broker read nothing from the client within 1.5 × its keep alive. The
    /// connection confirms it (only it sees the socket: bytes may be waiting there
    /// unread) and either closes or takes it back ([`ReplyReceiver::renew_keep_alive`]).
    KeepAliveExpired,
    /// The router side is gone and nothing is left.
    Gone,
    /// Nothing was read or queued for `park_after`: the connection may park (give
    /// up its task until its socket or this queue has something).
    Park,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-written (every
        // critical section is a push or a swap), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why replies could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// More than the bound are waiting: the connection is not taking them.
    Full,
    /// The connection is gone.
    Closed,
}

/// The router thread's end.
#[derive(Debug)]
pub struct ReplySender(Arc<Shared>);

/// The connection's end.
#[derive(Debug)]
pub struct ReplyReceiver(Arc<Shared>);

/// Closes a connection from outside: it finds [`Received::Kicked`] (parked, it is
/// woken for it). Holds the queue weakly: a gone connection is not kept.
#[derive(Debug, Clone)]
pub struct Kick(std::sync::Weak<Shared>);

impl Kick {
    /// Ask the connection to close; false if it is already gone.
    pub fn kick(&self) -> bool {
        let Some(shared) = self.0.upgrade() else {
            return false;
        };
        let waker = {
            let mut state = shared.lock();
            state.kicked = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

/// A queue holding at most `max` replies not yet taken, for a connection that is
/// closed after `keep_alive` without a read, and asked to park after `park_after`
/// without a read or a reply (each if given).
pub fn reply_queue(
    max: usize,
    keep_alive: Option<Duration>,
    park_after: Option<Duration>,
) -> (ReplySender, ReplyReceiver) {
    let ms = |d: Option<Duration>| {
        d.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    };
    let shared = Arc::new(Shared {
        created: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        keep_alive_ms: ms(keep_alive),
        park_after_ms: ms(park_after),
        abandoned: AtomicBool::new(false),
        parking: AtomicU8::new(ACTIVE),
        pushed: AtomicBool::new(false),
        quiet_since_ms: AtomicU64::new(0),
        credit: CreditWord::default(),
        state: Mutex::new(State {
            queue: Vec::new(),
            max,
            sender_gone: false,
            receiver_gone: false,
            said_goodbye: false,
            shutdown: false,
            kicked: false,
            keep_alive_expired: false,
            park: false,
            waker: None,
        }),
    });
    (ReplySender(shared.clone()), ReplyReceiver(shared))
}

impl ReplySender {
    /// The router asked for the connection's delivery credit: take it if the
    /// connection parked it (true: hand it to the router as an `Event::Pull`), or
    /// have the connection return it with a `Pull` (see `credit`).
    pub fn take_or_want_credit(&self) -> bool {
        self.0.credit.take_or_want()
    }

    /// The connection's `Event::Pull` brought the credit (see `credit`).
    pub fn credit_arrived(&self) {
        self.0.credit.arrived();
    }

    /// Queue `replies` (all or none) and wake the connection.
    pub fn push(&self, replies: &mut Vec<Reply>) -> Result<(), PushError> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone || state.sender_gone {
                return Err(PushError::Closed);
            }
            if state.queue.len() + replies.len() > state.max {
                return Err(PushError::Full);
            }
            // Under the lock already; loaded first so that a busy connection's
            // pushes do not write the line every time.
            if !self.0.pushed.load(Ordering::Relaxed) {
                self.0.pushed.store(true, Ordering::Relaxed);
            }
            if state.queue.is_empty() {
                // Hand the batch over as it is: no copy, no allocation.
                std::mem::swap(&mut state.queue, replies);
            } else {
                state.queue.append(replies);
            }
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// True when the connection is gone without having sent the router its
    /// `Disconnect`: its task ended some other way (a panic, or cancelled by the
    /// runtime) and never will. The router must then end the connection itself, or
    /// its session would stay online forever (holding retention back). A connection
    /// that did say goodbye is not abandoned: its `Disconnect` is on the way, and
    /// acting before it would get the will wrong.
    pub fn abandoned(&self) -> bool {
        self.0.abandoned.load(Ordering::Acquire)
    }

    /// Stop queueing for a connection that does not take its replies: what is
    /// queued is dropped, the connection finds the router side gone and closes
    /// (sending its `Disconnect`), and later pushes are refused. The sender is kept,
    /// so [`ReplySender::abandoned`] still notices a task that ends without that
    /// `Disconnect`.
    pub fn close(&self) {
        self.update(|state| {
            state.sender_gone = true;
            state.queue = Vec::new();
        });
    }

    /// Tell the connection the server is shutting down.
    pub fn shut_down(&self) {
        self.update(|state| state.shutdown = true);
    }

    /// Tell the connection to close if its client has sent nothing for longer than
    /// its keep alive allows (as of `now`, read once per sweep); true if so.
    pub fn check_keep_alive(&self, now: Instant) -> bool {
        let shared = &self.0;
        if shared.keep_alive_ms == 0 {
            return false;
        }
        let now = millis_between(shared.created, now);
        let last = shared.last_read_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) <= shared.keep_alive_ms {
            return false;
        }
        self.update(|state| state.keep_alive_expired = true);
        true
    }

    /// Ask the connection to park if nothing was read or queued for `park_after`
    /// (as of `now`); true if so. Not asked again while parked, nor before another
    /// `park_after`. Atomics only, unless the connection has been quiet that long.
    pub fn check_idle(&self, now: Instant) -> bool {
        let shared = &self.0;
        if shared.park_after_ms == 0 || shared.parking.load(Ordering::Relaxed) != ACTIVE {
            return false;
        }
        let now = millis_between(shared.created, now);
        if shared.pushed.swap(false, Ordering::Relaxed) {
            shared.quiet_since_ms.store(now, Ordering::Relaxed);
            return false;
        }
        let last_read = shared.last_read_ms.load(Ordering::Relaxed);
        let quiet_since = shared.quiet_since_ms.load(Ordering::Relaxed).max(last_read);
        if now.saturating_sub(quiet_since) < shared.park_after_ms {
            return false;
        }
        // Asked once per quiet spell: a connection that cannot park now (work in
        // hand) is asked again after another `park_after`.
        shared.quiet_since_ms.store(now, Ordering::Relaxed);
        self.update_if(|state| {
            if state.park || !state.queue.is_empty() {
                return false;
            }
            state.park = true;
            true
        })
    }

    /// Change the state and wake the connection (outside the lock).
    fn update(&self, change: impl FnOnce(&mut State)) {
        self.update_if(|state| {
            change(state);
            true
        });
    }

    /// As [`ReplySender::update`] when `change` says it changed something; that
    /// answer is returned.
    fn update_if(&self, change: impl FnOnce(&mut State) -> bool) -> bool {
        let waker = {
            let mut state = self.0.lock();
            if !change(&mut state) {
                return false;
            }
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        self.update(|state| state.sender_gone = true);
    }
}

impl ReplyReceiver {
    /// Hand the delivery credit back after taking a `Deliver` batch; true when the
    /// router must be told with `Event::Pull` (see `credit`).
    pub fn give_back_credit(&self) -> bool {
        self.0.credit.give_back()
    }

    /// The connection has sent the router its `Disconnect` (see
    /// [`ReplySender::abandoned`]).
    pub fn said_goodbye(&self) {
        self.0.lock().said_goodbye = true;
    }

    /// Take everything queued, or learn of shutdown or the router's end; otherwise
    /// remember the task to wake. Shutdown comes first: queued replies are not
    /// written to a connection that is being closed anyway.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut state = self.0.lock();
        // Polled by a task: no longer parked (a relaxed load first, the usual case).
        if self.0.parking.load(Ordering::Relaxed) == PARKED {
            let _ = self.0.parking.compare_exchange(
                PARKED,
                ACTIVE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if state.shutdown {
            return Poll::Ready(Received::Shutdown);
        }
        if state.kicked {
            return Poll::Ready(Received::Kicked);
        }
        if state.keep_alive_expired {
            return Poll::Ready(Received::KeepAliveExpired);
        }
        if !state.queue.is_empty() {
            return Poll::Ready(Received::Replies(std::mem::take(&mut state.queue)));
        }
        if state.sender_gone {
            return Poll::Ready(Received::Gone);
        }
        if state.park {
            state.park = false;
            return Poll::Ready(Received::Park);
        }
        // Checked and registered under the lock: a push cannot slip in between.
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Park: from now on `lot` is woken instead of the task, and the sweep does
    /// not ask again. Refused (false, nothing taken) when anything is waiting:
    /// the connection carries on and finds it.
    pub fn park(&mut self, lot: &Waker) -> bool {
        let mut state = self.0.lock();
        if state.shutdown
            || state.kicked
            || state.keep_alive_expired
            || !state.queue.is_empty()
            || state.sender_gone
        {
            return false;
        }
        state.park = false;
        state.waker = Some(lot.clone());
        let _ =
            self.0
                .parking
                .compare_exchange(ACTIVE, PARKED, Ordering::Relaxed, Ordering::Relaxed);
        true
    }

    /// A handle that closes this connection from outside (the admin API).
    pub fn kick_handle(&self) -> Kick {
        Kick(Arc::downgrade(&self.0))
    }

    /// The connection cannot park (the parking lot is gone, or refused its socket):
    /// the sweep stops asking.
    pub fn never_park(&self) {
        self.0.parking.store(NEVER_PARK, Ordering::Relaxed);
        self.0.lock().park = false;
    }

    /// Note that the connection read from its client now (for the keep alive).
    pub fn touch(&self) {
        let now = millis_since(self.0.created);
        self.0.last_read_ms.store(now, Ordering::Relaxed);
    }

    /// The client showed it is alive after the keep alive was found expired: note
    /// the read and take the verdict back.
    pub fn renew_keep_alive(&self) {
        self.touch();
        self.0.lock().keep_alive_expired = false;
    }

    /// Wait for what [`ReplyReceiver::poll_recv`] gives.
    pub async fn recv(&mut self) -> Received {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

fn millis_since(t: Instant) -> u64 {
    millis_between(t, Instant::now())
}

fn millis_between(t: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.queue = Vec::new();
        state.waker = None;
        if !state.said_goodbye {
            self.0.abandoned.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router::PacketId;

    /// Wait (yielding to it, at most 100 times) until a task waits on the queue:
    /// it polled the receiver and left its waker.
    async fn until_a_task_waits(tx: &ReplySender) {
        for _ in 0..100 {
            if tx.0.lock().waker.is_some() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("no task waits on the queue");
    }

    #[tokio::test]
    async fn replies_arrive_in_order_and_whole() {
        let (tx, mut rx) = reply_queue(10, None, None);
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        tx.push(&mut vec![
            Reply::PubRel(PacketId(2)),
            Reply::PubRel(PacketId(3)),
        ])
        .unwrap();
        assert_eq!(
            rx.recv().await,
            Received::Replies(vec![
                Reply::PubRel(PacketId(1)),
                Reply::PubRel(PacketId(2)),
                Reply::PubRel(PacketId(3))
            ])
        );
        // A waiting receiver is woken by a later push.
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        until_a_task_waits(&tx).await;
        tx.push(&mut vec![Reply::PubRel(PacketId(4))]).unwrap();
        let (got, mut rx) = waiter.await.unwrap();
        assert_eq!(got, Received::Replies(vec![Reply::PubRel(PacketId(4))]));
        drop(tx);
        assert_eq!(rx.recv().await, Received::Gone, "sender gone, nothing left");
    }

    #[tokio::test]
    async fn shutdown_wakes_the_connection_and_comes_before_replies() {
        let (tx, mut rx) = reply_queue(10, None, None);
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        until_a_task_waits(&tx).await;
        tx.shut_down();
        let (got, mut rx) = waiter.await.unwrap();
        assert_eq!(got, Received::Shutdown);
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        assert_eq!(rx.recv().await, Received::Shutdown);
    }

    /// The sweep's clock is an argument: the checks below pass the instant they
    /// mean rather than sleeping until it. Only the reads (`touch`) take the time
    /// themselves, so where reads are the behaviour under test, time passes for
    /// real between them.
    #[tokio::test]
    async fn keep_alive_expires_only_without_reads() {
        let keep_alive = Duration::from_millis(50);
        let (tx, mut rx) = reply_queue(10, Some(keep_alive), None);
        let made = Instant::now();
        assert!(!tx.check_keep_alive(Instant::now()), "just made");
        // Reads 20 ms apart for longer than the keep alive (the pauses are the
        // behaviour under test): each is checked by a sweep right after it.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            rx.touch();
            assert!(!tx.check_keep_alive(Instant::now()), "reads keep it alive");
        }
        assert!(
            made.elapsed() > keep_alive,
            "reads went on past the keep alive"
        );
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        until_a_task_waits(&tx).await;
        // A sweep 80 ms after the last read.
        assert!(tx.check_keep_alive(Instant::now() + Duration::from_millis(80)));
        let (got, mut rx) = waiter.await.unwrap();
        assert_eq!(got, Received::KeepAliveExpired);
        rx.renew_keep_alive();
        assert!(!tx.check_keep_alive(Instant::now()), "renewed");
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        assert_eq!(
            rx.recv().await,
            Received::Replies(vec![Reply::PubRel(PacketId(1))])
        );
        let (tx, _rx) = reply_queue(10, None, None);
        assert!(
            !tx.check_keep_alive(Instant::now() + Duration::from_secs(3600)),
            "no keep alive, never expires"
        );
    }

    /// As above, the sweeps pass the instant they mean (`now`, moved on by hand);
    /// time passes for real only between reads.
    #[tokio::test]
    async fn a_quiet_connection_is_asked_to_park_once_per_quiet_spell() {
        let park_after = Duration::from_millis(40);
        let (tx, mut rx) = reply_queue(10, None, Some(park_after));
        let made = Instant::now();
        assert!(!tx.check_idle(Instant::now()), "just made");
        // Reads and replies keep it busy. Reads 25 ms apart, for longer than
        // `park_after` (the pauses are the behaviour under test).
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            rx.touch();
            assert!(!tx.check_idle(Instant::now()));
        }
        assert!(made.elapsed() > park_after, "reads went on past park_after");
        // Replies, with sweeps 25 ms apart.
        let mut now = Instant::now();
        for _ in 0..3 {
            now += Duration::from_millis(25);
            tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
            assert!(!tx.check_idle(now), "replies pushed since the last sweep");
            assert!(matches!(rx.recv().await, Received::Replies(_)));
        }
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        until_a_task_waits(&tx).await;
        now += Duration::from_millis(70);
        assert!(tx.check_idle(now));
        let (got, mut rx) = waiter.await.unwrap();
        assert_eq!(got, Received::Park);
        assert!(!tx.check_idle(now), "asked once per quiet spell");

        // Parked: the lot's waker is woken by a push, and the sweep leaves it alone.
        let woken = Arc::new(AtomicBool::new(false));
        assert!(rx.park(&Waker::from(Arc::new(Flag(woken.clone())))));
        now += Duration::from_millis(70);
        assert!(!tx.check_idle(now), "not asked again while parked");
        assert!(!woken.load(Ordering::SeqCst));
        tx.push(&mut vec![Reply::PubRel(PacketId(2))]).unwrap();
        assert!(woken.load(Ordering::SeqCst), "a reply wakes the lot");

        // Something waiting: parking is refused and nothing is taken.
        assert!(!rx.park(&Waker::from(Arc::new(Flag(woken.clone())))));
        assert_eq!(
            rx.recv().await,
            Received::Replies(vec![Reply::PubRel(PacketId(2))])
        );
        let (tx, _rx) = reply_queue(10, None, None);
        assert!(
            !tx.check_idle(Instant::now() + Duration::from_secs(3600)),
            "no park_after, never asked"
        );

        // A connection that cannot park (the lot is gone) is not asked again.
        let (tx, rx) = reply_queue(10, None, Some(park_after));
        rx.never_park();
        assert!(
            !tx.check_idle(Instant::now() + Duration::from_millis(70)),
            "never asked"
        );
    }

    /// The quiet spell starts at the sweep that saw the last reply (a CONNACK, say),
    /// not a sweep later: idle connections park `park_after` after going quiet.
    #[tokio::test]
    async fn the_quiet_spell_starts_at_the_last_reply() {
        let (tx, mut rx) = reply_queue(10, None, Some(Duration::from_millis(40)));
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        assert!(matches!(rx.recv().await, Received::Replies(_)));
        let now = Instant::now();
        assert!(
            !tx.check_idle(now + Duration::from_millis(30)),
            "a reply since the last sweep"
        );
        assert!(
            tx.check_idle(now + Duration::from_millis(80)),
            "quiet for 50 ms since"
        );
    }
    /// A waker that raises a flag.
    struct Flag(Arc<AtomicBool>);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_receiver_gone_without_saying_goodbye_is_abandoned() {
        let (tx, rx) = reply_queue(2, None, None);
        assert!(!tx.abandoned(), "still there");
        drop(rx);
        assert!(tx.abandoned());
        let (tx, rx) = reply_queue(2, None, None);
        rx.said_goodbye();
        assert!(!tx.abandoned(), "said goodbye, still there");
        drop(rx);
        assert!(!tx.abandoned(), "its Disconnect is on the way");
    }

    #[tokio::test]
    async fn bounded_and_closed() {
        let (tx, rx) = reply_queue(2, None, None);
        tx.push(&mut vec![Reply::PubRel(PacketId(1)); 2]).unwrap();
        assert_eq!(
            tx.push(&mut vec![Reply::PubRel(PacketId(2))]),
            Err(PushError::Full)
        );
        drop(rx);
        assert_eq!(
            tx.push(&mut vec![Reply::PubRel(PacketId(3))]),
            Err(PushError::Closed)
        );
    }

    #[tokio::test]
    async fn a_closed_queue_drops_what_it_held_and_takes_no_more() {
        let (tx, mut rx) = reply_queue(2, None, None);
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        tx.close();
        assert_eq!(rx.recv().await, Received::Gone);
        assert_eq!(
            tx.push(&mut vec![Reply::PubRel(PacketId(2))]),
            Err(PushError::Closed)
        );
        assert!(!tx.abandoned(), "its task is still there");
        drop(rx);
        assert!(tx.abandoned(), "and ended without saying goodbye");
    }
}
