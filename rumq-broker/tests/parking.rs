//! Connections that park (quiet for `listener.park_after_ms`: their task and their
//! socket's registration are freed, see `parking.rs`) behave as any other: they get
//! their messages, their publishes are taken, keep alive and wills work, and a
//! session taken over is told. Each test first waits for the broker's own word
//! that the connections parked (a trace line per client).

mod common;

use std::time::Duration;

use common::*;

const STEP: Duration = Duration::from_secs(5);

/// `client_id` connected and subscribed to `filter`.
async fn subscriber(port: u16, client_id: &str, filter: &str, qos: u8) -> Raw {
    let mut c = Raw::connected(port, &ConnectOpts::new(client_id)).await;
    c.send(&subscribe_packet(1, &[(filter, qos)])).await;
    assert_eq!(c.recv().await.kind(), 9, "SUBACK");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_get_their_messages_and_send_theirs() {
    let broker = Broker::parking();
    let port = broker.port();
    let mut sub = subscriber(port, "sub", "p/#", 1).await;
    let mut publisher = Raw::connected(port, &ConnectOpts::new("pub")).await;
    broker.wait_for_log_count(&parked_line("sub"), 1, STEP);
    broker.wait_for_log_count(&parked_line("pub"), 1, STEP);

    for round in 0..3u8 {
        // The publisher is woken by its socket, the subscriber by the router.
        publisher
            .send(&publish_packet("p/x", &[round], 1, false, false, 7))
            .await;
        assert_eq!(publisher.recv().await.bytes(), ack_packet(0x40, 7));
        let p = sub.recv_publish().await;
        assert_eq!((p.topic.as_str(), p.payload.clone()), ("p/x", vec![round]));
        sub.send(&ack_packet(0x40, p.pkid)).await;
        // Both park again, and again come back.
        let times = 2 + usize::from(round);
        broker.wait_for_log_count(&parked_line("sub"), times, STEP);
        broker.wait_for_log_count(&parked_line("pub"), times, STEP);
    }
    sub.send(&PINGREQ).await;
    assert_eq!(sub.recv().await.bytes(), PINGRESP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_that_goes_silent_or_away_has_its_will_published() {
    let broker = Broker::parking();
    let port = broker.port();
    let mut watcher = subscriber(port, "watcher", "will/#", 0).await;
    // Keep alive 1 s: closed 1.5 s after its last packet, parked long before.
    let silent =
        ConnectOpts::new("silent")
            .keep_alive(1)
            .will("will/silent", b"gone quiet", 0, false);
    let mut silent = Raw::connected(port, &silent).await;
    let gone = ConnectOpts::new("gone").will("will/gone", b"hung up", 0, false);
    let gone = Raw::connected(port, &gone).await;
    for id in ["watcher", "silent", "gone"] {
        broker.wait_for_log(&parked_line(id), STEP);
    }

    drop(gone);
    let p = watcher.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/gone", &b"hung up"[..])
    );
    silent.expect_closed(STEP).await;
    let p = watcher.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/silent", &b"gone quiet"[..])
    );
    broker.wait_for_log("keepalive expired", STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_session_taken_over_or_shut_down_is_closed() {
    let mut broker = Broker::parking();
    let port = broker.port();
    let mut first = Raw::connected(port, &ConnectOpts::new("same")).await;
    broker.wait_for_log_count(&parked_line("same"), 1, STEP);
    let mut second = Raw::connected(port, &ConnectOpts::new("same")).await;
    first.expect_closed(STEP).await;

    broker.wait_for_log_count(&parked_line("same"), 2, STEP);
    broker.terminate(STEP);
    second.expect_closed(STEP).await;
    broker.wait_for_log("server shutting down", STEP);
}

/// A connection with something in hand does not park: here, the first bytes of a
/// PUBLISH whose rest has not come. It parks once the packet is whole and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_partial_packet_does_not_park() {
    let broker = Broker::parking();
    let port = broker.port();
    let mut c = Raw::connected(port, &ConnectOpts::new("half")).await;
    broker.wait_for_log_count(&parked_line("half"), 1, STEP);
    let packet = publish_packet("h/x", b"payload", 1, false, false, 9);
    c.send(&packet[..5]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        broker.stderr().matches(&parked_line("half")).count(),
        1,
        "parked with a partial packet"
    );
    c.send(&packet[5..]).await;
    assert_eq!(c.recv().await.bytes(), ack_packet(0x40, 9));
    broker.wait_for_log_count(&parked_line("half"), 2, STEP);
}
