//! The metadata group over real peer links on loopback: three nodes link up, their
//! Raft nodes talk on the meta channel, elect a leader, and every node applies what
//! the leader commits. A node whose links end is unreachable to the others, who go
//! on without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh::{Channel, Incarnation, LogId, NodeId, Secret};
use meta::{Meta, MetaCommand, MetaConfig, MetaError, MetaResponse};
use rumq_broker::meta_links::MetaLinks;
use rumq_broker::peer_link::LinkConfig;
use rumq_broker::peers::{LinkUp, PeerSet, Peers};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

struct Node {
    meta: Meta,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start(me: u8, listener: TcpListener, addrs: &[SocketAddr], dir: &std::path::Path) -> Node {
    let members: BTreeMap<NodeId, String> = (1..=addrs.len() as u8)
        .map(|n| (NodeId(n), addrs[usize::from(n - 1)].to_string()))
        .collect();
    let links = MetaLinks::new();
    let config = MetaConfig::new(NodeId(me), dir.join(me.to_string()), members);
    let meta = Meta::open(config, Arc::new(links.clone())).await.unwrap();
    let server = meta.server();
    let set = PeerSet {
        listen: addrs[usize::from(me - 1)],
        peers: (1..=addrs.len() as u8)
            .filter(|n| *n != me)
            .map(|n| (NodeId(n), addrs[usize::from(n - 1)]))
            .collect(),
        link: LinkConfig {
            me: NodeId(me),
            secret: Secret::new(&b"the cluster's shared secret"[..]).unwrap(),
            frame_bytes_max: 1 << 20,
            handshake_timeout: Duration::from_secs(2),
            tls: None,
        },
        backoff_max: Duration::from_millis(200),
    };
    let (tx, mut rx) = mpsc::channel::<LinkUp>(16);
    let peers = tokio::spawn(Peers::from_listener(listener, set).run(tx));
    let route = tokio::spawn(async move {
        let mut data_links = Vec::new();
        while let Some(up) = rx.recv().await {
            if up.link.channel() == Channel::Meta {
                let (links, server) = (links.clone(), server.clone());
                tokio::spawn(async move {
                    let _held = up.ended;
                    links.run_link(up.link, server).await;
                });
            } else {
                data_links.push(up);
            }
        }
    });
    Node {
        meta,
        tasks: vec![peers, route],
    }
}

/// The leader every node in `nodes` names, once they agree.
async fn leader(nodes: &BTreeMap<u8, Node>) -> u8 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let named: Vec<Option<NodeId>> = nodes.values().map(|n| n.meta.leader()).collect();
        if let Some(Some(l)) = named.first() {
            if named.iter().all(|n| *n == Some(*l)) && nodes.contains_key(&l.0) {
                return l.0;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {named:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn open_log(node: u8, incarnation: u32) -> MetaCommand {
    MetaCommand::OpenLog {
        log: LogId {
            node: NodeId(node),
            incarnation: Incarnation(incarnation),
        },
    }
}

/// Wait until every node in `nodes` has applied the opening of `node`'s log.
async fn all_see_log(nodes: &BTreeMap<u8, Node>, node: u8, incarnation: u32) {
    let want = LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !nodes
        .values()
        .all(|n| n.meta.state().logs.contains_key(&want))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "log {want} not applied everywhere"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_over_peer_links_and_go_on_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = BTreeMap::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let me = i as u8 + 1;
        nodes.insert(me, start(me, l, &addrs, dir.path()).await);
    }

    let first = leader(&nodes).await;
    let answer = nodes[&first].meta.propose(open_log(1, 1)).await.unwrap();
    assert!(matches!(answer, MetaResponse::Opened), "{answer:?}");
    all_see_log(&nodes, 1, 1).await;

    // A follower asked to propose names the leader.
    let follower = *nodes.keys().find(|n| **n != first).unwrap();
    match nodes[&follower].meta.propose(open_log(2, 1)).await {
        Err(MetaError::NotLeader { leader }) => assert_eq!(leader, Some(NodeId(first))),
        other => panic!("{other:?}"),
    }

    // The leader goes (its Raft node and links with it): the other two elect one of
    // themselves and commit without it.
    let gone = nodes.remove(&first).unwrap();
    gone.meta.shutdown().await.unwrap();
    drop(gone);
    let second = leader(&nodes).await;
    assert_ne!(second, first);
    let answer = nodes[&second].meta.propose(open_log(3, 1)).await.unwrap();
    assert!(matches!(answer, MetaResponse::Opened), "{answer:?}");
    all_see_log(&nodes, 3, 1).await;
}
