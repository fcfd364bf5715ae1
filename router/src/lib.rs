//! rumq's router: the broker's state, as a single-threaded state machine.
//!
//! No sockets, no tokio, no clocks: events go in through [`Router::handle`] (and
//! [`Router::flush`], [`Router::tick`]), replies come out of [`Router::drain_outbox`].
//! Storage is behind the [`Storage`] trait (implemented by the commitlog's `Log`).
//! The one thing it shares with the connections is each one's delivery credit, an
//! atomic word ([`DeliveryCredit`]); a test drives both sides of it by hand.
//!
//! | module | owns |
//! |---|---|
//! | `router` | the state machine: sessions by client id and connection, staging and appending publishes, fan-out, delivery |
//! | `session` | one session's subscriptions, queue, in-flight messages, QoS 2 ids |
//! | `subscriptions` | the filter tree that maps a topic name to subscribed sessions |
//! | `shared` | shared subscription groups (`$share/{group}/{filter}`): one member per message |
//! | `message` | the stored record format of a message |
//! | `journal` | the session journal: persistent state as ops in a second log, checkpoints, replay |
//! | `snapshot` | the persistent state as plain data (checkpoint and replay) |
//! | `topic` | topic name/filter validation and matching |
//! | `interner` | topic name ↔ `TopicId`, shared with connections |
//! | `event` | the internal MQTT model: events in, replies out |
//! | `storage` | the storage trait |
//! | `config` | limits |
//! | `credit` | the one delivery batch a connection may have outstanding, handed back without an event when nothing waits |

mod config;
mod credit;
mod event;
mod id;
mod interner;
mod journal;
mod message;
mod router;
mod session;
mod shared;
mod snapshot;
mod storage;
mod subscriptions;
pub mod topic;

pub use config::RouterConfig;
pub use credit::{CreditWord, DeliveryCredit};
pub use event::{
    CloseReason, Connect, ConnectCode, Delivery, DisconnectReason, Event, PubReason, Publication,
    Reply, RetainHandling, SubscribeCode, Subscription, UnsubscribeCode, Will, NEVER_EXPIRES,
};
pub use id::{ConnectionId, IdHasher, IdMap, IdSet, PacketId, SessionId, TopicId};
pub use interner::{TopicInterner, TopicsFull};
pub use journal::JournalError;
pub use message::{
    varint_len, Layout, Message, MessageError, NewMessage, Origin, QoS, FORMAT_VERSION,
};
pub use router::{Router, RouterStats};
pub use snapshot::{SavedInflight, SavedSession, Snapshot};
pub use storage::Storage;
pub use subscriptions::SubOptions;
