//! Three metadata nodes on an in-memory network: elections, proposals, restarts from
//! disk and partitions. Every wait is on openraft's metrics, bounded in time.

// A test's helpers panic on what the test did not expect: that is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::{Incarnation, LogId, NodeId};
use meta::{
    MemNetwork, Meta, MetaChange, MetaCommand, MetaConfig, MetaError, MetaResponse, MetaState,
    Refusal, SharedChange,
};
use openraft::ServerState;
use tokio::sync::mpsc;

type Metrics = openraft::RaftMetrics<u64, meta::Member>;

const WAIT: Duration = Duration::from_secs(10);
/// One try at seeing a leader agreed on; several fit in `WAIT`.
const ROUND: Duration = Duration::from_secs(1);
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

struct Cluster {
    net: std::sync::Arc<MemNetwork>,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, Meta>,
    /// The owner changes each node applies (room for every test's).
    changes: BTreeMap<NodeId, mpsc::Receiver<MetaChange>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let mut cluster = Cluster {
            net: MemNetwork::new(),
            dir: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            changes: BTreeMap::new(),
        };
        for node in NODES {
            cluster.open(node).await;
        }
        cluster
    }

    fn config(&self, node: NodeId) -> MetaConfig {
        let members = NODES
            .iter()
            .map(|n| (*n, format!("127.0.0.1:{}", 7100 + u16::from(n.0))))
            .collect();
        let mut config = MetaConfig::new(node, self.dir.path().join(node.to_string()), members);
        config.propose_timeout_ms = 1_000;
        config.snapshot_entries_max = 5;
        config
    }

    async fn open(&mut self, node: NodeId) {
        let (tx, rx) = mpsc::channel(1024);
        self.changes.insert(node, rx);
        let mut config = self.config(node);
        config.changes = Some(tx);
        let meta = Meta::open(config, self.net.transport(node)).await.unwrap();
        self.net.register(node, meta.server());
        self.nodes.insert(node, meta);
    }

    async fn kill(&mut self, node: NodeId) {
        self.net.unregister(node);
        self.nodes.remove(&node).unwrap().shutdown().await.unwrap();
    }

    fn node(&self, node: NodeId) -> &Meta {
        &self.nodes[&node]
    }

    /// Waits until one of `among` leads, as it and every other node of `among` see it.
    async fn leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // A node may name a stale leader (one cut off, or deposed a moment ago):
            // then the agreement never comes, and the next round asks afresh.
            let round = tokio::time::timeout(ROUND, self.agreed_leader(among));
            if let Ok(leader) = round.await {
                return leader;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<_> = among.iter().map(|n| summary(self.node(*n))).collect();
                panic!("no leader among {among:?} agreed on within the wait: {seen:?}")
            }
        }
    }

    async fn agreed_leader(&self, among: &[NodeId]) -> NodeId {
        let raft_ids: Vec<u64> = among.iter().map(|n| u64::from(n.0)).collect();
        let known = until(self.node(among[0]), |m| {
            m.current_leader.is_some_and(|l| raft_ids.contains(&l))
        })
        .await;
        let leader = known.current_leader.and_then(meta::mesh_node).unwrap();
        until(self.node(leader), |m| m.state == ServerState::Leader).await;
        for node in among {
            until(self.node(*node), |m| {
                m.current_leader == Some(u64::from(leader.0))
            })
            .await;
        }
        leader
    }

    /// Waits until `node` has applied the entry at `index`, and returns its state.
    async fn applied(&self, node: NodeId, index: u64) -> MetaState {
        let mut metrics = self.node(node).metrics();
        let waited = metrics.wait_for(|m| m.last_applied.is_some_and(|id| id.index >= index));
        tokio::time::timeout(WAIT, waited)
            .await
            .expect("not applied within the wait")
            .unwrap();
        self.node(node).state()
    }

    async fn propose(&self, node: NodeId, command: MetaCommand) -> MetaResponse {
        self.node(node).propose(command).await.unwrap()
    }
}

/// The metrics of `meta` once `done` holds for them. The `Ref` that `wait_for` gives is
/// dropped at once: held, it would block openraft's metrics sender.
async fn until(meta: &Meta, done: impl FnMut(&Metrics) -> bool) -> Metrics {
    meta.metrics()
        .wait_for(done)
        .await
        .map(|m| m.clone())
        .unwrap()
}

/// What a failed wait prints of a node: id, role, term, leader, last applied.
fn summary(meta: &Meta) -> String {
    let m = meta.metrics().borrow().clone();
    format!(
        "{} {:?} term {} leader {:?} applied {:?}",
        m.id, m.state, m.current_term, m.current_leader, m.last_applied
    )
}

fn log(node: u8, incarnation: u32) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    }
}

fn own(client_id: &str, node: NodeId, expected: Option<NodeId>) -> MetaCommand {
    MetaCommand::Own {
        client_id: client_id.to_string(),
        node,
        expected,
    }
}

fn others(but: NodeId) -> Vec<NodeId> {
    NODES.into_iter().filter(|n| *n != but).collect()
}

/// The index of the last entry `meta`'s state holds. From the state, not the
/// metrics: openraft publishes its metrics after applying, so they may still name
/// the entry before the one a proposal's answer just reported.
fn last_applied(meta: &Meta) -> u64 {
    meta.state().last_applied.map_or(0, |id| id.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_every_node_applies_open_own_and_seal() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader(&NODES).await;
    assert_eq!(
        cluster
            .propose(leader, MetaCommand::OpenLog { log: log(2, 1) })
            .await,
        MetaResponse::Opened
    );
    assert_eq!(
        cluster.propose(leader, own("dev", NodeId(2), None)).await,
        MetaResponse::Owned { previous: None }
    );
    let seal = MetaCommand::SealLog {
        log: log(2, 1),
        end: 77,
    };
    assert_eq!(
        cluster.propose(leader, seal).await,
        MetaResponse::Sealed { end: 77 }
    );
    let index = last_applied(cluster.node(leader));
    let expected = cluster.node(leader).state();
    for node in NODES {
        let state = cluster.applied(node, index).await;
        assert_eq!(
            (&state.logs, &state.owners),
            (&expected.logs, &expected.owners),
            "node {node}"
        );
    }
    assert_eq!(
        expected.logs[&log(2, 1)],
        meta::LogStatus::Sealed { end: 77 }
    );
    // A follower does not propose: it names the leader.
    let follower = others(leader)[0];
    match cluster
        .node(follower)
        .propose(MetaCommand::OpenLog { log: log(3, 1) })
        .await
    {
        Err(MetaError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("a follower proposed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_that_expected_nobody_is_refused_naming_the_first() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader(&NODES).await;
    assert_eq!(
        cluster.propose(leader, own("dev", NodeId(1), None)).await,
        MetaResponse::Owned { previous: None }
    );
    let conflict = cluster.propose(leader, own("dev", NodeId(3), None)).await;
    assert_eq!(
        conflict,
        MetaResponse::Refused(Refusal::OwnerIs {
            current: Some(NodeId(1))
        })
    );
    let takeover = cluster
        .propose(leader, own("dev", NodeId(3), Some(NodeId(1))))
        .await;
    assert_eq!(
        takeover,
        MetaResponse::Owned {
            previous: Some(NodeId(1))
        }
    );
    assert_eq!(cluster.node(leader).state().owners["dev"], NodeId(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_and_reopened_from_its_directory_rejoins_and_catches_up() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(&NODES).await;
    // Prefer node 1, the founder: reopening it must not initialize again.
    let follower = if leader == NodeId(1) {
        NodeId(2)
    } else {
        NodeId(1)
    };
    cluster
        .propose(leader, MetaCommand::OpenLog { log: log(1, 1) })
        .await;
    cluster.kill(follower).await;
    // Enough entries for the leader to snapshot and purge while the follower is down.
    for i in 0..12 {
        let command = MetaCommand::JoinShared {
            group: "g".into(),
            node: leader,
            client_id: format!("c{i}"),
        };
        assert_eq!(
            cluster.propose(leader, command).await,
            MetaResponse::Joined { added: true }
        );
    }
    cluster.open(follower).await;
    let index = last_applied(cluster.node(leader));
    let state = cluster.applied(follower, index).await;
    assert_eq!(state.shared["g"].len(), 12);
    assert_eq!(state.logs, cluster.node(leader).state().logs);
    // It is a member again: with the leader's other follower gone, commits need it.
    let third = others(leader).into_iter().find(|n| *n != follower).unwrap();
    cluster.kill(third).await;
    assert_eq!(
        cluster.propose(leader, own("dev", follower, None)).await,
        MetaResponse::Owned { previous: None }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dropped_a_new_leader_is_elected_and_proposals_continue() {
    let mut cluster = Cluster::start().await;
    let old = cluster.leader(&NODES).await;
    cluster.propose(old, own("dev", old, None)).await;
    cluster.kill(old).await;
    let survivors = others(old);
    let new = cluster.leader(&survivors).await;
    assert_ne!(new, old);
    let takeover = cluster.propose(new, own("dev", new, Some(old))).await;
    assert_eq!(
        takeover,
        MetaResponse::Owned {
            previous: Some(old)
        }
    );
    // The old leader comes back as a follower and learns what it missed.
    cluster.open(old).await;
    let index = last_applied(cluster.node(new));
    assert_eq!(cluster.applied(old, index).await.owners["dev"], new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_leader_cannot_commit_and_its_entry_is_undone_on_heal() {
    let cluster = Cluster::start().await;
    let cut_off = cluster.leader(&NODES).await;
    let majority = others(cut_off);
    cluster.net.partition(&[cut_off], &majority);
    match cluster
        .node(cut_off)
        .propose(own("dev", cut_off, None))
        .await
    {
        Err(MetaError::Timeout { .. }) => {}
        other => panic!("a minority committed: {other:?}"),
    }
    let new = cluster.leader(&majority).await;
    assert_eq!(
        cluster.propose(new, own("dev", new, None)).await,
        MetaResponse::Owned { previous: None }
    );
    cluster.net.heal();
    let leader = cluster.leader(&NODES).await;
    let index = last_applied(cluster.node(leader));
    for node in NODES {
        assert_eq!(
            cluster.applied(node, index).await.owners["dev"],
            new,
            "node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_submitted_on_a_follower_is_applied_and_every_node_hears_the_new_owner() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(&NODES).await;
    let follower = others(leader)[0];
    let applied = cluster
        .node(follower)
        .submit(own("dev", follower, None))
        .await
        .unwrap();
    assert_eq!(applied.response, MetaResponse::Owned { previous: None });
    let taken = cluster
        .node(leader)
        .submit(own("dev", leader, Some(follower)))
        .await
        .unwrap();
    assert!(taken.index > applied.index);
    for node in NODES {
        let rx = cluster.changes.get_mut(&node).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let change = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            let MetaChange::Owner(change) = change else {
                panic!("{change:?}");
            };
            seen.push((change.client_id, change.node, change.index));
        }
        let want = vec![
            ("dev".to_string(), follower, applied.index),
            ("dev".to_string(), leader, taken.index),
        ];
        assert_eq!(seen, want, "node {node}");
        assert_eq!(cluster.node(node).owner("dev").0, Some(leader));
    }
    // A refused compare-and-set is an answer, from anywhere, and changes no owner.
    let refused = cluster
        .node(follower)
        .submit(own("dev", follower, None))
        .await
        .unwrap();
    assert_eq!(
        refused.response,
        MetaResponse::Refused(Refusal::OwnerIs {
            current: Some(leader)
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_hears_which_nodes_have_members_of_a_shared_group() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(&NODES).await;
    let group = "$share/g/t/#".to_string();
    let join = |node: NodeId| MetaCommand::JoinShared {
        group: group.clone(),
        node,
        client_id: String::new(),
    };
    let (n1, n3) = (NodeId(1), NodeId(3));
    for command in [
        join(n3),
        join(n1),
        join(n1), // already in: no change
        MetaCommand::LeaveShared {
            group: group.clone(),
            node: n3,
            client_id: String::new(),
        },
    ] {
        cluster
            .node(others(leader)[0])
            .submit(command)
            .await
            .unwrap();
    }
    for node in NODES {
        let rx = cluster.changes.get_mut(&node).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                MetaChange::Shared(SharedChange { group: g, nodes }) => {
                    assert_eq!(g, group);
                    seen.push(nodes);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, vec![vec![n3], vec![n1, n3], vec![n1]], "node {node}");
        let mine = cluster.node(node).groups_of(n1);
        assert_eq!(mine.into_iter().collect::<Vec<_>>(), vec![group.clone()]);
    }
}
