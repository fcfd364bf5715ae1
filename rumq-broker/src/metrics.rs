//! The Prometheus endpoint (`[metrics] listen`; off when absent): `GET /metrics` in
//! the text exposition format, and `GET /health`.
//!
//! Nothing on the hot path is counted twice for it. At each scrape the router thread
//! is asked for the counters it keeps anyway ([`RouterStats`], sessions, retained
//! messages, both logs' sizes): one request on its channel, answered in its next
//! iteration. The edge adds the few counts nothing else keeps (connections accepted
//! and refused, [`EdgeCounters`]), and the open connections are the permits in use.
//! `prometheus-client` encodes them, from a registry built for the scrape.
//!
//! Owns: the HTTP listener, the scrape, the metric names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use commitlog::timing::HistogramSnapshot;
use commitlog::LogStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;
use router::RouterStats;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cluster_view::{self, ClusterView};
use crate::driver::RouterTx;

/// What the router thread reports at a scrape.
#[derive(Debug, Clone, Default)]
pub struct RouterSnapshot {
    /// Its counters.
    pub stats: RouterStats,
    /// Sessions held (online and offline).
    pub sessions: u64,
    /// Sessions with a connection.
    pub connected: u64,
    /// Subscriptions, all sessions' (not counting shared ones).
    pub subscriptions: u64,
    /// Retained messages.
    pub retained: u64,
    /// The message log.
    pub log: Option<LogStats>,
    /// The session journal.
    pub journal: Option<LogStats>,
    /// How long the router's iterations took.
    pub iterations: HistogramSnapshot,
    /// The most messages a connected session has queued, and in flight.
    pub backlog_max: (usize, usize),
    /// In a cluster: this node's log and replicas.
    pub mesh: Option<router::MeshStatus>,
    /// In a cluster: the peers whose data link is up.
    pub links_up: Vec<u8>,
}

/// Counts only the edge knows, each kept in one place.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused at `limits.max_connections`.
    pub refused_full: AtomicU64,
    /// CONNECTs refused for a bad user name or password, or no user name.
    pub refused_auth: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub refused_tls: AtomicU64,
    /// The most connections open at once.
    pub peak: AtomicU64,
}

impl EdgeCounters {
    /// Count one.
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a scrape reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The router's channel.
    pub router: RouterTx,
    /// The edge's counts.
    pub edge: Arc<EdgeCounters>,
    /// The connection permits, of `max_connections`.
    pub permits: Arc<Semaphore>,
    /// `limits.max_connections`.
    pub max_connections: usize,
    /// In a cluster: the metadata group (its Raft metrics).
    pub meta: Option<meta::Meta>,
}

/// Serve `/metrics` and `/health` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sources: Sources) {
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(sources);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}

async fn scrape(State(sources): State<Sources>) -> impl IntoResponse {
    let router = match sources.router.stats().await {
        Some(snapshot) => snapshot,
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the router did not answer\n".to_owned(),
            )
                .into_response()
        }
    };
    let open = sources.max_connections - sources.permits.available_permits();
    let cluster = cluster_of(&router, sources.meta.as_ref());
    let scrape = Scrape {
        cluster,
        router,
        edge: sources.edge.clone(),
        open: open as u64,
    };
    let mut registry = Registry::with_prefix("rumq");
    registry.register_collector(Box::new(scrape));
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One scrape's values, encoded by [`Collector::encode`].
#[derive(Debug)]
struct Scrape {
    router: RouterSnapshot,
    cluster: Option<ClusterView>,
    edge: Arc<EdgeCounters>,
    open: u64,
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, value) in self.counters() {
            let c = ConstCounter::new(value);
            c.encode(out.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, value) in self.gauges() {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(out.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let s = &self.router.stats;
        let by_qos = [
            (
                "messages_received",
                "Messages received from clients and appended, by QoS (wills included).",
                s.received_by_qos,
            ),
            (
                "messages_sent",
                "Messages sent to clients, by the QoS they were sent with.",
                s.delivered_by_qos,
            ),
        ];
        let bytes = [
            ("received_bytes", "Stored record bytes (topic, properties, payload, header) of the messages received, by QoS.", s.received_bytes_by_qos),
            ("sent_bytes", "Stored record bytes of the messages sent, by QoS.", s.delivered_bytes_by_qos),
        ];
        for (name, help, counts) in by_qos.into_iter().chain(bytes) {
            let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (qos, n) in ["0", "1", "2"].into_iter().zip(counts) {
                ConstCounter::new(n).encode(family.encode_family(&[("qos", qos)])?)?;
            }
        }
        let (append, fsync) = (self.router.log)
            .map(|l| (l.append_time, l.fsync_time))
            .unwrap_or_default();
        let histograms = [
            ("log_append", "Append batches to the message log: the write, and the fsync under fsync = \"always\" (what a QoS 1/2 ack waits for on one node).", append),
            ("log_fsync", "fsyncs of the message log: under fsync = \"always\" each append's fdatasync; under \"interval\" each background job (the active segment, or a sealed segment and its directory).", fsync),
            ("router_iteration", "Router iterations that applied requests: the requests, the append, the replies handed out.", self.router.iterations),
        ];
        for (name, help, h) in histograms {
            encode_histogram(&mut out, name, help, &h)?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.encode(&mut out)?;
        }
        Ok(())
    }
}

/// The cluster as the snapshot and the metadata group show it; `None` on one node.
pub fn cluster_of(router: &RouterSnapshot, meta: Option<&meta::Meta>) -> Option<ClusterView> {
    let mesh = router.mesh.as_ref()?;
    let node = meta.map_or(0, |m| m.node().0);
    Some(cluster_view::view(node, mesh, &router.links_up, meta))
}

/// `h` as a Prometheus histogram `rumq_<name>_seconds`.
fn encode_histogram(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = out.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    let sum = h.sum_ns as f64 / 1e9;
    m.encode_histogram::<NoLabelSet>(sum, h.count(), &h.buckets_seconds(), None)
}

/// A metric's name (after the `rumq_` prefix), help and value.
type Sample = (&'static str, &'static str, u64);

impl Scrape {
    fn counters(&self) -> [Sample; 11] {
        let edge = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.router.stats;
        [
            (
                "connections_accepted",
                "Connections accepted.",
                edge(&self.edge.accepted),
            ),
            (
                "connections_refused_full",
                "Connections refused at limits.max_connections.",
                edge(&self.edge.refused_full),
            ),
            (
                "connections_refused_auth",
                "CONNECTs refused: bad user name or password, or anonymous.",
                edge(&self.edge.refused_auth),
            ),
            (
                "connections_refused_tls",
                "TLS handshakes that failed (a refused or missing client certificate, not TLS) or did not finish within limits.connect_timeout_ms.",
                edge(&self.edge.refused_tls),
            ),
            (
                "messages_appended",
                "Messages appended to the log.",
                s.appended,
            ),
            (
                "append_batches",
                "Appends (one write each).",
                s.append_batches,
            ),
            (
                "messages_delivered",
                "Messages handed to connections.",
                s.delivered,
            ),
            (
                "messages_lost_to_retention",
                "Messages a session needed that retention removed first.",
                s.lost_to_retention,
            ),
            (
                "storage_errors",
                "Failed appends (message log or session journal).",
                s.storage_errors,
            ),
            (
                "journal_checkpoints",
                "Session journal checkpoints written.",
                s.checkpoints,
            ),
            (
                "shared_dropped",
                "Messages for a shared group none of whose members could take them.",
                s.shared_dropped,
            ),
        ]
    }

    fn gauges(&self) -> Vec<Sample> {
        let mut gauges = vec![
            ("connections", "Connections open.", self.open),
            (
                "sessions",
                "Sessions held, online and offline.",
                self.router.sessions,
            ),
            (
                "retained_messages",
                "Retained messages.",
                self.router.retained,
            ),
            (
                "sessions_offline",
                "Persistent sessions without a connection.",
                self.router.sessions.saturating_sub(self.router.connected),
            ),
            (
                "subscriptions",
                "Subscriptions, all sessions' (not shared ones).",
                self.router.subscriptions,
            ),
            (
                "session_queued_max",
                "The most messages one connected session has matched and not yet sent.",
                self.router.backlog_max.0 as u64,
            ),
            (
                "session_inflight_max",
                "The most QoS 1/2 messages one connected session has unacknowledged.",
                self.router.backlog_max.1 as u64,
            ),
        ];
        for (prefix, stats) in [("log", &self.router.log), ("journal", &self.router.journal)] {
            if let Some(l) = stats {
                gauges.extend(log_gauges(prefix, l));
            }
        }
        gauges
    }
}

fn log_gauges(prefix: &str, l: &LogStats) -> [Sample; 3] {
    let journal = prefix == "journal";
    [
        (
            if journal {
                "journal_bytes"
            } else {
                "log_bytes"
            },
            "Bytes on disk, data and index.",
            l.bytes,
        ),
        (
            if journal {
                "journal_segments"
            } else {
                "log_segments"
            },
            "Segments on disk.",
            l.segments as u64,
        ),
        (
            if journal {
                "journal_records"
            } else {
                "log_records"
            },
            "Records retained (head - earliest).",
            l.head.distance_from(l.earliest),
        ),
    ]
}
