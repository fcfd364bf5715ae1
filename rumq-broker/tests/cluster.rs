//! Three real broker processes on 127.0.0.1 as a cluster (docs/cluster.md): a
//! publish is acknowledged only once two nodes hold it, and a subscriber on any node
//! gets what is published on any other, with the stock mosquitto clients and raw
//! MQTT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumq_broker::protocol::framing::{decode_varint, Varint};

#[path = "mqtt5/packets.rs"]
#[allow(dead_code)]
mod packets;
use packets::{connect, connect5, disconnect_reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_waits_for_a_second_copy_and_every_node_delivers_every_message() {
    let addrs = peer_addrs();
    let n1 = start_node(1, &addrs);

    // Alone, node 1 holds the only copy: its publisher hears nothing back. (It has
    // no id: one node of three cannot make itself an id's owner, but an assigned id
    // needs no agreement.)
    let mut publisher = Raw::connected(n1.port(), &ConnectOpts::new("")).await;
    publisher
        .send(&publish_packet("t/early", b"held", 1, false, false, 1))
        .await;
    publisher.expect_silence(Duration::from_millis(800)).await;

    // A second node replicates node 1's log: two copies, and the PUBACK comes.
    let n2 = start_node(2, &addrs);
    let ack = publisher.recv_within(Duration::from_secs(10)).await;
    assert_eq!(
        ack.map(|p| p.bytes()),
        Some(ack_packet(0x40, 1)),
        "PUBACK once a second node holds the message:\n{}",
        n1.stderr()
    );

    // The third node's subscriber gets what nodes 1, 2 and 3 publish, and not what
    // was published before node 3 started (-C 3 would count it).
    let n3 = start_node(3, &addrs);
    n3.wait_for_log_count("replicating", 2, Duration::from_secs(10));
    let sub = MosquittoSub::start(
        n3.port(),
        &["-t", "t/#", "-q", "1", "-C", "3", "-W", "20", "-i", "sub-3"],
    );
    mosquitto_pub(n1.port(), &["-t", "t/one", "-q", "1", "-m", "from node 1"]);
    mosquitto_pub(n2.port(), &["-t", "t/two", "-q", "1", "-m", "from node 2"]);
    mosquitto_pub(
        n3.port(),
        &["-t", "t/three", "-q", "1", "-m", "from node 3"],
    );
    let (status, lines) = sub.finish(Duration::from_secs(25));
    assert!(status.success(), "{lines:?}\n{}", n3.stderr());
    let mut got: Vec<String> = lines
        .iter()
        .map(|l| l.rsplit('|').next().unwrap().to_string())
        .collect();
    got.sort();
    let hex = |s: &str| hex(s.as_bytes());
    let mut want = vec![hex("from node 1"), hex("from node 2"), hex("from node 3")];
    want.sort();
    assert_eq!(got, want, "{lines:?}");
    drop((n1, n2, n3));
}

#[test]
fn a_retained_message_set_on_one_node_is_read_on_another_with_a_wildcard() {
    let nodes = three_nodes();
    mosquitto_pub(
        nodes[0].port(),
        &["-t", "home/kitchen/temp", "-q", "1", "-r", "-m", "21"],
    );
    // Node 3 applies it once its replica of node 1's log has it committed: ask
    // again until it does, a bounded number of times.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let sub = MosquittoSub::start(
            nodes[2].port(),
            &["-t", "home/+/temp", "-q", "1", "-C", "1", "-W", "1"],
        );
        let (_, lines) = sub.finish(Duration::from_secs(5));
        if !lines.is_empty() {
            seen = lines;
            break;
        }
    }
    // qos|retained|topic|payload (hex)
    assert_eq!(seen, vec![format!("1|1|home/kitchen/temp|{}", hex(b"21"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ack_copies_3_and_a_node_down_nothing_is_acked_or_delivered() {
    let addrs = peer_addrs();
    let n1 = start_node_with(1, &addrs, 3);
    let n2 = start_node_with(2, &addrs, 3);
    n1.wait_for_log_count("replicating", 1, Duration::from_secs(10));
    let mut sub = Raw::connected(n2.port(), &ConnectOpts::new("sub-2")).await;
    sub.send(&subscribe_packet(1, &[("t/#", 1)])).await;
    assert_eq!(sub.recv().await.kind(), 9, "SUBACK");
    let mut publisher = Raw::connected(n1.port(), &ConnectOpts::new("pub-1")).await;
    publisher
        .send(&publish_packet("t/x", b"three copies", 1, false, false, 7))
        .await;
    // Two of three nodes hold it: neither acknowledged nor delivered.
    publisher.expect_silence(Duration::from_millis(800)).await;
    sub.expect_silence(Duration::from_millis(200)).await;
    let n3 = start_node_with(3, &addrs, 3);
    let ack = publisher.recv_within(Duration::from_secs(10)).await;
    assert_eq!(
        ack.map(|p| p.bytes()),
        Some(ack_packet(0x40, 7)),
        "{}",
        n1.stderr()
    );
    let delivered = sub.recv_publish().await;
    assert_eq!(delivered.payload, b"three copies");
    drop((n1, n2, n3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_connected_on_another_node_is_taken_over_there() {
    let nodes = three_nodes();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut on_1, code, ..) = connect(n1.port(), &connect5("dev-7", true, &[])).await;
    assert_eq!(code, 0, "{}", n1.stderr());
    let (mut on_2, code, ..) = connect(n2.port(), &connect5("dev-7", true, &[])).await;
    assert_eq!(code, 0, "{}", n2.stderr());
    // Node 1 hears that node 2 owns the id now and closes its connection as v5 has it.
    assert_eq!(
        disconnect_reason(&on_1.recv().await),
        0x8e,
        "{}",
        n1.stderr()
    );
    on_1.expect_closed(STEP).await;

    // A 3.1.1 client takes it on node 3: node 2's connection goes the same way, and
    // the new one works.
    let mut on_3 = Raw::connected(n3.port(), &ConnectOpts::new("dev-7")).await;
    assert_eq!(
        disconnect_reason(&on_2.recv().await),
        0x8e,
        "{}",
        n2.stderr()
    );
    on_3.send(&subscribe_packet(1, &[("dev/7", 1)])).await;
    assert_eq!(on_3.recv().await.kind(), 9, "SUBACK");
    mosquitto_pub(n1.port(), &["-t", "dev/7", "-q", "1", "-m", "still here"]);
    assert_eq!(on_3.recv_publish().await.payload, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_majority_refuses_a_client_id_it_cannot_own() {
    let addrs = peer_addrs();
    let config = node_config(1, &addrs, 2) + "claim_timeout_ms = 500\n";
    let n1 = Broker::with_config(&config);
    n1.wait_for_log("peer listener up", STEP);
    let (_raw, code, _, props) = connect(n1.port(), &connect5("lonely", true, &[])).await;
    assert_eq!(code, 0x88, "server unavailable");
    let why = props
        .iter()
        .find(|(id, _)| *id == 0x1f)
        .map(|(_, v)| v.clone());
    let why = String::from_utf8_lossy(&why.expect("a reason string")[2..]).to_string();
    assert!(why.contains("cluster"), "{why}");
    // With a second node the group has its majority, and the same id connects.
    let n2 = start_node(2, &addrs);
    let mut code = 0x88;
    for _ in 0..20 {
        let (_raw, c, ..) = connect(n1.port(), &connect5("lonely", true, &[])).await;
        code = c;
        if code == 0 {
            break;
        }
    }
    assert_eq!(code, 0, "{}\n{}", n1.stderr(), n2.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_with_members_on_two_nodes_gets_each_message_once() {
    let nodes = three_nodes();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut members = Vec::new();
    for (i, n) in [n1, n2].into_iter().enumerate() {
        let mut m = Raw::connected(n.port(), &ConnectOpts::new(&format!("worker-{i}"))).await;
        m.send(&subscribe_packet(1, &[("$share/g/jobs/#", 1)]))
            .await;
        assert_eq!(m.recv().await.kind(), 9, "SUBACK");
        members.push(m);
    }
    // Both nodes have applied that the group has members on nodes 1 and 2.
    for n in [n1, n2] {
        n.wait_for_log("shared group's nodes group=$share/g/jobs/# nodes=1,2", STEP);
    }
    let mut publisher = Raw::connected(n3.port(), &ConnectOpts::new("jobs-3")).await;
    const JOBS: u16 = 40;
    for i in 1..=JOBS {
        let payload = format!("job {i}");
        publisher
            .send(&publish_packet(
                "jobs/x",
                payload.as_bytes(),
                1,
                false,
                false,
                i,
            ))
            .await;
        assert_eq!(publisher.recv().await.kind(), 4, "PUBACK");
    }
    let mut got: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.iter().map(Vec::len).sum::<usize>() < usize::from(JOBS) {
        assert!(tokio::time::Instant::now() < deadline, "{got:?}");
        for (i, m) in members.iter_mut().enumerate() {
            if let Some(p) = m.recv_within(Duration::from_millis(50)).await {
                let p = p.publish();
                got[i].push(String::from_utf8(p.payload).unwrap());
            }
        }
    }
    for m in &mut members {
        m.expect_silence(Duration::from_millis(300)).await;
    }
    let mut all: Vec<String> = got.concat();
    all.sort();
    let received = all.len();
    all.dedup();
    assert_eq!(
        (received, all.len()),
        (usize::from(JOBS), usize::from(JOBS)),
        "each job once: {got:?}"
    );
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "both members: {got:?}"
    );
}

/// `GET path` on `addr` as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_cluster_in_the_admin_api_and_the_metrics() {
    let addrs = peer_addrs();
    let observed = "[admin]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let n1 = Broker::with_config(&format!("{}{observed}", node_config(1, &addrs, 2)));
    let admin = n1.logged_addr("admin API up");
    // Alone, node 1 has no majority: no metadata leader, not ready.
    let (code, body) = http(admin, "GET", "/ready", None).await;
    assert_eq!(code, 503, "{body}");
    let (n2, n3) = (start_node(2, &addrs), start_node(3, &addrs));
    for n in [&n1, &n2, &n3] {
        n.wait_for_log_count("replicating", 2, Duration::from_secs(10));
    }
    for i in 0..3 {
        mosquitto_pub(n1.port(), &["-t", "obs/t", "-q", "1", "-m", &i.to_string()]);
    }
    // Ready once the three elect a leader of the metadata group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http(admin, "GET", "/ready", None).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Acked means committed; the followers' lag and the leader may take a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = get_json(admin, "/cluster").await;
        let settled = view["followers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["lag_records"] == 0 && f["link_up"] == true)
            && !view["meta"]["leader"].is_null();
        if settled {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (view["node"].as_u64(), view["head"].as_u64()),
        (Some(1), Some(3)),
        "{view}"
    );
    assert_eq!(view["commit"], 3, "{view}");
    assert_eq!(view["followers"].as_array().unwrap().len(), 2, "{view}");
    let replicas = view["replicas"].as_array().unwrap();
    assert_eq!(
        replicas.len(),
        2,
        "node 1 holds nodes 2 and 3's logs: {view}"
    );
    assert!(view["meta"]["term"].as_u64().unwrap() >= 1, "{view}");
    let members: Vec<(u64, String)> =
        serde_json::from_value(view["meta"]["members"].clone()).unwrap();
    let want: Vec<(u64, String)> = (1..=3).map(|i| (i as u64, addrs[i - 1].clone())).collect();
    assert_eq!(members, want, "{view}");

    let metrics = n1.logged_addr("metrics endpoint up");
    let (_, body) = http(metrics, "GET", "/metrics", None).await;
    for line in [
        "rumq_cluster_commit 3",
        "rumq_cluster_log_head 3",
        "rumq_cluster_peer_up{peer=\"2\"} 1",
        "rumq_cluster_follower_lag_records{follower=\"3\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
    let leader = format!("rumq_cluster_meta_leader {}", view["meta"]["leader"]);
    assert!(body.lines().any(|l| l == leader), "{leader} in:\n{body}");
    drop((n2, n3));
}

#[test]
fn under_mutual_tls_the_nodes_link_and_share_messages() {
    let certs = Certs::make();
    let addrs = peer_addrs();
    let tls = format!(
        "tls_cert = {:?}\ntls_key = {:?}\ntls_ca = {:?}\n",
        certs.arg("server.pem"),
        certs.arg("server.key"),
        certs.arg("ca.pem")
    );
    let nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            let b = Broker::with_config(&format!("{}{tls}", node_config(id, &addrs, 2)));
            b.wait_for_log("peer listener up", STEP);
            b
        })
        .collect();
    for n in &nodes {
        n.wait_for_log_count("replicating", 2, Duration::from_secs(10));
        assert!(n.stderr().contains("tls=true"), "{}", n.stderr());
    }
    let sub = MosquittoSub::start(
        nodes[2].port(),
        &[
            "-t", "tls/#", "-q", "1", "-C", "1", "-W", "10", "-i", "tls-sub",
        ],
    );
    mosquitto_pub(
        nodes[0].port(),
        &["-t", "tls/a", "-q", "1", "-m", "over TLS"],
    );
    let (status, lines) = sub.finish(Duration::from_secs(15));
    assert!(status.success(), "{lines:?}");
    assert!(lines[0].ends_with(&hex(b"over TLS")), "{lines:?}");
}

/// A node's persistent sessions outlive its process: node 1 is killed with a
/// session offline on it, and its next run (a new log and journal) carries the
/// session over, its position in node 1's old log and in its replica of node 2's
/// log, which catches up on what node 2 published meanwhile.
#[test]
fn a_persistent_session_outlives_its_node_being_killed() {
    let addrs = peer_addrs();
    let data = tempfile::tempdir().unwrap();
    let config = node_config(1, &addrs, 2);
    let mut n1 = Broker::start_in(data.path(), Some(&config));
    let (n2, n3) = (start_node(2, &addrs), start_node(3, &addrs));
    for n in [&n1, &n2, &n3] {
        n.wait_for_log_count("replicating", 2, Duration::from_secs(10));
    }
    let sub_args = ["-c", "-i", "dev-1", "-q", "1", "-t", "t/#", "-W", "20"];
    let first = MosquittoSub::start(n1.port(), &[&sub_args[..], &["-C", "1"]].concat());
    mosquitto_pub(n1.port(), &["-t", "t/0", "-q", "1", "-m", "before"]);
    let (status, lines) = first.finish(Duration::from_secs(25));
    assert!(status.success(), "{lines:?}\n{}", n1.stderr());

    // Offline now: one message on each of nodes 1 and 2, both acknowledged.
    mosquitto_pub(n1.port(), &["-t", "t/1", "-q", "1", "-m", "m1"]);
    mosquitto_pub(n2.port(), &["-t", "t/2", "-q", "1", "-m", "m2"]);
    n1.kill();
    // Node 1 is down: nodes 2 and 3 hold this one.
    mosquitto_pub(n2.port(), &["-t", "t/3", "-q", "1", "-m", "m3"]);

    let n1 = Broker::start_in(data.path(), Some(&config));
    n1.wait_for_log("carried over from the earlier run", STEP);
    let again = MosquittoSub::spawn(n1.port(), &[&sub_args[..], &["-C", "3"]].concat());
    let (status, lines) = again.finish(Duration::from_secs(25));
    assert!(status.success(), "{lines:?}\n{}", n1.stderr());
    let mut got: Vec<String> = lines
        .iter()
        .map(|l| l.rsplit('|').next().unwrap().to_string())
        .collect();
    got.sort();
    let want: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| hex(m.as_bytes()))
        .collect();
    assert_eq!(got, want, "{lines:?}\n{}", n1.stderr());
    drop((n2, n3));
}
