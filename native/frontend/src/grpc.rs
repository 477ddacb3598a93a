//! Pure gRPC-over-HTTP/2 helpers: the 5-byte message framing, `grpc-timeout` parsing,
//! `grpc-message` percent-encoding and the base64 of `-bin` metadata. No I/O here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// gRPC status codes used by the front end itself.
pub const CODE_OK: u32 = 0;
pub const CODE_UNKNOWN: u32 = 2;
pub const CODE_DEADLINE_EXCEEDED: u32 = 4;
pub const CODE_RESOURCE_EXHAUSTED: u32 = 8;
pub const CODE_UNIMPLEMENTED: u32 = 12;
pub const CODE_INTERNAL: u32 = 13;
pub const CODE_UNAVAILABLE: u32 = 14;

/// One message with its gRPC prefix (flag 0 = not compressed, 4-byte big-endian length).
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.extend_from_slice(msg);
    b.freeze()
}

/// An outgoing message with its gRPC prefix, in one or two pieces: `head` holds the prefix,
/// and the message too when it was copied in (`frame`); a large message is kept apart in
/// `body` as it was handed over, without a copy (`Framed::around`).
#[derive(Debug, Clone, Default)]
pub struct Framed {
    pub head: Bytes,
    pub body: Bytes,
}

impl Framed {
    /// The prefix alone, before `body`.
    pub fn around(body: Bytes) -> Framed {
        let mut head = BytesMut::with_capacity(5);
        head.put_u8(0);
        head.put_u32(body.len() as u32);
        Framed { head: head.freeze(), body }
    }

    /// Wire bytes, prefix included.
    pub fn wire_len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// The message's own size (the prefix left out).
    pub fn message_len(&self) -> usize {
        self.wire_len() - 5
    }
}

impl From<Bytes> for Framed {
    /// An already framed message (prefix included).
    fn from(head: Bytes) -> Framed {
        Framed { head, body: Bytes::new() }
    }
}

/// What the reassembly of a request stream produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole message (prefix removed).
    Message(Bytes),
    /// The prefix announced a message larger than the limit: (announced size, limit).
    TooLarge(usize, usize),
    /// A whole message with the compressed flag set (prefix removed, still compressed).
    Compressed(Bytes),
}

/// Reassembles length-prefixed gRPC messages from DATA frames of any size.
#[derive(Default)]
pub struct Deframer {
    buf: BytesMut,
}

impl Deframer {
    /// Appends one DATA frame's payload.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if any. A message over `max` is reported as soon as its
    /// prefix is seen (as grpc-go does), before its body arrives.
    pub fn next(&mut self, max: usize) -> Option<Parsed> {
        if self.buf.len() < 5 {
            return None;
        }
        let flag = self.buf[0];
        let n = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if n > max {
            return Some(Parsed::TooLarge(n, max));
        }
        if self.buf.len() < 5 + n {
            self.buf.reserve(5 + n - self.buf.len());
            return None;
        }
        self.buf.advance(5);
        let body = self.buf.split_to(n).freeze();
        Some(if flag & 1 != 0 { Parsed::Compressed(body) } else { Parsed::Message(body) })
    }

    /// Bytes of an incomplete message left over.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The `grpc-timeout` header ("1-8 digits" then one of H M S m u n) in seconds.
pub fn parse_timeout(v: &[u8]) -> Option<f64> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let per_unit = match unit[0] {
        b'H' => 3600.0,
        b'M' => 60.0,
        b'S' => 1.0,
        b'm' => 1e-3,
        b'u' => 1e-6,
        b'n' => 1e-9,
        _ => return None,
    };
    Some(n as f64 * per_unit)
}

/// Why a gzip-compressed request message could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Gunzip {
    /// Larger than the limit once decompressed: at least this many bytes.
    TooLarge(usize),
    /// Not gzip, or truncated: the decoder's error text.
    Invalid(String),
}

/// Decompresses a gzip-compressed message (`grpc-encoding: gzip`), reading at most one byte
/// past `max` so that a small message that inflates hugely is refused without being
/// inflated in full.
pub fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, Gunzip> {
    use std::io::Read;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Gunzip::Invalid(e.to_string()))?;
    if out.len() > max {
        return Err(Gunzip::TooLarge(out.len()));
    }
    Ok(out)
}

/// `grpc-message` encoding: bytes outside printable ASCII, and '%', become %XX.
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Base64 (standard alphabet, padding optional, as gRPC sends `-bin` values). None if
/// the text is not base64.
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let mut end = s.len();
    while end > 0 && s[end - 1] == b'=' {
        end -= 1;
    }
    if s.len() - end > 2 {
        return None;
    }
    let s = &s[..end];
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 => out.push((acc >> 4) as u8),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_units() {
        assert_eq!(parse_timeout(b"5S"), Some(5.0));
        assert_eq!(parse_timeout(b"2H"), Some(7200.0));
        assert_eq!(parse_timeout(b"3M"), Some(180.0));
        assert!((parse_timeout(b"1500m").unwrap() - 1.5).abs() < 1e-12);
        assert!((parse_timeout(b"250u").unwrap() - 0.00025).abs() < 1e-12);
        assert!((parse_timeout(b"99999999n").unwrap() - 0.099999999).abs() < 1e-12);
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"123456789S"), None); // 9 digits
        assert_eq!(parse_timeout(b"12x"), None);
        assert_eq!(parse_timeout(b"-1S"), None);
        assert_eq!(parse_timeout(b""), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("plain text: ok"), "plain text: ok");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("ä\n"), "%C3%A4%0A");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode(b"AAEC/w==").unwrap(), vec![0, 1, 2, 255]);
        assert_eq!(base64_decode(b"AAEC/w").unwrap(), vec![0, 1, 2, 255]);
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"a"), None);
        assert_eq!(base64_decode(b"a*bc"), None);
    }

    #[test]
    fn framing_across_data_frames() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(&[7u8; 40000]));
        let mut d = Deframer::default();
        let mut got = Vec::new();
        // Feed in awkward pieces: 1, 2, 3, ... bytes.
        let mut i = 0;
        let mut step = 1;
        while i < wire.len() {
            let j = (i + step).min(wire.len());
            d.push(&wire[i..j]);
            while let Some(p) = d.next(1 << 20) {
                got.push(p);
            }
            i = j;
            step = step * 2 + 1;
        }
        assert_eq!(d.pending(), 0);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Parsed::Message(Bytes::from_static(b"hello")));
        assert_eq!(got[1], Parsed::Message(Bytes::new()));
        assert_eq!(got[2], Parsed::Message(Bytes::from(vec![7u8; 40000])));
    }

    #[test]
    fn oversize_seen_from_prefix() {
        let mut d = Deframer::default();
        d.push(&[0, 0, 0, 1, 0]); // announces 256 bytes
        assert_eq!(d.next(255), Some(Parsed::TooLarge(256, 255)));
        let mut d = Deframer::default();
        d.push(&frame(b"xy")[..]);
        d.buf[0] = 1;
        assert_eq!(d.next(10), Some(Parsed::Compressed(Bytes::from_static(b"xy"))));
        assert_eq!(d.next(10), None);
    }

    #[test]
    fn gunzip_within_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[7u8; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap(), vec![7u8; 1000]);
        assert_eq!(gunzip(&gz, 999), Err(Gunzip::TooLarge(1000)));
        assert!(matches!(gunzip(b"not gzip", 1000), Err(Gunzip::Invalid(_))));
    }
}
