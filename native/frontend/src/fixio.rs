//! The read side of a client connection, with each request header block re-encoded before
//! `h2` sees it.
//!
//! Why: `h2` resets a stream (PROTOCOL_ERROR) whose `:authority` is not a valid URI
//! authority, and etcdctl 3.4 sends "http://host:port" as the authority of its
//! per-endpoint clients (`endpoint status/health/hashkv`), which grpc-go servers, and so
//! etcd, accept. This layer parses the client's frames; every HEADERS/CONTINUATION block
//! is HPACK-decoded here (keeping the client's dynamic table), an invalid `:authority` is
//! dropped (nothing downstream uses it), and the block is re-encoded with plain literals
//! (so `h2`'s own dynamic table stays empty). Every other frame passes unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hpack::{self, Decoder};

const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 1;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size `h2` accepts by default (SETTINGS_MAX_FRAME_SIZE 16 KiB).
const MAX_FRAME: usize = 16384;
/// A header block larger than this closes the connection (h2's max header list size).
const MAX_BLOCK: usize = 16 << 20;

struct Block {
    stream: u32,
    end_stream: bool,
    data: Vec<u8>,
}

pub struct FixIo<S> {
    inner: S,
    raw: BytesMut,
    out: BytesMut,
    scratch: Box<[u8]>,
    preface_left: usize,
    block: Option<Block>,
    dec: Decoder,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from the client: {what}"))
}

impl<S> FixIo<S> {
    pub fn new(inner: S) -> FixIo<S> {
        FixIo {
            inner,
            raw: BytesMut::with_capacity(32 << 10),
            out: BytesMut::with_capacity(32 << 10),
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            preface_left: PREFACE_LEN,
            block: None,
            dec: Decoder::new(4096),
        }
    }

    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.out.extend_from_slice(&self.raw[..n]);
            self.raw.advance(n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.raw.len() >= 9 {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            let (kind, flags) = (self.raw[3], self.raw[4]);
            let stream =
                u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]]) & !(1 << 31);
            if len > MAX_BLOCK {
                return Err(bad("frame too large"));
            }
            if self.raw.len() < 9 + len {
                break;
            }
            let frame = self.raw.split_to(9 + len);
            let payload = &frame[9..];
            match kind {
                HEADERS => {
                    if self.block.is_some() {
                        return Err(bad("HEADERS inside a header block"));
                    }
                    let mut p = payload;
                    let mut pad = 0;
                    if flags & PADDED != 0 {
                        pad = *p.first().ok_or_else(|| bad("short HEADERS"))? as usize;
                        p = &p[1..];
                    }
                    if flags & PRIORITY != 0 {
                        p = p.get(5..).ok_or_else(|| bad("short HEADERS"))?;
                    }
                    let p = p.get(..p.len().checked_sub(pad).ok_or_else(|| bad("bad padding"))?)
                        .ok_or_else(|| bad("bad padding"))?;
                    self.block = Some(Block {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        data: p.to_vec(),
                    });
                    if flags & END_HEADERS != 0 {
                        self.finish()?;
                    }
                }
                CONTINUATION => {
                    let Some(b) = self.block.as_mut().filter(|b| b.stream == stream) else {
                        return Err(bad("CONTINUATION without HEADERS"));
                    };
                    b.data.extend_from_slice(payload);
                    if b.data.len() > MAX_BLOCK {
                        return Err(bad("header block too large"));
                    }
                    if flags & END_HEADERS != 0 {
                        self.finish()?;
                    }
                }
                _ => {
                    if self.block.is_some() {
                        return Err(bad("a frame inside a header block"));
                    }
                    self.out.extend_from_slice(&frame);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(b) = self.block.take() else { return Ok(()) };
        let fields = self.dec.decode(&b.data).map_err(|_| bad("HPACK decoding failed"))?;
        let mut block = Vec::with_capacity(b.data.len() * 2);
        for (name, value) in &fields {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                continue;
            }
            hpack::encode_literal(&mut block, name, value);
        }
        let chunks: Vec<&[u8]> =
            if block.is_empty() { vec![&[]] } else { block.chunks(MAX_FRAME).collect() };
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let mut flags = 0;
            if i == 0 && b.end_stream {
                flags |= END_STREAM;
            }
            if i == last {
                flags |= END_HEADERS;
            }
            let n = c.len() as u32;
            self.out.extend_from_slice(&n.to_be_bytes()[1..]);
            self.out.extend_from_slice(&[kind, flags]);
            self.out.extend_from_slice(&b.stream.to_be_bytes());
            self.out.extend_from_slice(c);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = buf.remaining().min(this.out.len());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        return Poll::Ready(Ok(())); // EOF (an incomplete frame is dropped)
                    }
                    this.raw.extend_from_slice(got);
                    this.process()?;
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixIo<S> {
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

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut io = FixIo::new(());
        for chunk in input.chunks(step) {
            io.raw.extend_from_slice(chunk);
            io.process().unwrap();
        }
        io.out.to_vec()
    }

    #[test]
    fn rewrites_a_bad_authority_and_passes_other_frames() {
        let mut block = Vec::new();
        block.extend_from_slice(&[0x83, 0x86]); // :method POST, :scheme http
        // :authority "http://127.0.0.1:2379", literal with incremental indexing, Huffman.
        let v = hpack::huffman_encode(b"http://127.0.0.1:2379");
        block.push(0x41);
        block.push(0x80 | v.len() as u8);
        block.extend_from_slice(&v);
        hpack::encode_literal(&mut block, b":path", b"/etcdserverpb.KV/Put");
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, PADDED, 1, &[&[2u8][..], &block[..3], &[0, 0]].concat()));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[3..]));
        input.extend(frame(0, END_STREAM, 1, b"\0\0\0\0\0"));
        // A second request refers to the dynamic entry (index 62) the first one added.
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x83, 0x86, 0xbe, 0x84]));
        for step in [1, 7, 1000] {
            let out = run(&input, step);
            assert_eq!(&out[..24], &input[..24]);
            let mut d = Decoder::new(4096);
            let mut pos = 24;
            let mut seen = Vec::new();
            while pos < out.len() {
                let len = u32::from_be_bytes([0, out[pos], out[pos + 1], out[pos + 2]]) as usize;
                let (kind, flags) = (out[pos + 3], out[pos + 4]);
                let payload = &out[pos + 9..pos + 9 + len];
                if kind == HEADERS {
                    assert!(flags & END_HEADERS != 0);
                    let f = d.decode(payload).unwrap();
                    assert!(f.iter().all(|(n, _)| n != b":authority"));
                    seen.push((flags & END_STREAM, f.len()));
                } else {
                    seen.push((kind, len));
                }
                pos += 9 + len;
            }
            assert_eq!(seen, vec![(4, 0), (0, 3), (0, 5), (1, 3)]);
        }
    }

    #[test]
    fn keeps_a_valid_authority() {
        let mut block = Vec::new();
        hpack::encode_literal(&mut block, b":authority", b"127.0.0.1:2379");
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let out = run(&input, 5);
        let f = Decoder::new(4096).decode(&out[24 + 9..]).unwrap();
        assert_eq!(f, vec![(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())]);
    }
}
