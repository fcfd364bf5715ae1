//! Length prefixes, as both stored formats (the message record and the session
//! journal) write them: a big-endian `u16` or `u32` length, then the bytes. A field
//! longer than its prefix can say is refused with [`FieldTooLong`], never written
//! with a clamped length (which would make every field after it unreadable).

use bytes::{BufMut, BytesMut};

/// A field is longer than its length prefix can represent; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {len} bytes, more than the {max} its length prefix can hold")]
pub struct FieldTooLong {
    /// Which field (`"topic"`, `"client id"`, ...).
    pub field: &'static str,
    /// Its length.
    pub len: usize,
    /// The most its prefix can say.
    pub max: usize,
}

impl FieldTooLong {
    /// `field` of `len` bytes does not fit a `u32` length.
    pub(crate) fn u32(field: &'static str, len: usize) -> FieldTooLong {
        FieldTooLong {
            field,
            len,
            // On a 32-bit target every length fits, so this error is never made there.
            max: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
        }
    }
}

/// `len` as a `u16` prefix of `field`.
pub(crate) fn u16_len(field: &'static str, len: usize) -> Result<u16, FieldTooLong> {
    u16::try_from(len).map_err(|_| FieldTooLong {
        field,
        len,
        max: usize::from(u16::MAX),
    })
}

/// `len` as a `u32` prefix of `field`.
pub(crate) fn u32_len(field: &'static str, len: usize) -> Result<u32, FieldTooLong> {
    u32::try_from(len).map_err(|_| FieldTooLong::u32(field, len))
}

/// Append `v` with a `u16` length prefix, or nothing if it does not fit.
pub(crate) fn put_u16_prefixed(
    b: &mut BytesMut,
    field: &'static str,
    v: &[u8],
) -> Result<(), FieldTooLong> {
    b.put_u16(u16_len(field, v.len())?);
    b.put_slice(v);
    Ok(())
}

/// Append `v` with a `u32` length prefix, or nothing if it does not fit.
pub(crate) fn put_u32_prefixed(
    b: &mut BytesMut,
    field: &'static str,
    v: &[u8],
) -> Result<(), FieldTooLong> {
    b.put_u32(u32_len(field, v.len())?);
    b.put_slice(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_that_fits_is_written_with_its_length() {
        let mut b = BytesMut::new();
        let v = vec![7u8; usize::from(u16::MAX)];
        put_u16_prefixed(&mut b, "topic", &v).unwrap();
        assert_eq!(&b[..2], &u16::MAX.to_be_bytes());
        assert_eq!(b.len(), 2 + v.len());
        let mut b = BytesMut::new();
        put_u32_prefixed(&mut b, "record", b"abc").unwrap();
        assert_eq!(&b[..], b"\0\0\0\x03abc");
    }

    #[test]
    fn a_field_longer_than_its_u16_prefix_is_refused_and_nothing_is_written() {
        let mut b = BytesMut::from(&b"before"[..]);
        let v = vec![7u8; usize::from(u16::MAX) + 1];
        assert_eq!(
            put_u16_prefixed(&mut b, "topic", &v),
            Err(FieldTooLong {
                field: "topic",
                len: 65_536,
                max: 65_535
            })
        );
        assert_eq!(&b[..], b"before");
    }

    #[test]
    fn a_length_beyond_u32_is_refused() {
        let Ok(len) = usize::try_from(u64::from(u32::MAX) + 1) else {
            return; // a 32-bit target cannot hold such a length at all
        };
        let e = u32_len("record", len).unwrap_err();
        assert_eq!((e.field, e.len), ("record", len));
    }
}
