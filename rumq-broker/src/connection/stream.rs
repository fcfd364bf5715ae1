//! What a connection reads and writes: a plain TCP socket, or TLS over one. The
//! connection is written against readiness (`poll_read_ready`, then `try_read_buf`)
//! so that an idle connection holds no buffer; a TLS stream has no readiness of its
//! own (rustls may hold decrypted bytes the socket no longer signals), so waiting
//! for it reads into `pending`, which the next `try_read_buf` hands over. Only plain
//! TCP parks and uses `sendfile`; TLS writes a file range's bytes through rustls.
//!
//! Owns: the socket, and for TLS the session and the bytes read while waiting.

use std::future::Future;
use std::io::{IoSlice, Result};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read at a time while a TLS connection waits.
const TLS_READ_BYTES: usize = 4096;

/// See the module docs.
#[derive(Debug)]
pub(super) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls's session is some kilobytes).
    Tls(Box<TlsConn>),
}

/// A TLS connection and what waiting for it read.
#[derive(Debug)]
pub(super) struct TlsConn {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    /// Decrypted bytes read while waiting, not handed over yet.
    pending: BytesMut,
    /// The client closed (after `pending`).
    eof: bool,
}

impl Stream {
    /// A TLS connection, its handshake done.
    pub(super) fn tls(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Stream {
        Stream::Tls(Box::new(TlsConn {
            tls,
            pending: BytesMut::new(),
            eof: false,
        }))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => t.tls.get_ref().0,
        }
    }

    /// The client's address.
    pub(super) fn peer_addr(&self) -> Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Ready when `try_read_buf` has something (or an end) to give.
    pub(super) fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let t = match self {
            Stream::Tcp(s) => return s.poll_read_ready(cx),
            Stream::Tls(t) => t,
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
        };
        if !t.pending.is_empty() {
            let n = t.pending.len();
            if buf.is_empty() {
                std::mem::swap(buf, &mut t.pending);
            } else {
                buf.extend_from_slice(&t.pending);
            }
            t.pending = BytesMut::new();
            return Ok(n);
        }
        if t.eof {
            return Ok(0);
        }
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(t.tls.read_buf(buf)).poll(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Read into `buf`, waiting for bytes.
    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut) -> Result<usize> {
        let waiting = matches!(self, Stream::Tls(t) if !t.pending.is_empty() || t.eof);
        if waiting {
            return self.try_read_buf(buf);
        }
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Tls(t) => t.tls.read_buf(buf).await,
        }
    }

    /// Write some of `slices`; how much.
    pub(super) async fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(slices).await,
            Stream::Tls(t) => t.tls.write_vectored(slices).await,
        }
    }

    /// Push out what TLS holds of the writes (nothing to do for TCP).
    pub(super) async fn flush(&mut self) -> Result<()> {
        match self {
            Stream::Tcp(_) => Ok(()),
            Stream::Tls(t) => t.tls.flush().await,
        }
    }

    /// Close the sending side (TLS: after its close_notify).
    pub(super) async fn shutdown(&mut self) -> Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Tls(t) => t.tls.shutdown().await,
        }
    }

    /// Whether the connection can park (give its socket to the parking lot).
    pub(super) fn parks(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }
}
