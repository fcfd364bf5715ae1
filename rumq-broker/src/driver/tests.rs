//! The driver's tests: a router over real logs, driven through the request channel.

use std::sync::Arc;

use router::Connect;

use super::*;
use crate::replies::{reply_queue, Received};
use rumq_broker::interner::TopicInterner;

/// A router over real logs in `dir` (as the broker opens them).
fn open_router(dir: &std::path::Path) -> Router<Log> {
    let config = crate::config::Config {
        data_dir: dir.into(),
        ..crate::config::Config::default()
    };
    crate::server::open_router(&config).unwrap()
}

/// A router over real logs in `dir`, run by the driver on its own thread.
fn start_with(dir: &std::path::Path) -> (RouterTx, std::thread::JoinHandle<Option<Router<Log>>>) {
    let router = open_router(dir);
    let (tx, thread) = channel(router, 16, 64, true);
    (tx, std::thread::spawn(move || thread.run()))
}

/// Send a CONNECT for `conn` with a reply queue of `max`; returns the queue's
/// connection end.
fn send_connect(
    tx: &RouterTx,
    conn: ConnectionId,
    connect: Connect,
    max: usize,
) -> crate::replies::ReplyReceiver {
    let (replies, rx) = reply_queue(max, None, None);
    tx.blocking_send(ToRouter::Connect {
        conn,
        connect,
        replies,
    })
    .unwrap();
    rx
}

/// A will on "w" for connection 1 ("c", reply queue of `c_queue`), and a
/// subscriber on "w" (connection 2, pulling). Returns the driver and both
/// connection ends of the reply queues.
struct WillScenario {
    tx: RouterTx,
    thread: std::thread::JoinHandle<Option<Router<Log>>>,
    sub: crate::replies::ReplyReceiver,
    c: crate::replies::ReplyReceiver,
}

const C: ConnectionId = ConnectionId(1);
const SUB: ConnectionId = ConnectionId(2);

/// A QoS 0 will on "w".
fn will_on_w(topics: &TopicInterner) -> router::Publication {
    router::Publication {
        topic: topics.intern("w").unwrap(),
        qos: router::QoS::AtMostOnce,
        retain: false,
        record: router::NewMessage::new(router::QoS::AtMostOnce, false, 0, "w", b"bye").framed(),
    }
}

fn will_scenario(dir: &std::path::Path, c_queue: usize) -> WillScenario {
    let topics = Arc::new(TopicInterner::new(1000));
    let (tx, thread) = start_with(dir);
    let sub = send_connect(&tx, SUB, Connect::v3("s", true, None), 1024);
    tx.blocking_send(ToRouter::Event(Event::Subscribe {
        conn: SUB,
        pkid: router::PacketId(1),
        filters: vec![router::Subscription::new("w", router::QoS::AtMostOnce)],
        id: None,
    }))
    .unwrap();
    tx.blocking_send(ToRouter::Event(Event::Pull { conn: SUB }))
        .unwrap();
    let will = will_on_w(&topics);
    let c = send_connect(&tx, C, Connect::v3("c", true, Some(will)), c_queue);
    WillScenario { tx, thread, sub, c }
}

impl WillScenario {
    /// Let a sweep pass (the router thread wakes for its ticks, and sweeps
    /// when one is due).
    fn sweep(&self) {
        std::thread::sleep(QUEUE_SWEEP + TICK * 3);
    }

    /// Whether the will reached the subscriber within `wait`, while the driver
    /// is still running.
    fn will_delivered(&mut self, wait: Duration) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let sub = &mut self.sub;
        rt.block_on(async {
            tokio::time::timeout(wait, async {
                loop {
                    match sub.recv().await {
                        Received::Replies(r) => {
                            if r.iter().any(|x| matches!(x, Reply::Deliver(_))) {
                                return true;
                            }
                        }
                        _ => return false,
                    }
                }
            })
            .await
            .unwrap_or(false)
        })
    }

    fn stop(self) -> Router<Log> {
        drop(self.tx);
        self.thread.join().unwrap().unwrap()
    }
}

/// Records, in order, the names of the queues whose wakers were woken.
struct WakeLog {
    name: u64,
    woken: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl std::task::Wake for WakeLog {
    fn wake(self: Arc<Self>) {
        self.woken.lock().unwrap().push(self.name);
    }
}

#[test]
fn the_router_ticks_on_the_time_the_driver_is_handed() {
    // A session that expires 60 s after its connection drops: the driver's
    // periodic work, given times rather than reading a clock, ticks the router
    // with them, and the session ends exactly when that time says so.
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = mpsc::channel(1);
    let t0 = Now::read();
    let mut core = Core {
        router: open_router(dir.path()),
        conns: Conns::new(t0.mono),
        batches: IdMap::default(),
        rx,
    };
    let (replies, _rx) = reply_queue(16, None, None);
    let conn = ConnectionId(1);
    let mut connect = Connect::v3("dev", false, None);
    connect.session_expiry = 60;
    apply(
        &mut core.router,
        &mut core.conns,
        ToRouter::Connect {
            conn,
            connect,
            replies,
        },
    );
    let disconnect = Event::Disconnect {
        conn,
        reason: DisconnectReason::Normal,
        session_expiry: None,
    };
    apply(
        &mut core.router,
        &mut core.conns,
        ToRouter::Event(disconnect),
    );
    let at = |ms: u64| Now {
        mono: t0.mono + Duration::from_millis(ms),
        wall: t0.wall + Duration::from_millis(ms),
    };
    // Not a tick yet: less than TICK since the last one.
    core.periodic(at(1));
    assert_eq!(core.router.session_count(), 1);
    // The first tick arms the session's expiry at its wall time.
    core.periodic(at(100));
    core.periodic(at(200 + 59_000));
    assert_eq!(core.router.session_count(), 1, "59 s after: still there");
    core.periodic(at(200 + 60_100));
    assert_eq!(core.router.session_count(), 0, "60 s after: expired");
}

#[test]
fn deliveries_are_handed_over_before_acknowledgements() {
    // One dispatch holds the PUBACKs of several publishers and the deliveries to
    // several subscribers: every subscriber must be woken before any publisher,
    // so a woken runtime writes the messages out first.
    let dir = tempfile::tempdir().unwrap();
    let topics = Arc::new(TopicInterner::new(1000));
    let mut router = open_router(dir.path());
    let mut conns = Conns::new(Instant::now());
    let mut batches = IdMap::default();
    let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut receivers = Vec::new();
    let subscribers: Vec<u64> = (1..=8).collect();
    let publishers: Vec<u64> = (9..=16).collect();
    for &n in subscribers.iter().chain(&publishers) {
        let (replies, rx) = reply_queue(1024, None, None);
        let conn = ConnectionId(n);
        let connect = Connect::v3(format!("c{n}"), true, None);
        apply(
            &mut router,
            &mut conns,
            ToRouter::Connect {
                conn,
                connect,
                replies,
            },
        );
        receivers.push((n, rx));
    }
    for &n in &subscribers {
        let conn = ConnectionId(n);
        let filters = vec![router::Subscription::new("t", router::QoS::AtLeastOnce)];
        let pkid = router::PacketId(1);
        let subscribe = Event::Subscribe {
            conn,
            pkid,
            filters,
            id: None,
        };
        apply(&mut router, &mut conns, ToRouter::Event(subscribe));
        apply(
            &mut router,
            &mut conns,
            ToRouter::Event(Event::Pull { conn }),
        );
    }
    dispatch(&mut router, &mut conns, &mut batches);
    // Take what the set-up sent, and leave each queue with a waker that logs.
    for (n, rx) in &mut receivers {
        let waker = std::task::Waker::from(Arc::new(WakeLog {
            name: *n,
            woken: woken.clone(),
        }));
        let mut cx = std::task::Context::from_waker(&waker);
        while rx.poll_recv(&mut cx).is_ready() {}
    }
    for &n in &publishers {
        let message = router::Publication {
            topic: topics.intern("t").unwrap(),
            qos: router::QoS::AtLeastOnce,
            retain: false,
            record: router::NewMessage::new(router::QoS::AtLeastOnce, false, 0, "t", b"m").framed(),
        };
        let conn = ConnectionId(n);
        let publish = Event::Publish {
            conn,
            pkid: Some(router::PacketId(1)),
            message,
        };
        apply(&mut router, &mut conns, ToRouter::Event(publish));
    }
    dispatch(&mut router, &mut conns, &mut batches);
    let woken = woken.lock().unwrap().clone();
    let (first, then) = woken.split_at(subscribers.len().min(woken.len()));
    assert_eq!(sorted(first), subscribers, "woken in order: {woken:?}");
    assert_eq!(sorted(then), publishers, "woken in order: {woken:?}");
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

#[test]
fn a_connection_task_gone_without_a_disconnect_is_ended_by_the_sweep() {
    // A panicked task never sends its Disconnect: without the sweep its clean
    // session would stay online (holding retention back), its will unsent.
    let dir = tempfile::tempdir().unwrap();
    let mut w = will_scenario(dir.path(), 64);
    drop(std::mem::replace(&mut w.c, reply_queue(1, None, None).1));
    w.sweep();
    assert!(w.will_delivered(Duration::from_secs(2)));
    assert_eq!(w.stop().session_count(), 1, "only the subscriber's");
}

#[test]
fn a_connection_that_said_goodbye_is_left_to_its_own_disconnect() {
    // Its Disconnect (with the reason that decides the will) is on the way; the
    // driver must not act first.
    let dir = tempfile::tempdir().unwrap();
    let mut w = will_scenario(dir.path(), 64);
    w.c.said_goodbye();
    drop(std::mem::replace(&mut w.c, reply_queue(1, None, None).1));
    w.sweep();
    assert!(!w.will_delivered(Duration::from_millis(300)));
    w.tx.blocking_send(ToRouter::Event(Event::Disconnect {
        conn: C,
        reason: DisconnectReason::Normal,
        session_expiry: None,
    }))
    .unwrap();
    assert!(
        !w.will_delivered(Duration::from_millis(300)),
        "DISCONNECT discards it"
    );
    assert_eq!(w.stop().session_count(), 1);
}

#[test]
fn connections_whose_tasks_were_cancelled_are_ended_when_the_router_stops() {
    let dir = tempfile::tempdir().unwrap();
    let w = will_scenario(dir.path(), 64);
    // Cancelled at shutdown: gone without a Disconnect, and no sweep comes.
    let WillScenario { tx, thread, sub, c } = w;
    drop(c);
    drop(tx);
    let router = thread.join().unwrap().unwrap();
    assert_eq!(router.session_count(), 1, "only the subscriber's");
    assert_eq!(router.stats().appended, 1, "the will was published");
    drop(sub);
}

#[test]
fn a_connection_whose_reply_queue_overflows_is_ended_unless_it_says_goodbye() {
    for says_goodbye in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Room for the CONNACK only, and the connection does not read.
        let mut w = will_scenario(dir.path(), 1);
        w.tx.blocking_send(ToRouter::Event(Event::Subscribe {
            conn: C,
            pkid: router::PacketId(1),
            filters: vec![router::Subscription::new("t", router::QoS::AtLeastOnce)],
            id: None,
        }))
        .unwrap();
        if says_goodbye {
            // The client's DISCONNECT was read just as the queue overflowed: the
            // connection's Disconnect comes, and the will must not go.
            w.tx.blocking_send(ToRouter::Event(Event::Disconnect {
                conn: C,
                reason: DisconnectReason::Normal,
                session_expiry: None,
            }))
            .unwrap();
        } else {
            // Told to close, its task ends without a Disconnect (a panic).
            drop(std::mem::replace(&mut w.c, reply_queue(1, None, None).1));
        }
        w.sweep();
        std::thread::sleep(QUEUE_SWEEP);
        w.sweep();
        assert_eq!(w.will_delivered(Duration::from_secs(1)), !says_goodbye);
        assert_eq!(w.stop().session_count(), 1);
    }
}

/// Records the thread each wake-up of a reply queue came from.
struct WakeThreads(std::sync::Mutex<Vec<std::thread::ThreadId>>);

impl std::task::Wake for WakeThreads {
    fn wake(self: Arc<Self>) {
        self.0.lock().unwrap().push(std::thread::current().id());
    }
}

/// Poll `rx` once with a waker that records where it is woken from; true if
/// replies were there.
fn replies_there(rx: &mut crate::replies::ReplyReceiver, woken: &Arc<WakeThreads>) -> bool {
    let waker = std::task::Waker::from(woken.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    matches!(
        rx.poll_recv(&mut cx),
        std::task::Poll::Ready(Received::Replies(_))
    )
}

/// Nine subscriptions in one request: more events than a light one carries.
fn heavy_subscribe(conn: ConnectionId) -> ToRouter {
    let subscribe = |n: u16| Event::Subscribe {
        conn,
        pkid: router::PacketId(n),
        filters: vec![router::Subscription::new("t", router::QoS::AtMostOnce)],
        id: None,
    };
    ToRouter::Events((1..=LIGHT_EVENTS_MAX as u16 + 1).map(subscribe).collect())
}

/// A router whose thread is not started yet, marked asleep as its thread leaves
/// it when it parks (so nothing but the sender can apply a request), and a
/// runtime to send from; then connection `C`'s CONNECT, sent. Returns the reply
/// queue's connection end with a waker that records where it was woken from.
struct Sleeping {
    tx: RouterTx,
    thread: RouterThread,
    rt: tokio::runtime::Runtime,
    rx: crate::replies::ReplyReceiver,
    woken: Arc<WakeThreads>,
}

fn sleeping_router_and_a_connect(dir: &std::path::Path, inline: bool) -> Sleeping {
    let (tx, thread) = channel(open_router(dir), 16, 64, inline);
    tx.driver.asleep.store(true, Ordering::SeqCst);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (replies, mut rx) = reply_queue(1024, None, None);
    let woken = Arc::new(WakeThreads(std::sync::Mutex::new(Vec::new())));
    assert!(!replies_there(&mut rx, &woken));
    let connect = Connect::v3("c", true, None);
    rt.block_on(tx.send(ToRouter::Connect {
        conn: C,
        connect,
        replies,
    }))
    .unwrap();
    Sleeping {
        tx,
        thread,
        rt,
        rx,
        woken,
    }
}

impl Sleeping {
    /// Start the router thread; wait until `rx` was woken `times` in all;
    /// stop the router. Returns the reply queue's end and its wake-ups.
    fn run_until_woken(self, times: usize) -> (crate::replies::ReplyReceiver, Arc<WakeThreads>) {
        let Sleeping {
            tx,
            thread,
            rx,
            woken,
            ..
        } = self;
        let thread = std::thread::spawn(move || thread.run());
        let until = Instant::now() + Duration::from_secs(5);
        while woken.0.lock().unwrap().len() < times {
            assert!(Instant::now() < until, "the router thread applied it");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(tx);
        thread.thread().unpark();
        assert_eq!(thread.join().unwrap().unwrap().session_count(), 1);
        (rx, woken)
    }
}

#[test]
fn a_light_request_is_applied_by_its_sender_while_the_router_thread_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sleeping_router_and_a_connect(dir.path(), true);
    let here = std::thread::current().id();
    assert_eq!(*s.woken.0.lock().unwrap(), [here], "applied by the sender");
    assert!(
        replies_there(&mut s.rx, &s.woken),
        "the CONNACK came with `send`"
    );
    // A heavy request waits for the router thread, which applies it.
    s.rt.block_on(s.tx.send(heavy_subscribe(C))).unwrap();
    assert!(
        !replies_there(&mut s.rx, &s.woken),
        "not applied by the sender"
    );
    let (mut rx, woken) = s.run_until_woken(2);
    assert_ne!(woken.0.lock().unwrap()[1], here, "on the router thread");
    assert!(replies_there(&mut rx, &woken), "the SUBACKs");
}

#[test]
fn without_inline_a_light_request_waits_for_the_router_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sleeping_router_and_a_connect(dir.path(), false);
    assert!(
        !replies_there(&mut s.rx, &s.woken),
        "not applied by the sender"
    );
    let (mut rx, woken) = s.run_until_woken(1);
    assert_ne!(woken.0.lock().unwrap()[0], std::thread::current().id());
    assert!(replies_there(&mut rx, &woken), "the CONNACK");
}

#[test]
fn the_router_ticks_while_busy() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Arc::new(TopicInterner::new(1000));
    let (tx, thread) = start_with(dir.path());
    // A will delayed by a second: only a tick (its timers) publishes it.
    let will = will_on_w(&topics);
    let conn = ConnectionId(1);
    // The session outlives the delay (a session's end would publish it at once).
    let connect = Connect {
        will_delay: 1,
        session_expiry: 60,
        ..Connect::v3("a", true, Some(will))
    };
    let _rx = send_connect(&tx, conn, connect, 1024);
    tx.blocking_send(ToRouter::Event(Event::Disconnect {
        conn,
        reason: DisconnectReason::Abrupt,
        session_expiry: None,
    }))
    .unwrap();
    // Keep the router busy for 1.5 s with other events: it ticks by the clock
    // all the same.
    let other = ConnectionId(2);
    let _rx2 = send_connect(&tx, other, Connect::v3("b", true, None), 1 << 20);
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pkid = 0u16;
    while Instant::now() < until {
        pkid = pkid % 60_000 + 1;
        tx.blocking_send(ToRouter::Event(Event::Unsubscribe {
            conn: other,
            pkid: router::PacketId(pkid),
            filters: vec!["x".into()],
        }))
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(tx);
    let router = thread.join().unwrap().unwrap();
    assert_eq!(router.stats().appended, 1, "the delayed will was published");
}
