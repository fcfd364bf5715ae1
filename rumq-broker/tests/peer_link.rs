//! Peer links on loopback: two ends with the same secret link and exchange frames;
//! a wrong secret, a stranger, garbage, an oversize frame and silence are refused,
//! each ending only that link, with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use commitlog::Offset;
use mesh::{Channel, Frame, Incarnation, LogId, NodeId, Secret, Stream};
use rumq_broker::peer_link::{Link, LinkConfig, LinkError};
use rumq_broker::peer_stream::PeerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const SECRET: &str = "the cluster's shared secret";

fn config(me: NodeId, secret: &str) -> LinkConfig {
    LinkConfig {
        me,
        secret: Secret::new(secret.as_bytes()).unwrap(),
        frame_bytes_max: 64 * 1024,
        handshake_timeout: Duration::from_secs(2),
        tls: None,
    }
}

/// A listener for node B; accepts one connection and runs the handshake.
async fn listen_b(
    secret: &'static str,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Link, LinkError>>,
) {
    listen_with(config(B, secret)).await
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn nodes_with_the_same_secret_link_and_exchange_frames() {
    let (addr, accepted) = listen_b(SECRET).await;
    let mut a = within(Link::dial(addr, (B, Channel::Data), &config(A, SECRET)))
        .await
        .unwrap();
    let mut b = within(accepted).await.unwrap().unwrap();
    assert_eq!((a.peer(), b.peer()), (B, A));
    assert_eq!((a.channel(), b.channel()), (Channel::Data, Channel::Data));

    let log = LogId {
        node: B,
        incarnation: Incarnation(3),
    };
    let fetch = Frame::Fetch {
        stream: Stream::Messages,
        log,
        from: Offset(10),
        bytes_max: 1 << 20,
        wait_ms: 500,
    };
    a.send(&fetch).await.unwrap();
    assert_eq!(within(b.recv()).await.unwrap(), fetch);
    let records = Frame::Records {
        stream: Stream::Messages,
        log,
        base: Offset(10),
        commit: Offset(10),
        records: Bytes::from_static(b"as stored"),
    };
    b.send(&records).await.unwrap();
    assert_eq!(within(a.recv()).await.unwrap(), records);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_on_both_ends_with_a_reason() {
    let (addr, accepted) = listen_b(SECRET).await;
    let dialed = within(Link::dial(
        addr,
        (B, Channel::Meta),
        &config(A, "another secret, same length"),
    ))
    .await;
    // The dialer checks the listener's proof first: it finds B cannot prove *its*
    // secret, and says so to B.
    assert!(
        matches!(dialed, Err(LinkError::Auth(mesh::AuthError::BadProof(n))) if n == B),
        "{dialed:?}"
    );
    let accepted = within(accepted).await.unwrap();
    let Err(LinkError::Closed(Some(reason))) = accepted else {
        panic!("listener: {accepted:?}");
    };
    assert!(
        reason.contains("failed to prove the cluster secret"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_stranger_is_refused_and_told_why() {
    let (addr, accepted) = listen_b(SECRET).await;
    let stranger = within(Link::dial(
        addr,
        (B, Channel::Data),
        &config(NodeId(7), SECRET),
    ))
    .await;
    let Err(LinkError::Closed(Some(reason))) = stranger else {
        panic!("stranger: {stranger:?}");
    };
    assert!(reason.contains("node 7 is not a peer"), "{reason}");
    let accepted = within(accepted).await.unwrap();
    assert!(
        matches!(accepted, Err(LinkError::Auth(mesh::AuthError::WrongNode(n))) if n == NodeId(7)),
        "{accepted:?}"
    );
}

/// What the listener concludes from `bytes` written by a raw client, and what the
/// client then reads before the listener closes.
async fn raw_client(bytes: &[u8]) -> (Result<Link, LinkError>, Vec<u8>) {
    let (addr, accepted) = listen_b(SECRET).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let accepted = within(accepted).await.unwrap();
    let mut read = Vec::new();
    let _ = within(raw.read_to_end(&mut read)).await;
    (accepted, read)
}

#[tokio::test]
async fn garbage_and_oversize_frames_end_the_link_with_the_decoders_reason() {
    let (accepted, read) = raw_client(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(matches!(accepted, Err(LinkError::Frame(_))), "{accepted:?}");
    assert!(
        String::from_utf8_lossy(&read).contains("over the limit"),
        "{read:?}"
    );

    let (accepted, _) = raw_client(&[0, 0, 0, 2, mesh::PROTOCOL_VERSION, 99]).await;
    assert!(
        matches!(
            accepted,
            Err(LinkError::Frame(mesh::FrameError::UnknownKind(99)))
        ),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let mut c = config(B, SECRET);
    c.handshake_timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let accepted = within(Link::accept(stream, |n| n == A, &c)).await;
    assert!(
        matches!(accepted, Err(LinkError::HandshakeTimeout(_))),
        "{accepted:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn split_halves_carry_requests_both_ways_at_once() {
    let (addr, accepted) = listen_b(SECRET).await;
    let a = within(Link::dial(addr, (B, Channel::Data), &config(A, SECRET)))
        .await
        .unwrap();
    let b = within(accepted).await.unwrap().unwrap();
    let (mut a_read, mut a_write) = a.into_split();
    let (mut b_read, mut b_write) = b.into_split();
    let fetch = |node| Frame::Fetch {
        stream: Stream::Messages,
        log: LogId {
            node,
            incarnation: Incarnation(1),
        },
        from: Offset(0),
        bytes_max: 4096,
        wait_ms: 100,
    };
    // Both write before either reads: neither waits for the other.
    a_write.send(&fetch(B)).await.unwrap();
    b_write.send(&fetch(A)).await.unwrap();
    assert_eq!(within(b_read.recv()).await.unwrap(), fetch(B));
    assert_eq!(within(a_read.recv()).await.unwrap(), fetch(A));
    // A goodbye from one writer ends the other's reader with its reason.
    a_write.goodbye("shutting down").await;
    let ended = within(b_read.recv()).await;
    assert!(
        matches!(&ended, Err(LinkError::Closed(Some(r))) if r == "shutting down"),
        "{ended:?}"
    );
    assert_eq!((a_read.peer(), b_write.peer()), (B, A));
}

#[path = "common/certs.rs"]
#[allow(dead_code)]
mod certs;

/// A link config with mutual TLS: this node's certificate `cert` (`cert`.pem and
/// `cert`.key) and the test CA.
fn tls_config(me: NodeId, certs: &certs::Certs, cert: &str) -> LinkConfig {
    let tls = PeerTls::from_files(
        &certs.path(&format!("{cert}.pem")),
        &certs.path(&format!("{cert}.key")),
        &certs.path("ca.pem"),
    )
    .unwrap();
    LinkConfig {
        tls: Some(tls),
        ..config(me, SECRET)
    }
}

/// Node B listening with `config`: the task accepts one connection.
async fn listen_with(
    config: LinkConfig,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Link, LinkError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        Link::accept(stream, |n| n == A, &config).await
    });
    (addr, task)
}

#[tokio::test]
async fn under_mutual_tls_nodes_the_ca_signed_link_and_exchange_frames() {
    let certs = certs::Certs::make();
    // Both nodes present the CA's certificate for 127.0.0.1 (the address dialed).
    let (addr, accepted) = listen_with(tls_config(B, &certs, "server")).await;
    let a = within(Link::dial(
        addr,
        (B, Channel::Data),
        &tls_config(A, &certs, "server"),
    ))
    .await
    .unwrap();
    let b = within(accepted).await.unwrap().unwrap();
    // Split, as the data links are: each half works over TLS.
    let ((mut a_read, mut a_write), (mut b_read, mut b_write)) = (a.into_split(), b.into_split());
    let fetch = Frame::Fetch {
        stream: Stream::Messages,
        log: LogId {
            node: B,
            incarnation: Incarnation(1),
        },
        from: Offset(0),
        bytes_max: 1024,
        wait_ms: 10,
    };
    a_write.send(&fetch).await.unwrap();
    assert_eq!(within(b_read.recv()).await.unwrap(), fetch);
    b_write.send(&fetch).await.unwrap();
    assert_eq!(within(a_read.recv()).await.unwrap(), fetch);
}

#[tokio::test]
async fn under_mutual_tls_a_certificate_of_another_ca_or_none_is_refused() {
    let certs = certs::Certs::make();
    // Another CA's certificate: the listener's handshake refuses it.
    let (addr, accepted) = listen_with(tls_config(B, &certs, "server")).await;
    let stranger = PeerTls::from_files(
        &certs.path("stranger.pem"),
        &certs.path("stranger.key"),
        &certs.path("ca.pem"),
    )
    .unwrap();
    let dialer = LinkConfig {
        tls: Some(stranger),
        ..config(A, SECRET)
    };
    let _ = within(Link::dial(addr, (B, Channel::Data), &dialer)).await;
    let refused = within(accepted).await.unwrap();
    assert!(matches!(refused, Err(LinkError::Io(_))), "{refused:?}");

    // Plain TCP (no certificate at all), even with the right secret: refused.
    let (addr, accepted) = listen_with(tls_config(B, &certs, "server")).await;
    let dialed = within(Link::dial(addr, (B, Channel::Data), &config(A, SECRET))).await;
    assert!(dialed.is_err(), "{dialed:?}");
    assert!(within(accepted).await.unwrap().is_err());

    // A listener whose certificate does not name the address dialed: the dialer
    // refuses it (the client certificate has no subject alternative name).
    let (addr, accepted) = listen_with(tls_config(B, &certs, "client")).await;
    let dialed = within(Link::dial(
        addr,
        (B, Channel::Data),
        &tls_config(A, &certs, "server"),
    ))
    .await;
    assert!(matches!(dialed, Err(LinkError::Io(_))), "{dialed:?}");
    assert!(within(accepted).await.unwrap().is_err());
}

#[tokio::test]
async fn under_mutual_tls_a_frame_larger_than_the_socket_buffers_arrives_whole() {
    let certs = certs::Certs::make();
    let big = |me| LinkConfig {
        frame_bytes_max: 16 << 20,
        ..tls_config(me, &certs, "server")
    };
    let (addr, accepted) = listen_with(big(B)).await;
    let a = within(Link::dial(addr, (B, Channel::Data), &big(A)))
        .await
        .unwrap();
    let (mut b_read, _b_write) = within(accepted).await.unwrap().unwrap().into_split();
    let (_a_read, mut a_write) = a.into_split();
    let records = Frame::Records {
        stream: Stream::Messages,
        log: LogId {
            node: A,
            incarnation: Incarnation(1),
        },
        base: Offset(0),
        commit: Offset(0),
        records: Bytes::from(vec![7u8; 8 << 20]),
    };
    // Written and read at once: eight megabytes through TLS records and full socket
    // buffers, then nothing more behind them.
    let (sent, got) = within(async { tokio::join!(a_write.send(&records), b_read.recv()) }).await;
    sent.unwrap();
    assert_eq!(got.unwrap(), records);
}
