//! Tests of one segment on real files: append, read back, fill up, recover, seal.

use bytes::Bytes;

use super::*;
use crate::read::ReadLimits;

const DENSE: Policy = Policy {
    index_interval_bytes: 0,
    record_bytes_max: 1 << 20,
    verify_reads: true,
};

fn lim(records_max: usize, bytes_max: usize) -> ReadLimits {
    ReadLimits {
        records_max,
        bytes_max,
    }
}

fn recs(n: usize, size: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(vec![i as u8; size])).collect()
}

#[test]
fn file_names_sort_and_parse() {
    assert_eq!(data_file_name(Offset(42)), "00000000000000000042.log");
    assert_eq!(
        parse_file_name("00000000000000000042.index"),
        Some((Offset(42), FileKind::Index))
    );
    assert_eq!(parse_file_name("42.log"), None);
    assert_eq!(parse_file_name("0000000000000000004x.log"), None);
}

#[test]
fn append_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Segment::create(dir.path(), Offset(100), DENSE, 4096, 0).unwrap();
    let mut buf = WriteScratch::default();
    assert_eq!(s.append(&recs(10, 5), 1 << 20, &mut buf).unwrap(), 10);
    assert_eq!(s.next(), Offset(110));
    let mut out: Vec<Bytes> = Vec::new();
    assert_eq!(
        s.read(Offset(103), lim(4, 1 << 20), &mut out).unwrap(),
        Offset(107)
    );
    assert_eq!(out, recs(10, 5)[3..7].to_vec());
    out.clear();
    // A 13-byte frame each: a 30-byte budget gives two.
    assert_eq!(
        s.read(Offset(100), lim(100, 30), &mut out).unwrap(),
        Offset(102)
    );
}

#[test]
fn a_read_of_as_many_records_as_there_are_takes_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Segment::create(dir.path(), Offset(7), DENSE, 4096, 0).unwrap();
    let mut buf = WriteScratch::default();
    s.append(&recs(3, 5), 1 << 20, &mut buf).unwrap();
    let mut out: Vec<Bytes> = Vec::new();
    assert_eq!(
        s.read(Offset(8), lim(usize::MAX, 1 << 20), &mut out)
            .unwrap(),
        Offset(10)
    );
    assert_eq!(out, recs(3, 5)[1..].to_vec());
}

#[test]
fn batches_and_records_larger_than_one_write_read_back_whole() {
    // 40 records of 100 KiB (4 MB in calls of at most 1 MiB) and one of 2.5 MiB
    // (written in parts), among small ones framed into the write buffer.
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        record_bytes_max: 4 << 20,
        ..DENSE
    };
    let mut s = Segment::create(dir.path(), Offset(0), policy, 1 << 16, 0).unwrap();
    let mut records = recs(40, 100 * 1024);
    records.insert(7, Bytes::from(vec![7u8; 5]));
    records.insert(
        20,
        Bytes::from((0..2_621_440u32).map(|i| i as u8).collect::<Vec<u8>>()),
    );
    records.push(Bytes::from(vec![9u8; 3]));
    let n = records.len();
    let mut buf = WriteScratch::default();
    assert_eq!(s.append(&records, 64 << 20, &mut buf).unwrap(), n);
    let mut out: Vec<Bytes> = Vec::new();
    let next = s.read(Offset(0), lim(n, 64 << 20), &mut out).unwrap();
    assert_eq!(next, Offset(n as u64));
    assert_eq!(out, records);
}

#[test]
fn stops_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Segment::create(dir.path(), Offset(0), DENSE, 4096, 0).unwrap();
    let mut buf = WriteScratch::default();
    // 18-byte frames in a 50-byte segment: two fit.
    assert_eq!(s.append(&recs(5, 10), 50, &mut buf).unwrap(), 2);
    assert_eq!(s.append(&recs(1, 10), 50, &mut buf).unwrap(), 0);
    // An index of 3 entries stops a dense segment at 3 records.
    let mut t = Segment::create(dir.path(), Offset(10), DENSE, 24, 0).unwrap();
    assert_eq!(t.append(&recs(5, 1), 1 << 20, &mut buf).unwrap(), 3);
    assert!(t.index_is_full());
}

#[test]
fn sparse_reads_skip_to_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        index_interval_bytes: 100,
        ..DENSE
    };
    let mut s = Segment::create(dir.path(), Offset(0), policy, 4096, 0).unwrap();
    let records = recs(50, 22);
    s.append(&records, 1 << 20, &mut WriteScratch::default())
        .unwrap();
    for start in 0..50u64 {
        let mut out: Vec<Bytes> = Vec::new();
        let next = s.read(Offset(start), lim(3, 1 << 20), &mut out).unwrap();
        assert_eq!(next, Offset((start + 3).min(50)));
        assert_eq!(out[..], records[start as usize..next.0 as usize]);
    }
}

#[test]
fn large_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Segment::create(dir.path(), Offset(0), DENSE, 4096, 0).unwrap();
    let records = vec![
        Bytes::from(vec![1u8; 100_000]),
        Bytes::from_static(b"small"),
    ];
    s.append(&records, 1 << 30, &mut WriteScratch::default())
        .unwrap();
    let mut out: Vec<Bytes> = Vec::new();
    // The first record alone is over the byte budget: it still comes.
    assert_eq!(s.read(Offset(0), lim(10, 10), &mut out).unwrap(), Offset(1));
    assert_eq!(out[0], records[0]);
}

#[test]
fn reopen_recovers_unclean_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Segment::create(dir.path(), Offset(7), DENSE, 4096, 0).unwrap();
    s.append(&recs(4, 3), 1 << 20, &mut WriteScratch::default())
        .unwrap();
    drop(s);
    let s = Segment::open(dir.path(), Offset(7), true, false, DENSE, 4096, 0).unwrap();
    assert_eq!(s.next(), Offset(11));
    let mut out: Vec<Bytes> = Vec::new();
    s.read(Offset(9), lim(10, 1 << 20), &mut out).unwrap();
    assert_eq!(out, recs(4, 3)[2..].to_vec());
}

#[test]
fn a_preallocated_segment_recovers_its_records_and_is_trimmed_when_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let len = |s: &Segment| std::fs::metadata(s.data_path()).unwrap().len();
    let mut s = Segment::create(dir.path(), Offset(7), DENSE, 4096, 1 << 20).unwrap();
    assert_eq!(len(&s), 1 << 20);
    let mut scratch = WriteScratch::default();
    s.append(&recs(4, 3), 1 << 20, &mut scratch).unwrap();
    // Large records take the other write path (straight from their buffers).
    s.append(&recs(2, 20_000), 1 << 20, &mut scratch).unwrap();
    let data_len = s.data_len();
    assert_eq!(len(&s), 1 << 20);
    drop(s); // a crash: the zeros after the records are still there

    let mut s = Segment::open(dir.path(), Offset(7), true, false, DENSE, 4096, 1 << 20).unwrap();
    assert_eq!((s.next(), s.data_len()), (Offset(13), data_len));
    assert_eq!(
        len(&s),
        1 << 20,
        "the reopened active segment is preallocated again"
    );
    s.append(&recs(1, 5), 1 << 20, &mut scratch).unwrap();
    let mut out: Vec<Bytes> = Vec::new();
    s.read(Offset(7), lim(100, 1 << 20), &mut out).unwrap();
    let mut want = recs(4, 3);
    want.extend(recs(2, 20_000));
    want.extend(recs(1, 5));
    assert_eq!(out, want);

    s.seal(true).unwrap();
    assert_eq!(len(&s), s.data_len());
    drop(s);
    // Sealed and trimmed: the cheap check (frames end at the end of the file) passes.
    let s = Segment::open(dir.path(), Offset(7), false, true, DENSE, 4096, 1 << 20).unwrap();
    assert_eq!((s.next(), len(&s)), (Offset(14), s.data_len()));
}
