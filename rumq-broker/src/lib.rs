//! The parts of `rumq-broker` that are useful outside the binary: the MQTT protocol
//! edge (bytes ↔ the broker's internal model), exposed so that it can be fuzzed
//! directly (`fuzz/fuzz_targets/broker_decode.rs`), and the connections' topic
//! interner (the allocation benchmark interns as a connection does); and the mesh's
//! peer links, the loops that keep them up, and the metadata group's messages on them
//! (tested on their own in `tests/peer_link.rs`, `tests/peers.rs`,
//! `tests/meta_links.rs`). Everything else lives in the binary (`main.rs`).

pub mod interner;
pub mod meta_links;
pub mod peer_link;
pub mod peer_stream;
pub mod peers;
pub mod protocol;
pub mod tls_config;
