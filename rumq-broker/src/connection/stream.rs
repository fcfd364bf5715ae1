//! What a connection reads and writes: a plain TCP socket, TLS over one, or MQTT in
//! the binary messages of a WebSocket (over TCP or TLS). The connection is written
//! against readiness (`poll_read_ready`, then `try_read_buf`) so that an idle
//! connection holds no buffer; TLS and WebSockets have no readiness of their own
//! (rustls may hold decrypted bytes the socket no longer signals, a WebSocket
//! message comes whole), so waiting for them reads into `pending`, which the next
//! `try_read_buf` hands over. Only plain TCP parks and uses `sendfile`; the others
//! write a file range's bytes through rustls or a WebSocket message.
//!
//! A WebSocket upgrade is taken only at the listener's path and with the `mqtt`
//! subprotocol (MQTT.js and paho send it); a text frame, or a message over
//! `limits.max_packet_size`, ends the connection.
//!
//! Owns: the socket, the TLS session or WebSocket, and the bytes read while waiting.

use std::future::Future;
use std::io::{IoSlice, Result};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::tls::{Edge, TlsEdge};

/// Bytes read at a time while a TLS connection waits.
const TLS_READ_BYTES: usize = 4096;
/// A WebSocket's read buffer.
const WS_READ_BYTES: usize = 4096;

/// See the module docs.
#[derive(Debug)]
pub(super) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls's session is some kilobytes).
    Tls(Box<TlsConn>),
    /// A WebSocket, over TCP or TLS.
    Ws(Box<WsConn>),
}

/// What a WebSocket runs over: TCP, or TLS over it.
trait WsIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug> WsIo for T {}

/// A WebSocket connection and what waiting for it read.
#[derive(Debug)]
pub(super) struct WsConn {
    ws: WebSocketStream<Box<dyn WsIo>>,
    peer: Option<SocketAddr>,
    /// As `TlsConn::cn`, for `wss`.
    cn: Option<Box<str>>,
    /// Bytes of binary messages read while waiting, not handed over yet.
    pending: BytesMut,
    /// The client closed (after `pending`).
    eof: bool,
}

/// A TLS connection and what waiting for it read.
#[derive(Debug)]
pub(super) struct TlsConn {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    /// The client certificate's CN, when the listener takes it as the user name.
    cn: Option<Box<str>>,
    /// Decrypted bytes read while waiting, not handed over yet.
    pending: BytesMut,
    /// The client closed (after `pending`).
    eof: bool,
}

impl Stream {
    /// A TLS connection, its handshake done; `cn` the user name its certificate
    /// gives, if the listener takes it.
    fn tls(tls: tokio_rustls::server::TlsStream<TcpStream>, cn: Option<Box<str>>) -> Stream {
        Stream::Tls(Box::new(TlsConn {
            tls,
            cn,
            pending: BytesMut::new(),
            eof: false,
        }))
    }

    /// The user name the client certificate gives, on a listener that takes it
    /// (`use_cn_as_username`).
    pub(super) fn cert_user(&self) -> Option<&str> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(t) => t.cn.as_deref(),
            Stream::Ws(w) => w.cn.as_deref(),
        }
    }

    /// A socket accepted on a listener with `edge`, through its handshakes (TLS, the
    /// WebSocket upgrade); messages longer than `max_packet` end a WebSocket.
    // (tungstenite's upgrade callback answers a refusal as an HTTP response: large,
    // and made once per refused handshake.)
    #[allow(clippy::result_large_err)]
    pub(super) async fn open(
        tcp: TcpStream,
        edge: Edge,
        max_packet: usize,
    ) -> std::result::Result<Stream, String> {
        let peer = tcp.peer_addr().ok();
        let (tls, path) = match edge {
            Edge::Tcp => return Ok(Stream::Tcp(tcp)),
            Edge::Tls(edge) => {
                let (tls, cn) = accept_tls(tcp, &edge).await?;
                return Ok(Stream::tls(tls, cn));
            }
            Edge::Ws { tls, path } => (tls, path),
        };
        let (io, cn): (Box<dyn WsIo>, _) = match tls {
            None => (Box::new(tcp), None),
            Some(edge) => {
                let (tls, cn) = accept_tls(tcp, &edge).await?;
                (Box::new(tls), cn)
            }
        };
        // tungstenite's buffers default to 128 KiB each, held by every idle
        // connection (138 KiB per idle WebSocket measured): reads of 4 KiB, as the
        // TCP path's, and writes sent as they come (`write_vectored` flushes).
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(max_packet))
            .max_frame_size(Some(max_packet));
        let upgrade = |req: &Request, resp: Response| upgrade(req, resp, &path);
        let ws = tokio_tungstenite::accept_hdr_async_with_config(io, upgrade, Some(config))
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        Ok(Stream::Ws(Box::new(WsConn {
            ws,
            peer,
            cn,
            pending: BytesMut::new(),
            eof: false,
        })))
    }

    /// The client's address.
    pub(super) fn peer_addr(&self) -> Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::Tls(t) => t.tls.get_ref().0.peer_addr(),
            Stream::Ws(w) => w
                .peer
                .ok_or_else(|| std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Ready when `try_read_buf` has something (or an end) to give.
    pub(super) fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let t = match self {
            Stream::Tcp(s) => return s.poll_read_ready(cx),
            Stream::Tls(t) => t,
            Stream::Ws(w) => return w.poll_message(cx),
        };
        if !t.pending.is_empty() || t.eof {
            return Poll::Ready(Ok(()));
        }
        t.pending.reserve(TLS_READ_BYTES);
        // A `read_buf` future holds nothing but its borrows: dropped when pending,
        // the socket keeps `cx`'s waker.
        match pin!(t.tls.read_buf(&mut t.pending)).poll(cx) {
            Poll::Ready(Ok(0)) => {
                t.eof = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                t.pending = BytesMut::new();
                Poll::Pending
            }
        }
    }

    /// Read what is there into `buf` without waiting: `WouldBlock` when nothing is,
    /// `Ok(0)` at the end.
    pub(super) fn try_read_buf(&mut self, buf: &mut BytesMut) -> Result<usize> {
        let t = match self {
            Stream::Tcp(s) => return s.try_read_buf(buf),
            Stream::Tls(t) => t,
            Stream::Ws(w) => {
                if w.pending.is_empty() && !w.eof {
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(Err(e)) = w.poll_message(&mut cx) {
                        return Err(e);
                    }
                }
                return hand_over(&mut w.pending, w.eof, buf);
            }
        };
        if !t.pending.is_empty() || t.eof {
            return hand_over(&mut t.pending, t.eof, buf);
        }
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(t.tls.read_buf(buf)).poll(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Read into `buf`, waiting for bytes.
    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut) -> Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Tls(t) if t.pending.is_empty() && !t.eof => t.tls.read_buf(buf).await,
            _ => {
                std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
                self.try_read_buf(buf)
            }
        }
    }

    /// Write some of `slices`; how much.
    pub(super) async fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(slices).await,
            Stream::Tls(t) => t.tls.write_vectored(slices).await,
            Stream::Ws(w) => {
                // One binary message per write (flushed by `flush`).
                let len = slices.iter().map(|s| s.len()).sum();
                let mut message = Vec::with_capacity(len);
                for s in slices {
                    message.extend_from_slice(s);
                }
                let sent = w.ws.feed(Message::Binary(message.into())).await;
                sent.map_err(std::io::Error::other)?;
                Ok(len)
            }
        }
    }

    /// Push out what TLS holds of the writes (nothing to do for TCP).
    pub(super) async fn flush(&mut self) -> Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Tls(t) => t.tls.flush().await,
            Stream::Ws(w) => w.ws.flush().await.map_err(std::io::Error::other),
        }
    }

    /// Close the sending side (TLS: after its close_notify).
    pub(super) async fn shutdown(&mut self) -> Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Tls(t) => t.tls.shutdown().await,
            Stream::Ws(w) => w.ws.close(None).await.map_err(std::io::Error::other),
        }
    }

    /// Whether the connection can park (give its socket to the parking lot).
    pub(super) fn parks(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }
}

/// The TLS handshake of `edge` on `tcp`, and the client certificate's CN when the
/// listener takes it as the user name (a certificate without one is refused there).
async fn accept_tls(
    tcp: TcpStream,
    edge: &TlsEdge,
) -> std::result::Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<Box<str>>), String> {
    let tls = edge.acceptor.accept(tcp).await;
    let tls = tls.map_err(|e| format!("TLS handshake: {e}"))?;
    if !edge.cn_as_username {
        return Ok((tls, None));
    }
    match crate::tls::client_cn(tls.get_ref().1) {
        Some(cn) => Ok((tls, Some(cn.into()))),
        None => Err(
            "TLS handshake: the client certificate has no common name to use as the user name"
                .into(),
        ),
    }
}

/// Move what `pending` holds into `buf` (freeing `pending`); `Ok(0)` once it is
/// empty and the client closed, `WouldBlock` while it is only empty.
fn hand_over(pending: &mut BytesMut, eof: bool, buf: &mut BytesMut) -> Result<usize> {
    if pending.is_empty() {
        return if eof {
            Ok(0)
        } else {
            Err(std::io::ErrorKind::WouldBlock.into())
        };
    }
    let n = pending.len();
    if buf.is_empty() {
        std::mem::swap(buf, pending);
    } else {
        buf.extend_from_slice(pending);
    }
    *pending = BytesMut::new();
    Ok(n)
}

impl WsConn {
    /// Ready once a binary message's bytes are in `pending`, or the client closed;
    /// pings and pongs are taken on the way (tungstenite answers a ping itself).
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !self.pending.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        loop {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::Binary(b)))) => {
                    if b.is_empty() {
                        continue;
                    }
                    self.pending.extend_from_slice(&b);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    let why = "a WebSocket text frame (MQTT travels in binary frames)";
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        why,
                    )));
                }
                Poll::Ready(Some(Ok(Message::Close(_))) | None) => {
                    self.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[allow(clippy::result_large_err)] // See `Stream::open`.
/// The answer to a WebSocket upgrade: at `path`, offering the `mqtt` subprotocol
/// (or 3.1's `mqttv3.1`), it is taken with that subprotocol; else refused.
fn upgrade(
    req: &Request,
    mut resp: Response,
    path: &str,
) -> std::result::Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_string()));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != path {
        return Err(refuse(StatusCode::NOT_FOUND, "no MQTT here"));
    }
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| *p == "mqtt" || *p == "mqttv3.1");
    let Some(protocol) = offered else {
        let why = "the WebSocket subprotocol must be mqtt";
        return Err(refuse(StatusCode::BAD_REQUEST, why));
    };
    resp.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(if protocol == "mqtt" {
            "mqtt"
        } else {
            "mqttv3.1"
        }),
    );
    Ok(resp)
}
