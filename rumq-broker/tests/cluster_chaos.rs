//! Chaos: three broker processes on 127.0.0.1 as a cluster, a QoS 1 and a QoS 2
//! publisher and a QoS 1 and a QoS 2 persistent subscriber, each client on a node
//! and moving to the next one (round robin) whenever its connection ends, while
//! every few seconds one node, picked at random, is SIGKILLed and restarted on its
//! data directory. The clients (`common::durable`) keep their MQTT session state
//! across connections as the protocol says.
//!
//! Checked at the end, once every node is back and the publishers have stopped:
//! - every message acknowledged to a publisher reached every subscriber;
//! - the QoS 2 subscriber got the QoS 2 publisher's messages once each;
//! - within one subscriber connection, each publisher's messages came in the order
//!   it sent them, across its connections and the nodes it moved between (bar
//!   those it sent again, DUP, on a later connection);
//! - the replicas of every log agree with their writer byte for byte, as far as
//!   each goes (a copy retired meanwhile is not compared);
//! - the logs that restarts left behind are retired and removed as the run goes
//!   (two seconds after no node needs them), and nothing is lost to it.
//!
//! CI runs it for `RUMQ_CHAOS_SECS` (default 40). A soak:
//! `RUMQ_CHAOS_SECS=1800 cargo test -p rumq-broker --release --test cluster_chaos --
//! --nocapture` (it prints the totals); `RUMQ_CHAOS_ACK_COPIES=3` runs it with
//! `ack_copies` 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commitlog::{Log, LogConfig, Offset, ReadLimits};
use common::*;
use tokio::task::JoinHandle;

/// Each node's MQTT port now (it changes when the node restarts).
type Ports = Arc<Mutex<[u16; 3]>>;

fn duration() -> Duration {
    let secs = std::env::var("RUMQ_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    Duration::from_secs(secs)
}

/// `cluster.ack_copies` of the nodes: 2, or `RUMQ_CHAOS_ACK_COPIES` (with 3, nothing
/// is acknowledged while a node is down).
fn ack_copies() -> usize {
    std::env::var("RUMQ_CHAOS_ACK_COPIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// A cheap xorshift, seeded: the run's kills are one seed's.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Run a client on node `first`, then on the next one each time its connection
/// ends, until `run` says it is done (true).
async fn roam<C, F, Fut>(
    mut client: C,
    first: usize,
    ports: Ports,
    stop: Arc<AtomicBool>,
    run: F,
) -> C
where
    F: Fn(C, u16) -> Fut,
    Fut: std::future::Future<Output = (C, bool)>,
{
    let mut node = first;
    // Bounded: a client that never gets through fails the test at the end.
    for _ in 0..100_000 {
        let port = ports.lock().unwrap()[node];
        let (c, done) = run(client, port).await;
        client = c;
        if done {
            break;
        }
        node = (node + 1) % 3;
        if stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    client
}

/// With `RUMQ_CHAOS_LOGS=FILE`, append a node's log to FILE (to see, after a
/// failure, what each node did).
fn save_log(label: &str, text: &str) {
    if let Ok(path) = std::env::var("RUMQ_CHAOS_LOGS") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "==== {label}\n{text}").unwrap();
    }
}

/// Kill a random node every 3 to 5 s, and start it again 0.5 to 1.5 s later,
/// until `until`; returns the number of kills, and of the logs the killed runs
/// retired.
async fn kill_and_restart(
    nodes: &mut [DurableNode; 3],
    ports: &Ports,
    until: Instant,
    seed: u64,
) -> (u32, usize) {
    let mut rng = Rng(seed | 1);
    let mut kills = 0;
    let mut retired = 0;
    while Instant::now() + Duration::from_secs(5) < until {
        tokio::time::sleep(Duration::from_millis(3000 + rng.below(2000))).await;
        let k = rng.below(3) as usize;
        if let Some(mut b) = nodes[k].broker.take() {
            b.kill();
            retired += b.stderr().matches(RETIRED).count();
            save_log(&format!("node {} killed", k + 1), &b.stderr());
        }
        kills += 1;
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
        let port = nodes[k].start();
        ports.lock().unwrap()[k] = port;
    }
    (kills, retired)
}

/// What a node logs when it retires a log no node needs any more.
const RETIRED: &str = "retired a log";

/// Three nodes, started and replicating each other; their ports in `ports`.
fn start_cluster(ports: &Ports) -> [DurableNode; 3] {
    // The logs earlier runs left behind are removed two seconds after every
    // node is done with them (checked every second), so that the kills and
    // restarts run into it, and a soak's disk use stays bounded.
    let retire = "superseded_logs_keep_ms = 2000\n[router]\nretention_interval_ms = 1000\n";
    let nodes = durable_cluster_of(ack_copies(), 1000, retire);
    for (k, n) in nodes.iter().enumerate() {
        ports.lock().unwrap()[k] = n.running().port();
    }
    nodes
}

/// What the subscribers must hold at the end, and until when they try.
type Want = Arc<Mutex<Option<(Vec<Vec<bool>>, Instant)>>>;

/// The QoS 1 and QoS 2 subscribers, roaming from nodes 1 and 2; each says through
/// its flag once it has subscribed.
fn spawn_subscribers(
    ports: &Ports,
    stop: &Arc<AtomicBool>,
    want: &Want,
) -> (Vec<JoinHandle<Subscriber>>, Vec<Arc<AtomicBool>>) {
    let flags: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let handles = [(1u8, 1u8, 0usize), (2, 2, 1)]
        .into_iter()
        .zip(flags.clone())
        .map(|((n, qos, first), subscribed)| {
            let want = want.clone();
            let run = move |mut s: Subscriber, port| {
                let (want, subscribed) = (want.clone(), subscribed.clone());
                async move {
                    let done = move |s: &mut Subscriber| {
                        subscribed.store(s.subscribed, Ordering::Relaxed);
                        (want.lock().unwrap().as_ref())
                            .is_some_and(|(w, until)| s.has_all(w) || Instant::now() > *until)
                    };
                    let ok = s.run(port, None, done).await.is_ok();
                    (s, ok)
                }
            };
            let s = Subscriber::new(n, qos);
            tokio::spawn(roam(s, first, ports.clone(), stop.clone(), run))
        })
        .collect();
    (handles, flags)
}

/// The QoS 1 and QoS 2 publishers, roaming from nodes 2 and 3 until `stop`.
fn spawn_publishers(ports: &Ports, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Publisher>> {
    [(1u8, 1u8, 1usize), (2, 2, 2)]
        .into_iter()
        .map(|(n, qos, first)| {
            let stop_run = stop.clone();
            let run = move |mut p: Publisher, port| {
                let stop = stop_run.clone();
                async move {
                    let ok = p.run(port, stop).await.is_ok();
                    (p, ok)
                }
            };
            let p = Publisher::new(n, qos);
            tokio::spawn(roam(p, first, ports.clone(), stop.clone(), run))
        })
        .collect()
}

/// Each task's client, once it ended within `within` (`what` says what it waited for).
async fn joined<C>(handles: Vec<JoinHandle<C>>, within: Duration, what: &str) -> Vec<C> {
    let mut out = Vec::new();
    for h in handles {
        let c = tokio::time::timeout(within, h)
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .unwrap();
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_while_nodes_die() {
    let started = Instant::now();
    let ports: Ports = Arc::new(Mutex::new([0; 3]));
    let mut nodes = start_cluster(&ports);
    let stop = Arc::new(AtomicBool::new(false));
    let want: Want = Arc::new(Mutex::new(None));
    let (subs, subscribed) = spawn_subscribers(&ports, &stop, &want);
    // The publishers start once both subscriptions are in place.
    for _ in 0..500 {
        if subscribed.iter().all(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pubs = spawn_publishers(&ports, &stop);
    let until = started + duration();
    let (kills, mut retired) =
        kill_and_restart(&mut nodes, &ports, until, u64::from(std::process::id())).await;
    // Every node is up: the publishers stop once all they sent is acknowledged.
    stop.store(true, Ordering::Relaxed);
    let publishers = joined(
        pubs,
        Duration::from_secs(60),
        "a publisher did not get everything acknowledged in 60 s",
    )
    .await;
    let acked = publishers.iter().map(|p| p.acked.clone()).collect();
    *want.lock().unwrap() = Some((acked, Instant::now() + Duration::from_secs(30)));
    let subscribers = joined(
        subs,
        Duration::from_secs(90),
        "a subscriber task did not end in 90 s",
    )
    .await;
    for (k, n) in nodes.iter().enumerate() {
        let log = n.broker.as_ref().map(Broker::stderr).unwrap_or_default();
        retired += log.matches(RETIRED).count();
        save_log(&format!("node {} at the end", k + 1), &log);
    }
    let report = check(&publishers, &subscribers, kills, started);
    for n in &mut nodes {
        if let Some(mut b) = n.broker.take() {
            b.terminate(Duration::from_secs(10));
        }
    }
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.data.path().to_path_buf()).collect();
    let compared = replicas_agree(&dirs);
    let kept: usize = (dirs.iter())
        .flat_map(|d| ["messages", "replicas"].map(|sub| runs(&d.join(sub)).len()))
        .sum();
    let mib = dirs.iter().map(|d| bytes_under(d)).sum::<u64>() >> 20;
    println!(
        "ack_copies {}: {report}; {retired} logs retired, {kept} kept ({mib} MiB in the \
         three data directories); {compared} replicas compared with their writers",
        ack_copies()
    );
}

/// Every subscriber holds every acknowledged message, QoS 2 once, and in order
/// within connections; the totals.
fn check(
    publishers: &[Publisher],
    subscribers: &[Subscriber],
    kills: u32,
    started: Instant,
) -> String {
    let acked: usize = publishers.iter().map(Publisher::acked_count).sum();
    assert!(acked > 100, "only {acked} messages acknowledged");
    let mut duplicates = 0usize;
    for s in subscribers {
        for (p, publisher) in publishers.iter().enumerate() {
            let lost: Vec<usize> = (publisher.acked.iter().enumerate())
                .filter(|(seq, ok)| **ok && s.times(p, *seq) == 0)
                .map(|(seq, _)| seq)
                .collect();
            assert!(
                lost.is_empty(),
                "{}: {} of {}'s acknowledged messages lost, the first {:?}, first sent on {}; the subscriber's connections (port, opened): {:?}",
                s.id,
                lost.len(),
                publisher.id,
                &lost[..lost.len().min(20)],
                lost.first().map(|seq| publisher.origin(*seq as u64)).unwrap_or_default(),
                s.ports.iter().zip(&s.opened).collect::<Vec<_>>()
            );
            let twice = s.received[p].iter().filter(|n| **n > 1).count();
            if s.qos == 2 && publisher.qos == 2 {
                assert_eq!(twice, 0, "{}: {} QoS 2 messages twice", s.id, publisher.id);
            }
            duplicates += twice;
        }
        let misordered: Vec<_> = (s.out_of_order.iter())
            .filter(|(p, seq)| !publishers[*p].resent.contains(seq))
            .collect();
        assert!(
            misordered.is_empty(),
            "{}: {} out of order within a connection, the first {:?}",
            s.id,
            misordered.len(),
            &misordered[..misordered.len().min(20)]
        );
    }
    format!(
        "{:.1?}, {kills} SIGKILLs, {acked} messages acknowledged, 0 lost, {duplicates} QoS 1 duplicates, 0 QoS 2 duplicates, order kept",
        started.elapsed()
    )
}

/// For every log a node wrote (`messages/<node>.<run>`), each other node's replica
/// of it (`replicas/<node>.<run>`) holds the same records as far as it goes; how
/// many replicas were compared.
fn replicas_agree(dirs: &[PathBuf]) -> usize {
    let mut compared = 0;
    for (k, dir) in dirs.iter().enumerate() {
        for writer in runs(&dir.join("messages")) {
            let own = records(&dir.join("messages").join(&writer));
            for (j, other) in dirs.iter().enumerate() {
                let replica = other.join("replicas").join(&writer);
                if j == k || !replica.exists() {
                    continue;
                }
                let copy = records(&replica);
                let n = copy.len().min(own.len());
                assert_eq!(copy[..n], own[..n], "node {}'s replica of {writer}", j + 1);
                compared += 1;
            }
        }
    }
    compared
}

/// The bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    (entries.flatten())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The logs in `dir` (a removal the end of the run cut short left a
/// `.removing` directory: not one).
fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| !name.ends_with(".removing"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every record of the log in `dir`, from its start.
fn records(dir: &Path) -> Vec<bytes::Bytes> {
    let log = Log::open(dir, LogConfig::default()).unwrap();
    let mut out = Vec::new();
    let mut at = Offset(0);
    while at < log.head() {
        let limits = ReadLimits {
            records_max: 4096,
            bytes_max: 16 << 20,
        };
        let batch = log.read(at, limits, &mut out).unwrap();
        at = batch.next;
    }
    out
}
