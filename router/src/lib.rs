//! rumq's router: the broker's state, as a single-threaded state machine.
//!
//! No sockets, no tokio, no clocks, no memory shared with other threads: events go
//! in through [`Router::handle`] (and [`Router::flush`], [`Router::tick`], which is
//! handed the time), replies come out of [`Router::drain_outbox`], and requests for
//! connections' delivery credit out of [`Router::drain_credit_wanted`]. Storage is
//! behind the [`Storage`] trait, implemented by the commitlog's `Log` and by
//! [`MemStorage`]. So the same router runs in the broker, in scenario scripts
//! (`router/tests/scenarios/`) and in a simulation, from its events alone. It is
//! deterministic: the same events give the same replies in the same order (maps
//! keyed by strings are ordered, those keyed by ids use a fixed hasher).
//! The router's tests read no private field: they drive it as the driver does.
//!
//! | module | owns |
//! |---|---|
//! | `router` | the state machine: sessions by client id and connection, staging and appending publishes, fan-out, delivery, `$SYS` topics, what the admin API reads |
//! | `session` | one session's subscriptions, queue, in-flight messages, QoS 2 ids |
//! | `subscriptions` | the filter tree that maps a topic name to subscribed sessions |
//! | `shared` | shared subscription groups (`$share/{group}/{filter}`): one member per message |
//! | `message` | the stored record format of a message |
//! | `position` | a log and an offset in it, packed: what queues and in-flight messages point at |
//! | `journal` | the session journal: persistent state as ops in a second log, checkpoints, replay |
//! | `snapshot` | the persistent state as plain data (checkpoint and replay) |
//! | `topic` | topic name/filter validation and matching |
//! | `event` | the internal MQTT model: events in, replies out |
//! | `storage` | the storage trait |
//! | `mem_storage` | storage in memory, for scenarios and simulations |
//! | `length_prefix` | u16/u32 length-prefixed fields of the stored formats, refused when too long |
//! | `config` | limits |

mod config;
mod event;
mod id;
mod journal;
mod length_prefix;
mod mem_storage;
mod message;
mod position;
mod router;
mod session;
mod shared;
mod snapshot;
mod storage;
mod subscriptions;
pub mod topic;

pub use config::RouterConfig;
pub use event::{
    CloseReason, Connect, ConnectCode, Delivery, DisconnectReason, Event, PubReason, Publication,
    Reply, RetainHandling, SubscribeCode, Subscription, UnsubscribeCode, Will, NEVER_EXPIRES,
};
pub use id::{ConnectionId, IdHasher, IdMap, IdSet, PacketId, SessionId, TopicId};
pub use journal::{replay as replay_journal, JournalError};
pub use length_prefix::FieldTooLong;
pub use mem_storage::MemStorage;
pub use message::{
    varint_len, Layout, Message, MessageError, NewMessage, Origin, QoS, Utf8Bytes, FORMAT_VERSION,
};
pub use position::{LogRef, Position, OFFSET_LIMIT};
pub use router::{
    is_system_topic, Fence, LoadedJournal, MeshConfig, MeshStatus, PeerEvent, PeerReply, Router,
    RouterStats, SessionInfo, SubscriptionInfo, SubscriptionQuery, TopicInfo, SYSTEM_PREFIX,
};
pub use snapshot::{SavedInflight, SavedSession, Snapshot};
pub use storage::Storage;
pub use subscriptions::SubOptions;
