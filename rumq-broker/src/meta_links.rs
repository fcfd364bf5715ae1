//! The metadata group's messages on the peer links' `meta` channel.
//!
//! [`MetaLinks`] is the [`RaftTransport`] the `meta` crate sends through: an RPC for
//! node N goes out as a `MetaRequest` (JSON) on the current meta link to N. It
//! resolves to the `MetaReply` with the same id on that link. An RPC for a node with
//! no link is unreachable at once; one whose link ends before the reply comes fails
//! (openraft times out, retries and backs off by itself).
//!
//! The other way, [`MetaLinks::run_link`] serves a link: it hands the `MetaRequest`s
//! arriving on it to the local Raft node, and writes their replies back on the same
//! link. At most [`SERVING_MAX`] requests of one link are served at once, and at
//! most [`QUEUED_MAX`] frames wait for the link's writer. A frame that does not
//! belong on this channel, or JSON that does not decode, ends the link. A newer link
//! to the same node replaces the older one.
//!
//! Owns: the links' writers and the replies awaited on them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use mesh::{Frame, NodeId};
use meta::{
    ProposeRefused, RaftReply, RaftRpc, RaftServer, RaftTransport, ReplyFuture, TransportError,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::peer_link::{Link, LinkError, LinkReader};

/// Requests of one link served at once.
pub const SERVING_MAX: usize = 64;
/// Proposals forwarded on one link that wait for their commit at once; past it one
/// is refused at once (the proposing node's client sees "server unavailable").
pub const PROPOSING_MAX: usize = 256;
/// Frames waiting for one link's writer.
pub const QUEUED_MAX: usize = 256;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<RaftReply>>>>;

/// See the module docs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MetaLinks {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    links: BTreeMap<NodeId, Slot>,
    next_id: u64,
    next_generation: u64,
}

/// The current link to one node.
#[derive(Debug)]
struct Slot {
    generation: u64,
    frames: mpsc::Sender<Frame>,
    pending: Pending,
}

impl MetaLinks {
    /// No links yet.
    pub fn new() -> MetaLinks {
        MetaLinks::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve `link` (a `meta` channel link) until it ends: requests go to `server`,
    /// replies to the RPCs sent on it come back. Why it ended.
    pub async fn run_link(&self, link: Link, server: RaftServer) -> LinkError {
        let peer = link.peer();
        let (reader, mut writer) = link.into_split();
        let (frames, mut queued) = mpsc::channel::<Frame>(QUEUED_MAX);
        let pending: Pending = Pending::default();
        let generation = self.install(peer, frames.clone(), pending.clone());
        let write = async move {
            while let Some(frame) = queued.recv().await {
                if let Err(e) = writer.send(&frame).await {
                    return e;
                }
            }
            LinkError::Closed(None)
        };
        let read = serve_requests(reader, frames, pending, server);
        let ended = tokio::select! {
            e = write => e,
            e = read => e,
        };
        let mut inner = self.inner();
        if inner
            .links
            .get(&peer)
            .is_some_and(|s| s.generation == generation)
        {
            // Its pending replies' senders go with it: those RPCs fail.
            inner.links.remove(&peer);
        }
        tracing::info!(%peer, error = %ended, "meta link ended");
        ended
    }

    fn install(&self, peer: NodeId, frames: mpsc::Sender<Frame>, pending: Pending) -> u64 {
        let mut inner = self.inner();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        inner.links.insert(
            peer,
            Slot {
                generation,
                frames,
                pending,
            },
        );
        generation
    }
}

/// Read `reader` until the link ends: requests are served (at most `SERVING_MAX` at
/// once) and their replies queued on `frames`; replies complete `pending`.
async fn serve_requests(
    mut reader: LinkReader,
    frames: mpsc::Sender<Frame>,
    pending: Pending,
    server: RaftServer,
) -> LinkError {
    let serving = Arc::new(Semaphore::new(SERVING_MAX));
    let proposing = Arc::new(Semaphore::new(PROPOSING_MAX));
    loop {
        let frame = match reader.recv().await {
            Ok(f) => f,
            Err(e) => return e,
        };
        match frame {
            Frame::MetaRequest { id, payload } => {
                let Ok(rpc) = serde_json::from_slice::<RaftRpc>(&payload) else {
                    return LinkError::Closed(Some("a MetaRequest that is not a Raft RPC".into()));
                };
                let permit = if let RaftRpc::Propose(_) = rpc {
                    // A proposal waits for its commit: a storm of them must not stop
                    // this reader, which the Raft messages behind them need.
                    let Ok(permit) = proposing.clone().try_acquire_owned() else {
                        let busy = ProposeRefused::Failed("too many forwarded proposals".into());
                        send_reply(&frames, id, &RaftReply::Propose(Err(busy))).await;
                        continue;
                    };
                    permit
                } else {
                    let Ok(permit) = serving.clone().acquire_owned().await else {
                        return LinkError::Closed(None);
                    };
                    permit
                };
                let (server, frames) = (server.clone(), frames.clone());
                tokio::spawn(async move {
                    let reply = server.serve(rpc).await;
                    drop(permit);
                    send_reply(&frames, id, &reply).await;
                });
            }
            Frame::MetaReply { id, payload } => {
                let Ok(reply) = serde_json::from_slice::<RaftReply>(&payload) else {
                    return LinkError::Closed(Some("a MetaReply that is not a Raft reply".into()));
                };
                let waiting = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(tx) = waiting {
                    let _ = tx.send(reply);
                }
            }
            other => {
                let kind = other.kind();
                return LinkError::Closed(Some(format!("a {kind} frame on the meta channel")));
            }
        }
    }
}

/// Queue the reply to request `id` on `frames`. One that does not serialize is not
/// sent: the asking end's RPC fails when its timeout passes.
async fn send_reply(frames: &mpsc::Sender<Frame>, id: u64, reply: &RaftReply) {
    if let Ok(payload) = serde_json::to_vec(reply) {
        let payload = Bytes::from(payload);
        let _ = frames.send(Frame::MetaReply { id, payload }).await;
    }
}

impl RaftTransport for MetaLinks {
    fn send(&self, target: NodeId, rpc: RaftRpc) -> ReplyFuture {
        let unreachable = move |reason: &str| TransportError::Unreachable {
            node: target,
            reason: reason.into(),
        };
        let failed = move |reason: &str| TransportError::Failed {
            node: target,
            reason: reason.into(),
        };
        let sent = (|| {
            let payload = serde_json::to_vec(&rpc).map_err(|e| failed(&e.to_string()))?;
            let mut inner = self.inner();
            inner.next_id += 1;
            let id = inner.next_id;
            let slot = inner
                .links
                .get(&target)
                .ok_or_else(|| unreachable("no meta link"))?;
            let (tx, rx) = oneshot::channel();
            slot.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, tx);
            let frame = Frame::MetaRequest {
                id,
                payload: Bytes::from(payload),
            };
            Ok((slot.frames.clone(), frame, rx))
        })();
        Box::pin(async move {
            let (frames, frame, rx) = sent?;
            frames
                .send(frame)
                .await
                .map_err(|_| failed("the meta link ended"))?;
            rx.await
                .map_err(|_| failed("the meta link ended before the reply"))
        })
    }
}
