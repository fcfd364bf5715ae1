//! Three nodes' peer loops on loopback: every pair links once, the lower id dialing;
//! a link the owner drops is dialed again; a node that is not there yet is dialed
//! until it is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mesh::{Channel, NodeId, Secret};
use rumq_broker::peer_link::LinkConfig;
use rumq_broker::peers::{LinkUp, PeerSet, Peers};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "the cluster's shared secret";
const WAIT: Duration = Duration::from_secs(10);

fn set(me: u8, addrs: &[SocketAddr]) -> PeerSet {
    let peers = (1..=addrs.len() as u8)
        .filter(|n| *n != me)
        .map(|n| (NodeId(n), addrs[usize::from(n - 1)]))
        .collect();
    PeerSet {
        listen: addrs[usize::from(me - 1)],
        peers,
        link: LinkConfig {
            me: NodeId(me),
            secret: Secret::new(SECRET.as_bytes()).unwrap(),
            frame_bytes_max: 1 << 20,
            handshake_timeout: Duration::from_secs(2),
            tls: None,
        },
        backoff_max: Duration::from_millis(200),
    }
}

/// Start node `me` on `listener`; its links arrive on the receiver.
fn start(
    me: u8,
    listener: TcpListener,
    addrs: &[SocketAddr],
) -> (mpsc::Receiver<LinkUp>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let peers = Peers::from_listener(listener, set(me, addrs));
    (rx, tokio::spawn(peers.run(tx)))
}

async fn next_up(rx: &mut mpsc::Receiver<LinkUp>) -> LinkUp {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no link in time")
        .expect("peer loops ended")
}

async fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let mut ls = Vec::new();
    for _ in 0..n {
        ls.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    (ls, addrs)
}

#[tokio::test]
async fn every_pair_links_once_and_a_dropped_link_is_dialed_again() {
    let (ls, addrs) = listeners(3).await;
    let mut rxs = Vec::new();
    let mut tasks = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let (rx, task) = start(i as u8 + 1, l, &addrs);
        rxs.push(rx);
        tasks.push(task);
    }
    // Node 1 dials 2 and 3, node 2 dials 3, a link per channel: each node sees each
    // other node once per channel.
    let mut held = Vec::new();
    for (i, rx) in rxs.iter_mut().enumerate() {
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let up = next_up(rx).await;
            assert!(seen.insert((up.link.peer().0, up.link.channel())), "twice");
            held.push((i + 1, up));
        }
        let others = (1..=3u8).filter(|n| *n != i as u8 + 1);
        let want: BTreeSet<_> = others.flat_map(|n| Channel::ALL.map(|c| (n, c))).collect();
        assert_eq!(seen, want, "node {}", i + 1);
    }
    // Node 1's owner drops its data link to node 3: node 1 dials it again, and both
    // get it.
    let at = held
        .iter()
        .position(|(owner, up)| {
            *owner == 1 && up.link.peer() == NodeId(3) && up.link.channel() == Channel::Data
        })
        .unwrap();
    drop(held.remove(at));
    let again = next_up(&mut rxs[0]).await.link;
    assert_eq!((again.peer(), again.channel()), (NodeId(3), Channel::Data));
    let again = next_up(&mut rxs[2]).await.link;
    assert_eq!((again.peer(), again.channel()), (NodeId(1), Channel::Data));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_node_that_is_not_there_yet_is_dialed_until_it_is() {
    let (mut ls, addrs) = listeners(2).await;
    let squatter = ls.pop().unwrap();
    let (mut rx1, t1) = start(1, ls.pop().unwrap(), &addrs[..2]);
    // Node 2's port answers and hangs up, as a node does while it starts: node 1's
    // handshakes fail, and it dials again (each channel twice at least).
    for attempt in 0..4 {
        let (stream, _) = tokio::time::timeout(WAIT, squatter.accept())
            .await
            .unwrap_or_else(|_| panic!("no dial attempt {attempt}"))
            .unwrap();
        drop(stream);
    }
    drop(squatter);
    let relisten = TcpListener::bind(addrs[1]).await.unwrap();
    let (mut rx2, t2) = start(2, relisten, &addrs[..2]);
    for _ in Channel::ALL {
        assert_eq!(next_up(&mut rx1).await.link.peer(), NodeId(2));
        assert_eq!(next_up(&mut rx2).await.link.peer(), NodeId(1));
    }
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn handshakes_past_the_limit_are_closed_at_once() {
    use tokio::io::AsyncReadExt;
    let (mut ls, addrs) = listeners(3).await;
    let (_rx, task) = start(3, ls.pop().unwrap(), &addrs);
    // Node 3 has two peers (1 and 2, not running): 4 × 2 channels × 2 peers = 16
    // handshakes at once. Sixteen silent connections hold them all.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(addrs[2]).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(addrs[2]).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, extra.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the 17th connection was not closed: {read:?}"
    );
    // Closed at once, not after the 2 s handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    task.abort();
}
