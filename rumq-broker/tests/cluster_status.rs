//! `rumq-broker cluster status`: an operator asks the nodes of a running cluster,
//! through their admin APIs, what each sees (docs/cluster.md, "Watching it").
//! Three real broker processes on 127.0.0.1; the command is the built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "status-token";

fn status(admins: &[SocketAddr], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumq-broker"));
    cmd.args(["cluster", "status"])
        .env_remove("RUMQ_ADMIN_TOKEN");
    for a in admins {
        cmd.args(["--admin", &a.to_string()]);
    }
    if let Some(t) = token {
        cmd.env("RUMQ_ADMIN_TOKEN", t);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

#[test]
fn operators_see_members_leader_commits_and_lag_of_every_node() {
    let addrs = peer_addrs();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let nodes =
        [1, 2, 3].map(|id| Broker::with_config(&format!("{}{admin}", node_config(id, &addrs, 2))));
    let admins: Vec<SocketAddr> = nodes
        .iter()
        .map(|n| n.logged_addr("admin API up"))
        .collect();
    for n in &nodes {
        n.wait_for_log_count("replicating", 2, Duration::from_secs(10));
    }
    for i in 0..3 {
        mosquitto_pub(
            nodes[0].port(),
            &["-t", "st/t", "-q", "1", "-m", &i.to_string()],
        );
    }
    // Until the three have elected a leader and node 1's followers hold all three.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let out = status(&admins, Some(TOKEN));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let settled = out.status.success()
            && !text.contains("leader none")
            && text.contains("node 1: log 1.1 head 3 commit 3\n")
            && text.matches("0 records behind, link up").count() >= 2;
        if settled {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let members = format!("members 1={} 2={} 3={}", addrs[0], addrs[1], addrs[2]);
    assert_eq!(text.matches(&members).count(), 3, "{text}");
    for node in 1..=3 {
        assert!(
            text.contains(&format!("node {node}: log {node}.1 ")),
            "{text}"
        );
    }
    assert!(text.contains("  replica 1.1: head 3 commit 3\n"), "{text}");

    // Without the token: refused, and said so; a node that does not answer is named.
    let out = status(&admins[..1], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wants a token"),
        "{out:?}"
    );
    let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let out = status(&[admins[0], gone], Some(TOKEN));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node 1: "),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1: "),
        "{out:?}"
    );
}
