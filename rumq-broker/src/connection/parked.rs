//! A connection without a task: what it keeps while it waits in the parking lot
//! (`parking.rs`), how it gives up its task and its socket's registration with
//! tokio, and how it comes back to a task when its client or the router has
//! something for it.

use bytes::BytesMut;
use router::DisconnectReason;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::{ConnState, Connection, End, LOG_TARGET};
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
        // Bytes waiting are a sign of life: the lot saw them, but tokio's fresh
        // registration has not yet, and a keep-alive verdict reached before would
        // find nothing to read and close a live client.
        if socket.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0) {
            rx.renew_keep_alive();
        }
        // Registered here (the lot runs on the runtime) rather than in the task, so
        // that the task does not hold the parked form of the connection as well.
        match TcpStream::from_std(socket) {
            Ok(stream) => {
                let conn = idle.into_connection(stream);
                tokio::spawn(conn.run(permit, Some(rx)).instrument(span));
            }
            Err(e) => {
                tokio::spawn(idle.lost(rx, permit, e).instrument(span));
            }
        }
    }
}

/// What a parked connection keeps of its [`Connection`]: no socket, no buffers (it
/// parks only with none in use), no publishes in flight.
#[derive(Debug)]
struct Idle {
    state: ConnState,
    encoder: IdleEncoder,
}

impl Idle {
    /// The connection again, on `stream`.
    fn into_connection(self, stream: TcpStream) -> Connection {
        Connection {
            stream,
            read_buf: BytesMut::new(),
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
    /// What the connection keeps while parked, and its socket. Only when nothing is
    /// in use: no partial packet, no publish awaiting its ack, nothing to write.
    fn into_idle(self) -> (Idle, TcpStream) {
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
        let socket = match stream.into_std() {
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
