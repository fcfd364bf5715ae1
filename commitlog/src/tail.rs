//! The in-memory tail: the newest records, kept so that caught-up readers are served
//! without a system call.
//!
//! It holds the `Bytes` handed to `append` (a reference count, not a copy), bounded by
//! `tail_bytes_max`; the oldest records fall out first. Invariant: the tail always ends
//! at the log's head, i.e. `start + len == head`.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::read::ReadLimits;
use crate::Offset;

#[derive(Debug)]
pub struct Tail {
    start: Offset,
    records: VecDeque<Bytes>,
    bytes: usize,
    bytes_max: usize,
}

impl Tail {
    /// An empty tail that starts (and ends) at `head`.
    pub fn new(head: Offset, bytes_max: usize) -> Tail {
        Tail {
            start: head,
            records: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// The first offset held (equal to the head when empty).
    pub fn start(&self) -> Offset {
        self.start
    }

    /// Bytes of payload held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Add the record at the head; evicts the oldest records past the byte bound.
    pub fn push(&mut self, record: Bytes) {
        self.bytes += record.len();
        self.records.push_back(record);
        while self.bytes > self.bytes_max {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.start = self.start.add(1);
        }
    }

    /// Forget records below `earliest` (retention removed them).
    pub fn trim_front(&mut self, earliest: Offset) {
        while self.start < earliest {
            let Some(old) = self.records.pop_front() else {
                self.start = earliest;
                break;
            };
            self.bytes -= old.len();
            self.start = self.start.add(1);
        }
    }

    /// Copy handles to the records from `from` (which must be `>= start`) into `out`,
    /// within `limits`; returns the offset after the last one given.
    pub fn read<R: From<Bytes>>(
        &self,
        from: Offset,
        limits: ReadLimits,
        out: &mut Vec<R>,
    ) -> Offset {
        let skip = from.distance_from(self.start) as usize;
        let mut next = from;
        let mut bytes = 0usize;
        for r in self.records.iter().skip(skip).take(limits.records_max) {
            let frame = crate::record::HEADER_BYTES + r.len();
            if next > from && bytes + frame > limits.bytes_max {
                break;
            }
            bytes += frame;
            out.push(R::from(r.clone()));
            next = next.add(1);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(records_max: usize, bytes_max: usize) -> ReadLimits {
        ReadLimits {
            records_max,
            bytes_max,
        }
    }

    #[test]
    fn evicts_oldest_past_bound() {
        let mut t = Tail::new(Offset(10), 10);
        for _ in 0..4 {
            t.push(Bytes::from_static(b"abcd"));
        }
        assert_eq!(t.start(), Offset(12));
        assert_eq!(t.bytes(), 8);
        let mut out: Vec<Bytes> = Vec::new();
        assert_eq!(t.read(Offset(13), lim(10, 1000), &mut out), Offset(14));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn limits_bound_a_read_but_one_record_always_goes() {
        let mut t = Tail::new(Offset(0), 1000);
        for i in 0..5u8 {
            t.push(Bytes::from(vec![i; 10]));
        }
        let mut out: Vec<Bytes> = Vec::new();
        assert_eq!(t.read(Offset(0), lim(2, 1000), &mut out), Offset(2));
        out.clear();
        // Each frame is 18 bytes: a budget of 40 fits two.
        assert_eq!(t.read(Offset(1), lim(10, 40), &mut out), Offset(3));
        out.clear();
        assert_eq!(t.read(Offset(1), lim(10, 1), &mut out), Offset(2));
        assert_eq!(out[0].as_ref(), &[1u8; 10]);
    }

    #[test]
    fn trim_front_follows_retention() {
        let mut t = Tail::new(Offset(0), 1000);
        for _ in 0..3 {
            t.push(Bytes::from_static(b"x"));
        }
        t.trim_front(Offset(2));
        assert_eq!(t.start(), Offset(2));
        assert_eq!(t.bytes(), 1);
    }
}
