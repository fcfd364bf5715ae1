//! The load payload: `publisher u32 | sequence u64 | scheduled send time u64 (ns since
//! the run's epoch)`, big-endian, padded to the requested size.

use std::time::Instant;

/// Bytes of header in every payload (the minimum payload size).
pub const HEADER: usize = 20;

/// Write the header into the first bytes of `buf` (at least `HEADER` long).
pub fn stamp(buf: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    if buf.len() < HEADER {
        return;
    }
    buf[..4].copy_from_slice(&publisher.to_be_bytes());
    buf[4..12].copy_from_slice(&seq.to_be_bytes());
    buf[12..20].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Read the header back.
pub fn read(buf: &[u8]) -> Option<(u32, u64, u64)> {
    let h = buf.get(..HEADER)?;
    let p = u32::from_be_bytes(h[..4].try_into().ok()?);
    let s = u64::from_be_bytes(h[4..12].try_into().ok()?);
    let t = u64::from_be_bytes(h[12..20].try_into().ok()?);
    Some((p, s, t))
}

/// Nanoseconds since `epoch`.
pub fn since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let mut b = [0u8; 64];
        super::stamp(&mut b, 7, 99, 12345);
        assert_eq!(super::read(&b), Some((7, 99, 12345)));
        assert_eq!(super::read(&b[..10]), None);
    }
}
