//! rumq's mesh without I/O: what brokers that replicate each other's logs say to each
//! other, how a link proves both ends hold the cluster's secret, and which records a
//! log's writer may call committed. No sockets, no threads, no clocks: the transport
//! (in `rumq-broker`) reads and writes bytes and hands them here, and nonces come
//! from the caller, so the same code runs in a seeded simulation.
//!
//! The design (docs/cluster.md): every node incarnation writes one log of its own
//! ([`LogId`]); the other nodes hold replicas of it, pulled by long-poll fetches over
//! one link per pair of nodes. A fetch names where the follower's replica ends, which
//! tells the writer what the follower holds; a record is committed once
//! `ack_copies` nodes hold it ([`CommitTracker`]).
//!
//! | module | owns |
//! |---|---|
//! | `ids` | [`NodeId`], [`Incarnation`], [`LogId`], [`Channel`] |
//! | `frame` | the peer protocol's frames: encoding, and decoding that refuses what is malformed or too large |
//! | `auth` | the link handshake: a challenge and response on the shared secret, never the secret itself |
//! | `commit` | a writer's view of its followers, and the commit offset they make |

mod auth;
mod commit;
mod frame;
mod ids;

pub use auth::{AuthError, AwaitingProof, Dialer, Listener, Nonce, Secret, SECRET_MIN_BYTES};
pub use commit::CommitTracker;
pub use frame::{decode, encode, Frame, FrameError, FRAME_HEADER_BYTES, PROTOCOL_VERSION};
pub use ids::{Channel, Incarnation, LogId, NodeId, Stream};
