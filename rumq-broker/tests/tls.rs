//! TLS listeners (`[[listeners]]`, `transport = "tls"`) against the real binary and
//! the stock mosquitto clients, with certificates made for each test (rcgen): a CA,
//! a server certificate for 127.0.0.1, and a client certificate. Plain TLS, mutual
//! TLS (a client without a certificate, or with one from another CA, is refused in
//! the handshake), and what a client that is not TLS, or that never finishes its
//! handshake, gets: its own connection closed, nobody else's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The port of the broker's TLS listener, from its log.
fn tls_port(b: &Broker) -> u16 {
    b.logged_addr("mqtt listener up").port()
}

/// mosquitto_pub with `args`; its exit status and what it printed.
fn try_pub(port: u16, args: &[&str]) -> (bool, String) {
    let out = mosquitto_pub_output(port, args);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), text)
}

#[test]
fn mosquitto_clients_publish_and_subscribe_over_tls() {
    let certs = Certs::make();
    let b = Broker::with_config(&certs.listener(false));
    let port = tls_port(&b);
    let ca = certs.arg("ca.pem");
    let sub = MosquittoSub::start(
        port,
        &[
            "--cafile", &ca, "-t", "tls/#", "-q", "1", "-C", "3", "-W", "10",
        ],
    );
    mosquitto_pub(
        port,
        &["--cafile", &ca, "-t", "tls/a", "-q", "1", "-m", "over tls"],
    );
    // A message large enough that the log hands it over by file range (sent with
    // sendfile on plain TCP; here its bytes go through rustls).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let big_file = certs.path("big.bin");
    std::fs::write(&big_file, &big).unwrap();
    let big_arg = big_file.display().to_string();
    mosquitto_pub(
        port,
        &["--cafile", &ca, "-t", "tls/big", "-q", "1", "-f", &big_arg],
    );
    // The plain listener serves the same broker.
    mosquitto_pub(b.port(), &["-t", "tls/plain", "-q", "1", "-m", "plain"]);
    let (status, lines) = sub.finish(STEP);
    assert!(status.success(), "{}", b.stderr());
    let payloads: Vec<&str> = lines.iter().filter_map(|l| l.rsplit('|').next()).collect();
    assert_eq!(payloads, [hex(b"over tls"), hex(&big), hex(b"plain")]);
    // A client that does not trust the broker's CA refuses it.
    let (ok, why) = try_pub(
        port,
        &["--cafile", &certs.arg("stranger.pem"), "-t", "x", "-m", "y"],
    );
    assert!(!ok, "{why}");
}

#[test]
fn mutual_tls_takes_a_client_the_ca_vouches_for_and_refuses_the_others() {
    let certs = Certs::make();
    let b = Broker::with_config(&certs.listener(true));
    let port = tls_port(&b);
    let ca = certs.arg("ca.pem");
    let with = |cert: &str, key: &str| {
        try_pub(
            port,
            &[
                "--cafile",
                &ca,
                "--cert",
                &certs.arg(cert),
                "--key",
                &certs.arg(key),
                "-t",
                "m",
                "-m",
                "x",
            ],
        )
    };
    let (ok, why) = with("client.pem", "client.key");
    assert!(ok, "{why}\n{}", b.stderr());
    let (ok, _) = with("stranger.pem", "stranger.key");
    assert!(!ok, "a certificate of another CA");
    let (ok, _) = try_pub(port, &["--cafile", &ca, "-t", "m", "-m", "x"]);
    assert!(!ok, "no certificate");
    b.wait_for_log_count("handshake failed", 2, STEP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_handshake_that_never_ends_closes_only_that_connection() {
    let certs = Certs::make();
    let config = certs.listener(false) + "[limits]\nconnect_timeout_ms = 500\n";
    let b = Broker::with_config(&config);
    let port = tls_port(&b);
    // MQTT in clear on the TLS port: not a ClientHello. A TLS alert, then the end.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(&ConnectOpts::new("clear").encode())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(STEP, plain.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "closed within the wait: {read:?}"
    );
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:x?}");
    // A connection that says nothing: closed after connect_timeout_ms.
    let mut silent = Raw::open(port).await;
    let waited = silent.expect_closed(STEP).await;
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    // A ClientHello cut short, then silence: the same.
    let mut cut = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    b.wait_for_log_count("handshake", 3, STEP);
    // Meanwhile TLS clients are served.
    mosquitto_pub(
        port,
        &["--cafile", &certs.arg("ca.pem"), "-t", "still", "-m", "up"],
    );
}

#[test]
fn a_missing_or_mismatched_certificate_stops_the_start_naming_the_file() {
    let certs = Certs::make();
    let missing = certs.listener(false).replace("server.pem", "nowhere.pem");
    let (code, err) = broker_exit(&missing);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("[[listeners]] #1") && err.contains("nowhere.pem"),
        "{err}"
    );
    let mismatched = certs.listener(false).replace("server.key", "client.key");
    let (code, err) = broker_exit(&mismatched);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("client.key") && err.contains("server.pem"),
        "{err}"
    );
}

/// Run the broker with `config` until it exits on its own: its exit code and stderr.
fn broker_exit(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.path().join("data");
    let out = run_with_timeout(
        std::process::Command::new(broker_bin())
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
        Duration::from_secs(10),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_client_certificate_cn_is_the_user_name_the_acl_sees() {
    let certs = Certs::make();
    let acl = certs.path("acl");
    std::fs::write(&acl, "user device-1\ntopic readwrite devices/device-1/#\n").unwrap();
    let config = format!(
        "{}use_cn_as_username = true\n[auth]\nacl_file = {:?}\n",
        certs.listener(true),
        acl.display().to_string()
    );
    let b = Broker::with_config(&config);
    let port = tls_port(&b);
    let (ca, cert, key) = (
        certs.arg("ca.pem"),
        certs.arg("client.pem"),
        certs.arg("client.key"),
    );
    let device = ["--cafile", &ca, "--cert", &cert, "--key", &key];
    // The certificate's CN (device-1) is the user, whatever user name is sent.
    let mut args: Vec<&str> = device.to_vec();
    args.extend([
        "-u",
        "someone-else",
        "-t",
        "devices/device-1/#",
        "-C",
        "1",
        "-W",
        "10",
    ]);
    let sub = MosquittoSub::start(port, &args);
    let mut args: Vec<&str> = device.to_vec();
    args.extend(["-t", "devices/device-1/t", "-q", "1", "-m", "mine"]);
    mosquitto_pub(port, &args);
    let (status, lines) = sub.finish(STEP);
    assert!(status.success(), "{lines:?}\n{}", b.stderr());
    assert!(lines[0].ends_with(&hex(b"mine")), "{lines:?}");
    // Outside its grant: refused.
    let mut args: Vec<&str> = vec!["-h", "127.0.0.1"];
    let port_arg = port.to_string();
    args.extend(["-p", &port_arg]);
    args.extend(device);
    args.extend(["-t", "other/#", "-C", "1", "-W", "3"]);
    let out = run_with_timeout(
        StockClient::Mosquitto.command("mosquitto_sub").args(&args),
        STEP,
    );
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("denied"), "{said}");
}
