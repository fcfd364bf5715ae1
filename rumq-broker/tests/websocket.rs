//! MQTT over WebSockets (`[[listeners]]` with `transport = "ws"` or `"wss"`) against
//! the real binary: MQTT.js (ws and wss, 3.1.1 and 5.0) and paho-mqtt's websockets
//! transport as they come, and what an upgrade to another path or without the
//! `mqtt` subprotocol, a text frame, or a message over the packet limit gets: its own
//! connection closed, nobody else's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WS: &str = "[[listeners]]\naddr = \"127.0.0.1:0\"\ntransport = \"ws\"\n";

fn ws_port(b: &Broker) -> u16 {
    b.logged_addr("mqtt listener up").port()
}

/// `node websocket.js PORT VERSION MORE...`: the JSON line it printed.
fn mqttjs_ws(port: u16, version: u8, more: &[&str]) -> String {
    let out = run_with_timeout(
        StockClient::MqttJs
            .command("node")
            .arg("websocket.js")
            .arg(port.to_string())
            .arg(version.to_string())
            .args(more),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "MQTT.js over WebSockets failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_string()
}

fn expected(protocol: &str) -> String {
    format!(
        r#"{{"granted":[1],"messages":[{{"topic":"ws/a","payload":"over {protocol}","qos":1,"retain":false}}]}}"#
    )
}

#[test]
fn mqttjs_over_ws_and_wss() {
    let b = Broker::with_config(WS);
    let port = ws_port(&b);
    for version in [4, 5] {
        assert_eq!(
            mqttjs_ws(port, version, &["ws"]),
            expected("ws"),
            "v{version}"
        );
    }
    let certs = Certs::make();
    let b = Broker::with_config(&certs.listener_for("wss", false));
    let port = ws_port(&b);
    let ca = certs.arg("ca.pem");
    assert_eq!(mqttjs_ws(port, 5, &["wss", &ca]), expected("wss"));
}

#[test]
fn paho_over_websockets() {
    let b = Broker::with_config(WS);
    let script = format!(
        r#"
import threading
import paho.mqtt.client as mqtt
got, done = [], threading.Event()
def on_message(c, u, m):
    got.append(m.payload)
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets")
c.ws_set_options(path="/mqtt")
c.on_message = on_message
c.connect("127.0.0.1", {port})
c.loop_start()
c.subscribe("paho/ws", qos=1)[1]
info = c.publish("paho/ws", b"hello over websockets", qos=1)
info.wait_for_publish(5)
assert done.wait(5), "no message"
assert got[0] == b"hello over websockets", got
c.disconnect()
c.loop_stop()
print("ok")
"#,
        port = ws_port(&b)
    );
    let out = run_with_timeout(
        StockClient::Paho.command("python3").args(["-c", &script]),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "paho over websockets failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WebSocket client at `path`, offering `protocol` (none: no subprotocol).
async fn ws_client(
    port: u16,
    path: &str,
    protocol: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// Whether the server ends `ws` within the wait (a close, an error or the end).
async fn ended(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> bool {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upgrade_or_frame_closes_only_that_connection() {
    let b = Broker::with_config(&format!("{WS}[limits]\nmax_packet_size = 1024\n"));
    let port = ws_port(&b);
    let no_protocol = ws_client(port, "/mqtt", None).await;
    assert!(no_protocol.is_err(), "no subprotocol: refused");
    let wrong = ws_client(port, "/mqtt", Some("chat")).await;
    assert!(wrong.is_err(), "another subprotocol: refused");
    let elsewhere = ws_client(port, "/other", Some("mqtt")).await;
    assert!(elsewhere.is_err(), "another path: refused");
    b.wait_for_log_count("WebSocket handshake", 3, STEP);

    let mut text = ws_client(port, "/mqtt", Some("mqtt")).await.unwrap();
    text.send(Message::text("CONNECT, please")).await.unwrap();
    assert!(ended(&mut text).await, "a text frame");
    let mut big = ws_client(port, "/mqtt", Some("mqtt")).await.unwrap();
    let _ = big.send(Message::binary(vec![0x30; 4096])).await;
    assert!(ended(&mut big).await, "a message over max_packet_size");

    // A client that keeps to the rules is served meanwhile: CONNECT, CONNACK.
    let mut good = ws_client(port, "/mqtt", Some("mqtt")).await.unwrap();
    good.send(Message::binary(ConnectOpts::new("ws-good").encode()))
        .await
        .unwrap();
    let connack = tokio::time::timeout(STEP, good.next()).await.unwrap();
    let Some(Ok(Message::Binary(bytes))) = connack else {
        panic!("{connack:?}");
    };
    assert_eq!(&bytes[..], [0x20, 0x02, 0x00, 0x00]);
}
