//! etcd's `RangeResponse` wire encoding, straight from petcd's stored KeyValue records.
//!
//! The one piece of the front end that knows etcd's messages (see
//! docs/enhancements/0006-range-encoding.md): filling a `RangeResponse` of N keys through
//! protobuf's Python objects costs about 1 µs per key, encoding it here a few ns per key.
//!
//! A record is petcd's backend layout of a KeyValue (src/petcd/mvcc/kvstore.py
//! `encode_kv`): five big-endian i64 (create_revision, mod_revision, version, lease, key
//! length), the key, then the value. The bytes produced are exactly what protobuf's
//! serializer writes for the same message: fields in field-number order, proto3 defaults
//! (0, empty) left out, the header always present.
//!
//! Field numbers (etcd's rpc.proto and kv.proto): RangeResponse header 1, kvs 2, more 3,
//! count 4; ResponseHeader cluster_id 1, member_id 2, revision 3, raft_term 4; KeyValue
//! key 1, create_revision 2, mod_revision 3, version 4, value 5, lease 6.

/// Bytes of a record's fixed part.
pub const RECORD_HEADER: usize = 40;

/// The fields of a `ResponseHeader`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Where an encoding goes: a growing `Vec`, or a buffer of the exact size (`Fill`).
pub trait Sink {
    fn push(&mut self, b: u8);
    fn extend(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    fn push(&mut self, b: u8) {
        Vec::push(self, b);
    }
    fn extend(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// A buffer filled from its start (panics past its end: `Planned::len` sized it).
pub struct Fill<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Fill<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Fill { buf, at: 0 }
    }
}

impl Sink for Fill<'_> {
    fn push(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }
    fn extend(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

fn put_varint<S: Sink>(out: &mut S, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Tag byte + varint, left out when zero (proto3).
fn scalar_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

fn put_scalar<S: Sink>(out: &mut S, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        put_varint(out, v);
    }
}

/// Tag byte + length + bytes, left out when empty (proto3).
fn bytes_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 + varint_len(n as u64) + n
    }
}

fn put_bytes<S: Sink>(out: &mut S, tag: u8, b: &[u8]) {
    if !b.is_empty() {
        out.push(tag);
        put_varint(out, b.len() as u64);
        out.extend(b);
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A record's parts: (create, mod, version, lease, key, value).
struct Parts<'a> {
    ints: [u64; 4],
    key: &'a [u8],
    value: &'a [u8],
}

fn parts(record: &[u8]) -> Result<Parts<'_>, String> {
    if record.len() < RECORD_HEADER {
        return Err(format!("a KeyValue record of {} bytes is too short", record.len()));
    }
    let key_len = be_i64(record, 32);
    let rest = record.len() - RECORD_HEADER;
    if key_len < 0 || key_len as u64 > rest as u64 {
        return Err(format!("a KeyValue record's key length {key_len} exceeds its {rest} bytes"));
    }
    let end = RECORD_HEADER + key_len as usize;
    Ok(Parts {
        // negative int64 fields are written as their two's complement (10 bytes), as protobuf does
        ints: [
            be_i64(record, 0) as u64,
            be_i64(record, 8) as u64,
            be_i64(record, 16) as u64,
            be_i64(record, 24) as u64,
        ],
        key: &record[RECORD_HEADER..end],
        value: &record[end..],
    })
}

fn kv_len(p: &Parts<'_>) -> usize {
    bytes_len(p.key.len())
        + scalar_len(p.ints[0])
        + scalar_len(p.ints[1])
        + scalar_len(p.ints[2])
        + bytes_len(p.value.len())
        + scalar_len(p.ints[3])
}

fn header_len(h: &Header) -> usize {
    scalar_len(h.cluster_id)
        + scalar_len(h.member_id)
        + scalar_len(h.revision as u64)
        + scalar_len(h.raft_term)
}

/// A `RangeResponse` checked and measured, ready to be written: `plan`, then `write`.
pub struct Planned<'a> {
    header: Header,
    hlen: usize,
    kvs: Vec<(Parts<'a>, usize)>,
    more: bool,
    count: i64,
    total: usize,
}

/// Checks `records` (each must be a KeyValue record; the error names the problem) and
/// measures the `RangeResponse` of `header`, one KeyValue per record (in order), `more` and
/// `count`.
pub fn plan<'a>(
    header: &Header,
    records: &[&'a [u8]],
    more: bool,
    count: i64,
) -> Result<Planned<'a>, String> {
    let mut kvs = Vec::with_capacity(records.len());
    let hlen = header_len(header);
    let mut total = 1 + varint_len(hlen as u64) + hlen;
    for r in records {
        let p = parts(r)?;
        let n = kv_len(&p);
        total += 1 + varint_len(n as u64) + n;
        kvs.push((p, n));
    }
    total += if more { 2 } else { 0 } + scalar_len(count as u64);
    Ok(Planned { header: *header, hlen, kvs, more, count, total })
}

impl Planned<'_> {
    /// The encoding's size in bytes.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Writes the encoding (`len()` bytes) to `out`.
    pub fn write<S: Sink>(&self, out: &mut S) {
        let header = &self.header;
        out.push(0x0a);
        put_varint(out, self.hlen as u64);
        put_scalar(out, 0x08, header.cluster_id);
        put_scalar(out, 0x10, header.member_id);
        put_scalar(out, 0x18, header.revision as u64);
        put_scalar(out, 0x20, header.raft_term);
        for (p, n) in &self.kvs {
            out.push(0x12);
            put_varint(out, *n as u64);
            put_bytes(out, 0x0a, p.key);
            put_scalar(out, 0x10, p.ints[0]);
            put_scalar(out, 0x18, p.ints[1]);
            put_scalar(out, 0x20, p.ints[2]);
            put_bytes(out, 0x2a, p.value);
            put_scalar(out, 0x30, p.ints[3]);
        }
        if self.more {
            out.extend(&[0x18, 0x01]);
        }
        put_scalar(out, 0x20, self.count as u64);
    }
}

/// The encoded `RangeResponse` (`plan`, then `write` into a `Vec`).
pub fn range_response(
    header: &Header,
    records: &[&[u8]],
    more: bool,
    count: i64,
) -> Result<Vec<u8>, String> {
    let planned = plan(header, records, more, count)?;
    let mut out = Vec::with_capacity(planned.len());
    planned.write(&mut out);
    debug_assert_eq!(out.len(), planned.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(create: i64, modr: i64, version: i64, lease: i64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [create, modr, version, lease, key.len() as i64] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        r.extend_from_slice(key);
        r.extend_from_slice(value);
        r
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [(0u64, 1), (1, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), n, "{v}");
        }
    }

    #[test]
    fn known_bytes() {
        // header{cluster_id 1, revision 5}, kvs [{key "k", create 2, mod 3, version 1,
        // value "v"}], count 1 -- as protobuf writes it.
        let r = record(2, 3, 1, 0, b"k", b"v");
        let h = Header { cluster_id: 1, member_id: 0, revision: 5, raft_term: 0 };
        let got = range_response(&h, &[&r], false, 1).unwrap();
        let want: &[u8] = &[
            0x0a, 0x04, 0x08, 0x01, 0x18, 0x05, // header
            0x12, 0x0c, 0x0a, 0x01, b'k', 0x10, 0x02, 0x18, 0x03, 0x20, 0x01, 0x2a, 0x01, b'v',
            0x20, 0x01, // count
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn empty_response_keeps_its_header_and_more() {
        let got = range_response(&Header::default(), &[], true, 0).unwrap();
        assert_eq!(got, [0x0a, 0x00, 0x18, 0x01]);
    }

    #[test]
    fn negative_lease_is_ten_bytes() {
        let r = record(0, 0, 0, -1, b"", b"");
        let got = range_response(&Header::default(), &[&r], false, 0).unwrap();
        assert_eq!(got.len(), 2 + 2 + 1 + 10);
        assert_eq!(&got[4..], &[0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn filling_a_buffer_of_the_planned_size_writes_the_same_bytes() {
        let records = [record(2, 3, 1, 0, b"k", b"v"), record(0, 0, 0, -1, b"", &[7u8; 300])];
        let views: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        let h = Header { cluster_id: 1, member_id: 9, revision: 5, raft_term: 2 };
        let planned = plan(&h, &views, true, 2).unwrap();
        let mut buf = vec![0u8; planned.len()];
        planned.write(&mut Fill::new(&mut buf));
        assert_eq!(buf, range_response(&h, &views, true, 2).unwrap());
    }

    #[test]
    fn malformed_records_are_refused() {
        assert!(range_response(&Header::default(), &[b"short"], false, 0).is_err());
        let mut r = record(1, 1, 1, 0, b"key", b"");
        r.truncate(RECORD_HEADER + 2);
        assert!(range_response(&Header::default(), &[&r], false, 0).is_err());
        let bad = record(1, 1, 1, 0, b"", b"");
        let mut neg = bad.clone();
        neg[32..40].copy_from_slice(&(-1i64).to_be_bytes());
        assert!(range_response(&Header::default(), &[&neg], false, 0).is_err());
    }
}
