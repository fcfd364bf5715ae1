//! The mesh's links: authenticated [`Link`]s between every pair of nodes, kept up.
//!
//! Two links per pair of nodes, one per [`Channel`] (the metadata group's messages
//! never wait behind a batch of records). Of each pair, the node with the lower id
//! dials and the other accepts, so two nodes never race to make the same link. A dialer that fails (or whose link ends) tries
//! again after a backoff that doubles from 50 ms up to `backoff_max`. An accepting
//! node takes links only from its peers with lower ids; a node restarting dials
//! again, and its new link replaces the old one at the owner's.
//!
//! Every link that completes its handshake goes to the owner as a [`LinkUp`]. The
//! owner holds its `ended` guard for as long as it uses the link; dropping it tells
//! the dialer to dial again.
//!
//! Owns: the peer listener and the dial loops. What links carry is the owner's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh::{Channel, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::peer_link::{Link, LinkConfig};

/// The first wait before dialing again.
const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Who this node links with.
#[derive(Debug, Clone)]
pub struct PeerSet {
    /// The peer listener's address (`cluster.listen`).
    pub listen: SocketAddr,
    /// The other nodes and their peer addresses (`cluster.peers`).
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// What every link shares (this node's id among it).
    pub link: LinkConfig,
    /// The longest wait between two dials of one peer.
    pub backoff_max: Duration,
}

/// A link that came up, for the owner.
#[derive(Debug)]
pub struct LinkUp {
    /// The link.
    pub link: Link,
    /// Held while the link is in use; dropping it lets a dialer dial again.
    pub ended: LinkEnded,
}

/// See [`LinkUp::ended`].
#[derive(Debug)]
pub struct LinkEnded(Option<oneshot::Sender<()>>);

/// The peer listener, bound, and the dial loops to run.
#[derive(Debug)]
pub struct Peers {
    listener: TcpListener,
    set: Arc<PeerSet>,
}

impl Peers {
    /// Bind the peer listener (at start: an address that cannot be bound is a
    /// configuration error, `cluster.listen`).
    pub async fn bind(set: PeerSet) -> std::io::Result<Peers> {
        let listener = TcpListener::bind(set.listen).await?;
        Ok(Peers {
            listener,
            set: Arc::new(set),
        })
    }

    /// Use a listener already bound (`set.listen` is then only documentation): for
    /// tests that need every node's address before any node starts.
    pub fn from_listener(listener: TcpListener, set: PeerSet) -> Peers {
        Peers {
            listener,
            set: Arc::new(set),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept and dial until the owner stops listening to `up`.
    pub async fn run(self, up: mpsc::Sender<LinkUp>) {
        let me = self.set.link.me;
        let mut dialers = tokio::task::JoinSet::new();
        for &(node, addr) in self.set.peers.iter().filter(|(n, _)| *n > me) {
            for channel in Channel::ALL {
                let to = (node, channel, addr);
                dialers.spawn(dial_loop(self.set.clone(), to, up.clone()));
            }
        }
        tokio::select! {
            () = accept_loop(self.listener, self.set.clone(), up.clone()) => {}
            () = up.closed() => {}
        }
        dialers.shutdown().await;
    }
}

/// Handshakes the listener runs at once: room for every peer's two channels twice
/// over (a peer that restarts dials again while its old links time out). Past it, a
/// connection is closed at once: the listener is reachable by whoever can reach the
/// port, and each handshake holds a socket for up to `handshake_timeout`.
fn handshakes_max(set: &PeerSet) -> usize {
    4 * Channel::ALL.len() * set.peers.len().max(1)
}

async fn accept_loop(listener: TcpListener, set: Arc<PeerSet>, up: mpsc::Sender<LinkUp>) {
    let me = set.link.me;
    let handshakes = Arc::new(Semaphore::new(handshakes_max(&set)));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "peer listener: accept failed");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%from, "peer listener: too many handshakes at once; connection closed");
            continue;
        };
        let set = set.clone();
        let up = up.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Only peers with lower ids dial this node.
            let is_peer = |n: NodeId| n < me && set.peers.iter().any(|(p, _)| *p == n);
            match Link::accept(stream, is_peer, &set.link).await {
                Ok(link) => {
                    let (peer, channel) = (link.peer(), link.channel());
                    tracing::info!(%peer, %channel, %from, "peer link accepted");
                    let (ended, _gone) = LinkEnded::new();
                    let _ = up.send(LinkUp { link, ended }).await;
                }
                Err(e) => tracing::warn!(%from, error = %e, "peer link refused"),
            }
        });
    }
}

async fn dial_loop(
    set: Arc<PeerSet>,
    (node, channel, addr): (NodeId, Channel, SocketAddr),
    up: mpsc::Sender<LinkUp>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        match Link::dial(addr, (node, channel), &set.link).await {
            Ok(link) => {
                tracing::info!(peer = %node, %channel, %addr, "peer link dialed");
                backoff = BACKOFF_MIN;
                failures = 0;
                let (ended, gone) = LinkEnded::new();
                if up.send(LinkUp { link, ended }).await.is_err() {
                    return;
                }
                // Until the owner is done with it (or gone).
                let _ = gone.await;
                tracing::info!(peer = %node, %channel, "peer link ended");
            }
            Err(e) => {
                failures += 1;
                // Said once per outage, then quietly retried.
                if failures == 1 {
                    tracing::warn!(peer = %node, %channel, %addr, error = %e, "cannot link to peer; retrying");
                } else {
                    tracing::debug!(peer = %node, %channel, %addr, error = %e, failures, "cannot link to peer");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(set.backoff_max.max(BACKOFF_MIN));
    }
}

impl LinkEnded {
    fn new() -> (LinkEnded, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (LinkEnded(Some(tx)), rx)
    }
}

impl Drop for LinkEnded {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}
