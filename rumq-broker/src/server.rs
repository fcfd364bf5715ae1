//! The server: opens the message log and the session journal (the router replays the
//! journal: persistent sessions and retained messages come back after a clean stop
//! or a crash alike), starts the router thread, accepts connections (within
//! `max_connections`), and on SIGTERM / Ctrl-C stops accepting, lets every connection
//! end, lets the router append what it has, and closes both logs cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use commitlog::{Log, LogConfig, RetentionConfig};
use router::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::accept_rate::AcceptRate;
use crate::acl::{AclFile, AclSource};
use crate::admin;
use crate::cluster_node::{self, NodeLinks};
use crate::config::cluster::ClusterConfig;
use crate::config::Config;
use crate::conn_threads::ConnThreads;
use crate::connection::Shared;
use crate::driver::{self, RouterTx, ToRouter};
use crate::metrics::{self, EdgeCounters};
use crate::owners::Owners;
use crate::passwords::{Checker, Passwords};
use crate::sys;
use crate::tls::Edge;
use rumq_broker::interner::TopicInterner;
use rumq_broker::meta_links::MetaLinks;
use rumq_broker::peer_stream::PeerTls;
use rumq_broker::peers::Peers;

/// Requests the router thread drains per flush after the first (see `driver::channel`).
const ROUTER_DRAIN_MAX: usize = 4096;
/// The router's request channel.
const ROUTER_CHANNEL: usize = 8192;
/// How long shutdown waits for connections to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Sockets accepted on `[[listeners]]` waiting for the accept loop; past it their
/// listeners' tasks wait (and the kernel's backlog holds the rest).
const ACCEPTED_QUEUE: usize = 64;
/// The message log, in the data directory.
const MESSAGES_DIR: &str = "messages";
/// The session journal (persistent sessions and retained messages), in the data
/// directory.
const STATE_DIR: &str = "state";

/// Open the message log and the session journal in `config.data_dir`, and the
/// router over them (replaying the journal).
pub(crate) fn open_router(config: &Config) -> anyhow::Result<Router<Log>> {
    let log_dir = config.data_dir.join(MESSAGES_DIR);
    let log = Log::open(&log_dir, config.storage.clone())
        .with_context(|| format!("cannot open the message log in {}", log_dir.display()))?;
    let state_dir = config.data_dir.join(STATE_DIR);
    let journal = Log::open(&state_dir, journal_config(&config.storage))
        .with_context(|| format!("cannot open the session journal in {}", state_dir.display()))?;
    Router::open(config.router.clone(), log, journal)
        .with_context(|| format!("cannot restore the sessions from {}", state_dir.display()))
}

/// What the start read beside the configuration (`main::load_files`).
pub struct StartFiles {
    /// The password file's users.
    pub passwords: Option<Passwords>,
    /// The `[[listeners]]` entries' edges (TLS, WebSockets), in their order.
    pub edges: Vec<Edge>,
    /// The ACL file.
    pub acl: Option<AclFile>,
    /// In a cluster with `[cluster] tls_*`: the peer links' TLS.
    pub peer_tls: Option<PeerTls>,
}

/// What the edges check: passwords, the ACL, and the listeners' TLS and WebSockets.
type Edges = (Option<Arc<Checker>>, Option<Arc<AclSource>>, Vec<Edge>);

/// Run the broker until a shutdown signal; with `cluster`, as a node of it.
pub fn run(
    config: Config,
    files: StartFiles,
    cluster: Option<ClusterConfig>,
) -> anyhow::Result<()> {
    let topics = Arc::new(TopicInterner::new(config.limits.topics_max));
    let (router, node) = match &cluster {
        None => (open_router(&config)?, None),
        Some(c) => {
            let (router, node) = crate::cluster_node::open(&config, c, files.peer_tls.clone())?;
            (router, Some(node))
        }
    };
    let (side, links) = match node {
        Some(n) => (Some(n.side), Some(n.links)),
        None => (None, None),
    };
    // Before any connection, every session held is a restored persistent one.
    let (sessions, retained) = (router.session_count(), router.retained_count());
    if sessions + retained > 0 {
        tracing::info!(
            sessions,
            retained,
            "restored persistent sessions and retained messages"
        );
    }
    // With `fsync = "always"` every flush waits for the disk: never on a
    // connection's thread.
    let inline = config.listener.inline_router && config.storage.fsync != commitlog::Fsync::Always;
    let (router_tx, router) =
        driver::channel_with_peers(router, (ROUTER_CHANNEL, ROUTER_DRAIN_MAX), inline, side);
    let router_thread = std::thread::Builder::new()
        .name("rumq-router".into())
        .spawn(move || router.run())
        .context("cannot start the router thread")?;

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = config.listener.connection_threads_for(cores);
    let conn_threads = ConnThreads::start(threads, config.listener.park_after_ms > 0)?;
    // The accept loop and the signals: a runtime of their own, on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let config = Arc::new(config);
    let checker = files.passwords.map(|p| {
        tracing::info!(users = p.len(), "password file loaded");
        Arc::new(Checker::new(p, config.auth.password_checks_max))
    });
    let served = runtime.block_on(serve(
        config,
        topics,
        (router_tx, links),
        conn_threads,
        (
            checker,
            files.acl.map(|a| Arc::new(AclSource::new(a))),
            files.edges,
        ),
    ));
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Every sender is gone now: the router thread drains, appends and returns (woken
    // here rather than at its next timeout).
    router_thread.thread().unpark();
    let router = router_thread
        .join()
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("the router panicked"))?;
    let (log, journal) = router.into_storage();
    log.close()
        .context("cannot close the message log cleanly")?;
    if let Some(journal) = journal {
        journal
            .close()
            .context("cannot close the session journal cleanly")?;
    }
    tracing::info!("stopped");
    served
}

/// How much larger than the message log's records the session journal's may be: a
/// record of ops of about 1 MiB, and one op holding a whole retained message.
pub(crate) const JOURNAL_RECORD_ROOM_BYTES: u32 = 2 * 1024 * 1024;

/// The session journal's log: synced like the message log, small segments (a
/// checkpoint makes older ones obsolete), records large enough for a retained
/// message, and no retention (the router removes what a checkpoint supersedes).
pub(crate) fn journal_config(messages: &LogConfig) -> LogConfig {
    let record_bytes_max = messages
        .record_bytes_max
        .saturating_add(JOURNAL_RECORD_ROOM_BYTES);
    LogConfig {
        segment_bytes_max: (32 * 1024 * 1024).max(u64::from(record_bytes_max) + 64),
        index_bytes_max: 1024 * 1024,
        index_interval_bytes: 0,
        record_bytes_max,
        tail_bytes_max: 0,
        // Small appends, read back only at startup: files as long as their data.
        preallocate: false,
        // Read back only at startup; its pages are few and go with their segments.
        drop_behind: false,
        verify_reads: true,
        fsync: messages.fsync,
        fsync_interval_ms: messages.fsync_interval_ms,
        retention: RetentionConfig {
            bytes_max: 0,
            segments_max: 0,
            age_ms_max: 0,
            hold_bytes_max: 0,
        },
    }
}

async fn serve(
    config: Arc<Config>,
    topics: Arc<TopicInterner>,
    (router_tx, links): (RouterTx, Option<NodeLinks>),
    mut conn_threads: ConnThreads,
    (passwords, acl, edges): Edges,
) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let owners = match links {
        Some(links) => Some(start_cluster(links, &router_tx).await?),
        None => None,
    };
    if passwords.is_some() || acl.is_some() {
        reload_on_sighup(config.clone(), (passwords.clone(), acl.clone()))?;
    }
    let Listeners {
        mqtt: listener,
        extra,
        metrics: metrics_listener,
        admin: admin_listener,
    } = bind_listeners(&config, edges).await?;

    let lots = conn_threads.lots();
    let mut shared = Shared::new(config.clone(), topics, router_tx, lots);
    shared.passwords = passwords;
    shared.acl = acl;
    shared.clients = admin_listener.is_some().then(Arc::default);
    shared.owners = owners.clone();
    let shared = Arc::new(shared);
    // A connection holds a permit until its task ends: the permits count the
    // connections, and shutdown waits for all of them to come back. (A `JoinSet`
    // would keep an entry per connection as well: 56 more bytes each.)
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let sys = observe(
        &config,
        &shared,
        &permits,
        (metrics_listener, admin_listener),
    );
    let accepting = Accepting {
        shared: &shared,
        permits: &permits,
        conn_threads: &mut conn_threads,
    };
    accepting.until((&listener, extra), signal).await;
    let max = config.limits.max_connections;
    let open = || max - permits.available_permits();
    tracing::info!(connections = open(), "shutting down");
    drop(listener);
    // Its sender would keep the router thread's channel open.
    if let Some(sys) = sys {
        sys.abort();
    }
    // Connections hear of it through their reply queues (see `replies.rs`).
    let _ = shared.router.send(ToRouter::Shutdown).await;
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all)).await;
    if drained.is_err() {
        // Stopping their threads (below) cancels them.
        tracing::warn!(
            left = open(),
            "connections did not end in time; aborting them"
        );
    }
    drop(shared);
    // Cancels connections that outlived the grace period; their ends of the router
    // channel go with them, which lets the router thread finish.
    conn_threads.stop();
    if let Some(owners) = owners {
        owners.stop().await;
    }
    Ok(())
}

/// Start what watches the broker from outside the message path: the `$SYS` topics
/// (their task, to stop at shutdown), the metrics endpoint and the admin API.
fn observe(
    config: &Config,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    (metrics_listener, admin_listener): (Option<TcpListener>, Option<TcpListener>),
) -> Option<tokio::task::JoinHandle<()>> {
    let sources = metrics::Sources {
        router: shared.router.clone(),
        edge: shared.counters.clone(),
        permits: permits.clone(),
        max_connections: config.limits.max_connections,
        meta: shared.owners.as_ref().map(|o| o.meta().clone()),
    };
    let sys = match config.metrics.sys_interval_secs {
        0 => None,
        secs => Some(tokio::spawn(sys::run(
            sources.clone(),
            Duration::from_secs(secs),
        ))),
    };
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics::serve(listener, sources));
    }
    if let (Some(listener), Some(clients)) = (admin_listener, &shared.clients) {
        let state = admin::AdminState {
            clients: clients.clone(),
            router: shared.router.clone(),
            topics: shared.topics.clone(),
            meta: shared.owners.as_ref().map(|o| o.meta().clone()),
            token: config
                .admin
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Arc::from),
        };
        tokio::spawn(admin::serve(listener, state));
    }
    sys
}

/// Start the cluster's parts: the peer listener and links, and this node of the
/// metadata group on them, whose claims the connections make.
async fn start_cluster(links: NodeLinks, router: &RouterTx) -> anyhow::Result<Owners> {
    let listen = links.peers.listen;
    let peers = Peers::bind(links.peers)
        .await
        .with_context(|| format!("[cluster] listen: cannot listen on {listen}"))?;
    tracing::info!(addr = %listen, "peer listener up");
    let timeout = Duration::from_millis(links.meta.propose_timeout_ms);
    let meta_links = MetaLinks::new();
    let meta = cluster_node::start_meta(
        links.meta,
        &meta_links,
        (links.changes, links.from_router),
        router.clone(),
    )
    .await?;
    let server = meta.server();
    tokio::spawn(cluster_node::link(
        peers,
        router.clone(),
        links.data,
        (meta_links, server),
    ));
    Ok(Owners::new(meta, timeout))
}

/// The listeners, bound before the broker says it listens.
struct Listeners {
    mqtt: TcpListener,
    /// `[[listeners]]`, each with its edge.
    extra: Vec<(TcpListener, Edge)>,
    metrics: Option<TcpListener>,
    admin: Option<TcpListener>,
}

/// Bind the MQTT listeners (`[[listeners]]` with `edges`, in order) and, if
/// configured, the metrics and admin ones; then say so.
async fn bind_listeners(config: &Config, edges: Vec<Edge>) -> anyhow::Result<Listeners> {
    let mqtt = TcpListener::bind(config.listener.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listener.addr))?;
    let local = mqtt.local_addr().context("listener address")?;
    let mut extra = Vec::new();
    for (i, (l, edge)) in config.listeners.iter().zip(edges).enumerate() {
        let bound = TcpListener::bind(l.addr).await.with_context(|| {
            format!("[[listeners]] #{} addr: cannot listen on {}", i + 1, l.addr)
        })?;
        let addr = bound.local_addr().context("listener address")?;
        tracing::info!(%addr, transport = edge.name(), "mqtt listener up");
        extra.push((bound, edge));
    }
    let metrics = bind_optional(config.metrics.listen, "[metrics]", "metrics endpoint up").await?;
    let admin = bind_optional(config.admin.listen, "[admin]", "admin API up").await?;
    tracing::info!(addr = %local, "listening");
    Ok(Listeners {
        mqtt,
        extra,
        metrics,
        admin,
    })
}

/// Bind `addr` if given, logging `up` with the address bound.
async fn bind_optional(
    addr: Option<std::net::SocketAddr>,
    section: &str,
    up: &str,
) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{section} listen: cannot listen on {addr}"))?;
    let bound = l.local_addr().context("listener address")?;
    tracing::info!(addr = %bound, "{up}");
    Ok(Some(l))
}

/// What the accept loop hands each new connection to.
struct Accepting<'a> {
    shared: &'a Arc<Shared>,
    permits: &'a Arc<Semaphore>,
    conn_threads: &'a mut ConnThreads,
}

impl Accepting<'_> {
    /// Accept connections (within `connections_per_sec_max` and `max_connections`)
    /// until `signal`.
    async fn until(
        mut self,
        (listener, extra): (&TcpListener, Vec<(TcpListener, Edge)>),
        signal: impl std::future::Future<Output = ()>,
    ) {
        let mut more = accept_extra(extra);
        let limits = &self.shared.config.limits;
        let mut rate = AcceptRate::new(limits.connections_per_sec_max, Instant::now());
        let mut last_rate_log: Option<Instant> = None;
        tokio::pin!(signal);
        loop {
            let wait = rate.wait(Instant::now());
            if !wait.is_zero() {
                if last_rate_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        per_sec = limits.connections_per_sec_max,
                        "connections_per_sec_max reached; new connections wait"
                    );
                    last_rate_log = Some(Instant::now());
                }
                tokio::select! {
                    _ = &mut signal => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            tokio::select! {
                _ = &mut signal => return,
                Some((stream, edge)) = more.recv() => self.take(stream, edge),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.take(stream, Edge::Tcp),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// A new connection (through `edge`): to a connection thread, or refused when
    /// all permits are out (a TLS or WebSocket one closed at once: it cannot read a
    /// CONNACK yet).
    fn take(&mut self, stream: TcpStream, edge: Edge) {
        let _ = stream.set_nodelay(true);
        let counters = &self.shared.counters;
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                EdgeCounters::add(&counters.accepted);
                let open =
                    self.shared.config.limits.max_connections - self.permits.available_permits();
                counters
                    .peak
                    .fetch_max(open as u64, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = self.conn_threads.spawn(stream, self.shared, permit, edge) {
                    tracing::warn!(error = %e, "cannot hand a connection to its thread");
                }
            }
            Err(_) if !matches!(edge, Edge::Tcp) => EdgeCounters::add(&counters.refused_full),
            Err(_) => {
                EdgeCounters::add(&counters.refused_full);
                let connect_timeout_ms = self.shared.config.limits.connect_timeout_ms;
                tokio::spawn(refuse(stream, connect_timeout_ms));
            }
        }
    }
}

/// Accept on every listener of `extra` in a task of its own, handing each socket
/// over with its listener's edge; the tasks end once the receiver is gone.
fn accept_extra(extra: Vec<(TcpListener, Edge)>) -> tokio::sync::mpsc::Receiver<(TcpStream, Edge)> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    for (listener, edge) in extra {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if tx.send((stream, edge.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    rx
}

/// Over `max_connections`: read the CONNECT (briefly) and answer "server unavailable"
/// (MQTT 5: "quota exceeded").
async fn refuse(mut stream: TcpStream, connect_timeout_ms: u64) {
    let wait = Duration::from_millis(connect_timeout_ms.min(2000));
    let mut buf = bytes::BytesMut::with_capacity(512);
    let _ = tokio::time::timeout(wait, async {
        use tokio::io::AsyncReadExt;
        loop {
            match crate::protocol::decode(&mut buf.clone(), None, 4096) {
                Ok(None) => {}
                _ => break,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    tracing::warn!("max_connections reached; refusing a client");
    let mut encoder = crate::protocol::Encoder::new();
    if crate::protocol::is_v5_connect(&buf) {
        encoder.set_version(crate::protocol::Version::V5, 0, true);
        let props = crate::protocol::ConnAckProperties {
            reason_string: Some("max_connections reached".into()),
            ..Default::default()
        };
        encoder.connack_v5(false, crate::protocol::reason::QUOTA_EXCEEDED, &props);
    } else {
        encoder.connack(false, crate::protocol::return_code::SERVER_UNAVAILABLE);
    }
    let mut out = Vec::new();
    encoder.take(&mut out);
    // A CONNACK is all in memory.
    for chunk in out.iter().filter_map(crate::protocol::Chunk::in_memory) {
        let _ = stream.write_all(chunk).await;
    }
    let _ = stream.shutdown().await;
}

/// On every SIGHUP, read the password file again (a file that does not load is
/// logged, and the one in use kept). Connections stay; new logins use the new file.
/// Reload the password and ACL files on each SIGHUP. The handler is installed
/// before the broker says it listens: a SIGHUP after that line never meets the
/// default action (which ends the process).
fn reload_on_sighup(
    config: Arc<Config>,
    (checker, acl): (Option<Arc<Checker>>, Option<Arc<AclSource>>),
) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&config, checker.as_deref(), acl.as_deref());
        }
    });
    Ok(())
}

/// Read the password and ACL files again; one that does not load is logged, and the
/// one in force stays.
fn reload(config: &Config, checker: Option<&Checker>, acl: Option<&AclSource>) {
    if let (Some(checker), Some(path)) = (checker, &config.auth.password_file) {
        match checker.reload(path) {
            Ok(users) => tracing::info!(users, "password file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "password file not reloaded; the old one stays in use")
            }
        }
    }
    if let (Some(acl), Some(path)) = (acl, &config.auth.acl_file) {
        match acl.reload(path) {
            Ok(()) => tracing::info!("acl file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "acl file not reloaded; the old one stays in use")
            }
        }
    }
}

/// Install the SIGTERM and SIGINT handlers now (before the broker says it is
/// listening, so a signal right after that line is never the default "terminate"),
/// and return a future that completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
