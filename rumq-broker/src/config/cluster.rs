//! `[cluster]`: which node this is, where its peers listen, how many copies make an
//! ack, and the secret the peers prove. The section as written (`ClusterSection`),
//! the command line's overrides (`ClusterOverrides`), and the two merged and checked
//! into a `ClusterConfig`. Absent, with no overrides, the broker is a single node.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use mesh::{NodeId, Secret};
use serde::{Deserialize, Deserializer};

/// Default `failure_timeout_ms`.
const FAILURE_TIMEOUT_MS_DEFAULT: u64 = 3000;
/// Default `handshake_timeout_ms`.
const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5000;
/// Default `reconnect_backoff_max_ms`.
const RECONNECT_BACKOFF_MAX_MS_DEFAULT: u64 = 2000;
/// Default `claim_timeout_ms`.
const CLAIM_TIMEOUT_MS_DEFAULT: u64 = 5000;
/// Default `superseded_logs_keep_ms`: ten minutes.
const SUPERSEDED_LOGS_KEEP_MS_DEFAULT: u64 = 600_000;
/// Default `peer_inflight_bytes_max`: 8 MiB.
const PEER_INFLIGHT_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Default `peer_frame_bytes_max`: 19 MiB, the default `[storage] record_bytes_max`
/// (16 MiB), what a session journal's record may hold besides (2 MiB), and room.
const PEER_FRAME_BYTES_MAX_DEFAULT: usize = 19 * 1024 * 1024;
/// How much larger than `[storage] record_bytes_max` a peer frame may be at least:
/// a `Records` frame carries a whole stored record of the message log or of the
/// session journal (whose records may be `JOURNAL_RECORD_ROOM_BYTES` larger), its
/// 8-byte header included, after its own fields (32 bytes in protocol version 3),
/// with room to spare.
const PEER_FRAME_ROOM_BYTES: usize = crate::server::JOURNAL_RECORD_ROOM_BYTES as usize + 1024;

/// A node id as written (`node_id`, `--node-id`, the ID of a peer): 1 to 255.
fn node_id(n: i64) -> Result<NodeId, String> {
    match u8::try_from(n) {
        Ok(id) if id > 0 => Ok(NodeId(id)),
        _ => Err(format!("a node id is between 1 and 255, not {n}")),
    }
}

/// `--node-id N`, and the ID of `ID=ADDR`.
pub fn parse_node_id(s: &str) -> Result<NodeId, String> {
    let n = s
        .trim()
        .parse()
        .map_err(|_| format!("a node id is a number between 1 and 255, not {s:?}"))?;
    node_id(n)
}

/// `node_id = N` in the file.
fn deserialize_node_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
    node_id(i64::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Another node: its id and the address of its peer listener. Written `ID=ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Its `[cluster] listen` address.
    pub addr: SocketAddr,
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Peer, String> {
        let form = || format!("a peer is ID=ADDR (e.g. 2=127.0.0.1:7102), not {s:?}");
        let (id, addr) = s.split_once('=').ok_or_else(form)?;
        let id = parse_node_id(id).map_err(|e| format!("{}: {e}", form()))?;
        let addr = addr
            .trim()
            .parse()
            .map_err(|e| format!("{}: the address: {e}", form()))?;
        Ok(Peer { id, addr })
    }
}

impl TryFrom<String> for Peer {
    type Error = String;

    fn try_from(s: String) -> Result<Peer, String> {
        s.parse()
    }
}

/// `secret` as written, before it is checked into a `mesh::Secret`. Its `Debug`
/// shows only its length.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText({} bytes)", self.0.len())
    }
}

/// `[cluster]` as written in the file; any key may be left to the command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id.
    #[serde(deserialize_with = "deserialize_node_id")]
    pub node_id: Option<NodeId>,
    /// Where this node listens for its peers.
    pub listen: Option<SocketAddr>,
    /// The other nodes.
    pub peers: Vec<Peer>,
    /// Nodes that hold a message before it is acknowledged; `None`: a majority.
    pub ack_copies: Option<usize>,
    /// Shared by the nodes.
    pub secret: Option<SecretText>,
    /// A peer not heard from for this long is taken as failed.
    pub failure_timeout_ms: u64,
    /// How long a peer link's handshake may take.
    pub handshake_timeout_ms: u64,
    /// The longest wait between two attempts to link to a peer.
    pub reconnect_backoff_max_ms: u64,
    /// How long a CONNECT waits for the cluster to make this node its client id's owner.
    pub claim_timeout_ms: u64,
    /// How long a replica of a log that never grows again is kept once no node
    /// needs it here.
    pub superseded_logs_keep_ms: u64,
    /// Bytes in flight on one peer link.
    pub peer_inflight_bytes_max: usize,
    /// The largest peer frame accepted.
    pub peer_frame_bytes_max: usize,
    /// This node's certificate chain for its peer links (PEM); with `tls_key` and
    /// `tls_ca`, the links run over mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA every node's certificate chains to (PEM).
    pub tls_ca: Option<PathBuf>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: None,
            listen: None,
            peers: Vec::new(),
            ack_copies: None,
            secret: None,
            failure_timeout_ms: FAILURE_TIMEOUT_MS_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            reconnect_backoff_max_ms: RECONNECT_BACKOFF_MAX_MS_DEFAULT,
            claim_timeout_ms: CLAIM_TIMEOUT_MS_DEFAULT,
            superseded_logs_keep_ms: SUPERSEDED_LOGS_KEEP_MS_DEFAULT,
            peer_inflight_bytes_max: PEER_INFLIGHT_BYTES_MAX_DEFAULT,
            peer_frame_bytes_max: PEER_FRAME_BYTES_MAX_DEFAULT,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

/// What the command line says about the cluster (`--node-id`, `--cluster-listen`,
/// `--peer`); each given one replaces the file's key (`--peer`s replace all `peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOverrides {
    /// `--node-id`.
    pub node_id: Option<NodeId>,
    /// `--cluster-listen`.
    pub listen: Option<SocketAddr>,
    /// `--peer`, in order.
    pub peers: Vec<Peer>,
}

impl ClusterOverrides {
    fn is_empty(&self) -> bool {
        self.node_id.is_none() && self.listen.is_none() && self.peers.is_empty()
    }
}

/// A checked cluster configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id; no peer has it.
    pub node_id: NodeId,
    /// Where this node listens for its peers.
    pub listen: SocketAddr,
    /// The other nodes: at least one, ids distinct.
    pub peers: Vec<Peer>,
    /// Nodes (this one included) that hold a message before it is acknowledged:
    /// 1..=`node_count()`.
    pub ack_copies: usize,
    /// Shared by the nodes; at least `mesh::SECRET_MIN_BYTES` bytes.
    pub secret: Secret,
    /// A peer not heard from for this long is taken as failed; > 0.
    pub failure_timeout_ms: u64,
    /// How long a peer link's handshake may take; > 0.
    pub handshake_timeout_ms: u64,
    /// The longest wait between two attempts to link to a peer; > 0.
    pub reconnect_backoff_max_ms: u64,
    /// How long a CONNECT waits for the metadata group to make this node its client
    /// id's owner (and the longest any metadata proposal waits); > 0.
    pub claim_timeout_ms: u64,
    /// How long a replica of a log whose writer runs a newer one is kept once no
    /// node needs it here, before its files are removed (0: at once).
    pub superseded_logs_keep_ms: u64,
    /// Bytes in flight on one peer link; > 0.
    pub peer_inflight_bytes_max: usize,
    /// Mutual TLS on the peer links: this node's certificate, its key, the
    /// cluster's CA (files, read at start).
    pub tls: Option<PeerTlsFiles>,
    /// The largest peer frame accepted (after its length prefix): room for the
    /// largest stored record, `[storage] record_bytes_max`.
    pub peer_frame_bytes_max: usize,
}

/// The files of mutual TLS on the peer links (`[cluster] tls_cert`, `tls_key`,
/// `tls_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster's CA.
    pub ca: PathBuf,
}

/// The cluster configuration `section` and `overrides` make together: `None` when
/// neither says anything (a single node), else checked; the log's records are at
/// most `record_bytes_max`.
pub fn resolve(
    section: Option<ClusterSection>,
    overrides: &ClusterOverrides,
    record_bytes_max: u32,
) -> Result<Option<ClusterConfig>, String> {
    if section.is_none() && overrides.is_empty() {
        return Ok(None);
    }
    let mut section = section.unwrap_or_default();
    if let Some(id) = overrides.node_id {
        section.node_id = Some(id);
    }
    if let Some(addr) = overrides.listen {
        section.listen = Some(addr);
    }
    if !overrides.peers.is_empty() {
        section.peers.clone_from(&overrides.peers);
    }
    section.check(record_bytes_max).map(Some)
}

impl ClusterSection {
    /// Every rule of the section, each error naming its key (and the flag that sets it).
    fn check(self, record_bytes_max: u32) -> Result<ClusterConfig, String> {
        let node_id = self
            .node_id
            .ok_or("[cluster] node_id is missing: give every node its own (or --node-id N)")?;
        let listen = self.listen.ok_or(
            "[cluster] listen is missing: the address this node's peers reach it on \
             (or --cluster-listen ADDR)",
        )?;
        check_peers(node_id, &self.peers)?;
        let node_count = self.peers.len() + 1;
        let majority = node_count / 2 + 1;
        let ack_copies = self.ack_copies.unwrap_or(majority);
        if ack_copies == 0 || ack_copies > node_count {
            return Err(format!(
                "[cluster] ack_copies must be between 1 and the number of nodes ({node_count}: \
                 this one and {} peers), got {ack_copies}",
                self.peers.len()
            ));
        }
        let secret = check_secret(self.secret)?;
        for (key, ms) in [
            ("failure_timeout_ms", self.failure_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("reconnect_backoff_max_ms", self.reconnect_backoff_max_ms),
            ("claim_timeout_ms", self.claim_timeout_ms),
        ] {
            if ms == 0 {
                return Err(format!("[cluster] {key} must be > 0"));
            }
        }
        if self.peer_inflight_bytes_max == 0 {
            return Err("[cluster] peer_inflight_bytes_max must be > 0".into());
        }
        check_frame_bytes(self.peer_frame_bytes_max, record_bytes_max)?;
        let tls = match (self.tls_cert, self.tls_key, self.tls_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(PeerTlsFiles { cert, key, ca }),
            _ => {
                return Err(
                    "[cluster] tls_cert, tls_key and tls_ca go together: give all \
                            three for mutual TLS on the peer links, or none"
                        .into(),
                )
            }
        };
        Ok(ClusterConfig {
            tls,
            node_id,
            listen,
            peers: self.peers,
            ack_copies,
            secret,
            failure_timeout_ms: self.failure_timeout_ms,
            handshake_timeout_ms: self.handshake_timeout_ms,
            reconnect_backoff_max_ms: self.reconnect_backoff_max_ms,
            claim_timeout_ms: self.claim_timeout_ms,
            superseded_logs_keep_ms: self.superseded_logs_keep_ms,
            peer_inflight_bytes_max: self.peer_inflight_bytes_max,
            peer_frame_bytes_max: self.peer_frame_bytes_max,
        })
    }
}

/// At least one peer, none with this node's id, no id twice.
fn check_peers(node_id: NodeId, peers: &[Peer]) -> Result<(), String> {
    if peers.is_empty() {
        return Err(
            "[cluster] peers is empty: list the other nodes as \"ID=ADDR\" \
                    (or --peer ID=ADDR, repeated)"
                .into(),
        );
    }
    let mut seen = BTreeSet::new();
    for peer in peers {
        if peer.id == node_id {
            return Err(format!(
                "[cluster] peers: {}={} has this node's own node_id {node_id}",
                peer.id, peer.addr
            ));
        }
        if !seen.insert(peer.id) {
            return Err(format!(
                "[cluster] peers: node id {} is listed twice",
                peer.id
            ));
        }
    }
    Ok(())
}

fn check_secret(secret: Option<SecretText>) -> Result<Secret, String> {
    let SecretText(text) = secret.ok_or(
        "[cluster] secret is missing: the nodes share it, and a peer link is accepted \
         only from a node that proves it holds it",
    )?;
    Secret::new(text).map_err(|e| format!("[cluster] secret: {e}"))
}

/// A frame must carry the largest record, or that record could never be replicated.
fn check_frame_bytes(frame_bytes_max: usize, record_bytes_max: u32) -> Result<(), String> {
    let least = record_bytes_max as usize + PEER_FRAME_ROOM_BYTES;
    if frame_bytes_max < least {
        return Err(format!(
            "[cluster] peer_frame_bytes_max ({frame_bytes_max}) must be at least \
             [storage] record_bytes_max ({record_bytes_max}) + {PEER_FRAME_ROOM_BYTES}: \
             a peer frame carries a whole record (the session journal's are up to 2 MiB larger)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_TOML};

    const SECRET: &str = "0123456789abcdef";

    /// `[cluster]` of node 1 of 3, with `extra` lines appended.
    fn section(extra: &str) -> String {
        format!(
            "[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\n\
             peers = [\"2=127.0.0.1:7102\", \"3=127.0.0.1:7103\"]\nsecret = \"{SECRET}\"\n{extra}"
        )
    }

    /// The cluster `toml` and `overrides` describe, or the error as the broker prints it.
    fn cluster_with(toml: &str, overrides: &ClusterOverrides) -> Result<ClusterConfig, String> {
        let config = Config::from_toml(toml, "c.toml").map_err(|e| e.to_string())?;
        let cluster = config
            .cluster_config(overrides, None)
            .map_err(|e| e.to_string())?;
        cluster.ok_or_else(|| "no cluster".into())
    }

    fn cluster(toml: &str) -> Result<ClusterConfig, String> {
        cluster_with(toml, &ClusterOverrides::default())
    }

    fn error(toml: &str) -> String {
        cluster(toml).expect_err("must be refused")
    }

    fn peer(s: &str) -> Peer {
        s.parse().expect("a peer")
    }

    fn id(n: i64) -> NodeId {
        node_id(n).expect("an id")
    }

    #[test]
    fn no_section_and_no_flags_is_a_single_node() {
        let config = Config::from_toml(DEFAULT_TOML, "default").expect("default");
        assert_eq!(config.cluster, None);
        let cluster = config.cluster_config(&ClusterOverrides::default(), None);
        assert!(cluster.expect("valid").is_none());
    }

    #[test]
    fn a_full_section_is_typed_with_defaults_for_what_it_leaves_out() {
        let c = cluster(&section("")).expect("valid");
        assert_eq!(c.node_id, id(1));
        assert_eq!(c.listen, "127.0.0.1:7101".parse().expect("addr"));
        assert_eq!(
            c.peers,
            [peer("2=127.0.0.1:7102"), peer("3=127.0.0.1:7103")]
        );
        assert_eq!(c.ack_copies, 2, "a majority of 3");
        assert_eq!(format!("{:?}", c.secret), "Secret(16 bytes)");
        assert_eq!(c.failure_timeout_ms, 3000);
        assert_eq!(
            (c.handshake_timeout_ms, c.reconnect_backoff_max_ms),
            (5000, 2000)
        );
        assert_eq!(c.peer_inflight_bytes_max, 8 * 1024 * 1024);
        assert_eq!(c.peer_frame_bytes_max, 19 * 1024 * 1024);
    }

    #[test]
    fn ack_copies_defaults_to_a_majority_of_the_nodes() {
        for (peers, majority) in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 4)] {
            let list: Vec<String> = (2..peers + 2)
                .map(|i| format!("\"{i}=10.0.0.{i}:7100\""))
                .collect();
            let toml = format!(
                "[cluster]\nnode_id = 1\nlisten = \"10.0.0.1:7100\"\npeers = [{}]\nsecret = \"{SECRET}\"\n",
                list.join(", ")
            );
            assert_eq!(
                cluster(&toml).expect("valid").ack_copies,
                majority,
                "{peers} peers"
            );
        }
    }

    #[test]
    fn the_example_in_the_shipped_file_is_valid_once_uncommented() {
        let (_, example) = DEFAULT_TOML.split_once("\n#[cluster]").expect("example");
        let toml: String = format!("#[cluster]{example}")
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = cluster(&toml).expect("valid");
        let defaults = cluster(&section("")).expect("valid");
        assert_eq!(
            (
                c.node_id,
                c.ack_copies,
                c.failure_timeout_ms,
                c.handshake_timeout_ms,
                c.reconnect_backoff_max_ms,
                c.claim_timeout_ms,
                c.peer_inflight_bytes_max,
                c.peer_frame_bytes_max,
            ),
            (
                id(1),
                2,
                defaults.failure_timeout_ms,
                defaults.handshake_timeout_ms,
                defaults.reconnect_backoff_max_ms,
                defaults.claim_timeout_ms,
                defaults.peer_inflight_bytes_max,
                defaults.peer_frame_bytes_max,
            ),
            "the shipped comments show the defaults"
        );
    }

    #[test]
    fn node_id_zero_or_past_255_is_refused_naming_the_key() {
        for bad in ["0", "256", "-1"] {
            let err = error(&section("").replace("node_id = 1", &format!("node_id = {bad}")));
            assert!(err.contains("node_id") && err.contains("line 2"), "{err}");
            assert!(err.contains("between 1 and 255"), "{err}");
        }
        assert!(parse_node_id("0").is_err());
        assert!(parse_node_id("x").is_err());
        assert_eq!(parse_node_id("255"), Ok(id(255)));
    }

    #[test]
    fn duplicate_peer_ids_are_refused() {
        let err = error(&section("").replace("3=127.0.0.1:7103", "2=127.0.0.1:7103"));
        assert!(
            err.contains("[cluster] peers") && err.contains("2 is listed twice"),
            "{err}"
        );
    }

    #[test]
    fn own_id_among_peers_is_refused() {
        let err = error(&section("").replace("3=", "1="));
        assert!(
            err.contains("[cluster] peers") && err.contains("own node_id 1"),
            "{err}"
        );
    }

    #[test]
    fn a_peer_not_of_the_form_id_equals_addr_is_refused() {
        for bad in [
            "2:127.0.0.1:7102",
            "x=127.0.0.1:7102",
            "0=127.0.0.1:7102",
            "2=nowhere",
        ] {
            let err = error(&section("").replace("2=127.0.0.1:7102", bad));
            assert!(
                err.contains("peers") && err.contains("line 4"),
                "{bad}: {err}"
            );
            assert!(err.contains("ID=ADDR") && err.contains(bad), "{bad}: {err}");
            assert!(bad.parse::<Peer>().is_err(), "--peer {bad}");
        }
        assert_eq!(
            peer(" 2 = 127.0.0.1:7102"),
            Peer {
                id: id(2),
                addr: "127.0.0.1:7102".parse().expect("addr")
            }
        );
    }

    #[test]
    fn no_peers_is_refused() {
        let err = error(&section("").replace("\"2=127.0.0.1:7102\", \"3=127.0.0.1:7103\"", ""));
        assert!(err.contains("[cluster] peers is empty"), "{err}");
    }

    #[test]
    fn ack_copies_from_one_to_the_node_count() {
        for bad in [0, 4] {
            let err = error(&section(&format!("ack_copies = {bad}")));
            assert!(
                err.contains("[cluster] ack_copies") && err.contains("(3:"),
                "{err}"
            );
        }
        for good in [1, 2, 3] {
            let c = cluster(&section(&format!("ack_copies = {good}"))).expect("valid");
            assert_eq!(c.ack_copies, good);
        }
    }

    #[test]
    fn a_missing_or_short_secret_is_refused_and_never_shown() {
        let err = error(&section("").replace(&format!("secret = \"{SECRET}\""), ""));
        assert!(err.contains("[cluster] secret is missing"), "{err}");
        let short = &SECRET[..15];
        let err = error(&section("").replace(SECRET, short));
        assert!(
            err.contains("[cluster] secret") && err.contains("has 15 bytes"),
            "{err}"
        );
        assert!(!err.contains(short), "{err}");
        let c = cluster(&section("")).expect("16 bytes is enough");
        assert!(!format!("{c:?}").contains(SECRET), "{c:?}");
        let as_written = Config::from_toml(&section(""), "c.toml").expect("parses");
        assert!(
            !format!("{as_written:?}").contains(SECRET),
            "{as_written:?}"
        );
    }

    #[test]
    fn a_peer_frame_must_hold_the_largest_record() {
        let err = error(&section("peer_frame_bytes_max = 18875391"));
        assert!(
            err.contains("[cluster] peer_frame_bytes_max (18875391)")
                && err.contains("[storage] record_bytes_max (16777216) + 2098176"),
            "{err}"
        );
        let c = cluster(&section("peer_frame_bytes_max = 18875392")).expect("enough");
        assert_eq!(c.peer_frame_bytes_max, 18_875_392);
        let smaller_records = format!(
            "{}[storage]\nrecord_bytes_max = 1024\n[limits]\nmax_packet_size = 1024\n",
            section("")
        );
        let toml = smaller_records.replace("secret =", "peer_frame_bytes_max = 2099200\nsecret =");
        assert_eq!(
            cluster(&toml).expect("enough").peer_frame_bytes_max,
            2_099_200
        );
    }

    #[test]
    fn listen_must_be_an_address() {
        for bad in ["7101", "localhost:7101", "127.0.0.1"] {
            let err = error(&section("").replace("127.0.0.1:7101", bad));
            assert!(
                err.contains("listen") && err.contains("line 3"),
                "{bad}: {err}"
            );
        }
        let err = error(&section("").replace("listen = \"127.0.0.1:7101\"\n", ""));
        assert!(err.contains("[cluster] listen is missing"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused_and_unknown_keys_too() {
        let err = error(&section("failure_timeout_ms = 0"));
        assert!(err.contains("[cluster] failure_timeout_ms"), "{err}");
        let err = error(&section("peer_inflight_bytes_max = 0"));
        assert!(err.contains("[cluster] peer_inflight_bytes_max"), "{err}");
        let err = error(&section("ack_copy = 2"));
        assert!(err.contains("ack_copy") && err.contains("line 6"), "{err}");
    }

    #[test]
    fn flags_replace_the_file_so_one_file_serves_every_node() {
        let shared = format!("[cluster]\npeers = [\"9=10.0.0.9:7100\"]\nsecret = \"{SECRET}\"\n");
        let node3 = ClusterOverrides {
            node_id: Some(id(3)),
            listen: Some("127.0.0.1:7103".parse().expect("addr")),
            peers: vec![peer("1=127.0.0.1:7101"), peer("2=127.0.0.1:7102")],
        };
        let c = cluster_with(&shared, &node3).expect("valid");
        assert_eq!((c.node_id, c.listen), (id(3), node3.listen.expect("set")));
        assert_eq!(c.peers, node3.peers, "--peer replaces peers");
        let only_id = ClusterOverrides {
            node_id: Some(id(2)),
            ..ClusterOverrides::default()
        };
        let c = cluster_with(&section(""), &only_id);
        assert!(c.expect_err("2 is a peer").contains("own node_id 2"));
    }

    #[test]
    fn flags_without_a_section_make_one_that_still_needs_a_secret() {
        let flags = ClusterOverrides {
            node_id: Some(id(1)),
            ..ClusterOverrides::default()
        };
        let err = cluster_with("", &flags).expect_err("no secret");
        assert!(err.contains("[cluster] listen is missing"), "{err}");
        let flags = ClusterOverrides {
            listen: Some("127.0.0.1:7101".parse().expect("addr")),
            peers: vec![peer("2=127.0.0.1:7102")],
            ..flags
        };
        let err = cluster_with("", &flags).expect_err("no secret");
        assert!(err.contains("[cluster] secret is missing"), "{err}");
    }
}
