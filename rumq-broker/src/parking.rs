//! The parking lot: connections that have been quiet for a while wait here without
//! a task of their own.
//!
//! What an idle connection costs is mostly not its own state but tokio's: its task
//! (about 640 bytes, aligned) and its socket's registration with the reactor (256).
//! A fleet keeps most connections idle most of the time, so a connection that has
//! read nothing and been sent nothing for `listener.park_after_ms` gives both up: its
//! socket goes into one epoll set that the lot watches, the rest of it into a slot
//! here (one `Vec` for all of them), and its reply queue's waker becomes the lot's.
//! The first bytes from the client (or its hang-up), or the first reply for it, bring
//! it back: the lot takes it out of its slot and spawns a task for it again, which
//! costs a few microseconds once the connection was quiet for a second.
//!
//! Owns: the epoll set, the slots and the list of slots woken by reply queues. It
//! knows nothing of MQTT: it holds anything that can name its socket and resume
//! itself ([`Parkable`]).
//!
//! Freed task memory lies between allocations that live on, so glibc keeps those
//! pages until asked, and it keeps up to 64 MiB at the top of each heap on purpose
//! (see `heap`): the lot calls `malloc_trim` (at most every 250 ms, after
//! connections parked or ended), which returns the free pages inside the heap to the
//! system.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// How often the lot returns freed memory, if connections parked meanwhile
/// (`malloc_trim` took 0.07–0.7 ms with 9,000 connections).
const TRIM_EVERY: Duration = Duration::from_millis(250);

/// Connections resumed before the lot yields to the runtime.
const RESUME_BATCH: usize = 256;

/// What can wait in the lot.
pub trait Parkable: Send + 'static {
    /// The socket to watch while parked.
    fn fd(&self) -> RawFd;
    /// Go back to work: called (on a runtime thread) when the socket has something or
    /// the parked thing was woken.
    fn resume(self);
}

/// A handle on the lot (cheap to clone); [`Lot::run`] is its task.
#[derive(Debug)]
pub struct Lot<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for Lot<P> {
    fn clone(&self) -> Self {
        Lot {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<P> {
    epoll: OwnedFd,
    slots: Mutex<Slots<P>>,
    /// Tokens whose reply queue woke them; bounded by the number of slots (a parked
    /// connection's waker is taken when it fires, so each wakes the lot once).
    woken: Mutex<Vec<u64>>,
    notify: Notify,
}

#[derive(Debug)]
struct Slots<P> {
    entries: Vec<Slot<P>>,
    /// Indexes of vacant entries.
    free: Vec<u32>,
    /// Connections parked or ended since the last `malloc_trim`.
    left_since_trim: usize,
    /// The lot's task is gone: nothing parks any more.
    closed: bool,
}

#[derive(Debug)]
struct Slot<P> {
    /// Bumped whenever the slot is vacated, so that a stale token (a wake-up that
    /// arrives after its connection left) matches nothing.
    generation: u32,
    entry: Entry<P>,
}

#[derive(Debug)]
enum Entry<P> {
    Vacant,
    /// Being parked (under the slots' lock).
    Reserved,
    Parked(P),
}

fn token(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn untoken(token: u64) -> (usize, u32) {
    // The low half is the index and the high half the generation, by construction.
    ((token & u64::from(u32::MAX)) as usize, (token >> 32) as u32)
}

impl<P> Inner<P> {
    fn slots(&self) -> MutexGuard<'_, Slots<P>> {
        // Every critical section leaves the slots consistent (a whole entry is
        // replaced at a time), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn woken(&self) -> MutexGuard<'_, Vec<u64>> {
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The waker a parked connection's reply queue holds.
struct SlotWaker<P> {
    lot: Weak<Inner<P>>,
    token: u64,
}

impl<P: Send> Wake for SlotWaker<P> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.lot.upgrade() {
            inner.woken().push(self.token);
            inner.notify.notify_one();
        }
    }
}

/// A slot held while a connection parks: the lot's lock is held until
/// [`Reservation::park`] or the reservation is dropped, so a wake-up for the slot
/// is handled only after the connection is in it.
pub struct Reservation<'a, P> {
    inner: &'a Arc<Inner<P>>,
    slots: MutexGuard<'a, Slots<P>>,
    index: u32,
    waker: Waker,
    filled: bool,
}

impl<P> std::fmt::Debug for Reservation<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("index", &self.index)
            .finish()
    }
}

impl<P: Parkable> Lot<P> {
    /// A lot with its epoll set; spawn [`Lot::run`] on the runtime.
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new
        // file descriptor that we own from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and owned by nothing else (just created).
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Lot {
            inner: Arc::new(Inner {
                epoll,
                slots: Mutex::new(Slots {
                    entries: Vec::new(),
                    free: Vec::new(),
                    left_since_trim: 0,
                    closed: false,
                }),
                woken: Mutex::new(Vec::new()),
                notify: Notify::new(),
            }),
        })
    }

    /// Connections parked now.
    #[cfg(test)]
    pub fn parked(&self) -> usize {
        self.inner
            .slots()
            .entries
            .iter()
            .filter(|s| matches!(s.entry, Entry::Parked(_)))
            .count()
    }

    /// Take a slot to park in, with the waker to leave with the reply queue; `None`
    /// once the lot's task is gone.
    pub fn reserve(&self) -> Option<Reservation<'_, P>> {
        let mut slots = self.inner.slots();
        if slots.closed {
            return None;
        }
        let index = match slots.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(slots.entries.len()).ok()?;
                slots.entries.push(Slot {
                    generation: 0,
                    entry: Entry::Vacant,
                });
                i
            }
        };
        let slot = &mut slots.entries[index as usize];
        slot.entry = Entry::Reserved;
        let waker = Waker::from(Arc::new(SlotWaker {
            lot: Arc::downgrade(&self.inner),
            token: token(index, slot.generation),
        }));
        Some(Reservation {
            inner: &self.inner,
            slots,
            index,
            waker,
            filled: false,
        })
    }

    /// The lot's task: resume what is woken, until the runtime drops it (then
    /// whatever is parked is dropped too: see `Closing`).
    pub async fn run(self) {
        let _closing = Closing(self.inner.clone());
        let epoll = EpollFd(self.inner.epoll.as_raw_fd());
        // SAFETY: the epoll fd is owned by `Inner`, which `self` keeps alive for
        // longer than `watched` (a local dropped first) and which never replaces it.
        let watched = match unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) } {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the parking lot; connections will not park");
                return;
            }
        };
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut ready: Vec<u64> = Vec::new();
        let mut trim = tokio::time::interval(TRIM_EVERY);
        trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            std::mem::swap(&mut ready, &mut *self.inner.woken());
            // SAFETY: `events` has room for `len` entries and outlives the call; a
            // timeout of 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.inner.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            let n = usize::try_from(n).unwrap_or_else(|_| {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "parking lot epoll_wait failed");
                }
                0
            });
            ready.extend(events[..n].iter().map(|e| e.u64));
            for (i, token) in ready.drain(..).enumerate() {
                if let Some(p) = self.take(token) {
                    p.resume();
                }
                if i % RESUME_BATCH == RESUME_BATCH - 1 {
                    // Thousands at once (all of them at shutdown): let the
                    // resumed tasks, and everyone else, run in between.
                    tokio::task::yield_now().await;
                }
            }
            if n == events.len() {
                // Perhaps more: the sockets just taken are out of the set, so the
                // next call returns others. Let the resumed tasks run meanwhile.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                r = watched.readable() => match r {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        tracing::error!(error = %e, "parking lot wait failed");
                        return;
                    }
                },
                () = self.inner.notify.notified() => {}
                _ = trim.tick() => self.trim(),
            }
        }
    }

    /// Take a parked connection out of its slot; `None` for a stale token.
    fn take(&self, token: u64) -> Option<P> {
        let (index, generation) = untoken(token);
        let p = {
            let mut slots = self.inner.slots();
            let slot = slots.entries.get_mut(index)?;
            if slot.generation != generation {
                return None;
            }
            match std::mem::replace(&mut slot.entry, Entry::Vacant) {
                Entry::Parked(p) => {
                    slots.vacate(index);
                    p
                }
                other => {
                    // Not parked: cannot happen with this generation (a reservation
                    // holds the lock until its slot is filled), left as it was.
                    slot.entry = other;
                    return None;
                }
            }
        };
        // SAFETY: no pointer is read for EPOLL_CTL_DEL; the fd is open (`p` owns it).
        let r = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                p.fd(),
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            // Harmless: the socket leaves the set when it is closed.
            tracing::debug!(error = %std::io::Error::last_os_error(), "parking lot: EPOLL_CTL_DEL failed");
        }
        Some(p)
    }

    /// A connection ended: the memory it and its messages used can go back to the
    /// system at the next trim.
    pub fn note_ended(&self) {
        self.inner.slots().left_since_trim += 1;
    }

    /// Return the memory freed by connections that parked or ended to the system.
    fn trim(&self) {
        let left = std::mem::take(&mut self.inner.slots().left_since_trim);
        if left == 0 {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim takes no pointers and may be called at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

impl<P: Parkable> Reservation<'_, P> {
    /// The waker to register with the reply queue.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Park `p` in the slot and watch its socket; `Err(p)` if the socket cannot be
    /// watched (then `p` should carry on in a task).
    pub fn park(mut self, p: P) -> Result<(), P> {
        let index = self.index as usize;
        let generation = self.slots.entries[index].generation;
        let mut event = libc::epoll_event {
            // Level-triggered: bytes that arrived before the socket joined the set
            // wake it at once.
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token(self.index, generation),
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; the
        // fd is open (`p` owns it).
        let r = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                p.fd(),
                &mut event,
            )
        };
        if r < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot park a connection");
            return Err(p);
        }
        self.slots.entries[index].entry = Entry::Parked(p);
        self.slots.left_since_trim += 1;
        self.filled = true;
        Ok(())
    }
}

impl<P> Drop for Reservation<'_, P> {
    fn drop(&mut self) {
        if !self.filled {
            self.slots.vacate(self.index as usize);
        }
    }
}

impl<P> Slots<P> {
    /// Empty the slot at `index` for the next connection: a new generation, so that
    /// a late wake-up for the one that left matches nothing.
    fn vacate(&mut self, index: usize) {
        if let Some(slot) = self.entries.get_mut(index) {
            slot.entry = Entry::Vacant;
            slot.generation = slot.generation.wrapping_add(1);
            // Indexes come from `u32` tokens (`Lot::reserve`).
            self.free.push(index as u32);
        }
    }
}

/// The lot's epoll set as tokio watches it (the fd is owned by `Inner`, which
/// outlives the watch).
struct EpollFd(RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// When the lot's task ends (the runtime drops it), nothing may park any more, and
/// what is parked is dropped: each connection's reply queue then tells the router
/// the connection was abandoned, and the router ends it (its will is published).
struct Closing<P>(Arc<Inner<P>>);

impl<P> Drop for Closing<P> {
    fn drop(&mut self) {
        let entries = {
            let mut slots = self.0.slots();
            slots.closed = true;
            slots.free.clear();
            std::mem::take(&mut slots.entries)
        };
        // Dropped outside the lock: dropping a connection takes its queue's lock.
        drop(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;
    use tokio::sync::mpsc;

    type Resumed = mpsc::UnboundedSender<&'static str>;
    type ResumedRx = mpsc::UnboundedReceiver<&'static str>;

    /// A socket that reports its resumption.
    #[derive(Debug)]
    struct Sock {
        stream: UnixStream,
        name: &'static str,
        resumed: Resumed,
    }

    impl Parkable for Sock {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }
        fn resume(self) {
            let _ = self.resumed.send(self.name);
        }
    }

    fn sock(name: &'static str, resumed: &Resumed) -> (Sock, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let s = Sock {
            stream: a,
            name,
            resumed: resumed.clone(),
        };
        (s, b)
    }

    /// A lot with its task running on the test's runtime, and a channel on which
    /// its sockets report their resumption.
    fn running_lot() -> (Lot<Sock>, Resumed, ResumedRx) {
        let lot = Lot::<Sock>::new().unwrap();
        tokio::spawn(lot.clone().run());
        let (resumed, rx) = mpsc::unbounded_channel();
        (lot, resumed, rx)
    }

    /// The next socket resumed, within 2 s.
    async fn next(rx: &mut ResumedRx) -> &'static str {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("nothing resumed within 2 s")
            .expect("the test keeps a sender")
    }

    /// Wait until the lot has been through its loop once more: park a marker, wake
    /// it and wait for it to resume. The pass that resumes it also looks at every
    /// socket parked and every wake-up made before, and on the tests'
    /// single-threaded runtime nothing else runs until that pass is over: whatever
    /// it was going to resume besides the marker is in the channel by then.
    async fn a_pass_of_the_lot(lot: &Lot<Sock>, resumed: &Resumed, rx: &mut ResumedRx) {
        let (marker, _peer) = sock("marker", resumed);
        let spot = lot.reserve().unwrap();
        let waker = spot.waker().clone();
        spot.park(marker).unwrap();
        waker.wake();
        assert_eq!(next(rx).await, "marker", "the lot took its turn");
    }

    #[tokio::test]
    async fn parked_sockets_resume_on_bytes_hang_up_or_their_waker() {
        let (lot, resumed, mut rx) = running_lot();
        let (a, mut a_peer) = sock("a", &resumed);
        let (b, b_peer) = sock("b", &resumed);
        let (c, _c_peer) = sock("c", &resumed);
        lot.reserve().unwrap().park(a).unwrap();
        lot.reserve().unwrap().park(b).unwrap();
        let spot = lot.reserve().unwrap();
        let c_waker = spot.waker().clone();
        spot.park(c).unwrap();
        assert_eq!(lot.parked(), 3);
        a_pass_of_the_lot(&lot, &resumed, &mut rx).await;
        assert!(rx.try_recv().is_err(), "nothing to resume for");
        assert_eq!(lot.parked(), 3);

        a_peer.write_all(b"x").unwrap();
        assert_eq!(next(&mut rx).await, "a");
        drop(b_peer);
        assert_eq!(next(&mut rx).await, "b");
        c_waker.wake_by_ref();
        assert_eq!(next(&mut rx).await, "c");
        assert_eq!(lot.parked(), 0);

        // Each is resumed once: a second wake-up finds its slot vacated (or
        // already taken by another connection: the generation tells them apart).
        let (d, _d_peer) = sock("d", &resumed);
        lot.reserve().unwrap().park(d).unwrap();
        c_waker.wake();
        a_pass_of_the_lot(&lot, &resumed, &mut rx).await;
        assert!(rx.try_recv().is_err(), "stale wake-ups resume nothing");
        assert_eq!(lot.parked(), 1, "d is still parked");
    }

    /// A wake-up that comes while the connection is still parking (its queue is
    /// pushed to between registering the lot's waker and entering the slot) is
    /// handled once it is in: the reservation holds the lot's lock till then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_up_during_parking_is_not_lost() {
        let (lot, resumed, mut rx) = running_lot();
        let (g, _g_peer) = sock("g", &resumed);
        let spot = lot.reserve().unwrap();
        spot.waker().wake_by_ref();
        // The lot, on another thread, takes the wake-up from its list and then
        // waits for the slot, which the reservation holds: park only after that.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !lot.inner.woken().is_empty() {
            assert!(Instant::now() < deadline, "the lot took no wake-up in 2 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        spot.park(g).unwrap();
        assert_eq!(next(&mut rx).await, "g");
        assert_eq!(lot.parked(), 0);
    }

    /// More sockets ready at once than one `epoll_wait` returns: all are resumed,
    /// each once.
    #[tokio::test]
    async fn a_crowd_hanging_up_at_once_is_resumed_whole() {
        let (lot, resumed, mut rx) = running_lot();
        let mut peers = Vec::new();
        for _ in 0..300 {
            let (s, peer) = sock("crowd", &resumed);
            lot.reserve().unwrap().park(s).unwrap();
            peers.push(peer);
        }
        drop(peers);
        for _ in 0..300 {
            assert_eq!(next(&mut rx).await, "crowd");
        }
        a_pass_of_the_lot(&lot, &resumed, &mut rx).await;
        assert!(rx.try_recv().is_err(), "each once");
        assert_eq!(lot.parked(), 0);
    }

    #[tokio::test]
    async fn a_dropped_reservation_frees_its_slot_and_its_waker_wakes_nothing() {
        let (lot, resumed, mut rx) = running_lot();
        let waker = {
            let spot = lot.reserve().unwrap();
            spot.waker().clone()
        };
        let (e, _e_peer) = sock("e", &resumed);
        lot.reserve().unwrap().park(e).unwrap();
        waker.wake();
        a_pass_of_the_lot(&lot, &resumed, &mut rx).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(lot.parked(), 1);
    }

    #[test]
    fn when_the_lots_task_is_gone_nothing_parks_and_the_parked_are_dropped() {
        let (resumed, mut rx) = mpsc::unbounded_channel();
        let (f, f_peer) = sock("f", &resumed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lot = Lot::<Sock>::new().unwrap();
        runtime.spawn(lot.clone().run());
        // Wait for the lot's task to run (a task dropped before it first ran would
        // not close the lot), then drop the runtime and the task with it.
        runtime.block_on(a_pass_of_the_lot(&lot, &resumed, &mut rx));
        lot.reserve().unwrap().park(f).unwrap();
        drop(runtime);
        assert!(lot.reserve().is_none(), "the lot is closed");
        assert_eq!(lot.parked(), 0);
        // Dropped, not resumed: its peer sees the socket closed.
        assert!(rx.try_recv().is_err());
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &f_peer, &mut buf).unwrap(), 0);
    }
}
