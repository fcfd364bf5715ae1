//! Nothing acknowledged is lost: rounds of publishers sending QoS 1 and QoS 2 at full
//! speed while the broker is SIGKILLed at a random moment and restarted on the same
//! data directory. Persistent subscribers must end up with every message whose
//! publisher got a PUBACK / PUBREC: QoS 1 at least once, QoS 2 exactly once, and
//! each publisher's messages first seen in publish order.
//!
//! The clients (`common::durable`) speak MQTT 3.1.1 from raw packets, because they
//! must keep their own session state across the broker's deaths exactly as the
//! protocol says (resend unacknowledged PUBLISHes with DUP and pending PUBRELs;
//! remember inbound QoS 2 ids until PUBREL) and record precisely what was
//! acknowledged.
//!
//! CI runs a few short rounds. A soak: `RUMQ_SOAK_SECS=600 cargo test -p rumq-broker
//! --release --test kill_restart -- --nocapture` (it prints the totals).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, Publisher, Subscriber};
use tokio::task::JoinHandle;

/// Sleep between `lo` and `hi` milliseconds (a cheap xorshift, seeded per call site).
fn jitter(seed: &mut u64, lo: u64, hi: u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(lo + *seed % (hi - lo))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill_at_any_moment() {
    let soak = soak_duration();
    let min_rounds = 4;
    let data = tempfile::tempdir().unwrap();
    let mut seed = std::process::id() as u64 | 1;
    let mut sessions = Sessions::new();
    let started = Instant::now();
    let mut round = 0u32;
    let mut kills = 0u32;
    loop {
        let last = match soak {
            Some(d) => started.elapsed() >= d,
            None => round + 1 >= min_rounds,
        };
        let mut broker = Broker::start_in(data.path(), None);
        let running = sessions.start(broker.port()).await;
        if last {
            tokio::time::sleep(jitter(&mut seed, 300, 800)).await;
            sessions.stop_publishers(running.stop, running.pubs).await;
            // Subscribers end once they hold everything acknowledged. They are
            // reconnected afresh so that `done` sees the final acked sets.
            broker.kill();
            sessions.join_subscribers(running.subs).await;
            sessions.receive_everything_acked(data.path()).await;
            kills += 1;
            break;
        }
        // Kill at a random moment while everything is in full flow.
        tokio::time::sleep(jitter(&mut seed, 150, 1200)).await;
        broker.kill();
        kills += 1;
        sessions.join_publishers(running.pubs).await;
        sessions.join_subscribers(running.subs).await;
        // Order is checked as it goes, so a failure names its round.
        sessions.assert_in_order(round, &broker);
        round += 1;
    }
    let report = sessions.assert_nothing_lost(round + 1, kills, started);
    println!("{report}");
}

/// `RUMQ_SOAK_SECS`: run rounds for this long instead of a few.
fn soak_duration() -> Option<Duration> {
    std::env::var("RUMQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Every client's session, carried from one life of the broker to the next.
struct Sessions {
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
}

/// The clients running against one life of the broker.
struct Running {
    /// Tells the publishers to stop once everything in flight is acknowledged.
    stop: Arc<AtomicBool>,
    /// Each publisher and whether its run ended well (not by the broker's death).
    pubs: Vec<JoinHandle<(Publisher, bool)>>,
    subs: Vec<JoinHandle<Subscriber>>,
}

impl Sessions {
    fn new() -> Sessions {
        Sessions {
            publishers: vec![Publisher::new(1, 1), Publisher::new(2, 2)],
            subscribers: vec![Subscriber::new(1, 1), Subscriber::new(2, 2)],
        }
    }

    /// Run every client against the broker on `port` until it dies (the
    /// publishers: or until told to stop).
    async fn start(&mut self, port: u16) -> Running {
        // Subscribers first (in the first round their SUBACK must precede any publish).
        let mut subs = Vec::new();
        for mut s in self.subscribers.drain(..) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let handle = tokio::spawn(async move {
                let _ = s.run(port, Some(tx), |_| false).await;
                s
            });
            let _ = rx.await;
            subs.push(handle);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pubs: Vec<_> = self
            .publishers
            .drain(..)
            .map(|mut p| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let ok = p.run(port, stop).await.is_ok();
                    (p, ok)
                })
            })
            .collect();
        Running { stop, pubs, subs }
    }

    /// Take the publishers' sessions back after the broker's death.
    async fn join_publishers(&mut self, pubs: Vec<JoinHandle<(Publisher, bool)>>) {
        for h in pubs {
            self.publishers.push(h.await.unwrap().0);
        }
    }

    /// Take the subscribers' sessions back after the broker's death.
    async fn join_subscribers(&mut self, subs: Vec<JoinHandle<Subscriber>>) {
        for h in subs {
            self.subscribers.push(h.await.unwrap());
        }
    }

    /// Stop the publishers; each must end with everything it sent acknowledged,
    /// the broker alive throughout.
    async fn stop_publishers(
        &mut self,
        stop: Arc<AtomicBool>,
        pubs: Vec<JoinHandle<(Publisher, bool)>>,
    ) {
        stop.store(true, Ordering::Relaxed);
        for h in pubs {
            let (p, ok) = h.await.unwrap();
            assert!(ok, "{}: the broker went away in the last round", p.id);
            self.publishers.push(p);
        }
    }

    /// Restart the broker on `data` and reconnect every subscriber until it holds
    /// every message acknowledged to the publishers, within 30 s.
    async fn receive_everything_acked(&mut self, data: &Path) {
        let want: Arc<Vec<Vec<bool>>> =
            Arc::new(self.publishers.iter().map(|p| p.acked.clone()).collect());
        let broker = Broker::start_in(data, None);
        let port = broker.port();
        let mut handles = Vec::new();
        for mut s in self.subscribers.drain(..) {
            let want = want.clone();
            handles.push(tokio::spawn(async move {
                let res = tokio::time::timeout(
                    Duration::from_secs(30),
                    s.run(port, None, move |s| s.has_all(&want)),
                )
                .await;
                assert!(
                    matches!(res, Ok(Ok(()))),
                    "{}: did not receive every acknowledged message",
                    s.id
                );
                s
            }));
        }
        self.join_subscribers(handles).await;
        drop(broker);
    }

    /// Every subscriber so far saw each publisher's messages in publish order.
    fn assert_in_order(&self, round: u32, broker: &Broker) {
        for s in &self.subscribers {
            assert_eq!(
                s.misordered,
                [0, 0],
                "round {round}: {} saw messages out of publish order; broker log:\n{}",
                s.id,
                broker.stderr()
            );
        }
    }

    /// Every subscriber holds every acknowledged message, in order, and at QoS 2
    /// once; returns the totals.
    fn assert_nothing_lost(&self, rounds: u32, kills: u32, started: Instant) -> String {
        let acked: usize = self.publishers.iter().map(Publisher::acked_count).sum();
        let mut report = format!(
            "{rounds} rounds, {kills} SIGKILLs, {acked} messages acknowledged ({}) in {:.1?}",
            self.publishers
                .iter()
                .map(|p| format!("{} QoS {}: {}", p.topic, p.qos, p.acked_count()))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed()
        );
        assert!(acked > 0, "nothing was published: {report}");
        for s in &self.subscribers {
            let (lost, duplicated) = self.losses_of(s);
            let total: u64 = s.received.iter().flatten().map(|n| u64::from(*n)).sum();
            report += &format!(
                "\n{} (QoS {}): received {total}, lost {lost}, QoS 2 duplicates {duplicated}",
                s.id, s.qos
            );
            assert_eq!(lost, 0, "{report}");
            assert_eq!(duplicated, 0, "{report}");
        }
        report
    }

    /// Acknowledged messages `s` never received, and messages it received more than
    /// once where exactly once was promised; asserts publish order on the way.
    fn losses_of(&self, s: &Subscriber) -> (usize, usize) {
        let mut lost = 0;
        let mut duplicated = 0;
        for (i, p) in self.publishers.iter().enumerate() {
            lost += (0..p.acked.len())
                .filter(|seq| p.acked[*seq] && s.times(i, *seq) == 0)
                .count();
            // Exactly once: QoS 2 from the publisher and granted to the subscriber.
            if p.qos == 2 && s.qos == 2 {
                duplicated += s.received[i].iter().filter(|n| **n > 1).count();
            }
            assert_eq!(
                s.misordered[i], 0,
                "{} saw {}'s messages out of publish order",
                s.id, p.topic
            );
        }
        (lost, duplicated)
    }
}
