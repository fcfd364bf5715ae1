//! Where a message is, among the logs a router reads: which log ([`LogRef`]) and the
//! offset in it, packed into one `u64` ([`Position`]) so that a queued match stays
//! as small as it was when there was one log.
//!
//! A router writes one log (its own, [`LogRef::OWN`]); in a cluster it also reads
//! the replicas of the other nodes' logs, each given a `LogRef` when it becomes
//! known (see docs/mesh.md). A `LogRef` is an index into the router's logs, valid
//! for one run: what is written to disk names a log by its cluster-wide id instead.

use std::fmt;

use commitlog::Offset;

/// One of the logs a router reads, by its index in the router (not persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogRef(pub u16);

impl LogRef {
    /// The log this router writes.
    pub const OWN: LogRef = LogRef(0);
}

/// Bits of a [`Position`] that hold the offset.
const OFFSET_BITS: u32 = 48;
/// The offsets a [`Position`] can hold: below 2^48 (about 2.8 × 10^14 records in
/// one log; a log nearing it is to be sealed and a new one opened).
pub const OFFSET_LIMIT: u64 = 1 << OFFSET_BITS;

/// A log and an offset in it: the log in the top 16 bits, the offset in the low 48.
/// Positions of one log order as their offsets, and the next record's position is
/// [`Position::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position(u64);

impl Position {
    /// `offset` in `log`; `None` when the offset is at or above [`OFFSET_LIMIT`].
    #[must_use]
    pub fn new(log: LogRef, offset: Offset) -> Option<Position> {
        (offset.0 < OFFSET_LIMIT).then_some(Position(u64::from(log.0) << OFFSET_BITS | offset.0))
    }

    /// The log.
    #[must_use]
    pub fn log(self) -> LogRef {
        // The shift leaves 16 bits.
        LogRef((self.0 >> OFFSET_BITS) as u16)
    }

    /// The offset in its log.
    #[must_use]
    pub fn offset(self) -> Offset {
        Offset(self.0 & (OFFSET_LIMIT - 1))
    }

    /// The position of the next record in the same log; `None` past the limit.
    #[must_use]
    pub fn next(self) -> Option<Position> {
        Position::new(self.log(), self.offset().add(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.offset(), self.log().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_offset_limit_is_refused_not_wrapped_into_the_log() {
        let last = Offset(OFFSET_LIMIT - 1);
        let p = Position::new(LogRef(3), last).unwrap();
        assert_eq!((p.log(), p.offset()), (LogRef(3), last));
        assert_eq!(p.next(), None);
        assert_eq!(Position::new(LogRef::OWN, Offset(OFFSET_LIMIT)), None);
        assert_eq!(Position::new(LogRef::OWN, Offset(u64::MAX)), None);
    }

    #[test]
    fn a_queued_match_stays_the_size_it_was() {
        assert_eq!(
            std::mem::size_of::<Position>(),
            std::mem::size_of::<Offset>()
        );
    }

    proptest! {
        #[test]
        fn packing_round_trips_and_orders_by_log_then_offset(
            a in (any::<u16>(), 0..OFFSET_LIMIT),
            b in (any::<u16>(), 0..OFFSET_LIMIT),
        ) {
            let pa = Position::new(LogRef(a.0), Offset(a.1)).unwrap();
            let pb = Position::new(LogRef(b.0), Offset(b.1)).unwrap();
            prop_assert_eq!((pa.log(), pa.offset()), (LogRef(a.0), Offset(a.1)));
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            if a.1 + 1 < OFFSET_LIMIT {
                let n = pa.next().unwrap();
                prop_assert_eq!((n.log(), n.offset()), (LogRef(a.0), Offset(a.1 + 1)));
            }
        }
    }
}
