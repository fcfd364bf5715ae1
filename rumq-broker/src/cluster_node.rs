//! The mesh's data path at the edge (docs/mesh.md): this run's incarnation and the
//! directories of its logs, the replicas opened for the router and removed (`replica_files`), and the data links
//! that carry fetches and records between the router and its peers.
//!
//! A data link starts with each side announcing the log it writes in this run
//! (`Frame::Announce`); the other side opens a replica of it and fetches. After that
//! the reader turns `Fetch` and `Records` frames into the router's `PeerEvent`s
//! (records checked by `Framed::split` first: a frame that does not check ends the
//! link), and the writer frames what the router sends the peer. The router asks for
//! one fetch per replica at a time and answers one per follower, so what waits for a
//! link is bounded by the number of logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use commitlog::record::{encode_into, Framed, HEADER_BYTES};
use commitlog::{Log, LogConfig};
use mesh::{Channel, Frame, Incarnation, LogId, NodeId, Stream};
use meta::{Meta, MetaChange, MetaConfig, RaftServer};
use router::{MeshConfig, PeerEvent, PeerReply, Router};
use rumq_broker::meta_links::MetaLinks;
use rumq_broker::peer_link::{Link, LinkConfig, LinkError};
use rumq_broker::peer_stream::PeerTls;
use rumq_broker::peers::{LinkUp, PeerSet, Peers};
use tokio::sync::{mpsc, watch};

use crate::config::cluster::ClusterConfig;
use crate::config::Config;
use crate::driver::{RouterTx, ToRouter};
use crate::replica_files::{self, Opener};
use crate::{earlier_run, owners};

/// What waits to be written to one peer's data link (see the module docs for why
/// this holds).
const LINK_QUEUE: usize = 64;
/// How long a writer may hold a fetch with nothing to send (the heartbeat).
pub const FETCH_WAIT_MS: u32 = 500;

/// This node's next incarnation: one more than the last run's, kept in
/// `data_dir/incarnation` and synced before the run uses it, so no two runs write
/// the same log.
pub fn next_incarnation(data_dir: &Path) -> anyhow::Result<Incarnation> {
    let path = data_dir.join("incarnation");
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .with_context(|| format!("{} does not hold a number", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let next = last
        .checked_add(1)
        .with_context(|| format!("{} is at its last incarnation", path.display()))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    meta::replace_file(&path, format!("{next}\n").as_bytes())?;
    Ok(Incarnation(next))
}

/// Where log `log` is kept under `dir`: `<dir>/<node>.<incarnation>`.
pub fn log_dir(dir: &Path, log: LogId) -> PathBuf {
    dir.join(format!("{}.{}", log.node.0, log.incarnation.0))
}

/// The log a directory named `<node>.<incarnation>` keeps (see `log_dir`).
pub fn log_of_dir(name: &std::ffi::OsStr) -> Option<LogId> {
    let (node, incarnation) = name.to_str()?.split_once('.')?;
    Some(LogId {
        node: NodeId(node.parse().ok()?),
        incarnation: Incarnation(incarnation.parse().ok()?),
    })
}

/// The logs kept in `dir` (its `<node>.<incarnation>` directories).
pub fn kept_logs(dir: &Path) -> Vec<LogId> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    (entries.flatten())
        .filter_map(|e| log_of_dir(&e.file_name()))
        .collect()
}

/// The router thread's side of the peers: where replicas go, and the queues of the
/// data links up now.
#[derive(Debug)]
pub struct PeerSide {
    /// Opens the replicas of the logs the peers announce.
    opener: Opener,
    links: BTreeMap<NodeId, mpsc::Sender<PeerReply>>,
    /// What the router tells the metadata group through the edge.
    to_meta: ToMeta,
}

/// The router's side of what it tells the metadata group: the shared groups with
/// members here (`owners::shared_sync`), and the client ids whose sessions ended
/// here (`owners::release_ended`).
#[derive(Debug)]
pub struct ToMeta {
    groups: watch::Sender<Vec<String>>,
    released: mpsc::Sender<Box<str>>,
    wills: mpsc::Sender<(Box<str>, NodeId)>,
}

/// The edge's side of [`ToMeta`].
#[derive(Debug)]
pub struct FromRouter {
    /// The shared groups with members here.
    pub groups: watch::Receiver<Vec<String>>,
    /// The client ids whose sessions ended here.
    pub released: mpsc::Receiver<Box<str>>,
    /// The client ids to claim from gone nodes, to publish their wills.
    pub wills: mpsc::Receiver<(Box<str>, NodeId)>,
}

/// Client ids whose sessions ended, waiting to be released in the metadata; past
/// it one stays recorded as this node's (a few bytes) until its client returns.
const RELEASED_QUEUE: usize = 4096;

/// The two ends of what the router tells the metadata group.
fn to_meta() -> (ToMeta, FromRouter) {
    let (groups_tx, groups) = watch::channel(Vec::new());
    let (released_tx, released) = mpsc::channel(RELEASED_QUEUE);
    let (wills_tx, wills) = mpsc::channel(RELEASED_QUEUE);
    let to = ToMeta {
        groups: groups_tx,
        released: released_tx,
        wills: wills_tx,
    };
    let from = FromRouter {
        groups,
        released,
        wills,
    };
    (to, from)
}

impl PeerSide {
    /// Replicas in `data_dir` (`replicas/`, and `journal-replicas/` for the
    /// journals), each a log with `config` (the journals' derived from it); what the
    /// router tells the metadata group goes to `to_meta`.
    pub fn new(data_dir: &Path, config: LogConfig, to_meta: ToMeta) -> PeerSide {
        replica_files::remove_leftovers(&[
            &data_dir.join("replicas"),
            &data_dir.join("journal-replicas"),
            &data_dir.join("messages"),
        ]);
        PeerSide {
            opener: Opener::new(
                (data_dir.join("replicas"), config.clone()),
                (
                    data_dir.join("journal-replicas"),
                    crate::server::journal_config(&config),
                ),
                data_dir.join("messages"),
            ),
            links: BTreeMap::new(),
            to_meta,
        }
    }

    /// The shared groups with members on this node are now `groups`.
    pub fn shared_groups(&self, groups: Vec<String>) {
        // The receiver lives as long as the runtime; after it, nobody needs them.
        let _ = self.to_meta.groups.send(groups);
    }

    /// The session of `client_id`, which this node claimed, ended here.
    pub fn released(&self, client_id: Box<str>) {
        if self.to_meta.released.try_send(client_id).is_err() {
            tracing::debug!("release queue full; a client id stays recorded as this node's");
        }
    }

    /// Claim `client_id` from gone node `from`, to publish its will here.
    pub fn claim_will(&self, client_id: Box<str>, from: NodeId) {
        if self.to_meta.wills.try_send((client_id, from)).is_err() {
            tracing::warn!("will claim queue full; a gone node's will is not published");
        }
    }

    /// Replicate `log`'s messages and session journal, unless the router already
    /// does: opened on a thread of their own (`replica_files`).
    pub fn open_replica(&mut self, router: &Router<Log>, log: LogId) {
        self.opener.open(router, log);
    }

    /// Open the logs kept from earlier runs the router does not read yet
    /// (`replica_files`).
    pub fn open_kept(&mut self, router: &mut Router<Log>, own: LogId) {
        self.opener.open_kept(router, own);
    }

    /// Hand the router the replicas opened since the last call, and remove
    /// those it retired.
    pub fn take_opened(&mut self, router: &mut Router<Log>) {
        self.opener.take_opened(router);
        replica_files::remove(router.drain_retired());
    }

    /// The peers whose data link is up now.
    pub fn links_up(&self) -> Vec<NodeId> {
        (self.links.iter())
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// A data link to `peer` is up: what the router sends it goes to `tx`.
    pub fn link_up(&mut self, peer: NodeId, tx: mpsc::Sender<PeerReply>) {
        self.links.insert(peer, tx);
    }

    /// Hand `reply` to `peer`'s link; dropped when there is none (the router sends
    /// its fetches again when a link comes up).
    pub fn send(&mut self, peer: NodeId, reply: PeerReply) {
        let Some(tx) = self.links.get(&peer) else {
            return;
        };
        if let Err(e) = tx.try_send(reply) {
            if let mpsc::error::TrySendError::Full(_) = e {
                tracing::error!(%peer, "peer link queue full; dropping a message (the link is reset)");
            }
            self.links.remove(&peer);
        }
    }
}

/// What a data link needs.
#[derive(Debug, Clone)]
pub struct DataLinkConfig {
    /// The log this node writes.
    pub own: LogId,
    /// The most record bytes asked for in one fetch.
    pub fetch_bytes_max: u32,
    /// The largest record a replica takes.
    pub record_bytes_max: u32,
}

/// Carry one data link until it ends.
pub async fn run_data_link(link: Link, router: RouterTx, config: DataLinkConfig) {
    let peer = link.peer();
    let (mut reader, mut writer) = link.into_split();
    let (tx, mut rx) = mpsc::channel::<PeerReply>(LINK_QUEUE);
    if writer
        .send(&Frame::Announce { log: config.own })
        .await
        .is_err()
        || router.send(ToRouter::PeerLink { peer, tx }).await.is_err()
    {
        return;
    }
    let fetch_bytes_max = config.fetch_bytes_max;
    let write = async move {
        while let Some(reply) = rx.recv().await {
            writer.send(&frame_of(reply, fetch_bytes_max)).await?;
        }
        Ok::<_, LinkError>(writer)
    };
    let read = async {
        loop {
            let frame = reader.recv().await?;
            let Some(msg) = to_router(peer, frame, config.record_bytes_max)? else {
                continue;
            };
            if router.send(msg).await.is_err() {
                return Ok::<(), LinkError>(());
            }
        }
    };
    let ended = tokio::select! {
        r = read => r.err(),
        w = write => w.err(),
    };
    match ended {
        Some(e @ LinkError::Closed(_)) => tracing::info!(%peer, error = %e, "data link closed"),
        Some(e) => tracing::warn!(%peer, error = %e, "data link ended"),
        None => tracing::debug!(%peer, "data link ended"),
    }
}

/// The frame for what the router sends a peer: records framed as stored.
fn frame_of(reply: PeerReply, fetch_bytes_max: u32) -> Frame {
    match reply {
        PeerReply::Done { log } => Frame::Done { log },
        PeerReply::Fetch { log, stream, from } => Frame::Fetch {
            log,
            stream,
            from,
            bytes_max: fetch_bytes_max,
            wait_ms: FETCH_WAIT_MS,
        },
        PeerReply::Records {
            log,
            stream,
            base,
            commit,
            records,
        } => {
            let bytes = records.iter().map(|r| r.len() + HEADER_BYTES).sum();
            let mut framed = Vec::with_capacity(bytes);
            for r in &records {
                encode_into(&mut framed, r);
            }
            Frame::Records {
                log,
                stream,
                base,
                commit,
                records: framed.into(),
            }
        }
    }
}

/// What a frame from `peer` asks of the router; an error for records that do not
/// check (the link ends), `None` for a frame a data link does not carry.
fn to_router(
    peer: NodeId,
    frame: Frame,
    record_bytes_max: u32,
) -> Result<Option<ToRouter>, LinkError> {
    let event = match frame {
        Frame::Announce { log } if log.node == peer => return Ok(Some(ToRouter::Replica(log))),
        Frame::Done { log } => PeerEvent::Done { peer, log },
        Frame::Fetch {
            log,
            stream,
            from,
            bytes_max,
            ..
        } => PeerEvent::Fetched {
            peer,
            log,
            stream,
            from,
            bytes_max,
        },
        Frame::Records {
            log,
            stream,
            base,
            commit,
            records,
        } => {
            // A journal's records may hold a whole retained message besides ops.
            let max = match stream {
                Stream::Messages => record_bytes_max,
                Stream::Journal => {
                    record_bytes_max.saturating_add(crate::server::JOURNAL_RECORD_ROOM_BYTES)
                }
            };
            let records = Framed::split(&records, max)?;
            if log.node != peer {
                // From that peer's replica of a gone writer's log (`relay`).
                return Ok(Some(ToRouter::Peer(PeerEvent::Relayed {
                    peer,
                    log,
                    stream,
                    base,
                    commit,
                    records,
                })));
            }
            PeerEvent::Replicated {
                log,
                stream,
                base,
                commit,
                records,
            }
        }
        other => {
            tracing::warn!(%peer, kind = other.kind(), "unexpected frame on a data link; ignored");
            return Ok(None);
        }
    };
    Ok(Some(ToRouter::Peer(event)))
}

/// What a node of a cluster runs besides a single node's parts.
pub struct Node {
    /// The router thread's side of the peers.
    pub side: PeerSide,
    /// What runs in the runtime.
    pub links: NodeLinks,
}

/// The parts of a node that run in the tokio runtime.
pub struct NodeLinks {
    /// The peer listener and the dialers.
    pub peers: PeerSet,
    /// What each data link needs.
    pub data: DataLinkConfig,
    /// The metadata group's node (opened in the runtime, `start_meta`).
    pub meta: MetaConfig,
    /// What it applies that the router hears of.
    pub changes: mpsc::Receiver<MetaChange>,
    /// What the router tells the metadata group.
    pub from_router: FromRouter,
}

/// This run's logs: its own message log and session journal (new for each
/// incarnation: `messages/<node>.<incarnation>/`, `state/<node>.<incarnation>/`), the
/// router over them in the cluster, and what the links need.
pub fn open(
    config: &Config,
    cluster: &ClusterConfig,
    tls: Option<PeerTls>,
) -> anyhow::Result<(Router<Log>, Node)> {
    let incarnation = next_incarnation(&config.data_dir)?;
    let own = LogId {
        node: cluster.node_id,
        incarnation,
    };
    let messages = log_dir(&config.data_dir.join("messages"), own);
    let log = Log::open(&messages, config.storage.clone())
        .with_context(|| format!("cannot open the message log in {}", messages.display()))?;
    let state = log_dir(&config.data_dir.join("state"), own);
    let journal = Log::open(&state, crate::server::journal_config(&config.storage))
        .with_context(|| format!("cannot open the session journal in {}", state.display()))?;
    let mut router = Router::open(config.router.clone(), log, journal)
        .with_context(|| format!("cannot open the session journal in {}", state.display()))?;
    let earlier = match earlier_run::last_run_pruned(&config.data_dir, own) {
        Some(log) => Some(earlier_run::read(config, log)?).filter(|e| !e.is_empty()),
        None => None,
    };
    let fetch_bytes_max = u32::try_from(cluster.peer_inflight_bytes_max).unwrap_or(u32::MAX);
    router.join_mesh(MeshConfig {
        own,
        ack_copies: cluster.ack_copies,
        followers: cluster.peers.iter().map(|p| p.id).collect(),
        fetch_bytes_max,
        fetch_wait: Duration::from_millis(u64::from(FETCH_WAIT_MS)),
        failure_timeout: Duration::from_millis(cluster.failure_timeout_ms),
        superseded_keep: Duration::from_millis(cluster.superseded_logs_keep_ms),
        // With sessions carried over, what was published since the earlier run
        // stopped is theirs, not history.
        started: (earlier.as_ref())
            .and_then(|e| e.last_written)
            .unwrap_or_else(std::time::SystemTime::now),
    });
    if let Some(earlier) = earlier {
        earlier.resume(&mut router, config)?;
    }
    tracing::info!(log = %own, ack_copies = cluster.ack_copies, tls = cluster.tls.is_some(), "cluster node");
    let (to, from_router) = to_meta();
    let mut side = PeerSide::new(&config.data_dir, config.storage.clone(), to);
    side.open_kept(&mut router, own);
    let peers = PeerSet {
        listen: cluster.listen,
        peers: cluster.peers.iter().map(|p| (p.id, p.addr)).collect(),
        link: LinkConfig {
            me: cluster.node_id,
            secret: cluster.secret.clone(),
            frame_bytes_max: cluster.peer_frame_bytes_max,
            handshake_timeout: Duration::from_millis(cluster.handshake_timeout_ms),
            tls,
        },
        backoff_max: Duration::from_millis(cluster.reconnect_backoff_max_ms),
    };
    let data = DataLinkConfig {
        own,
        fetch_bytes_max,
        record_bytes_max: config.storage.record_bytes_max,
    };
    let (tx, changes) = mpsc::channel(owners::CHANGES_QUEUE);
    let mut meta = MetaConfig::new(
        cluster.node_id,
        config.data_dir.join("meta"),
        members(cluster),
    );
    meta.propose_timeout_ms = cluster.claim_timeout_ms;
    meta.changes = Some(tx);
    let links = NodeLinks {
        peers,
        data,
        meta,
        changes,
        from_router,
    };
    let node = Node { side, links };
    Ok((router, node))
}

/// Every node of the cluster (this one too) and its peer address.
fn members(cluster: &ClusterConfig) -> BTreeMap<NodeId, String> {
    let mut members: BTreeMap<NodeId, String> = (cluster.peers.iter())
        .map(|p| (p.id, p.addr.to_string()))
        .collect();
    members.insert(cluster.node_id, cluster.listen.to_string());
    members
}

/// Start this node of the metadata group (its store in `data/meta/`) on `links`,
/// feed what it applies to the router, and keep this node's shared groups in it.
pub async fn start_meta(
    config: MetaConfig,
    links: &MetaLinks,
    (changes, from_router): (mpsc::Receiver<MetaChange>, FromRouter),
    router: RouterTx,
) -> anyhow::Result<Meta> {
    let dir = config.dir.display().to_string();
    let meta = Meta::open(config, Arc::new(links.clone()))
        .await
        .with_context(|| format!("cannot start the metadata group's node in {dir}"))?;
    tokio::spawn(owners::claim_wills(
        meta.clone(),
        from_router.wills,
        router.clone(),
    ));
    tokio::spawn(owners::feed_router(changes, router, meta.clone()));
    tokio::spawn(owners::shared_sync(meta.clone(), from_router.groups));
    tokio::spawn(owners::release_ended(meta.clone(), from_router.released));
    tokio::spawn(log_leader(meta.clone()));
    Ok(meta)
}

/// Log the metadata group's leader each time it changes, as this node sees it.
async fn log_leader(meta: Meta) {
    let mut metrics = meta.metrics();
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader.and_then(meta::mesh_node), m.current_term)
        };
        if leader != last {
            match leader {
                Some(leader) => tracing::info!(%leader, term, "metadata leader"),
                None => tracing::info!(term, "no metadata leader (an election runs)"),
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Link with the peers until the process ends: data links carry the logs, meta
/// links the metadata group's messages (to and from `server`, through `meta`).
pub async fn link(
    peers: Peers,
    router: RouterTx,
    data: DataLinkConfig,
    (meta, server): (MetaLinks, RaftServer),
) {
    let (tx, mut rx) = mpsc::channel::<LinkUp>(16);
    tokio::spawn(peers.run(tx));
    while let Some(up) = rx.recv().await {
        let (router, data) = (router.clone(), data.clone());
        let (meta, server) = (meta.clone(), server.clone());
        tokio::spawn(async move {
            let _held = up.ended;
            match up.link.channel() {
                Channel::Data => run_data_link(up.link, router, data).await,
                Channel::Meta => {
                    meta.run_link(up.link, server).await;
                }
            }
        });
    }
}
