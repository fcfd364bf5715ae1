//! What a subscriber saw from each publisher: exact counts of messages received,
//! duplicates and reorderings, and what never came.

/// Sequence accounting for one publisher's messages at one subscriber.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
}

impl Tracker {
    /// Record sequence number `seq`.
    pub fn saw(&mut self, seq: u64) {
        let word = (seq / 64) as usize;
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
    }

    /// Distinct messages received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Messages received more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Messages that arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Of `0..sent`, how many never arrived.
    pub fn missing(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly() {
        let mut t = Tracker::default();
        for s in [0, 1, 3, 2, 3, 200] {
            t.saw(s);
        }
        assert_eq!((t.received(), t.duplicates(), t.reordered()), (5, 1, 1));
        assert_eq!(t.missing(201), 196);
    }
}
