//! An HPACK (RFC 7541) decoder, and an encoder that writes plain literals only, for
//! `fixio`: the request headers of some clients carry an `:authority` that the `h2` crate
//! rejects (etcdctl 3.4 sends "http://127.0.0.1:2379" for its per-endpoint clients),
//! while grpc-go servers ignore it. The Huffman code is the RFC's; it is canonical, so
//! the code lengths below determine it.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 Appendix B: the code length of symbols 0..=255 and EOS (256).
const HUFFMAN_LEN: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30,
    28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5,
    5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6,
    6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23,
    22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23,
    24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22,
    23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27,
    26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21,
    22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27,
    27, 27, 27, 27, 26, 30,
];

/// Canonical-code decoding tables: per length, the first code, how many codes, and where
/// their symbols start in `syms` (symbols sorted by (length, symbol)).
struct Canon {
    first: [u32; 31],
    count: [u32; 31],
    offset: [usize; 31],
    syms: [u16; 257],
    /// Per symbol: (code, length), for the tests' encoder.
    #[cfg_attr(not(test), allow(dead_code))]
    codes: [(u32, u8); 257],
}

fn canon() -> &'static Canon {
    static C: OnceLock<Canon> = OnceLock::new();
    C.get_or_init(|| {
        let mut order: Vec<u16> = (0..257).collect();
        order.sort_by_key(|&s| (HUFFMAN_LEN[s as usize], s));
        let mut c = Canon {
            first: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            syms: [0; 257],
            codes: [(0, 0); 257],
        };
        let mut code: u32 = 0;
        let mut prev = HUFFMAN_LEN[order[0] as usize];
        for (k, &s) in order.iter().enumerate() {
            let len = HUFFMAN_LEN[s as usize];
            if k > 0 {
                code = (code + 1) << (len - prev);
            }
            prev = len;
            let l = len as usize;
            if c.count[l] == 0 {
                c.first[l] = code;
                c.offset[l] = k;
            }
            c.count[l] += 1;
            c.syms[k] = s;
            c.codes[s as usize] = (code, len);
        }
        c
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct Error;

/// A decoded header field: (name, value).
pub type Field = (Vec<u8>, Vec<u8>);

pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let c = canon();
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for i in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> i) & 1);
            len += 1;
            if len > 30 {
                return Err(Error);
            }
            if c.count[len] > 0 && code >= c.first[len] && code - c.first[len] < c.count[len] {
                let sym = c.syms[c.offset[len] + (code - c.first[len]) as usize];
                if sym == 256 {
                    return Err(Error); // EOS inside a string
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(Error);
    }
    Ok(())
}

fn read_int(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, Error> {
    let mask = (1usize << prefix_bits) - 1;
    let first = *buf.get(*pos).ok_or(Error)? as usize & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or(Error)? as usize;
        *pos += 1;
        if shift > 28 {
            return Err(Error);
        }
        value += (b & 127) << shift;
        shift += 7;
        if b & 128 == 0 {
            return Ok(value);
        }
    }
}

fn read_str(buf: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
    let huffman = *buf.get(*pos).ok_or(Error)? & 0x80 != 0;
    let n = read_int(buf, pos, 7)?;
    let end = pos.checked_add(n).filter(|&e| e <= buf.len()).ok_or(Error)?;
    let raw = &buf[*pos..end];
    *pos = end;
    if huffman {
        let mut out = Vec::with_capacity(n * 8 / 5);
        huffman_decode(raw, &mut out)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

fn write_int(out: &mut Vec<u8>, mut n: usize, prefix_bits: u8, first: u8) {
    let mask = (1usize << prefix_bits) - 1;
    if n < mask {
        out.push(first | n as u8);
        return;
    }
    out.push(first | mask as u8);
    n -= mask;
    while n >= 128 {
        out.push((n & 127) as u8 | 128);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends one field as a literal without indexing, new name, no Huffman coding.
pub fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    write_int(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    write_int(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// The decoding side of one connection (its dynamic table).
pub struct Decoder {
    table: VecDeque<Field>,
    size: usize,
    max: usize,
    /// The most the peer may set the table to (SETTINGS_HEADER_TABLE_SIZE we advertise).
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max: limit, limit }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let sz = name.len() + value.len() + 32;
        if sz > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.size += sz;
        self.table.push_front((name, value));
        self.evict();
    }

    fn get(&self, index: usize) -> Result<Field, Error> {
        match index {
            0 => Err(Error),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self.table.get(index - 62).cloned().ok_or(Error),
        }
    }

    /// Decodes one header block into (name, value) fields, in order.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, Error> {
        let mut fields = Vec::with_capacity(16);
        let mut pos = 0;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                let i = read_int(block, &mut pos, 7)?;
                fields.push(self.get(i)?);
            } else if b & 0xc0 == 0x40 {
                let i = read_int(block, &mut pos, 6)?;
                let name = if i == 0 { read_str(block, &mut pos)? } else { self.get(i)?.0 };
                let value = read_str(block, &mut pos)?;
                self.insert(name.clone(), value.clone());
                fields.push((name, value));
            } else if b & 0xe0 == 0x20 {
                let n = read_int(block, &mut pos, 5)?;
                if n > self.limit {
                    return Err(Error);
                }
                self.max = n;
                self.evict();
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed.
                let i = read_int(block, &mut pos, 4)?;
                let name = if i == 0 { read_str(block, &mut pos)? } else { self.get(i)?.0 };
                let value = read_str(block, &mut pos)?;
                fields.push((name, value));
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
pub fn huffman_encode(src: &[u8]) -> Vec<u8> {
    let c = canon();
    let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for &b in src {
        let (code, len) = c.codes[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            out.push((acc >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_rfc_example() {
        // RFC 7541 C.4.1: "www.example.com".
        let enc = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        let mut out = Vec::new();
        huffman_decode(&enc, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        assert_eq!(huffman_encode(b"www.example.com"), enc);
    }

    #[test]
    fn huffman_every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut out = Vec::new();
        huffman_decode(&huffman_encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
        // Bad padding: a zero bit after the last symbol.
        assert_eq!(huffman_decode(&[0x00], &mut Vec::new()).map(|_| ()), Err(Error).map(|_: ()| ()));
    }

    #[test]
    fn decodes_rfc_requests_with_dynamic_table() {
        // RFC 7541 C.4.1-C.4.3 (Huffman-coded requests sharing one dynamic table).
        let mut d = Decoder::new(4096);
        let r1 = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let f = d.decode(&r1).unwrap();
        assert_eq!(f[3], (b":authority".to_vec(), b"www.example.com".to_vec()));
        let r2 = [0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf];
        let f = d.decode(&r2).unwrap();
        assert_eq!(f[3], (b":authority".to_vec(), b"www.example.com".to_vec()));
        assert_eq!(f[4], (b"cache-control".to_vec(), b"no-cache".to_vec()));
        let r3 = [
            0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
            0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
        ];
        let f = d.decode(&r3).unwrap();
        assert_eq!(f[1], (b":scheme".to_vec(), b"https".to_vec()));
        assert_eq!(f[4], (b"custom-key".to_vec(), b"custom-value".to_vec()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn literal_encoding_round_trips() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":path", b"/etcdserverpb.KV/Range");
        encode_literal(&mut block, b"x-long", &[b'v'; 300]);
        let f = Decoder::new(4096).decode(&block).unwrap();
        assert_eq!(f[0].1, b"/etcdserverpb.KV/Range");
        assert_eq!(f[1].1, vec![b'v'; 300]);
    }
}
