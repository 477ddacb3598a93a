//! A stream wrapper between the accepted socket and h2 that makes h2 accept any `:authority`.
//!
//! grpc-go clients dialled as `passthrough:///http://host:port` (etcd's clientv3 3.4 does
//! this for `etcdctl endpoint status --cluster` and `endpoint hashkv --cluster`) send
//! `:authority: http://host:port`. grpc-go and etcd ignore the value; h2 0.4 answers any
//! request whose `:authority` is not a valid URI authority with RST_STREAM PROTOCOL_ERROR,
//! and has no option to allow it. So the bytes the client sends pass through here first.
//!
//! Every frame goes to h2 unchanged except the header blocks (HEADERS and CONTINUATION).
//! A block is reassembled up to END_HEADERS, decoded with an HPACK decoder that follows the
//! client's dynamic table, and written again for h2 as one HEADERS frame (plus CONTINUATION
//! frames when it does not fit in one frame), every field as a literal without indexing.
//! Nothing is ever added to h2's dynamic table then, so h2's decoder stays in step with
//! ours whatever the client's blocks reference. On the way, an `:authority` that is not a
//! valid authority loses a leading `scheme://` and anything from the first `/`; if that is
//! still not valid, the field is dropped (h2 accepts a request without `:authority`).
//!
//! A malformed frame or header block: h2 gets a HEADERS frame whose block it cannot decode
//! (an indexed field with index 0), so h2 itself answers GOAWAY PROTOCOL_ERROR and closes
//! the connection; nothing more is read from the socket.
//!
//! The writing side is the socket's, untouched (vectored writes included).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection preface a client sends before its first frame (RFC 9113 section 3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest frame h2 accepts and the largest we give it: h2's SETTINGS_MAX_FRAME_SIZE,
/// which conn.rs leaves at the protocol's default.
pub const MAX_FRAME: usize = 16_384;
/// The HPACK dynamic table size h2 advertises (SETTINGS_HEADER_TABLE_SIZE; conn.rs leaves
/// it at the default), the most a client's table size update may ask for.
pub const TABLE_SIZE: usize = 4096;
/// The largest header list (RFC 7541 size: name + value + 32 per field) we pass on: the
/// max_header_list_size conn.rs gives h2. Beyond it the connection is closed; without a
/// limit a small block of references to a big dynamic-table entry would expand without end.
pub const MAX_LIST: usize = 16 << 20;

/// The read buffer's size (it is released whenever the socket has nothing to read).
const READ_BUF: usize = 32 * 1024;
/// Bytes of a frame still to pass through unchanged from which on reading straight into
/// h2's buffer is worth a system call of its own.
const DIRECT_READ: usize = 8192;

/// The malformed frame or header block that ends a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A header block being reassembled from HEADERS + CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

/// The read side's frame rewriter, independent of any I/O (see the module comment).
pub struct Rewriter {
    preface: usize,
    pass: usize,
    pending: Option<Pending>,
    block: Vec<u8>,
    enc: Vec<u8>,
    decoder: Decoder<'static>,
    /// The last `:authority` value seen and what h2 gets for it (a client sends the same
    /// one on every request: it is checked once per connection, not once per request).
    authority: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        decoder.set_max_table_size(TABLE_SIZE);
        Rewriter {
            preface: PREFACE_LEN,
            pass: 0,
            pending: None,
            block: Vec::new(),
            enc: Vec::new(),
            decoder,
            authority: None,
        }
    }

    /// Bytes that may go to h2 unchanged before the next frame starts.
    pub fn passthrough(&self) -> usize {
        self.preface + self.pass
    }

    /// Records that `n` (at most `passthrough()`) bytes went to h2 unchanged by another way.
    pub fn passed(&mut self, n: usize) {
        let p = n.min(self.preface);
        self.preface -= p;
        self.pass -= n - p;
    }

    /// Moves every whole frame (and any pass-through bytes) at the front of `input` to
    /// `out`, rewriting header blocks. An incomplete frame stays in `input`.
    pub fn process(
        &mut self,
        input: &mut BytesMut,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Malformed> {
        loop {
            let pass = self.passthrough();
            if pass > 0 {
                let n = pass.min(input.len());
                if n == 0 {
                    return Ok(());
                }
                out.push_back(input.split_to(n).freeze());
                self.passed(n);
                continue;
            }
            if input.len() < FRAME_HEAD {
                return Ok(());
            }
            let len = (usize::from(input[0]) << 16)
                | (usize::from(input[1]) << 8)
                | usize::from(input[2]);
            let kind = input[3];
            let flags = input[4];
            let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
            let continuation = kind == CONTINUATION && self.pending.is_some();
            if kind != HEADERS && !continuation {
                if self.pending.is_some() {
                    return Err(Malformed("expected CONTINUATION"));
                }
                // Anything else, including a CONTINUATION out of place (h2 rejects it),
                // goes to h2 as it is.
                out.push_back(input.split_to(FRAME_HEAD).freeze());
                self.pass = len;
                continue;
            }
            if len > MAX_FRAME {
                return Err(Malformed(
                    "header frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if input.len() < FRAME_HEAD + len {
                input.reserve(FRAME_HEAD + len - input.len());
                return Ok(());
            }
            let frame = input.split_to(FRAME_HEAD + len);
            let mut p = &frame[FRAME_HEAD..];
            if continuation {
                if self.pending.as_ref().is_some_and(|h| h.stream != stream) {
                    return Err(Malformed("CONTINUATION on another stream"));
                }
            } else {
                if self.pending.is_some() {
                    return Err(Malformed("expected CONTINUATION"));
                }
                if stream == 0 {
                    return Err(Malformed("HEADERS on stream 0"));
                }
                if flags & PADDED != 0 {
                    let (&pad, rest) = p.split_first().ok_or(Malformed("HEADERS padding"))?;
                    let keep = rest
                        .len()
                        .checked_sub(usize::from(pad))
                        .ok_or(Malformed("HEADERS padding"))?;
                    p = &rest[..keep];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(Malformed("HEADERS priority"));
                    }
                    let mut pr = [0u8; 5];
                    pr.copy_from_slice(&p[..5]);
                    priority = Some(pr);
                    p = &p[5..];
                }
                self.pending = Some(Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                });
                self.block.clear();
            }
            if self.block.len() + p.len() > MAX_LIST {
                return Err(Malformed("header block too large"));
            }
            self.block.extend_from_slice(p);
            if flags & END_HEADERS != 0 {
                let head = self.pending.take().expect("pending header block");
                self.rewrite(&head, out)?;
            }
        }
    }

    /// Decodes the reassembled block and queues it again as literals without indexing.
    fn rewrite(&mut self, head: &Pending, out: &mut VecDeque<Bytes>) -> Result<(), Malformed> {
        let enc = &mut self.enc;
        let authority = &mut self.authority;
        enc.clear();
        let mut size = 0usize;
        let mut over = false;
        let res = self.decoder.decode_with_cb(&self.block, |name, value| {
            size += name.len() + value.len() + 32;
            if size > MAX_LIST {
                over = true;
                return;
            }
            let value: &[u8] = if &*name == b":authority" {
                let hit = matches!(authority, Some((seen, _)) if **seen == *value);
                if !hit {
                    *authority = Some((value.to_vec(), fix_authority(&value).map(<[u8]>::to_vec)));
                }
                match authority.as_ref().and_then(|(_, fixed)| fixed.as_deref()) {
                    Some(v) => v,
                    None => return,
                }
            } else {
                &value
            };
            enc.push(0);
            put_string(enc, &name);
            put_string(enc, value);
        });
        if res.is_err() {
            return Err(Malformed("HPACK decoding failed"));
        }
        if over {
            return Err(Malformed("header list too large"));
        }
        let prio = head.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let first = (MAX_FRAME - prio.len()).min(enc.len());
        let mut flags = if head.end_stream { END_STREAM } else { 0 };
        if head.priority.is_some() {
            flags |= PRIORITY;
        }
        if first == enc.len() {
            flags |= END_HEADERS;
        }
        let mut buf = BytesMut::with_capacity(
            FRAME_HEAD + prio.len() + enc.len() + (enc.len() / MAX_FRAME) * FRAME_HEAD,
        );
        put_head(&mut buf, prio.len() + first, HEADERS, flags, head.stream);
        buf.put_slice(prio);
        buf.put_slice(&enc[..first]);
        let mut rest = &enc[first..];
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let f = if n == rest.len() { END_HEADERS } else { 0 };
            put_head(&mut buf, n, CONTINUATION, f, head.stream);
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
        }
        out.push_back(buf.freeze());
        Ok(())
    }
}

/// A HEADERS frame whose block h2 cannot decode: h2 answers GOAWAY PROTOCOL_ERROR.
pub fn poison_frame() -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_HEAD + 1);
    put_head(&mut buf, 1, HEADERS, END_HEADERS | END_STREAM, 1);
    buf.put_u8(0x80);
    buf.freeze()
}

fn put_head(buf: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    buf.put_slice(&(len as u32).to_be_bytes()[1..]);
    buf.put_u8(kind);
    buf.put_u8(flags);
    buf.put_u32(stream);
}

/// An HPACK string literal, not Huffman-coded: a 7-bit-prefix length, then the bytes.
fn put_string(enc: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 0x7f {
        enc.push(n as u8);
    } else {
        enc.push(0x7f);
        n -= 0x7f;
        while n >= 0x80 {
            enc.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        enc.push(n as u8);
    }
    enc.extend_from_slice(s);
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// The `:authority` value h2 gets: `v` if valid, else `v` without a leading `scheme://` and
/// without anything from the first `/` if that is valid, else None (the field is dropped).
pub fn fix_authority(v: &[u8]) -> Option<&[u8]> {
    if valid_authority(v) {
        return Some(v);
    }
    let mut s = v;
    if let Some(i) = s.windows(3).position(|w| w == b"://") {
        s = &s[i + 3..];
    }
    if let Some(i) = s.iter().position(|&b| b == b'/') {
        s = &s[..i];
    }
    (!s.is_empty() && valid_authority(s)).then_some(s)
}

/// The accepted socket as h2 sees it (see the module comment).
pub struct AuthorityFix<S> {
    inner: S,
    rw: Rewriter,
    rd: BytesMut,
    out: VecDeque<Bytes>,
    /// No more bytes from the socket: EOF, or the connection is being failed.
    done: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rw: Rewriter::new(),
            rd: BytesMut::new(),
            out: VecDeque::new(),
            done: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                while buf.remaining() > 0 {
                    let Some(front) = this.out.front_mut() else {
                        break;
                    };
                    let n = front.len().min(buf.remaining());
                    buf.put_slice(&front[..n]);
                    front.advance(n);
                    if front.is_empty() {
                        this.out.pop_front();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            if !this.rd.is_empty() {
                if let Err(Malformed(why)) = this.rw.process(&mut this.rd, &mut this.out) {
                    log_malformed(why);
                    this.out.push_back(poison_frame());
                    this.done = true;
                    this.rd = BytesMut::new();
                }
                if !this.out.is_empty() {
                    continue;
                }
            }
            let pass = this.rw.passthrough();
            if this.rd.is_empty() && pass >= DIRECT_READ && buf.remaining() > 0 {
                // The rest of a large frame: straight into h2's buffer.
                let n = {
                    let mut sub = buf.take(pass);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
                    sub.filled().len()
                };
                // SAFETY: the inner reader initialized and filled these n bytes of `buf`'s
                // unfilled part (`take` lends exactly that memory).
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                this.rw.passed(n);
                if n == 0 {
                    this.done = true;
                }
                return Poll::Ready(Ok(()));
            }
            if this.rd.capacity() - this.rd.len() < 4096 {
                this.rd.reserve(READ_BUF);
            }
            let n = {
                let spare = this.rd.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                if Pin::new(&mut this.inner)
                    .poll_read(cx, &mut rb)?
                    .is_pending()
                {
                    if this.rd.is_empty() {
                        // Idle: an idle connection holds no read buffer.
                        this.rd = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                rb.filled().len()
            };
            if n == 0 {
                // EOF: whatever is left (a frame cut short) goes to h2 as it is.
                this.done = true;
                if !this.rd.is_empty() {
                    this.out.push_back(std::mem::take(&mut this.rd).freeze());
                }
                continue;
            }
            // SAFETY: the inner reader initialized the first n bytes of the spare capacity.
            unsafe { this.rd.set_len(this.rd.len() + n) };
        }
    }
}

fn log_malformed(why: &str) {
    if std::env::var_os("PETCD_FRONTEND_DEBUG").is_some() {
        eprintln!("petcd frontend: closing a connection: {why}");
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_head(&mut b, payload.len(), kind, flags, stream);
        b.put_slice(payload);
        b.to_vec()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A literal without indexing, new name, no Huffman (what a test client sends).
    fn lit(name: &str, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8];
        put_string(&mut v, name.as_bytes());
        put_string(&mut v, value);
        v
    }

    /// Runs `input` through a fresh rewriter, fed `chunk` bytes at a time.
    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, Malformed> {
        let mut rw = Rewriter::new();
        let mut rd = BytesMut::new();
        let mut out = VecDeque::new();
        for c in input.chunks(chunk) {
            rd.extend_from_slice(c);
            rw.process(&mut rd, &mut out)?;
        }
        assert!(rd.is_empty(), "{} bytes left unprocessed", rd.len());
        Ok(out.iter().flat_map(|b| b.iter().copied()).collect())
    }

    #[derive(Debug)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn frames(mut b: &[u8]) -> Vec<Frame> {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
        let mut v = Vec::new();
        while !b.is_empty() {
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            v.push(Frame {
                kind: b[3],
                flags: b[4],
                stream,
                payload: b[9..9 + len].to_vec(),
            });
            b = &b[9 + len..];
        }
        v
    }

    fn int(b: &mut &[u8], prefix: u8) -> usize {
        let mask = (1u16 << prefix) as u8 - 1;
        let mut n = usize::from(b[0] & mask);
        *b = &b[1..];
        if n == usize::from(mask) {
            let mut shift = 0;
            loop {
                let c = b[0];
                *b = &b[1..];
                n += usize::from(c & 0x7f) << shift;
                shift += 7;
                if c & 0x80 == 0 {
                    break;
                }
            }
        }
        n
    }

    /// Parses a block that must hold literals without indexing and plain strings only.
    fn literals(mut b: &[u8]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[0], 0, "not a literal without indexing with a new name");
            b = &b[1..];
            let mut s = [String::new(), String::new()];
            for x in &mut s {
                assert_eq!(b[0] & 0x80, 0, "Huffman-coded");
                let n = int(&mut b, 7);
                *x = String::from_utf8(b[..n].to_vec()).unwrap();
                b = &b[n..];
            }
            let [n, val] = s;
            v.push((n, val));
        }
        v
    }

    /// The header blocks in the output: (stream, flags of the HEADERS frame, fields).
    type Block = (u32, u8, Vec<(String, String)>);

    fn blocks(out: &[u8]) -> Vec<Block> {
        let mut v = Vec::new();
        let mut cur: Option<(u32, u8, Vec<u8>)> = None;
        for f in frames(out) {
            match f.kind {
                HEADERS => {
                    assert!(cur.is_none());
                    assert!(f.payload.len() <= MAX_FRAME);
                    assert_eq!(f.flags & PADDED, 0);
                    let skip = if f.flags & PRIORITY != 0 { 5 } else { 0 };
                    cur = Some((f.stream, f.flags, f.payload[skip..].to_vec()));
                }
                CONTINUATION => {
                    assert!(f.payload.len() <= MAX_FRAME);
                    let c = cur.as_mut().expect("CONTINUATION after HEADERS");
                    assert_eq!(c.0, f.stream);
                    c.2.extend_from_slice(&f.payload);
                }
                _ => {
                    assert!(cur.is_none());
                    continue;
                }
            }
            if f.flags & END_HEADERS != 0 {
                let (s, fl, b) = cur.take().unwrap();
                v.push((s, fl, literals(&b)));
            }
        }
        assert!(cur.is_none());
        v
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dynamic_table_references_across_blocks() {
        // RFC 7541 C.4.1-C.4.3: Huffman-coded literals with incremental indexing, then
        // blocks that reference the entries the earlier ones added.
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        ));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &hex("8286 84be 5886 a8eb 1064 9cbf"),
        ));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            5,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        ));
        for chunk in [1, 7, 1000] {
            let out = run(&input, chunk).unwrap();
            let b = blocks(&out);
            assert_eq!(b.len(), 3);
            assert_eq!(b[0].0, 1);
            assert_eq!(b[0].1, END_HEADERS | END_STREAM);
            let first = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ];
            assert_eq!(b[0].2, pairs(&first));
            assert_eq!(b[1].0, 3);
            assert_eq!(b[1].1, END_HEADERS);
            let mut second = first.to_vec();
            second.push(("cache-control", "no-cache"));
            assert_eq!(b[1].2, pairs(&second));
            let third = [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ];
            assert_eq!(b[2].2, pairs(&third));
        }
    }

    #[test]
    fn authority_fixed_or_dropped() {
        assert_eq!(
            fix_authority(b"127.0.0.1:2379"),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(
            fix_authority(b"http://127.0.0.1:23791"),
            Some(&b"127.0.0.1:23791"[..])
        );
        assert_eq!(
            fix_authority(b"https://[::1]:2379/x/y"),
            Some(&b"[::1]:2379"[..])
        );
        assert_eq!(fix_authority(b"unix:///tmp/sock"), None);
        assert_eq!(fix_authority(b"http://"), None);
        assert_eq!(fix_authority(b"a b"), None);
        let cases: [(&[u8], Option<&str>); 3] = [
            (b"http://127.0.0.1:23791", Some("127.0.0.1:23791")),
            (b"localhost:2379", Some("localhost:2379")),
            (b"unix:///tmp/x", None),
        ];
        for (value, want) in cases {
            let mut block = hex("83 86");
            block.extend(lit(":path", b"/etcdserverpb.Maintenance/Status"));
            block.extend(lit(":authority", value));
            block.extend(lit("content-type", b"application/grpc"));
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, 1, &block));
            let b = blocks(&run(&input, 1000).unwrap());
            let mut want_fields = vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/etcdserverpb.Maintenance/Status"),
            ];
            if let Some(a) = want {
                want_fields.push((":authority", a));
            }
            want_fields.push(("content-type", "application/grpc"));
            assert_eq!(b[0].2, pairs(&want_fields));
        }
    }

    #[test]
    fn padding_priority_and_continuation() {
        let mut block = hex("83 86");
        block.extend(lit(":authority", b"http://h:1"));
        block.extend(lit("x-a", b"1"));
        // HEADERS: PADDED (3 bytes of padding) + PRIORITY, the block in three fragments.
        let prio = [0x80, 0, 0, 0, 3, 15];
        let mut p = vec![3u8];
        p.extend(&prio[1..]);
        p.extend(&block[..3]);
        p.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 7, &p));
        input.extend(frame(CONTINUATION, 0, 7, &block[3..10]));
        input.extend(frame(CONTINUATION, END_HEADERS, 7, &block[10..]));
        input.extend(frame(0, END_STREAM, 7, b"data")); // DATA
        for chunk in [1, 3, 4096] {
            let out = run(&input, chunk).unwrap();
            let f = frames(&out);
            assert_eq!(f.len(), 3);
            assert_eq!((f[0].kind, f[0].flags, f[0].stream), (4, 0, 0));
            assert_eq!((f[1].kind, f[1].stream), (HEADERS, 7));
            assert_eq!(f[1].flags, PRIORITY | END_STREAM | END_HEADERS);
            assert_eq!(f[1].payload[..5], prio[1..]);
            assert_eq!(
                (f[2].kind, f[2].flags, f[2].stream, &f[2].payload[..]),
                (0, END_STREAM, 7, &b"data"[..])
            );
            let b = blocks(&out);
            assert_eq!(
                b[0].2,
                pairs(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":authority", "h:1"),
                    ("x-a", "1")
                ])
            );
        }
    }

    #[test]
    fn huge_block_split_into_continuations() {
        let big = vec![b'v'; 40_000];
        let mut block = hex("83 86");
        block.extend(lit("x-big", &big));
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(MAX_FRAME);
        input.extend(frame(HEADERS, END_STREAM, 1, a));
        for (i, c) in b.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= b.len();
            input.extend(frame(
                CONTINUATION,
                if last { END_HEADERS } else { 0 },
                1,
                c,
            ));
        }
        let out = run(&input, 5000).unwrap();
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].kind, f[0].flags), (HEADERS, END_STREAM));
        assert_eq!((f[1].kind, f[1].flags), (CONTINUATION, 0));
        assert_eq!((f[2].kind, f[2].flags), (CONTINUATION, END_HEADERS));
        let b = blocks(&out);
        assert_eq!(b[0].1, END_STREAM);
        assert_eq!(
            b[0].2[2],
            ("x-big".to_string(), String::from_utf8(big).unwrap())
        );
    }

    #[test]
    fn large_data_frames_pass_unchanged() {
        let mut input = PREFACE.to_vec();
        let data: Vec<u8> = (0..MAX_FRAME).map(|i| i as u8).collect();
        input.extend(frame(0, 0, 1, &data));
        input.extend(frame(6, 0, 0, b"12345678")); // PING
        assert_eq!(run(&input, 999).unwrap(), input);
    }

    #[test]
    fn malformed_input_is_refused() {
        let ok = hex("83 86");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("index 0", frame(HEADERS, END_HEADERS, 1, &hex("80"))),
            (
                "index past the tables",
                frame(HEADERS, END_HEADERS, 1, &hex("c5")),
            ),
            (
                "string past the block",
                frame(HEADERS, END_HEADERS, 1, &hex("00 05 61")),
            ),
            (
                "table size over the advertised",
                frame(HEADERS, END_HEADERS, 1, &hex("3fe2 1f 82")),
            ),
            (
                "padding over the payload",
                frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x83]),
            ),
            (
                "priority cut short",
                frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),
            ),
            ("headers on stream 0", frame(HEADERS, END_HEADERS, 0, &ok)),
            (
                "oversize frame",
                frame(HEADERS, END_HEADERS, 1, &vec![0x82; MAX_FRAME + 1]),
            ),
            (
                "data inside a header block",
                [frame(HEADERS, 0, 1, &ok), frame(0, 0, 1, b"x")].concat(),
            ),
            (
                "continuation on another stream",
                [
                    frame(HEADERS, 0, 1, &ok),
                    frame(CONTINUATION, END_HEADERS, 3, &ok),
                ]
                .concat(),
            ),
        ];
        for (what, f) in cases {
            let mut input = PREFACE.to_vec();
            input.extend(f);
            assert!(run(&input, 1000).is_err(), "{what}");
        }
        // The poison frame is one h2 cannot decode either.
        let p = poison_frame();
        assert_eq!(
            &p[..],
            &frame(HEADERS, END_HEADERS | END_STREAM, 1, &hex("80"))[..]
        );
    }

    #[test]
    fn expanding_references_are_bounded() {
        // One 4,000-byte entry in the table, then blocks of references to it: 5,000
        // references (20 MB of header list) in a 5 kB block are refused.
        let mut first = vec![0x40];
        put_string(&mut first, b"x-big");
        put_string(&mut first, &vec![b'v'; 4000]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(HEADERS, END_HEADERS, 3, &vec![0xbe; 3000]));
        assert_eq!(blocks(&run(&input, 4096).unwrap())[1].2.len(), 3000);
        input.extend(frame(HEADERS, END_HEADERS, 5, &vec![0xbe; 5000]));
        assert_eq!(run(&input, 4096), Err(Malformed("header list too large")));
    }

    /// A real h2 server behind the wrapper, a hand-written client on a loopback socket.
    #[test]
    fn h2_accepts_a_scheme_in_authority() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
            let server = tokio::spawn(async move {
                let (sock, _) = listener.accept().await.unwrap();
                // (h2 resets a request without :path: every request below has one.)
                let mut conn = h2::server::handshake(AuthorityFix::new(sock))
                    .await
                    .unwrap();
                let mut seen = Vec::new();
                while let Some(r) = conn.accept().await {
                    let (req, mut respond) = r.unwrap();
                    let a = req.uri().authority().map(|a| a.to_string());
                    let x = req
                        .headers()
                        .get("x-n")
                        .map(|v| v.to_str().unwrap().to_string());
                    seen.push((a, x));
                    respond
                        .send_response(http::Response::new(()), true)
                        .unwrap();
                    if seen.len() == 3 {
                        break;
                    }
                }
                let _ = seen_tx.send(seen);
                // The next block is malformed: the connection fails.
                matches!(conn.accept().await, Some(Err(_)))
            });
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut req = PREFACE.to_vec();
            req.extend(frame(4, 0, 0, &[]));
            // Stream 1: the authority with a scheme, added to the client's dynamic table.
            let mut b = hex("83 86 84");
            b.extend([0x41]);
            put_string(&mut b, b"http://127.0.0.1:23791");
            b.extend(lit("x-n", b"1"));
            req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &b));
            // Stream 3: the same authority referenced from the table.
            let mut b = hex("83 86 84 be");
            b.extend(lit("x-n", b"3"));
            req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &b));
            // Stream 5: an authority that cannot be fixed: dropped.
            let mut b = hex("83 86 84");
            b.extend(lit(":authority", b"unix:///x"));
            b.extend(lit("x-n", b"5"));
            req.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &b));
            c.write_all(&req).await.unwrap();
            let seen = tokio::time::timeout(std::time::Duration::from_secs(10), seen_rx)
                .await
                .unwrap()
                .unwrap();
            // Then a block h2 never sees: a reference past the tables.
            c.write_all(&frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                7,
                &hex("83 86 84 ff 20"),
            ))
            .await
            .unwrap();
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got))
                    .await;
            let failed = tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .unwrap()
                .unwrap();
            let s = |a: Option<&str>, x: &str| (a.map(str::to_string), Some(x.to_string()));
            assert_eq!(
                seen,
                vec![
                    s(Some("127.0.0.1:23791"), "1"),
                    s(Some("127.0.0.1:23791"), "3"),
                    s(None, "5")
                ]
            );
            assert!(failed);
            // The server's last frame is a GOAWAY (type 7) with PROTOCOL_ERROR (1).
            let mut rest = &got[..];
            let mut last = None;
            while rest.len() >= 9 {
                let len = (usize::from(rest[0]) << 16)
                    | (usize::from(rest[1]) << 8)
                    | usize::from(rest[2]);
                last = Some((rest[3], rest[9..9 + len].to_vec()));
                rest = &rest[9 + len..];
            }
            let (kind, payload) = last.unwrap();
            assert_eq!(kind, 7);
            assert_eq!(payload[4..8], [0, 0, 0, 1]);
        });
    }
}

/// The rewriter's cost per request header block: `cargo test --release --no-default-features
/// --lib rewrite_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn rewrite_cost() {
        // A grpc-go unary call's block as the client sends it after the first request: the
        // pseudo-headers and content-type from the static table, the authority, user-agent
        // and te from the dynamic table, :path and grpc-timeout as new literals.
        let mut first = vec![0x83, 0x86];
        for (n, v) in [
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.26.0"),
            (b"te", b"trailers"),
        ] {
            first.push(0x40);
            put_string(&mut first, n);
            put_string(&mut first, v);
        }
        let mut next = vec![0x83, 0x86, 0xc1, 0xc0, 0xbf, 0xbe];
        next.push(0);
        put_string(&mut next, b":path");
        put_string(&mut next, b"/etcdserverpb.KV/Put");
        next.push(0);
        put_string(&mut next, b"grpc-timeout");
        put_string(&mut next, b"4999870u");
        let mut rw = Rewriter::new();
        let mut out = VecDeque::new();
        let mut rd = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        let mut f = BytesMut::new();
        put_head(&mut f, first.len(), HEADERS, END_HEADERS, 1);
        f.put_slice(&first);
        rd.extend_from_slice(&f);
        rw.process(&mut rd, &mut out).unwrap();
        let mut frame = BytesMut::new();
        put_head(&mut frame, next.len(), HEADERS, END_HEADERS, 3);
        frame.put_slice(&next);
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            rd.extend_from_slice(&frame);
            out.clear();
            rw.process(&mut rd, &mut out).unwrap();
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        let got: usize = out.iter().map(|b| b.len()).sum();
        eprintln!(
            "rewrite: {ns:.0} ns per block ({} bytes in, {got} out)",
            frame.len()
        );
    }
}
