//! `Offset`: the position of a record in a log.
//!
//! Offsets are dense (every appended record takes the next one), monotonic and never
//! reused, also across restarts and retention. A newtype so an offset is never mixed up
//! with a byte position or a count.

use std::fmt;

/// The logical position of one record in a [`crate::Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset `n` records after this one.
    #[must_use]
    pub const fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }

    /// How many records lie between `earlier` and `self` (`self - earlier`), or 0.
    #[must_use]
    pub const fn distance_from(self, earlier: Offset) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Offset {
    fn from(v: u64) -> Self {
        Offset(v)
    }
}
