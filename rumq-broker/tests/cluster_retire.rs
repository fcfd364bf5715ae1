//! A node that runs anew leaves its earlier run's log behind, on itself and on
//! the nodes that replicated it; once no node needs it any more (every node holds
//! all of it, every session has read it) and `superseded_logs_keep_ms` has
//! passed, each node removes its copy. Three real broker processes on 127.0.0.1,
//! the stock mosquitto clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Wait (bounded) until none of `dirs` exists; the ones left if some still do.
fn wait_gone(dirs: &[std::path::PathBuf], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<String> = (dirs.iter())
            .filter(|d| d.exists())
            .map(|d| d.display().to_string())
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The payloads (hex) `sub` received before it exited.
fn got(sub: MosquittoSub) -> Vec<String> {
    let (status, lines) = sub.finish(Duration::from_secs(25));
    assert!(status.success(), "mosquitto_sub: {status}");
    (lines.iter())
        .map(|l| l.rsplit('|').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_restarted_nodes_earlier_log_is_removed_everywhere_once_no_node_needs_it() {
    let extra = "superseded_logs_keep_ms = 500\n[router]\nretention_interval_ms = 200\n";
    let mut nodes = durable_cluster(1000, extra);
    // Messages in node 1's first log, read by a subscriber on node 2.
    let sub_port = nodes[1].running().port();
    let sub = MosquittoSub::start(sub_port, &["-t", "r/#", "-q", "1", "-C", "3", "-W", "20"]);
    let pub_port = nodes[0].running().port();
    for m in ["one", "two", "three"] {
        mosquitto_pub(pub_port, &["-t", "r/1", "-q", "1", "-m", m]);
    }
    assert_eq!(got(sub), ["one", "two", "three"].map(|m| hex(m.as_bytes())));
    // Node 1 runs anew: log 1.1 never grows again.
    nodes[0].broker.take().expect("node 1 runs").kill();
    nodes[0].start();
    let data = |k: usize| nodes[k].data.path().to_path_buf();
    let kept = [
        data(0).join("messages/1.1"),
        data(1).join("replicas/1.1"),
        data(1).join("journal-replicas/1.1"),
        data(2).join("replicas/1.1"),
        data(2).join("journal-replicas/1.1"),
    ];
    let left = wait_gone(&kept, Duration::from_secs(30));
    if !left.is_empty() {
        for (k, n) in nodes.iter().enumerate() {
            eprintln!("==== node {}\n{}", k + 1, n.running().stderr());
        }
    }
    assert!(left.is_empty(), "still there: {left:?}");
    for (k, n) in nodes.iter().enumerate() {
        assert!(
            n.running().stderr().contains("retired a log"),
            "node {} says what it removed",
            k + 1
        );
    }
    // The new run's log is kept and replicated, and messages still flow.
    assert!(Path::new(&data(1).join("replicas/1.2")).exists());
    let sub = MosquittoSub::start(sub_port, &["-t", "r/#", "-q", "1", "-C", "1", "-W", "20"]);
    mosquitto_pub(
        nodes[0].running().port(),
        &["-t", "r/1", "-q", "1", "-m", "four"],
    );
    assert_eq!(got(sub), [hex(b"four")]);
}
