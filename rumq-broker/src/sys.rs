//! The `$SYS` topics, with Mosquitto's names where it has them: every `[metrics]
//! sys_interval_secs` (and once at start) this task reads what a metrics scrape
//! reads (one request to the router thread; the edge's counters) and hands the
//! router the values, which it publishes retained at QoS 0 and never stores
//! (`Router::publish_system`). The ACL decides who may read them, as for any topic;
//! no client may publish to `$SYS`.
//!
//! Owns: the topic names, their payload formats, the load averages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, MissedTickBehavior};

use crate::driver::ToRouter;
use crate::metrics::{RouterSnapshot, Sources};

/// The windows of the load averages, with the suffix of their topics.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Publish the `$SYS` topics every `interval` until the router is gone.
pub async fn run(sources: Sources, interval: Duration) {
    let started = Instant::now();
    let mut loads = Loads::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(router) = sources.router.stats().await else {
            // Busy or gone: the send below tells which.
            continue;
        };
        let now = started.elapsed();
        let sample = Sample::read(&router, &sources, now);
        let messages = compose(&sample, &mut loads);
        if sources
            .router
            .send(ToRouter::System(messages))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The values one round publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Since the broker started.
    pub uptime: Duration,
    /// Sessions with a connection.
    pub connected: u64,
    /// Sessions, connected or not.
    pub sessions: u64,
    /// The most connections open at once.
    pub peak: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Messages appended (received from clients, wills included).
    pub received: u64,
    /// Messages handed to connections.
    pub sent: u64,
    /// Retained messages.
    pub retained: u64,
    /// Subscriptions.
    pub subscriptions: u64,
    /// Records in the message log.
    pub stored: u64,
    /// Bytes of the message log on disk.
    pub stored_bytes: u64,
}

impl Sample {
    fn read(router: &RouterSnapshot, sources: &Sources, uptime: Duration) -> Sample {
        let (stored, stored_bytes) = router
            .log
            .map_or((0, 0), |l| (l.head.0.saturating_sub(l.earliest.0), l.bytes));
        Sample {
            uptime,
            connected: router.connected,
            sessions: router.sessions,
            peak: sources.edge.peak.load(Ordering::Relaxed),
            accepted: sources.edge.accepted.load(Ordering::Relaxed),
            received: router.stats.appended,
            sent: router.stats.delivered,
            retained: router.retained,
            subscriptions: router.subscriptions,
            stored,
            stored_bytes,
        }
    }
}

/// Exponentially weighted rates per minute, as Mosquitto's `load` topics.
#[derive(Debug, Clone, Default)]
pub struct Loads {
    last: Option<Sample>,
    /// Received, sent, connections; each over [`WINDOWS`].
    averages: [[f64; 3]; 3],
}

impl Loads {
    /// Fold in `now` and return the averages: received, sent, connections.
    fn update(&mut self, now: &Sample) -> [[f64; 3]; 3] {
        if let Some(last) = self.last {
            let dt = now.uptime.saturating_sub(last.uptime).as_secs_f64();
            if dt > 0.0 {
                let deltas = [
                    now.received.saturating_sub(last.received),
                    now.sent.saturating_sub(last.sent),
                    now.accepted.saturating_sub(last.accepted),
                ];
                for (averages, delta) in self.averages.iter_mut().zip(deltas) {
                    let per_minute = delta as f64 * 60.0 / dt;
                    for (avg, (window, _)) in averages.iter_mut().zip(WINDOWS) {
                        let keep = (-dt / window).exp();
                        *avg = *avg * keep + per_minute * (1.0 - keep);
                    }
                }
            }
        }
        self.last = Some(*now);
        self.averages
    }
}

/// The topics and payloads of one round, as Mosquitto formats them.
pub fn compose(s: &Sample, loads: &mut Loads) -> Vec<(String, Bytes)> {
    let version = format!("rumq version {}", env!("CARGO_PKG_VERSION"));
    let counts = [
        ("version", version),
        ("uptime", format!("{} seconds", s.uptime.as_secs())),
        ("clients/connected", s.connected.to_string()),
        (
            "clients/disconnected",
            (s.sessions - s.connected.min(s.sessions)).to_string(),
        ),
        ("clients/total", s.sessions.to_string()),
        ("clients/maximum", s.peak.to_string()),
        ("messages/received", s.received.to_string()),
        ("messages/sent", s.sent.to_string()),
        ("messages/stored", s.stored.to_string()),
        ("publish/messages/received", s.received.to_string()),
        ("publish/messages/sent", s.sent.to_string()),
        ("retained messages/count", s.retained.to_string()),
        ("subscriptions/count", s.subscriptions.to_string()),
        ("store/messages/count", s.stored.to_string()),
        ("store/messages/bytes", s.stored_bytes.to_string()),
    ];
    let mut out: Vec<(String, Bytes)> = counts
        .into_iter()
        .map(|(name, value)| (format!("$SYS/broker/{name}"), Bytes::from(value)))
        .collect();
    let [received, sent, connections] = loads.update(s);
    let series = [
        ("messages/received", received),
        ("messages/sent", sent),
        ("publish/received", received),
        ("publish/sent", sent),
        ("connections", connections),
    ];
    for (name, averages) in series {
        for (avg, (_, suffix)) in averages.iter().zip(WINDOWS) {
            let topic = format!("$SYS/broker/load/{name}/{suffix}");
            out.push((topic, Bytes::from(format!("{avg:.2}"))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(out: &[(String, Bytes)], topic: &str) -> String {
        let (_, p) = out.iter().find(|(t, _)| t == topic).expect(topic);
        String::from_utf8(p.to_vec()).unwrap()
    }

    #[test]
    fn counts_are_published_under_mosquittos_names() {
        let s = Sample {
            uptime: Duration::from_millis(12_900),
            connected: 3,
            sessions: 5,
            peak: 4,
            received: 100,
            sent: 250,
            retained: 2,
            subscriptions: 7,
            stored: 90,
            stored_bytes: 4096,
            ..Sample::default()
        };
        let out = compose(&s, &mut Loads::default());
        assert_eq!(payload(&out, "$SYS/broker/uptime"), "12 seconds");
        assert_eq!(payload(&out, "$SYS/broker/clients/connected"), "3");
        assert_eq!(payload(&out, "$SYS/broker/clients/disconnected"), "2");
        assert_eq!(payload(&out, "$SYS/broker/clients/total"), "5");
        assert_eq!(payload(&out, "$SYS/broker/clients/maximum"), "4");
        assert_eq!(payload(&out, "$SYS/broker/messages/received"), "100");
        assert_eq!(payload(&out, "$SYS/broker/publish/messages/sent"), "250");
        assert_eq!(payload(&out, "$SYS/broker/retained messages/count"), "2");
        assert_eq!(payload(&out, "$SYS/broker/subscriptions/count"), "7");
        assert_eq!(payload(&out, "$SYS/broker/store/messages/bytes"), "4096");
        assert_eq!(
            payload(&out, "$SYS/broker/load/messages/received/1min"),
            "0.00"
        );
        assert!(payload(&out, "$SYS/broker/version").starts_with("rumq version "));
        assert!(out
            .iter()
            .all(|(t, _)| router::topic::validate_name(t).is_ok()));
        assert_eq!(out.len(), 15 + 5 * 3);
    }

    #[test]
    fn a_steady_rate_is_the_load_of_every_window_once_it_has_run_long_enough() {
        let mut loads = Loads::default();
        let mut last = [[0.0; 3]; 3];
        // 10 messages a second (600 a minute), 6 connections a minute, for an hour.
        for step in 0..=360u64 {
            let s = Sample {
                uptime: Duration::from_secs(step * 10),
                received: step * 100,
                sent: step * 300,
                accepted: step,
                ..Sample::default()
            };
            last = loads.update(&s);
            if step == 6 {
                // One minute in: the 1-minute average has most of the way.
                assert!(last[0][0] > 350.0 && last[0][0] < 600.0, "{last:?}");
                assert!(last[0][2] < last[0][0], "the 15-minute one is slower");
            }
        }
        for (avg, want) in last.iter().zip([600.0, 1800.0, 6.0]) {
            for a in avg {
                assert!((a - want).abs() / want < 0.05, "{a} vs {want}");
            }
        }
    }
}
