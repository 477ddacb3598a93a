//! etcd's write requests (`PutRequest`, `DeleteRangeRequest`, `TxnRequest`) decoded from
//! their wire bytes, for the member's request dataclasses (docs/enhancements/0008).
//!
//! Only the encodings protobuf's own serializers write are decoded here: each field at most
//! once, with its declared wire type, no unknown fields, at most one member of a `oneof`,
//! no nested `Txn`. Anything else gives `None` and the caller parses the bytes with
//! protobuf, whose answer (last value wins, merged sub-messages, unknown fields kept, errors)
//! stays the reference. So for every input this decoder accepts, it agrees with protobuf
//! followed by `petcd.grpc.convert`; the Python tests check that on generated messages and
//! on mutated bytes.
//!
//! Field numbers (etcd's rpc.proto): PutRequest key 1, value 2, lease 3, prev_kv 4,
//! ignore_value 5, ignore_lease 6; DeleteRangeRequest key 1, range_end 2, prev_kv 3;
//! RangeRequest key 1, range_end 2, limit 3, revision 4, sort_order 5, sort_target 6,
//! serializable 7, keys_only 8, count_only 9, min_mod_revision 10, max_mod_revision 11,
//! min_create_revision 12, max_create_revision 13; Compare result 1, target 2, key 3,
//! version 4, create_revision 5, mod_revision 6, value 7, lease 8 (4-8: oneof
//! target_union), range_end 64; RequestOp request_range 1, request_put 2,
//! request_delete_range 3, request_txn 4 (oneof); TxnRequest compare 1, success 2,
//! failure 3 (repeated).

const VARINT: u32 = 0;
const LEN: u32 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Put<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteRange<'a> {
    pub key: &'a [u8],
    pub range_end: &'a [u8],
    pub prev_kv: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range<'a> {
    pub key: &'a [u8],
    pub range_end: &'a [u8],
    pub limit: i64,
    pub revision: i64,
    pub sort_order: i32,
    pub sort_target: i32,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compare<'a> {
    pub result: i32,
    pub target: i32,
    pub key: &'a [u8],
    pub range_end: &'a [u8],
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Range(Range<'a>),
    Put(Put<'a>),
    DeleteRange(DeleteRange<'a>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn<'a> {
    pub compare: Vec<Compare<'a>>,
    pub success: Vec<Op<'a>>,
    pub failure: Vec<Op<'a>>,
}

/// A field's value as the wire gives it.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of one message, in order. `None` from `next` ends the message; a malformed or
/// unexpected wire type makes the reader `bad`.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    bad: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            bad: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return None; // more than 64 bits: left to protobuf
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// The next (field number, value); wire types other than varint and length-delimited
    /// (none of these messages declares one) make the reader bad.
    fn next(&mut self) -> Option<(u64, Value<'a>)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let parsed = self.field();
        if parsed.is_none() {
            self.bad = true;
        }
        parsed
    }

    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return None;
        }
        match (tag & 7) as u32 {
            VARINT => Some((number, Value::Varint(self.varint()?))),
            LEN => {
                let n = usize::try_from(self.varint()?).ok()?;
                let end = self.pos.checked_add(n)?;
                let bytes = self.buf.get(self.pos..end)?;
                self.pos = end;
                Some((number, Value::Bytes(bytes)))
            }
            _ => None,
        }
    }
}

/// Marks field `number` (1..=64) seen; false if it was seen before.
fn first(seen: &mut u64, number: u64) -> bool {
    let bit = 1u64 << (number - 1);
    let fresh = *seen & bit == 0;
    *seen |= bit;
    fresh
}

/// An open enum (proto3) as protobuf reads it: the varint's low 32 bits as a signed int32
/// (-1 comes as ten bytes; 2^32 + 5 reads as 5).
fn enum_value(v: u64) -> i32 {
    v as u32 as i32
}

pub fn put(buf: &[u8]) -> Option<Put<'_>> {
    let mut m = Put::default();
    let mut seen = 0u64;
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        if !(1..=6).contains(&number) || !first(&mut seen, number) {
            return None;
        }
        match (number, value) {
            (1, Value::Bytes(b)) => m.key = b,
            (2, Value::Bytes(b)) => m.value = b,
            (3, Value::Varint(v)) => m.lease = v as i64,
            (4, Value::Varint(v)) => m.prev_kv = v != 0,
            (5, Value::Varint(v)) => m.ignore_value = v != 0,
            (6, Value::Varint(v)) => m.ignore_lease = v != 0,
            _ => return None,
        }
    }
    (!f.bad).then_some(m)
}

pub fn delete_range(buf: &[u8]) -> Option<DeleteRange<'_>> {
    let mut m = DeleteRange::default();
    let mut seen = 0u64;
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        if !(1..=3).contains(&number) || !first(&mut seen, number) {
            return None;
        }
        match (number, value) {
            (1, Value::Bytes(b)) => m.key = b,
            (2, Value::Bytes(b)) => m.range_end = b,
            (3, Value::Varint(v)) => m.prev_kv = v != 0,
            _ => return None,
        }
    }
    (!f.bad).then_some(m)
}

pub fn range(buf: &[u8]) -> Option<Range<'_>> {
    let mut m = Range::default();
    let mut seen = 0u64;
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        if !(1..=13).contains(&number) || !first(&mut seen, number) {
            return None;
        }
        match (number, value) {
            (1, Value::Bytes(b)) => m.key = b,
            (2, Value::Bytes(b)) => m.range_end = b,
            (3, Value::Varint(v)) => m.limit = v as i64,
            (4, Value::Varint(v)) => m.revision = v as i64,
            (5, Value::Varint(v)) => m.sort_order = enum_value(v),
            (6, Value::Varint(v)) => m.sort_target = enum_value(v),
            (7, Value::Varint(v)) => m.serializable = v != 0,
            (8, Value::Varint(v)) => m.keys_only = v != 0,
            (9, Value::Varint(v)) => m.count_only = v != 0,
            (10, Value::Varint(v)) => m.min_mod_revision = v as i64,
            (11, Value::Varint(v)) => m.max_mod_revision = v as i64,
            (12, Value::Varint(v)) => m.min_create_revision = v as i64,
            (13, Value::Varint(v)) => m.max_create_revision = v as i64,
            _ => return None,
        }
    }
    (!f.bad).then_some(m)
}

pub fn compare(buf: &[u8]) -> Option<Compare<'_>> {
    let mut m = Compare::default();
    let mut seen = 0u64;
    let mut union = false; // a member of target_union (4..=8) was seen
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        if !((1..=8).contains(&number) || number == 64) || !first(&mut seen, number) {
            return None;
        }
        if (4..=8).contains(&number) {
            if union {
                return None; // protobuf keeps the last member only
            }
            union = true;
        }
        match (number, value) {
            (1, Value::Varint(v)) => m.result = enum_value(v),
            (2, Value::Varint(v)) => m.target = enum_value(v),
            (3, Value::Bytes(b)) => m.key = b,
            (4, Value::Varint(v)) => m.version = v as i64,
            (5, Value::Varint(v)) => m.create_revision = v as i64,
            (6, Value::Varint(v)) => m.mod_revision = v as i64,
            (7, Value::Bytes(b)) => m.value = b,
            (8, Value::Varint(v)) => m.lease = v as i64,
            (64, Value::Bytes(b)) => m.range_end = b,
            _ => return None,
        }
    }
    (!f.bad).then_some(m)
}

/// A `RequestOp` with exactly one of range, put and delete-range set.
pub fn request_op(buf: &[u8]) -> Option<Op<'_>> {
    let mut op = None;
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        if op.is_some() {
            return None; // a second member (protobuf: the last wins) or a repeated one (merged)
        }
        let Value::Bytes(b) = value else { return None };
        op = Some(match number {
            1 => Op::Range(range(b)?),
            2 => Op::Put(put(b)?),
            3 => Op::DeleteRange(delete_range(b)?),
            _ => return None, // a nested txn, or unknown
        });
    }
    if f.bad {
        return None;
    }
    op
}

pub fn txn(buf: &[u8]) -> Option<Txn<'_>> {
    let mut m = Txn::default();
    let mut f = Fields::new(buf);
    while let Some((number, value)) = f.next() {
        let Value::Bytes(b) = value else { return None };
        match number {
            1 => m.compare.push(compare(b)?),
            2 => m.success.push(request_op(b)?),
            3 => m.failure.push(request_op(b)?),
            _ => return None,
        }
    }
    (!f.bad).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field_bytes(out: &mut Vec<u8>, number: u64, b: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn field_varint(out: &mut Vec<u8>, number: u64, v: u64) {
        varint(out, number << 3);
        varint(out, v);
    }

    #[test]
    fn put_fields_in_any_order() {
        let mut b = Vec::new();
        field_varint(&mut b, 3, (-5i64) as u64);
        field_bytes(&mut b, 1, b"foo");
        field_varint(&mut b, 4, 1);
        field_bytes(&mut b, 2, b"bar");
        let p = put(&b).unwrap();
        assert_eq!(
            p,
            Put {
                key: b"foo",
                value: b"bar",
                lease: -5,
                prev_kv: true,
                ..Put::default()
            }
        );
        assert_eq!(put(&[]), Some(Put::default()));
    }

    #[test]
    fn odd_encodings_are_left_to_protobuf() {
        let mut dup = Vec::new();
        field_bytes(&mut dup, 1, b"a");
        field_bytes(&mut dup, 1, b"b");
        assert_eq!(put(&dup), None, "a repeated singular field");
        let mut unknown = Vec::new();
        field_bytes(&mut unknown, 1, b"a");
        field_varint(&mut unknown, 7, 1);
        assert_eq!(put(&unknown), None, "an unknown field");
        let mut wire = Vec::new();
        field_varint(&mut wire, 1, 1);
        assert_eq!(put(&wire), None, "bytes field as varint");
        assert_eq!(put(&[0x0a, 0x05, b'a']), None, "truncated");
        assert_eq!(put(&[0x18, 0xff]), None, "truncated varint");
        assert_eq!(put(&[0x00, 0x00]), None, "field number 0");
        let mut fixed = vec![0x19];
        fixed.extend_from_slice(&[0; 8]);
        assert_eq!(put(&fixed), None, "fixed64 wire type");
        let mut big = vec![0x18];
        big.extend_from_slice(&[0xff; 9]);
        big.push(0x02);
        assert_eq!(put(&big), None, "a varint over 64 bits");
    }

    #[test]
    fn txn_of_kubernetes_shape() {
        let mut cmp = Vec::new();
        field_varint(&mut cmp, 1, 0);
        field_varint(&mut cmp, 2, 2);
        field_bytes(&mut cmp, 3, b"/registry/pods/a");
        field_varint(&mut cmp, 6, 42);
        let mut p = Vec::new();
        field_bytes(&mut p, 1, b"/registry/pods/a");
        field_bytes(&mut p, 2, b"v");
        let mut put_op = Vec::new();
        field_bytes(&mut put_op, 2, &p);
        let mut r = Vec::new();
        field_bytes(&mut r, 1, b"/registry/pods/a");
        let mut get_op = Vec::new();
        field_bytes(&mut get_op, 1, &r);
        let mut t = Vec::new();
        field_bytes(&mut t, 1, &cmp);
        field_bytes(&mut t, 2, &put_op);
        field_bytes(&mut t, 3, &get_op);
        let got = txn(&t).unwrap();
        assert_eq!(got.compare.len(), 1);
        assert_eq!(got.compare[0].target, 2);
        assert_eq!(got.compare[0].mod_revision, 42);
        assert_eq!(
            got.success,
            vec![Op::Put(Put {
                key: b"/registry/pods/a",
                value: b"v",
                ..Put::default()
            })]
        );
        assert_eq!(
            got.failure,
            vec![Op::Range(Range {
                key: b"/registry/pods/a",
                ..Range::default()
            })]
        );
    }

    #[test]
    fn oneofs_with_two_members_are_left_to_protobuf() {
        let mut cmp = Vec::new();
        field_varint(&mut cmp, 4, 1);
        field_varint(&mut cmp, 6, 2);
        assert_eq!(compare(&cmp), None);
        let mut op = Vec::new();
        field_bytes(&mut op, 2, &[]);
        field_bytes(&mut op, 3, &[]);
        assert_eq!(request_op(&op), None);
        let mut nested = Vec::new();
        field_bytes(&mut nested, 4, &[]);
        assert_eq!(request_op(&nested), None, "a nested txn");
        assert_eq!(request_op(&[]), None, "an empty RequestOp");
        let mut range_end = Vec::new();
        field_bytes(&mut range_end, 64, b"z");
        assert_eq!(compare(&range_end).unwrap().range_end, b"z");
    }

    #[test]
    fn enums_are_int32_as_protobuf_reads_them() {
        let mut cmp = Vec::new();
        field_varint(&mut cmp, 1, (-1i64) as u64);
        field_varint(&mut cmp, 2, (1 << 32) + 5);
        let c = compare(&cmp).unwrap();
        assert_eq!((c.result, c.target), (-1, 5));
        let mut r = Vec::new();
        field_varint(&mut r, 5, 1 << 31);
        assert_eq!(range(&r).unwrap().sort_order, i32::MIN);
    }
}
