//! A connection without a task: what it keeps while it waits in the parking lot
//! (`parking.rs`), how it gives up its task and its socket's registration with
//! tokio, and how it comes back to a task when its client or the router has
//! something for it.

use bytes::BytesMut;
use router::DisconnectReason;
use tokio::net::TcpStream;

use super::stream::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::inbound::READ_BUF_BYTES;
use super::{ConnState, Connection, End, ToRouter, LOG_TARGET};
use crate::parking::{Parkable, Reservation};
use crate::protocol::IdleEncoder;
use crate::replies::ReplyReceiver;

/// A connection without a task, waiting in the parking lot (`parking.rs`): what it
/// keeps, its socket (unregistered from tokio), its reply queue and its permit. One
/// slot of the lot each, so kept small: no buffers (they are empty when it parks).
#[derive(Debug)]
pub struct Parked {
    idle: Idle,
    socket: std::net::TcpStream,
    rx: ReplyReceiver,
    permit: OwnedSemaphorePermit,
    span: tracing::Span,
}

impl Parkable for Parked {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    fn resume(self) {
        let Parked {
            idle,
            socket,
            rx,
            permit,
            span,
        } = self;
        // Read what the client sent now, before the task exists: a task spawned now
        // runs after every task already woken, and its fresh registration with tokio
        // sees the socket readable only at the reactor's next turn, so requests from
        // clients whose bytes arrived after these would reach the router first (a
        // PUBLISH overtaking a SUBSCRIBE sent before it: `tests/ordering.rs`).
        let mut read_buf = BytesMut::new();
        let read = read_now(&socket, &mut read_buf);
        // Registered here (the lot runs on the runtime) rather than in the task, so
        // that the task does not hold the parked form of the connection as well.
        match TcpStream::from_std(socket) {
            Ok(stream) => {
                let mut conn = idle.into_connection(stream, read_buf);
                let first = span.in_scope(|| conn.forward_now(read, &rx));
                tokio::spawn(conn.run(permit, Some((rx, first))).instrument(span));
            }
            Err(e) => {
                tokio::spawn(idle.lost(rx, permit, e).instrument(span));
            }
        }
    }
}

/// One read of what the (non-blocking) socket holds, into `buf`.
fn read_now(socket: &std::net::TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    use std::io::Read;
    let mut chunk = [0u8; READ_BUF_BYTES];
    let mut reader = socket;
    let n = reader.read(&mut chunk)?;
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(n)
}

/// A read that found nothing, for now.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// What a resumed connection's task does first, before it waits for anything: what
/// the lot could not finish for it (see [`Connection::forward_now`]).
#[derive(Debug)]
pub(super) struct FirstStep {
    /// A request the router's channel had no room for.
    unsent: Option<ToRouter>,
    /// What ends the connection, after that request.
    ended: Option<End>,
}

/// What a parked connection keeps of its [`Connection`]: no socket, no buffers (it
/// parks only with none in use), no publishes in flight.
#[derive(Debug)]
struct Idle {
    state: ConnState,
    encoder: IdleEncoder,
}

impl Idle {
    /// The connection again, on `stream`, with what was read from it.
    fn into_connection(self, stream: TcpStream, read_buf: BytesMut) -> Connection {
        Connection {
            stream: Stream::Tcp(stream),
            read_buf,
            encoder: self.encoder.resume(),
            inflight_in: 0,
            state: self.state,
        }
    }

    /// The socket was lost while parking or resuming: the connection ends abruptly.
    async fn lost(self, rx: ReplyReceiver, permit: OwnedSemaphorePermit, e: std::io::Error) {
        tracing::info!(target: LOG_TARGET, reason = %End::Io(e), "connection closed");
        self.state.tell_router(DisconnectReason::Abrupt, &rx).await;
        drop(permit);
    }
}

impl Connection {
    /// Decode what the lot read for a resuming connection and send the router the
    /// events now, in the lot's turn (see `Parked::resume`); what is left to do is
    /// for the task, first: a request the channel had no room for, the end the read
    /// brought, answers to write.
    fn forward_now(
        &mut self,
        read: std::io::Result<usize>,
        rx: &ReplyReceiver,
    ) -> Option<Box<FirstStep>> {
        let ended = |end| {
            Some(Box::new(FirstStep {
                unsent: None,
                ended: Some(end),
            }))
        };
        match read {
            Ok(0) => return ended(End::Eof),
            Ok(_) => {}
            Err(e) if is_transient(&e) => return None,
            Err(e) => return ended(End::Io(e)),
        }
        // Bytes waiting are a sign of life: a keep-alive verdict reached before the
        // task runs would otherwise close a live client.
        rx.renew_keep_alive();
        let (events, end) = self.decode_read();
        match self.try_send_events(events) {
            Ok(None) if end.is_none() && self.encoder.is_empty() => {
                self.release_read_buf();
                None
            }
            Ok(unsent) => Some(Box::new(FirstStep { unsent, ended: end })),
            Err(end) => ended(end),
        }
    }

    /// The task's first step after the lot (see [`Connection::forward_now`]).
    pub(super) async fn finish_resume(&mut self, first: Option<Box<FirstStep>>) -> Result<(), End> {
        let Some(first) = first else {
            return Ok(());
        };
        let FirstStep { unsent, ended } = *first;
        if let Some(request) = unsent {
            self.state
                .shared
                .router
                .send(request)
                .await
                .map_err(|_| End::RouterGone)?;
        }
        self.after_forward(ended).await
    }

    /// What the connection keeps while parked, and its socket. Only when nothing is
    /// in use: no partial packet, no publish awaiting its ack, nothing to write.
    fn into_idle(self) -> (Idle, Stream) {
        let idle = Idle {
            state: self.state,
            encoder: self.encoder.idle(),
        };
        (idle, self.stream)
    }

    /// Something is in hand that parking would drop: a publish awaiting its ack, a
    /// partial packet, bytes not yet written.
    pub(super) fn in_hand(&self) -> bool {
        self.inflight_in > 0 || !self.read_buf.is_empty() || !self.encoder.is_empty()
    }

    /// Give up the task and the socket's registration with tokio until the client
    /// or the router has something (see `parking.rs`); the queue already wakes the
    /// lot.
    pub(super) fn park(
        self,
        spot: Reservation<'_, Parked>,
        rx: ReplyReceiver,
        permit: OwnedSemaphorePermit,
    ) {
        let (idle, stream) = self.into_idle();
        let socket = match stream {
            Stream::Tcp(tcp) => tcp.into_std(),
            Stream::Tls(_) | Stream::Ws(_) => Err(std::io::Error::other(
                "a TLS or WebSocket connection does not park",
            )),
        };
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                drop(spot);
                let span = tracing::Span::current();
                tokio::spawn(idle.lost(rx, permit, e).instrument(span));
                return;
            }
        };
        let parked = Parked {
            idle,
            socket,
            rx,
            permit,
            span: tracing::Span::current(),
        };
        match spot.park(parked) {
            // Logged once the lot's lock is released.
            Ok(()) => tracing::trace!(target: LOG_TARGET, "parked"),
            Err(p) => {
                // Its socket cannot be watched: it keeps a task from now on.
                p.rx.never_park();
                p.resume();
            }
        }
    }
}
