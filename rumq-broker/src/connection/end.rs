//! Why a connection ended ([`End`]): what its log line says, whether its will is
//! published, and the MQTT 5 DISCONNECT reason code the broker sends before closing.

use router::CloseReason;

use crate::protocol::{reason, ProtocolError};

/// MQTT 5 DISCONNECT reason: "Administrative action" (§3.14.2.1).
const ADMINISTRATIVE_ACTION: u8 = 0x98;

/// Why a connection ended, for the log line and the will.
#[derive(Debug, thiserror::Error)]
pub(super) enum End {
    #[error("client sent DISCONNECT")]
    ClientDisconnect,
    #[error("client sent DISCONNECT asking for its will to be published")]
    ClientDisconnectWithWill,
    #[error("client closed the connection")]
    Eof,
    #[error("socket error: {0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Protocol(ProtocolError),
    #[error("keepalive expired")]
    KeepAlive,
    #[error("client stopped reading (write timeout)")]
    WriteTimeout,
    #[error("closed by the router: {0:?}")]
    Closed(CloseReason),
    #[error("router stopped")]
    RouterGone,
    #[error("server shutting down")]
    Shutdown,
    #[error("closed by an operator (admin API)")]
    Kicked,
    #[error("topic limit reached")]
    TopicLimit,
    #[error("more QoS 1/2 publishes unacknowledged than the receive maximum")]
    ReceiveMaximumExceeded,
    #[error("connection refused")]
    Refused,
}

impl End {
    /// The MQTT 5 DISCONNECT reason code the broker sends before closing, if any
    /// (none when the client left or the socket is gone).
    pub(super) fn reason_code(&self) -> Option<u8> {
        match self {
            End::ClientDisconnect
            | End::ClientDisconnectWithWill
            | End::Eof
            | End::Io(_)
            | End::WriteTimeout
            | End::Refused => None,
            End::Protocol(e) => Some(e.reason_code()),
            End::KeepAlive => Some(reason::KEEP_ALIVE_TIMEOUT),
            End::Closed(CloseReason::SessionTakenOver) => Some(reason::SESSION_TAKEN_OVER),
            End::Closed(CloseReason::StorageFailure) | End::TopicLimit => {
                Some(reason::QUOTA_EXCEEDED)
            }
            End::Closed(CloseReason::ProtocolError) => Some(reason::PROTOCOL_ERROR),
            End::Closed(CloseReason::ServerBusy) => Some(reason::SERVER_BUSY),
            End::RouterGone => Some(reason::UNSPECIFIED_ERROR),
            End::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            End::Kicked => Some(ADMINISTRATIVE_ACTION),
            End::ReceiveMaximumExceeded => Some(reason::RECEIVE_MAXIMUM_EXCEEDED),
        }
    }
}
