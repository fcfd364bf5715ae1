//! The scenarios. Each prints one `key=value` line that `benches/compare.sh` reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use mqttbytes::v4::{Packet, PubAck, PubComp, PubRec};
use mqttbytes::QoS;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::client::{self, enc, Conn};
use super::payload;
use super::publisher;
use super::tracker::Tracker;

/// How a throughput run is shaped.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Publishers.
    pub pubs: usize,
    /// Subscribers.
    pub subs: usize,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Payload bytes (at least the 20-byte header).
    pub payload: usize,
    /// Messages per publisher.
    pub messages: u64,
    /// Each publisher on its own topic (subscribers then use a wildcard).
    pub distinct_topics: bool,
    /// Subscribers use `bench/+` instead of the exact topic.
    pub wildcard: bool,
    /// Each publisher spreads its messages round-robin over this many topics of its
    /// own (1: a single topic); subscribers then use `bench/+`.
    pub topics: usize,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    pub window: usize,
    /// Give up when nothing arrives for this long.
    pub idle_timeout: Duration,
    /// Where the subscribers connect, when not where the publishers do: one address
    /// or several, comma-separated, taken in turn (the nodes of a cluster).
    pub sub_addr: Option<String>,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubResult {
    trackers: Vec<Tracker>,
    deliveries: u64,
    last: Option<Instant>,
    latency: Option<Histogram<u64>>,
}

/// Read publishes until `expected` distinct messages arrived (or the broker went
/// quiet for `idle`), acknowledging as a stock client does.
async fn subscriber(
    mut c: Conn,
    publishers: usize,
    expected: u64,
    idle: Duration,
    epoch: Instant,
    record_latency: bool,
) -> anyhow::Result<SubResult> {
    let mut r = SubResult {
        trackers: vec![Tracker::default(); publishers],
        latency: record_latency.then(micros_histogram).transpose()?,
        ..SubResult::default()
    };
    let mut distinct = 0u64;
    let mut out = BytesMut::with_capacity(16 * 1024);
    while distinct < expected {
        while let Some(p) = c.reader.try_next()? {
            match p {
                Packet::Publish(p) => {
                    r.deliveries += 1;
                    if let Some((publisher, seq, sent)) = payload::read(&p.payload) {
                        if let Some(t) = r.trackers.get_mut(publisher as usize) {
                            let before = t.received();
                            t.saw(seq);
                            distinct += t.received() - before;
                        }
                        if let Some(h) = r.latency.as_mut() {
                            let now = payload::since(epoch);
                            h.saturating_record(now.saturating_sub(sent) / 1000);
                        }
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => enc(PubAck::new(p.pkid).write(&mut out))?,
                        QoS::ExactlyOnce => enc(PubRec::new(p.pkid).write(&mut out))?,
                    }
                }
                Packet::PubRel(rel) => enc(PubComp::new(rel.pkid).write(&mut out))?,
                _ => {}
            }
        }
        r.last = Some(Instant::now());
        if !out.is_empty() {
            c.wr.write_all(&out).await?;
            out.clear();
        }
        if distinct >= expected {
            break;
        }
        match tokio::time::timeout(idle, c.reader.fill()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("subscriber: the broker closed the connection"),
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(r)
}

/// The outcome of a throughput run.
#[derive(Debug)]
pub struct ThroughputResult {
    /// Deliveries per second over all subscribers.
    pub deliveries_per_s: f64,
    /// Payload megabytes per second delivered.
    pub mb_per_s: f64,
    /// Distinct messages received over all subscribers.
    pub received: u64,
    /// Expected over all subscribers.
    pub expected: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Reorderings within a publisher's sequence.
    pub reordered: u64,
    /// Acknowledged publishes.
    pub acked: u64,
    /// Seconds from the first publish to the last delivery.
    pub seconds: f64,
}

/// Run a throughput scenario against `addr`.
pub async fn throughput(addr: &str, t: &Throughput) -> anyhow::Result<ThroughputResult> {
    let qos = client::qos(t.qos)?;
    let epoch = Instant::now();
    let expected_each = t.messages * t.pubs as u64;
    let sub_addrs: Vec<&str> = t
        .sub_addr
        .as_deref()
        .map_or_else(|| vec![addr], |a| a.split(',').collect());
    let subs = start_subscribers(&sub_addrs, t, qos, expected_each, epoch).await?;
    let conns = connect_publishers(addr, t.pubs).await?;
    let start = Instant::now();
    let pubs = start_publishers(conns, t, qos, epoch);
    let mut acked = 0;
    for p in pubs {
        acked += p.await??;
    }
    let mut r = ThroughputResult {
        deliveries_per_s: 0.0,
        mb_per_s: 0.0,
        received: 0,
        expected: expected_each * t.subs as u64,
        duplicates: 0,
        reordered: 0,
        acked,
        seconds: 0.0,
    };
    let (deliveries, last) = tally_subscribers(subs, start, &mut r).await?;
    r.seconds = (last - start).as_secs_f64().max(1e-9);
    r.deliveries_per_s = deliveries as f64 / r.seconds;
    r.mb_per_s = deliveries as f64 * t.payload as f64 / r.seconds / 1e6;
    Ok(r)
}

/// The subscribers' filter: the wildcard when there is more than one topic or it
/// was asked for.
fn subscription_filter(t: &Throughput) -> &'static str {
    if t.distinct_topics || t.wildcard || t.topics > 1 {
        "bench/+"
    } else {
        "bench/t"
    }
}

/// Connect and subscribe `t.subs` subscribers, each then reading on a task of its
/// own until it has `expected_each` distinct messages.
async fn start_subscribers(
    addrs: &[&str],
    t: &Throughput,
    qos: QoS,
    expected_each: u64,
    epoch: Instant,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<SubResult>>>> {
    let filter = subscription_filter(t);
    let mut subs = Vec::new();
    for i in 0..t.subs {
        // Round robin over the addresses (the nodes of a cluster).
        let addr = addrs[i % addrs.len()];
        let mut c = client::connect(addr, &format!("bench-sub-{i}"), true).await?;
        c.subscribe(filter, qos).await?;
        subs.push(tokio::spawn(subscriber(
            c,
            t.pubs,
            expected_each,
            t.idle_timeout,
            epoch,
            false,
        )));
    }
    Ok(subs)
}

/// Connect `n` publishers (before any starts, so that none waits on another's
/// handshake).
async fn connect_publishers(addr: &str, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for i in 0..n {
        conns.push(client::connect(addr, &format!("bench-pub-{i}"), true).await?);
    }
    Ok(conns)
}

/// The topics publisher `i` spreads its messages over.
fn publisher_topics(t: &Throughput, i: usize) -> Vec<String> {
    if t.topics > 1 {
        (0..t.topics).map(|k| format!("bench/p{i}-{k}")).collect()
    } else if t.distinct_topics {
        vec![format!("bench/p{i}")]
    } else {
        vec!["bench/t".to_string()]
    }
}

/// Start a publisher task on each connection, as fast as its window allows.
fn start_publishers(
    conns: Vec<Conn>,
    t: &Throughput,
    qos: QoS,
    epoch: Instant,
) -> Vec<JoinHandle<anyhow::Result<u64>>> {
    conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let plan = publisher::Plan {
                id: i as u32,
                topics: Arc::new(publisher_topics(t, i)),
                qos,
                count: t.messages,
                size: t.payload,
                window: t.window,
                rate: None,
                epoch,
            };
            tokio::spawn(publisher::publisher(c, plan))
        })
        .collect()
}

/// Wait for every subscriber and add up what they saw into `r`; returns the
/// deliveries and the time of the last one (`start` if none).
async fn tally_subscribers(
    subs: Vec<JoinHandle<anyhow::Result<SubResult>>>,
    start: Instant,
    r: &mut ThroughputResult,
) -> anyhow::Result<(u64, Instant)> {
    let mut last = start;
    let mut deliveries = 0u64;
    for s in subs {
        let s = s.await??;
        deliveries += s.deliveries;
        if let Some(l) = s.last {
            last = last.max(l);
        }
        for tr in &s.trackers {
            r.received += tr.received();
            r.duplicates += tr.duplicates();
            r.reordered += tr.reordered();
        }
    }
    Ok((deliveries, last))
}

/// Latency percentiles in microseconds.
#[derive(Debug)]
pub struct LatencyResult {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Messages measured.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
}

/// One publisher at a fixed rate to one subscriber; latency from each message's
/// write to its arrival.
///
/// Each client has a thread and a single-threaded runtime of its own, as two stock
/// clients in two processes would: on a multi-threaded runtime, a message's arrival
/// also measured the wake-up of whichever worker got the subscriber's task, and on
/// this 2-core machine that was most of it (Mosquitto's median read about 220 µs;
/// a single-threaded C client measured 17 µs).
pub async fn latency(
    (addr, sub_addr): (&str, Option<&str>),
    rate: f64,
    seconds: f64,
    qos: u8,
    size: usize,
) -> anyhow::Result<LatencyResult> {
    let q = client::qos(qos)?;
    let epoch = Instant::now();
    let count = (rate * seconds) as u64;
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    // The subscriber on `sub_addr` when given (another node of a cluster).
    let sub_addr = sub_addr.unwrap_or(addr).to_string();
    let s = on_own_thread(move || async move {
        let mut sub = client::connect(&sub_addr, "bench-lat-sub", true).await?;
        sub.subscribe("bench/lat", q).await?;
        let _ = subscribed_tx.send(());
        subscriber(sub, 1, count, Duration::from_secs(5), epoch, true).await
    })?;
    if subscribed.await.is_err() {
        // The subscriber's thread ended before subscribing: its error says why.
        s.await?;
        bail!("the subscriber ended before it subscribed");
    }
    let pub_addr = addr.to_string();
    let p = on_own_thread(move || async move {
        let c = client::connect(&pub_addr, "bench-lat-pub", true).await?;
        let plan = publisher::Plan {
            id: 0,
            topics: Arc::new(vec!["bench/lat".to_string()]),
            qos: q,
            count,
            size,
            window: 1000,
            rate: Some(rate),
            epoch,
        };
        publisher::publisher(c, plan).await
    })?;
    p.await?;
    let r = s.await?;
    let h = r.latency.context("no histogram")?;
    Ok(LatencyResult {
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        received: r.trackers.iter().map(Tracker::received).sum(),
        sent: count,
    })
}

/// Start running the future `make` returns on a new thread, in a single-threaded
/// runtime of its own; returns its result to await (without blocking the caller's
/// runtime).
fn on_own_thread<T, F, M>(
    make: M,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<T>>>
where
    T: Send + 'static,
    F: std::future::Future<Output = anyhow::Result<T>>,
    M: FnOnce() -> F + Send + 'static,
{
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rumq-load-client".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a client runtime")
                .and_then(|rt| rt.block_on(make()));
            let _ = done_tx.send(result);
        })
        .context("cannot start a client thread")?;
    Ok(async move { done.await.context("a client thread panicked")? })
}

/// The longest time a histogram tells apart, µs; longer ones count as this.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// A histogram of microseconds up to a minute, 3 significant digits.
/// (`Histogram::new` starts tiny and grows only on `record`: `saturating_record`
/// clamps instead, and once counted every time over 2,047 µs as 2 µs.)
pub(crate) fn micros_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_max(HISTOGRAM_MAX_US, 3)
}

/// Open `n` idle connections; returns (connect time p50 µs, p99 µs, the connections).
pub async fn idle_connections(addr: &str, n: usize) -> anyhow::Result<(u64, u64, Vec<Conn>)> {
    let mut h = micros_histogram()?;
    let mut conns = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0usize;
    while conns.len() < n {
        while next < n && pending.len() < 64 {
            let addr = addr.to_string();
            let id = format!("bench-idle-{next}");
            pending.spawn(async move {
                let t = Instant::now();
                let c = client::connect(&addr, &id, true).await;
                (t.elapsed(), c)
            });
            next += 1;
        }
        let Some(done) = pending.join_next().await else {
            break;
        };
        let (took, c) = done?;
        h.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        conns.push(c?);
    }
    Ok((h.value_at_quantile(0.5), h.value_at_quantile(0.99), conns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_times_are_counted_as_long() {
        let mut h = micros_histogram().unwrap();
        for us in [150, 2_500, 2_600, 40_000, 90_000_000] {
            h.saturating_record(us);
        }
        assert_eq!(h.value_at_quantile(0.5), h.highest_equivalent(2_600));
        assert_eq!(h.max(), h.highest_equivalent(HISTOGRAM_MAX_US));
        assert_eq!(h.min(), 150);
    }
}
