//! Throwaway prototype (bench/prototypes, issue 7): a native gRPC front end for petcd.
//!
//! Theory of operation. A tokio runtime on its own OS thread(s) accepts HTTP/2 connections
//! (the `h2` crate), reads each gRPC request (one length-prefixed protobuf message) and
//! decodes it (prost, with message structs written here from the field numbers of
//! petcd's rpc.proto). It then either
//!
//! * mode "echo": answers at once with an empty response, never touching Python (the
//!   native floor), or
//! * mode "raw": like "python" below, but the request message is handed over undecoded
//!   and Python sends back encoded response messages (`respond_raw`): decoding and
//!   encoding then happen in Python with the generated protobuf classes, or
//! * mode "python": appends the decoded request to a queue shared with Python and signals
//!   an eventfd if the queue was empty. The Python side (an asyncio loop with the eventfd
//!   registered as a reader) takes the whole queue in one call (`take`), does the member's
//!   work, and answers the whole batch in one call per kind (`respond_put`,
//!   `respond_range`); the response messages are encoded here, off the GIL's critical path.
//!
//! Only KV.Put and KV.Range are served, and in mode "raw" Watch streams (single-key
//! watchers; Python decodes the stream's messages and writes to streams with `stream_send`
//! and, for events, `fanout`, which copies one encoded response to many watchers); anything
//! else gets gRPC status UNIMPLEMENTED. No
//! TLS, no auth, no compression, no deadlines. This is a measurement tool, not petcd.

use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::oneshot;

const KIND_PUT: u8 = 1;
const KIND_RANGE: u8 = 2;
const KIND_WATCH_MSG: u8 = 3; // a message on a Watch stream (id = stream id)
const KIND_STREAM_END: u8 = 4; // a Watch stream ended (id = stream id)

#[derive(Clone, PartialEq, Message)]
struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(int64, tag = "3")]
    lease: i64,
}

#[derive(Clone, PartialEq, Message)]
struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    range_end: Bytes,
    #[prost(bool, tag = "7")]
    serializable: bool,
}

#[derive(Clone, PartialEq, Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

#[derive(Clone, PartialEq, Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, Message)]
struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
    #[prost(int64, tag = "4")]
    count: i64,
}

/// One decoded request (or stream event) waiting for the member.
struct Pending {
    kind: u8,
    key: Bytes,
    value: Bytes,
    reply: Option<oneshot::Sender<Bytes>>,
    stream: u64,
}

struct Shared {
    queue: Mutex<Vec<Pending>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<Bytes>>>,
    next_stream: AtomicU64,
    eventfd: i32,
    echo: bool,
    raw: bool,
    header: ResponseHeader,
}

impl Shared {
    fn enqueue(&self, p: Pending) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap();
            let e = q.is_empty();
            q.push(p);
            e
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd we own.
            unsafe { libc::write(self.eventfd, &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..self.header.clone() })
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.extend_from_slice(msg);
    b.freeze()
}

async fn read_message(mut body: RecvStream) -> Result<Bytes, h2::Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    let buf = buf.freeze();
    if buf.len() < 5 {
        return Ok(Bytes::new());
    }
    let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    Ok(buf.slice(5..(5 + n).min(buf.len())))
}

fn finish(mut respond: SendResponse<Bytes>, status: u32, msg: Option<Bytes>) {
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(resp, false) else { return };
    if let Some(m) = msg {
        let _ = send.send_data(grpc_frame(&m), false);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    let _ = send.send_trailers(trailers);
}

/// A Watch stream (mode "raw" only): every client message goes to Python as
/// KIND_WATCH_MSG; Python writes to the stream with `stream_send` and `fanout`.
async fn handle_watch(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, shared: Arc<Shared>) {
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(resp, false) else { return };
    let sid = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    shared.streams.lock().unwrap().insert(sid, tx);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if send.send_data(frame, false).is_err() {
                return;
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(0u32));
        let _ = send.send_trailers(trailers);
    });
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + n {
                break;
            }
            let frame = buf.split_to(5 + n).freeze();
            let msg = frame.slice(5..);
            shared.enqueue(Pending {
                kind: KIND_WATCH_MSG,
                key: msg,
                value: Bytes::new(),
                reply: None,
                stream: sid,
            });
        }
    }
    shared.streams.lock().unwrap().remove(&sid); // ends the writer: trailers
    shared.enqueue(Pending {
        kind: KIND_STREAM_END,
        key: Bytes::new(),
        value: Bytes::new(),
        reply: None,
        stream: sid,
    });
}

async fn handle(req: Request<RecvStream>, respond: SendResponse<Bytes>, shared: Arc<Shared>) {
    if req.uri().path() == "/etcdserverpb.Watch/Watch" && shared.raw {
        return handle_watch(req, respond, shared).await;
    }
    let kind = match req.uri().path() {
        "/etcdserverpb.KV/Put" => KIND_PUT,
        "/etcdserverpb.KV/Range" => KIND_RANGE,
        _ => 0,
    };
    let Ok(msg) = read_message(req.into_body()).await else { return };
    if kind == 0 {
        return finish(respond, 12, None); // UNIMPLEMENTED
    }
    if shared.echo {
        return finish(respond, 0, Some(Bytes::new()));
    }
    let (key, value) = if shared.raw {
        (msg, Bytes::new()) // Python decodes the message itself
    } else if kind == KIND_PUT {
        match PutRequest::decode(msg) {
            Ok(r) => (r.key, r.value),
            Err(_) => return finish(respond, 13, None), // INTERNAL
        }
    } else {
        match RangeRequest::decode(msg) {
            Ok(r) => (r.key, Bytes::new()),
            Err(_) => return finish(respond, 13, None),
        }
    };
    let (tx, rx) = oneshot::channel();
    shared.enqueue(Pending { kind, key, value, reply: Some(tx), stream: 0 });
    match rx.await {
        Ok(resp) => finish(respond, 0, Some(resp)),
        Err(_) => finish(respond, 14, None), // UNAVAILABLE: the member dropped it
    }
}

async fn serve_conn(sock: tokio::net::TcpStream, shared: Arc<Shared>) {
    let _ = sock.set_nodelay(true);
    let conn = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .max_concurrent_streams(4096)
        .handshake::<_, Bytes>(sock)
        .await;
    let Ok(mut conn) = conn else { return };
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(handle(req, respond, shared.clone()));
    }
}

/// The front end: serves gRPC on `addr` from native threads; Python takes batches.
#[pyclass]
struct FrontEnd {
    shared: Arc<Shared>,
    port: u16,
}

#[pymethods]
impl FrontEnd {
    #[new]
    #[pyo3(signature = (addr, threads=1, mode="python", cluster_id=1, member_id=1, raft_term=1))]
    fn new(
        addr: &str,
        threads: usize,
        mode: &str,
        cluster_id: u64,
        member_id: u64,
        raft_term: u64,
    ) -> PyResult<Self> {
        let listener = StdTcpListener::bind(addr).map_err(|e| PyOSError::new_err(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| PyOSError::new_err(e.to_string()))?;
        let port = listener.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        // SAFETY: plain syscall; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(PyOSError::new_err("eventfd failed"));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::with_capacity(4096)),
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            eventfd: efd,
            echo: mode == "echo",
            raw: mode == "raw",
            header: ResponseHeader { cluster_id, member_id, revision: 0, raft_term },
        });
        let rt = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
        }
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let s = shared.clone();
        std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    if let Ok((sock, _)) = listener.accept().await {
                        tokio::spawn(serve_conn(sock, s.clone()));
                    }
                }
            })
        });
        Ok(FrontEnd { shared, port })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The eventfd that becomes readable when requests are queued.
    fn fileno(&self) -> i32 {
        self.shared.eventfd
    }

    /// Everything queued, as columns: (ids, kinds, keys, values); kinds 1=Put 2=Range,
    /// 3=Watch stream message, 4=Watch stream ended (for 3 and 4 the id is the stream id).
    /// In mode "raw", keys holds each undecoded request message and values are empty.
    #[allow(clippy::type_complexity)]
    fn take<'py>(
        &self,
        py: Python<'py>,
    ) -> (Vec<u64>, Vec<u8>, Vec<Bound<'py, PyBytes>>, Vec<Bound<'py, PyBytes>>) {
        let batch = std::mem::take(&mut *self.shared.queue.lock().unwrap());
        let n = batch.len();
        let (mut ids, mut kinds) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut keys, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let first = self.shared.next_id.fetch_add(n as u64, Ordering::Relaxed);
        {
            let mut waiting = self.shared.waiting.lock().unwrap();
            for (i, p) in batch.into_iter().enumerate() {
                let id = first + i as u64;
                kinds.push(p.kind);
                keys.push(PyBytes::new(py, &p.key));
                values.push(PyBytes::new(py, &p.value));
                match p.reply {
                    Some(reply) => {
                        ids.push(id);
                        waiting.insert(id, reply);
                    }
                    None => ids.push(p.stream),
                }
            }
        }
        (ids, kinds, keys, values)
    }

    /// Answer Puts: one revision each.
    fn respond_put(&self, py: Python<'_>, ids: Vec<u64>, revisions: Vec<i64>) {
        let shared = self.shared.clone();
        py.detach(move || {
            let mut waiting = shared.waiting.lock().unwrap();
            for (id, rev) in ids.into_iter().zip(revisions) {
                if let Some(tx) = waiting.remove(&id) {
                    let r = PutResponse { header: shared.header(rev) };
                    let _ = tx.send(Bytes::from(r.encode_to_vec()));
                }
            }
        })
    }

    /// Send one message on each of the given Watch streams (gone streams are skipped).
    fn stream_send(&self, stream_ids: Vec<u64>, messages: Vec<Vec<u8>>) {
        let streams = self.shared.streams.lock().unwrap();
        for (sid, m) in stream_ids.into_iter().zip(messages) {
            if let Some(tx) = streams.get(&sid) {
                let _ = tx.send(grpc_frame(&m));
            }
        }
    }

    /// Send one WatchResponse to many watchers. `body` is a WatchResponse encoded without
    /// its watch_id; each copy gets field 2 (watch_id) prepended, which protobuf decoders
    /// accept in any order. The message is encoded once in Python, whatever the fan-out,
    /// and the copies for watchers on the same stream leave in one DATA frame.
    fn fanout(&self, py: Python<'_>, body: Vec<u8>, stream_ids: Vec<u64>, watch_ids: Vec<i64>) {
        let shared = self.shared.clone();
        py.detach(move || {
            let mut per_stream: HashMap<u64, BytesMut> = HashMap::new();
            for (sid, wid) in stream_ids.into_iter().zip(watch_ids) {
                let mut id = [0u8; 11];
                id[0] = 0x10; // field 2, varint
                let (mut n, mut v) = (1, wid as u64);
                while v >= 0x80 {
                    id[n] = (v as u8) | 0x80;
                    v >>= 7;
                    n += 1;
                }
                id[n] = v as u8;
                n += 1;
                let out = per_stream.entry(sid).or_default();
                out.put_u8(0);
                out.put_u32((n + body.len()) as u32);
                out.extend_from_slice(&id[..n]);
                out.extend_from_slice(&body);
            }
            let streams = shared.streams.lock().unwrap();
            for (sid, frames) in per_stream {
                if let Some(tx) = streams.get(&sid) {
                    let _ = tx.send(frames.freeze());
                }
            }
        })
    }

    /// Answer requests with response messages Python encoded itself (mode "raw").
    fn respond_raw(&self, ids: Vec<u64>, messages: Vec<Vec<u8>>) {
        let mut waiting = self.shared.waiting.lock().unwrap();
        for (id, m) in ids.into_iter().zip(messages) {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(Bytes::from(m));
            }
        }
    }

    /// Answer single-key Ranges at `revision`: per id None (no such key) or
    /// (key, value, create_revision, mod_revision, version, lease).
    #[allow(clippy::type_complexity)]
    fn respond_range(
        &self,
        ids: Vec<u64>,
        revision: i64,
        kvs: Vec<Option<(Vec<u8>, Vec<u8>, i64, i64, i64, i64)>>,
    ) {
        let mut waiting = self.shared.waiting.lock().unwrap();
        for (id, kv) in ids.into_iter().zip(kvs) {
            if let Some(tx) = waiting.remove(&id) {
                let kvs: Vec<KeyValue> = kv
                    .map(|(key, value, create_revision, mod_revision, version, lease)| KeyValue {
                        key,
                        create_revision,
                        mod_revision,
                        version,
                        value,
                        lease,
                    })
                    .into_iter()
                    .collect();
                let count = kvs.len() as i64;
                let r = RangeResponse { header: self.shared.header(revision), kvs, count };
                let _ = tx.send(Bytes::from(r.encode_to_vec()));
            }
        }
    }
}

#[pymodule]
fn native_frontend(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FrontEnd>()?;
    Ok(())
}
