//! `[cluster]` and `--node-id`, `--cluster-listen`, `--peer` on the real binary: a
//! bad cluster configuration exits 2 naming the key, without listening or touching
//! the data directory. (Valid ones run: `tests/cluster.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SECRET: &str = "0123456789abcdef";

/// One file for every node: each gets its id, listen address and peers as flags.
fn shared_file() -> String {
    format!("[cluster]\nsecret = \"{SECRET}\"\n")
}

/// `[cluster]` of node 1 of 3 in a file, with `extra` lines appended.
fn node_1_file(extra: &str) -> String {
    format!(
        "[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\n\
         peers = [\"2=127.0.0.1:7102\", \"3=127.0.0.1:7103\"]\nsecret = \"{SECRET}\"\n{extra}"
    )
}

/// The flags that make node `id` of the three-node example.
fn node_flags(id: u8) -> Vec<String> {
    let mut flags = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--cluster-listen".into(),
        peer_addr(id),
    ];
    for peer in (1..=3).filter(|&p| p != id) {
        flags.extend(["--peer".into(), format!("{peer}={}", peer_addr(peer))]);
    }
    flags
}

/// Where node `id` of the three-node example listens for its peers.
fn peer_addr(id: u8) -> String {
    format!("127.0.0.1:710{id}")
}

/// Start the broker with `config` in a file and `args`; it must exit 2 before
/// listening, without creating its data directory. Returns stderr.
fn refused(config: &str, args: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(broker_bin());
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        !data.exists(),
        "the data directory is not touched: {stderr}"
    );
    stderr
}

#[test]
fn a_peer_listen_address_in_use_exits_2_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut flags = node_flags(1);
    flags[3].clone_from(&addr);
    let stderr = refused(&shared_file(), &flags);
    assert!(
        stderr.contains(&format!("[cluster] listen: cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn duplicate_peer_ids_exit_2_naming_peers() {
    let stderr = refused(
        &node_1_file("").replace("3=127.0.0.1:7103", "2=127.0.0.1:7103"),
        &[],
    );
    assert!(stderr.contains("cluster.toml"), "names the file: {stderr}");
    assert!(
        stderr.contains("[cluster] peers: node id 2 is listed twice"),
        "{stderr}"
    );
    let mut flags = node_flags(1);
    flags.extend(["--peer".into(), "3=127.0.0.1:7104".into()]);
    let stderr = refused(&shared_file(), &flags);
    assert!(
        stderr.contains("[cluster] peers: node id 3 is listed twice"),
        "{stderr}"
    );
}

#[test]
fn own_id_among_peers_exits_2_naming_peers() {
    // Node 2 started on node 1's file, given only its id.
    let stderr = refused(&node_1_file(""), &["--node-id".into(), "2".into()]);
    assert!(
        stderr.contains("[cluster] peers: 2=127.0.0.1:7102 has this node's own node_id 2"),
        "{stderr}"
    );
}

#[test]
fn ack_copies_above_the_node_count_exits_2_naming_it() {
    let stderr = refused(&node_1_file("ack_copies = 4\n"), &[]);
    assert!(
        stderr.contains("[cluster] ack_copies must be between 1 and the number of nodes (3"),
        "{stderr}"
    );
    let stderr = refused(&node_1_file("ack_copies = 0\n"), &[]);
    assert!(stderr.contains("[cluster] ack_copies"), "{stderr}");
}

#[test]
fn a_short_or_missing_secret_exits_2_naming_it() {
    let short = &SECRET[..15];
    let stderr = refused(&node_1_file("").replace(SECRET, short), &[]);
    assert!(
        stderr.contains("[cluster] secret: the cluster secret has 15 bytes; it needs at least 16"),
        "{stderr}"
    );
    assert!(!stderr.contains(short), "the secret is not shown: {stderr}");
    // Flags without a [cluster] section make one, and it has no secret.
    let stderr = refused("", &node_flags(1));
    assert!(stderr.contains("[cluster] secret is missing"), "{stderr}");
}

#[test]
fn a_bad_peer_flag_exits_2_naming_the_flag() {
    for bad in ["2-127.0.0.1:7102", "0=127.0.0.1:7102", "2=127.0.0.1"] {
        let mut flags = node_flags(1);
        flags.extend(["--peer".into(), bad.into()]);
        let stderr = refused(&shared_file(), &flags);
        assert!(stderr.contains("'--peer <ID=ADDR>'"), "{bad}: {stderr}");
        assert!(
            stderr.contains("ID=ADDR (e.g. 2=127.0.0.1:7102)"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_peer_in_the_file_or_listen_exits_2_naming_key_and_line() {
    let stderr = refused(
        &node_1_file("").replace("3=127.0.0.1:7103", "3@127.0.0.1:7103"),
        &[],
    );
    assert!(
        stderr.contains("line 4") && stderr.contains("peers = ["),
        "{stderr}"
    );
    assert!(stderr.contains("not \"3@127.0.0.1:7103\""), "{stderr}");
    let stderr = refused(&node_1_file("").replace("127.0.0.1:7101", "7101"), &[]);
    assert!(
        stderr.contains("line 3") && stderr.contains("listen = \"7101\""),
        "{stderr}"
    );
    let flags = ["--cluster-listen".to_string(), "nowhere".into()];
    let stderr = refused(&shared_file(), &flags);
    assert!(stderr.contains("'--cluster-listen <ADDR>'"), "{stderr}");
}

#[test]
fn node_id_zero_exits_2_naming_it() {
    let stderr = refused(&node_1_file("").replace("node_id = 1", "node_id = 0"), &[]);
    assert!(
        stderr.contains("line 2") && stderr.contains("node_id = 0"),
        "{stderr}"
    );
    let mut flags = node_flags(1);
    flags[1] = "0".into();
    let stderr = refused(&shared_file(), &flags);
    assert!(
        stderr.contains("'--node-id <N>'") && stderr.contains("between 1 and 255"),
        "{stderr}"
    );
}

#[test]
fn peer_tls_keys_go_together_and_a_missing_file_exits_2_naming_it() {
    let err = refused(&node_1_file("tls_cert = \"/nowhere/node.pem\"\n"), &[]);
    assert!(
        err.contains("[cluster] tls_cert, tls_key and tls_ca go together"),
        "{err}"
    );
    let files = "tls_cert = \"/nowhere/node.pem\"\ntls_key = \"/nowhere/node.key\"\n\
                 tls_ca = \"/nowhere/ca.pem\"\n";
    let err = refused(&node_1_file(files), &[]);
    assert!(
        err.contains("[cluster] tls") && err.contains("/nowhere/node.pem"),
        "{err}"
    );
}
