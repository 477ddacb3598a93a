//! One HTTP/2 connection: a single task owns the h2 connection and every stream on it.
//!
//! Theory of operation. The task is a hand-written future. Each stream gets its own
//! waker, which records the stream's call id in a "dirty" list and wakes the task; so
//! when h2 signals data, a reset or send capacity for a stream, the task polls only that
//! stream. Python's `send()` hands the task one batch per connection through a channel;
//! the task gives all of it to h2 before it polls the connection, so a batch leaves in
//! as few socket writes as h2's buffer allows. Outgoing bytes wait in a per-stream backlog
//! and are handed to h2 only as far as the peer's flow-control window goes: the backlog is
//! what `send()` counts against HIGH_WATER. Deadlines sit in a heap with one timer; the
//! keepalive PING has a second timer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use h2::server::{Connection, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::authority::AuthorityFix;
use crate::grpc::{self, Deframer, Framed, Parsed};
use crate::server::Security;
use crate::shared::{
    lock, CallReg, CallShared, ConnCmd, ConnHandle, Event, MetaValue, Out, Shared, LOW_WATER,
};

/// The most bytes of whole messages handed to h2 as one chunk (one DATA frame at h2's default
/// maximum frame size).
const GATHER_BYTES_MAX: usize = 16_384;

/// An accepted connection: a TCP socket or a Unix socket (unix:// client URLs).
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Socket options for a new connection (TCP: no Nagle delay).
    fn prepare(&self);
    /// Up to `buf.len()` of the first bytes, left in the socket; waits until some arrived.
    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a;
    /// The socket, for Python to serve (HTTP/1).
    fn into_fd(self) -> std::io::Result<OwnedFd>;
}

impl Socket for TcpStream {
    fn prepare(&self) {
        let _ = self.set_nodelay(true);
    }

    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a {
        TcpStream::peek(self, buf)
    }

    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

impl Socket for UnixStream {
    fn prepare(&self) {}

    fn peek<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = std::io::Result<usize>> + Send + 'a {
        // tokio has no peek for Unix sockets: recv(MSG_PEEK) when readable.
        let fd = self.as_raw_fd();
        self.async_io(Interest::READABLE, move || {
            // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` lives as long as `self`.
            let n = unsafe {
                libc::recv(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len(), libc::MSG_PEEK)
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }

    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self.into_std()?.into())
    }
}

/// Serves one accepted socket until the peer goes away or the front end closes; `tls`
/// when the listener is an https (or unixs) one. `peer` is grpc's form of the client's
/// address.
pub async fn serve<S: Socket>(
    sock: S,
    peer: String,
    shared: Arc<Shared>,
    sec: Security,
) {
    sock.prepare();
    let peer: Arc<str> = peer.into();
    if let Some(acceptor) = sec.tls {
        let tls = if sec.plain_too {
            let first = tokio::time::timeout(Duration::from_secs(120), begins_tls(&sock));
            match first.await {
                Ok(Ok(tls)) => tls,
                _ => return, // closed, failed or silent for 2 minutes before its first byte
            }
        } else {
            true
        };
        if tls {
            serve_tls(sock, peer, shared, acceptor).await;
            return;
        }
    }
    if shared.cfg.http1 {
        let sniffed = tokio::time::timeout(Duration::from_secs(120), starts_with_preface(&sock));
        match sniffed.await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                // HTTP/1 (or anything else but HTTP/2): Python serves it. The peeked bytes
                // are still in the socket.
                if let Ok(fd) = sock.into_fd() {
                    shared.push_events(&mut vec![Event::Http1(fd, peer, None)]);
                }
                return;
            }
            _ => return, // closed, failed or silent for 2 minutes before its first bytes
        }
    }
    serve_h2(sock, peer, shared, None).await;
}

/// The TLS handshake, then HTTP/2 when ALPN chose it, else (HTTP/1, when served on this
/// port) a socket pair whose other end Python serves as it serves a plain HTTP/1 socket.
async fn serve_tls<S: Socket>(sock: S, peer: Arc<str>, shared: Arc<Shared>, acceptor: TlsAcceptor) {
    let handshake = tokio::time::timeout(Duration::from_secs(120), acceptor.accept(sock));
    let Ok(Ok(stream)) = handshake.await else {
        return; // failed (a bad or missing client certificate, not TLS at all) or silent
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    if h2 || !shared.cfg.http1 {
        // The verified client certificate (asked for only with --client-cert-auth): every
        // call of the connection carries it to Python, which reads its common name for auth.
        let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
        let cert = cert.map(|c| Bytes::copy_from_slice(c.as_ref()));
        serve_h2(stream, peer, shared, cert).await;
        return;
    }
    let Ok((ours, theirs)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    if ours.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut ours) = tokio::net::UnixStream::from_std(ours) else {
        return;
    };
    // Some, empty when the client presented none: Python tells TLS connections by it.
    let certs = stream.get_ref().1.peer_certificates().unwrap_or_default();
    let certs = Some(certs.iter().map(|d| Bytes::copy_from_slice(d.as_ref())).collect());
    shared.push_events(&mut vec![Event::Http1(theirs.into(), peer, certs)]);
    let mut stream = stream;
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut ours).await;
}

/// HTTP/2 on `io` (the socket, or the TLS stream over it) until either side ends it.
async fn serve_h2<S>(io: S, peer: Arc<str>, shared: Arc<Shared>, client_cert: Option<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .max_concurrent_streams(u32::MAX)
        .max_header_list_size(16 << 20)
        .max_send_buffer_size(1 << 20)
        .handshake::<_, Bytes>(AuthorityFix::new(io));
    let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(120), handshake).await else {
        return;
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = unbounded_channel();
    let handle = Arc::new(ConnHandle { id, tx });
    lock(&shared.conns).insert(id, handle.clone());
    let cfg = &shared.cfg;
    let keepalive = if cfg.keepalive_interval_ms > 0 {
        conn.ping_pong().map(|pp| Keepalive {
            pp,
            interval: Duration::from_millis(cfg.keepalive_interval_ms),
            timeout: Duration::from_millis(cfg.keepalive_timeout_ms.max(1)),
            waiting: false,
            timer: Box::pin(tokio::time::sleep(Duration::from_millis(cfg.keepalive_interval_ms))),
        })
    } else {
        None
    };
    let task = ConnTask {
        conn,
        shared: shared.clone(),
        handle,
        rx,
        peer,
        client_cert,
        streams: HashMap::new(),
        wake: Arc::new(ConnWake { dirty: Mutex::new(Vec::new()), task: AtomicWaker::new() }),
        local_dirty: Vec::new(),
        deadlines: BinaryHeap::new(),
        deadline_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        deadline_armed: None,
        keepalive,
        closing: false,
        events: Vec::new(),
    };
    task.await;
    lock(&shared.conns).remove(&id);
}

/// The metadata key of the connection's verified client certificate (DER), set by the front end
/// only: a client's own header of that name is dropped.
const CLIENT_CERT_KEY: &str = "petcd-client-cert-bin";

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection's first bytes are HTTP/2's preface, looking without reading.
/// An HTTP/1 request differs from it by its second byte at the latest ("POST", "PUT").
/// Whether the connection's first byte begins a TLS record of the handshake (a ClientHello):
/// content type 22. No plain HTTP/1 or HTTP/2 request begins with it.
async fn begins_tls<S: Socket>(sock: &S) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    if sock.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(first[0] == TLS_HANDSHAKE)
}

const TLS_HANDSHAKE: u8 = 0x16;

async fn starts_with_preface<S: Socket>(sock: &S) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = sock.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A preface cut in two segments: peek again once more has arrived.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct ConnWake {
    dirty: Mutex<Vec<u64>>,
    task: AtomicWaker,
}

struct StreamWake {
    id: u64,
    conn: Arc<ConnWake>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.conn.dirty).push(self.id);
        self.conn.task.wake();
    }
}

struct Keepalive {
    pp: PingPong,
    interval: Duration,
    timeout: Duration,
    waiting: bool,
    timer: Pin<Box<Sleep>>,
}

struct Stream {
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    recv: Option<RecvStream>,
    deframer: Deframer,
    /// grpc-encoding of the request, for the compressed-message error.
    encoding: Option<String>,
    backlog: VecDeque<Bytes>,
    backlog_bytes: usize,
    /// The front of the backlog was partly handed to h2 (a message is half out).
    partial: bool,
    trailers: Option<HeaderMap>,
    call: Arc<CallShared>,
    waker: Waker,
    /// Nothing more to do: remove it.
    done: bool,
}

fn trailers(code: u32, details: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(code));
    if !details.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&grpc::percent_encode(details)) {
            h.insert("grpc-message", v);
        }
    }
    h
}

fn response_head() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

impl Stream {
    fn open_send(&mut self) -> bool {
        if self.send.is_none() {
            let Some(mut respond) = self.respond.take() else { return false };
            match respond.send_response(response_head(), false) {
                Ok(s) => self.send = Some(s),
                Err(_) => {
                    self.done = true;
                    return false;
                }
            }
        }
        true
    }

    fn push(&mut self, frame: Framed) {
        if self.trailers.is_some() || self.done {
            return;
        }
        if self.open_send() {
            self.backlog_bytes += frame.wire_len();
            self.backlog.push_back(frame.head);
            if !frame.body.is_empty() {
                self.backlog.push_back(frame.body);
            }
        }
    }

    fn finish(&mut self, msg: Option<Framed>, code: u32, details: &str) {
        if self.trailers.is_some() || self.done {
            return;
        }
        if self.send.is_none() && msg.is_none() {
            // Trailers-only, as grpc-go answers errors.
            if let Some(mut respond) = self.respond.take() {
                let mut r = response_head();
                r.headers_mut().extend(trailers(code, details));
                let _ = respond.send_response(r, true);
            }
            self.done = true;
            return;
        }
        if let Some(m) = msg {
            self.push(m);
        }
        self.trailers = Some(trailers(code, details));
    }

    /// Ends the call now, dropping whatever is still queued (deadline, over-size).
    fn abort(&mut self, code: u32, details: &str) {
        self.backlog.clear();
        self.backlog_bytes = 0;
        self.trailers = None;
        if self.partial {
            if let Some(s) = self.send.as_mut() {
                s.send_reset(Reason::CANCEL);
            }
            self.done = true;
            return;
        }
        if let Some(mut s) = self.send.take() {
            let _ = s.send_trailers(trailers(code, details));
            self.done = true;
            return;
        }
        self.finish(None, code, details);
    }

    /// Hands the backlog to h2 as far as its send capacity goes; then the trailers.
    /// Returns the number of bytes handed over.
    fn flush(&mut self) -> usize {
        let mut fed = 0;
        let mut cx = Context::from_waker(&self.waker);
        if let Some(send) = self.send.as_mut() {
            if self.backlog_bytes > 0 {
                send.reserve_capacity(self.backlog_bytes);
            }
            let mut spins = 0;
            while let Some(front) = self.backlog.front_mut() {
                let mut cap = send.capacity();
                if cap == 0 {
                    match send.poll_capacity(&mut cx) {
                        Poll::Ready(Some(Ok(_))) if spins < 4 => {
                            spins += 1;
                            cap = send.capacity();
                            if cap == 0 {
                                continue;
                            }
                        }
                        Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                            self.backlog.clear();
                            self.done = true;
                            return fed;
                        }
                        Poll::Ready(Some(Ok(_))) => {
                            // Capacity keeps being announced and taken back: come back on
                            // the next round rather than spin (no waker is registered).
                            self.waker.wake_by_ref();
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                let chunk = if front.len() <= cap {
                    self.partial = false;
                    let first = self.backlog.pop_front().unwrap_or_default();
                    gather(&mut self.backlog, first, cap)
                } else {
                    self.partial = true;
                    front.split_to(cap)
                };
                fed += chunk.len();
                self.backlog_bytes -= chunk.len();
                if send.send_data(chunk, false).is_err() {
                    self.backlog.clear();
                    self.done = true;
                    return fed;
                }
            }
            if self.backlog.is_empty() {
                if let Some(t) = self.trailers.take() {
                    let _ = send.send_trailers(t);
                    self.done = true;
                }
            }
        }
        fed
    }

    /// Polls the peer's RST_STREAM. True if the stream was reset (or the connection broke).
    fn poll_reset(&mut self) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        let r = if let Some(s) = self.send.as_mut() {
            s.poll_reset(&mut cx)
        } else if let Some(r) = self.respond.as_mut() {
            r.poll_reset(&mut cx)
        } else {
            return false;
        };
        r.is_ready()
    }
}

/// `first` followed by as many whole messages of the backlog as fit in `cap` and
/// `GATHER_BYTES_MAX`, as one chunk. h2 writes every DATA frame of 256 bytes or more with
/// a socket write of its own, so a stream of small messages (a watch fan-out: one ~300
/// byte message per watcher) would otherwise cost one system call per message.
fn gather(backlog: &mut VecDeque<Bytes>, first: Bytes, cap: usize) -> Bytes {
    let limit = cap.min(GATHER_BYTES_MAX);
    let mut total = first.len();
    let mut n = 0;
    for next in backlog.iter() {
        if total + next.len() > limit {
            break;
        }
        total += next.len();
        n += 1;
    }
    if n == 0 {
        return first;
    }
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(&first);
    for next in backlog.drain(..n) {
        buf.extend_from_slice(&next);
    }
    buf.freeze()
}

struct ConnTask<S> {
    conn: Connection<AuthorityFix<S>, Bytes>,
    shared: Arc<Shared>,
    handle: Arc<ConnHandle>,
    rx: UnboundedReceiver<ConnCmd>,
    peer: Arc<str>,
    client_cert: Option<Bytes>,
    streams: HashMap<u64, Stream>,
    wake: Arc<ConnWake>,
    local_dirty: Vec<u64>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    deadline_timer: Pin<Box<Sleep>>,
    deadline_armed: Option<Instant>,
    keepalive: Option<Keepalive>,
    closing: bool,
    events: Vec<Event>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnTask<S> {
    fn on_request(&mut self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let (parts, body) = req.into_parts();
        let grpc_ct = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if parts.method != http::Method::POST || !grpc_ct {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            let _ = respond.send_response(r, true);
            return;
        }
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let mut metadata = Vec::with_capacity(parts.headers.len());
        let mut timeout = None;
        let mut encoding = None;
        for (k, v) in parts.headers.iter() {
            let key = k.as_str();
            match key {
                "content-type" | "te" | "grpc-accept-encoding" | CLIENT_CERT_KEY => {}
                "grpc-timeout" => timeout = grpc::parse_timeout(v.as_bytes()),
                "grpc-encoding" => encoding = Some(String::from_utf8_lossy(v.as_bytes()).into()),
                _ => {
                    let value = if key.ends_with("-bin") {
                        MetaValue::Bin(grpc::base64_decode(v.as_bytes()).unwrap_or_default())
                    } else {
                        MetaValue::Str(String::from_utf8_lossy(v.as_bytes()).into_owned())
                    };
                    metadata.push((key.to_owned(), value));
                }
            }
        }
        if let Some(cert) = &self.client_cert {
            metadata.push((CLIENT_CERT_KEY.to_owned(), MetaValue::Bin(cert.to_vec())));
        }
        let call = Arc::new(CallShared::default());
        lock(&self.shared.calls)
            .insert(id, CallReg { conn: self.handle.clone(), call: call.clone() });
        self.events.push(Event::New {
            id,
            method: parts.uri.path().to_owned(),
            metadata,
            timeout,
            peer: self.peer.clone(),
        });
        if let Some(t) = timeout {
            let at = Instant::now() + Duration::from_secs_f64(t.min(1e9));
            self.deadlines.push(Reverse((at, id)));
        }
        let waker = Waker::from(Arc::new(StreamWake { id, conn: self.wake.clone() }));
        self.streams.insert(
            id,
            Stream {
                respond: Some(respond),
                send: None,
                recv: Some(body),
                deframer: Deframer::default(),
                encoding,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                partial: false,
                trailers: None,
                call,
                waker,
                done: false,
            },
        );
        self.local_dirty.push(id);
    }

    /// Does whatever a stream's wake-up (or a batch from Python) asks for.
    fn poll_stream(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else { return };
        let shared = &*self.shared;
        let events = &mut self.events;
        // Incoming messages.
        if let Some(recv) = st.recv.as_mut() {
            let mut cx = Context::from_waker(&st.waker);
            loop {
                match recv.poll_data(&mut cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = recv.flow_control().release_capacity(chunk.len());
                        st.deframer.push(&chunk);
                        let mut failed = None;
                        while let Some(p) = st.deframer.next(shared.cfg.max_recv_bytes) {
                            match p {
                                Parsed::Message(m) => events.push(Event::Message(id, m)),
                                Parsed::TooLarge(got, max) => {
                                    failed = Some((
                                        grpc::CODE_RESOURCE_EXHAUSTED,
                                        format!(
                                            "grpc: received message larger than max ({got} vs. {max})"
                                        ),
                                    ));
                                    break;
                                }
                                Parsed::Compressed(body) if st.encoding.as_deref() == Some("gzip") => {
                                    let max = shared.cfg.max_recv_bytes;
                                    match grpc::gunzip(&body, max) {
                                        Ok(m) => events.push(Event::Message(id, m.into())),
                                        Err(e) => {
                                            failed = Some(match e {
                                                grpc::Gunzip::TooLarge(got) => (
                                                    grpc::CODE_RESOURCE_EXHAUSTED,
                                                    format!("grpc: received message after decompression larger than max ({got} vs. {max})"),
                                                ),
                                                grpc::Gunzip::Invalid(why) => (
                                                    grpc::CODE_INTERNAL,
                                                    format!("grpc: failed to decompress the received message: {why}"),
                                                ),
                                            });
                                            break;
                                        }
                                    }
                                }
                                Parsed::Compressed(_) => {
                                    failed = Some(match st.encoding.as_deref() {
                                        None | Some("identity") => (
                                            grpc::CODE_INTERNAL,
                                            "grpc: compressed flag set with identity or empty encoder"
                                                .to_owned(),
                                        ),
                                        Some(name) => (
                                            grpc::CODE_UNIMPLEMENTED,
                                            format!("grpc: Decompressor is not installed for grpc-encoding \"{name}\""),
                                        ),
                                    });
                                    break;
                                }
                            }
                        }
                        if let Some((code, text)) = failed {
                            st.recv = None;
                            if shared.cancel(id, events) {
                                st.abort(code, &text);
                            } else {
                                st.done = st.trailers.is_none() && st.backlog.is_empty();
                            }
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        st.recv = None;
                        if lock(&shared.calls).contains_key(&id) {
                            events.push(Event::HalfClose(id));
                        }
                        break;
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // Reset by the peer, or the connection failed.
                        st.recv = None;
                        shared.cancel(id, events);
                        st.done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        // The peer's RST_STREAM after it half-closed.
        if !st.done && st.recv.is_none() && st.poll_reset() {
            shared.cancel(id, events);
            st.done = true;
        }
        // Outgoing bytes.
        if !st.done {
            let fed = st.flush();
            if fed > 0 {
                let left = st.call.pending.fetch_sub(fed, Ordering::SeqCst) - fed;
                if left <= LOW_WATER
                    && st.call.over.load(Ordering::SeqCst)
                    && st.call.over.swap(false, Ordering::SeqCst)
                    && lock(&shared.calls).contains_key(&id)
                {
                    events.push(Event::Drained(id));
                }
            }
        }
        if st.done {
            self.streams.remove(&id);
        }
    }

    fn apply(&mut self, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Batch(items) => {
                for item in items {
                    match item {
                        Out::Msg(id, frame) => {
                            if let Some(st) = self.streams.get_mut(&id) {
                                st.push(frame);
                                self.local_dirty.push(id);
                            }
                        }
                        Out::Finish(id, msg, code, details) => {
                            if let Some(st) = self.streams.get_mut(&id) {
                                st.finish(msg, code, &details);
                                self.local_dirty.push(id);
                            }
                        }
                    }
                }
            }
            ConnCmd::Drain => {
                if !self.closing {
                    // h2 sends GOAWAY (last stream id 2^31-1, then, after a PING round trip,
                    // the last one it took) and ends the connection once its streams are done.
                    self.conn.graceful_shutdown();
                }
            }
            ConnCmd::Close => self.close(),
        }
    }

    fn close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        for (&id, st) in self.streams.iter_mut() {
            if self.shared.cancel(id, &mut self.events) {
                st.abort(grpc::CODE_UNAVAILABLE, "server closed the connection");
            }
        }
        self.conn.graceful_shutdown();
        self.conn.abrupt_shutdown(Reason::NO_ERROR);
    }

    fn expire_deadlines(&mut self, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let mut any = false;
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(st) = self.streams.get_mut(&id) {
                if self.shared.cancel(id, &mut self.events) {
                    st.abort(grpc::CODE_DEADLINE_EXCEEDED, "context deadline exceeded");
                    self.local_dirty.push(id);
                    any = true;
                }
            }
        }
        // Entries of calls that ended long ago: drop them lazily when the heap is large.
        if self.deadlines.len() > 4 * self.streams.len() + 1024 {
            let streams = &self.streams;
            self.deadlines.retain(|Reverse((_, id))| streams.contains_key(id));
        }
        if let Some(Reverse((at, _))) = self.deadlines.peek().copied() {
            if self.deadline_armed != Some(at) {
                self.deadline_timer.as_mut().reset(at);
                self.deadline_armed = Some(at);
            }
            if self.deadline_timer.as_mut().poll(cx).is_ready() {
                self.deadline_armed = None;
                cx.waker().wake_by_ref();
            }
        }
        any
    }

    /// False if the peer missed its PING ACK: the connection is dead.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(ka) = self.keepalive.as_mut() else { return true };
        if ka.waiting {
            if let Poll::Ready(r) = ka.pp.poll_pong(cx) {
                ka.waiting = false;
                if r.is_err() {
                    return true; // the connection is failing anyway
                }
                ka.timer.as_mut().reset(Instant::now() + ka.interval);
            }
        }
        while ka.timer.as_mut().poll(cx).is_ready() {
            if ka.waiting {
                return false;
            }
            if ka.pp.send_ping(Ping::opaque()).is_err() {
                return true;
            }
            ka.waiting = true;
            ka.timer.as_mut().reset(Instant::now() + ka.timeout);
            if ka.pp.poll_pong(cx).is_ready() {
                ka.waiting = false;
                ka.timer.as_mut().reset(Instant::now() + ka.interval);
            }
        }
        true
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.task.register(cx.waker());
        let mut finished = false;
        for _round in 0..32 {
            let mut work = false;
            // Python's batches first, so that the connection poll below writes them.
            while let Poll::Ready(cmd) = self.rx.poll_recv(cx) {
                work = true;
                match cmd {
                    Some(cmd) => self.apply(cmd),
                    None => self.close(),
                }
            }
            if self.expire_deadlines(cx) {
                work = true;
            }
            if !self.poll_keepalive(cx) {
                finished = true;
                break;
            }
            let mut dirty = std::mem::take(&mut self.local_dirty);
            dirty.append(&mut lock(&self.wake.dirty));
            if !dirty.is_empty() {
                work = true;
                dirty.sort_unstable();
                dirty.dedup();
                for id in dirty {
                    self.poll_stream(id);
                }
            }
            // What the streams gave goes to Python before the socket is driven: polling the
            // connection writes the WINDOW_UPDATEs for the data just read (a writev) and
            // reads on, and the member need not wait for either.
            self.shared.push_events(&mut self.events);
            // Drives the socket: reads frames, writes and flushes what is queued.
            loop {
                match self.conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        work = true;
                        if self.closing {
                            drop(respond);
                        } else {
                            self.on_request(req, respond);
                        }
                    }
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                        finished = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if finished {
                break;
            }
            if !work && self.local_dirty.is_empty() {
                break;
            }
        }
        if finished {
            for (&id, _) in self.streams.iter() {
                self.shared.cancel(id, &mut self.events);
            }
            self.streams.clear();
        } else if !self.local_dirty.is_empty() || !lock(&self.wake.dirty).is_empty() {
            cx.waker().wake_by_ref(); // out of rounds: yield, then go on
        }
        self.shared.push_events(&mut self.events);
        if finished {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for ConnTask<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.poll_inner(cx))) {
            Ok(p) => p,
            Err(e) => {
                let what = e
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                eprintln!("petcd._frontend: connection task panicked, closing it: {what}");
                let mut events = Vec::new();
                for (&id, _) in this.streams.iter() {
                    this.shared.cancel(id, &mut events);
                }
                this.streams.clear();
                this.shared.push_events(&mut events);
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(sizes: &[usize]) -> VecDeque<Bytes> {
        sizes.iter().enumerate().map(|(i, &n)| Bytes::from(vec![i as u8; n])).collect()
    }

    #[test]
    fn gather_joins_whole_messages_in_order_up_to_the_limits() {
        let mut b = backlog(&[300, 300, 300, 300]);
        let first = b.pop_front().unwrap();
        let chunk = gather(&mut b, first, 1000);
        assert_eq!(chunk.len(), 900);
        assert!(chunk[..300].iter().all(|&x| x == 0));
        assert!(chunk[300..600].iter().all(|&x| x == 1));
        assert!(chunk[600..].iter().all(|&x| x == 2));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].len(), 300);
        assert_eq!(b[0][0], 3);

        let mut b = backlog(&[GATHER_BYTES_MAX - 10, 20]);
        let first = b.pop_front().unwrap();
        assert_eq!(gather(&mut b, first, usize::MAX).len(), GATHER_BYTES_MAX - 10);
        assert_eq!(b.len(), 1, "never over GATHER_BYTES_MAX");
    }
}
