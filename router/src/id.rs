//! Newtypes for the integers the broker uses in place of strings and tuples, and
//! the hashing of the maps keyed by them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// One network connection, assigned by the broker; never reused while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A session (one per client id), assigned by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

/// An interned topic name (see [`crate::TopicInterner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u32);

impl TopicId {
    /// A topic no connection interned (a will the router rebuilt from a journal):
    /// matched by the name its record holds, each time.
    pub const UNINTERNED: TopicId = TopicId(u32::MAX);
}

/// An MQTT packet identifier (never 0 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(pub u16);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Hashes the broker's integer ids (connection, session, topic and group ids, packet
/// ids) with one multiplication each.
///
/// The broker assigns these ids from counters, or (packet ids) they come from a
/// window of at most 65,535 that the broker or the client picks: the flooding that
/// SipHash's random keys defend against cannot make these tables collide or grow,
/// and SipHash cost ~3 % of the router's time in a profile. The maps also lose
/// SipHash's 16-byte keys, which every idle session carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (hashbrown's control byte) mix well and
        // sequential ids keep distinct low bits (its bucket index).
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.mix(u64::from(*b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// A map keyed by an id (see [`IdHasher`]).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of ids (see [`IdHasher`]).
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn ids_hash_apart() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: HashSet<u64> = (0..=u16::MAX).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 65_536, "every packet id has its own hash");
        let sessions: HashSet<u64> = (0..100_000u32)
            .map(|id| build.hash_one(SessionId(id)))
            .collect();
        assert_eq!(sessions.len(), 100_000);
        // The top 7 bits pick hashbrown's control byte: sequential ids spread over them.
        let tops: HashSet<u64> = (0..1024u16).map(|id| build.hash_one(id) >> 57).collect();
        assert!(tops.len() > 100, "{}", tops.len());
    }
}
