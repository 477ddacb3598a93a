//! The Python binding: class `Frontend` of module `petcd._frontend`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};

use crate::grpc;
use crate::kv;
use crate::server::{self, Bound as BoundListener, Running, Security};
use crate::shared::{lock, Config, ConnCmd, Event, MetaValue, Out, Shared};
use crate::tls;

/// `tls=`: certificate chain PEM, key PEM, trusted CA PEM or None, TLS versions ("1.2",
/// "1.3"), TLS 1.2 cipher suites by IANA name (empty: rustls' defaults), and optionally
/// certificate revocation lists (DER) and the host names one of which a client certificate
/// must be valid for (etcd's `--client-cert-allowed-hostname`; empty: any).
type TlsArgs = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Vec<String>,
    Vec<String>,
    Option<Vec<Vec<u8>>>,
    Option<Vec<String>>,
);

enum State {
    /// Bound, not serving yet (None after stop_accepting()); each listener with its TLS
    /// acceptor when it is an https one.
    Bound(Option<Vec<(BoundListener, Security)>>),
    Running(Running),
    Closed,
}

/// One entry of `listeners`: a (host, port) pair, or the path of a Unix socket to create.
#[derive(FromPyObject)]
enum Listen {
    Tcp(String, u16),
    Unix(String),
}

#[pyclass(module = "petcd._frontend", frozen)]
struct Frontend {
    shared: Arc<Shared>,
    ports: Vec<u16>,
    threads: usize,
    state: Mutex<State>,
    interned: Mutex<Interned>,
}

/// Entries each map of `Interned` may hold; a full map is emptied.
const INTERNED_MAX: usize = 512;

/// The Python objects NEW events repeat call after call (method paths, peers, clientv3's
/// metadata pairs), made once: decoding them again for every call cost take() about as
/// much as the rest of the event. Bounded, so that a client sending a new value on every
/// call cannot grow it (it only loses the saving).
#[derive(Default)]
struct Interned {
    texts: HashMap<String, Py<PyString>, Fnv>,
    pairs: HashMap<(String, String), Py<PyTuple>, Fnv>,
}

/// FNV-1a: the keys are short and the maps small and bounded, so SipHash's flooding
/// resistance buys nothing here and cost take() more than the look-ups it serves.
type Fnv = BuildHasherDefault<FnvHasher>;

struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Interned {
    fn text<'py>(&mut self, py: Python<'py>, s: &str) -> Bound<'py, PyString> {
        if let Some(v) = self.texts.get(s) {
            return v.bind(py).clone();
        }
        if self.texts.len() >= INTERNED_MAX {
            self.texts.clear();
        }
        let v = PyString::new(py, s);
        self.texts.insert(s.to_owned(), v.clone().unbind());
        v
    }

    fn pair<'py>(
        &mut self,
        py: Python<'py>,
        key: String,
        value: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = (key, value);
        if let Some(t) = self.pairs.get(&k) {
            return Ok(t.bind(py).clone().into_any());
        }
        if self.pairs.len() >= INTERNED_MAX {
            self.pairs.clear();
        }
        let t = PyTuple::new(py, [PyString::new(py, &k.0), PyString::new(py, &k.1)])?;
        self.pairs.insert(k, t.clone().unbind());
        Ok(t.into_any())
    }
}

/// Messages from this size on are sent from the Python object itself, not from a copy.
const SHARED_MESSAGE_MIN: usize = 64 << 10;

/// A Python `bytes` object as the owner of the memory a `Bytes` points into: the object is
/// immutable and alive as long as this owner is, so its buffer may be read from any thread.
/// The last reference is dropped on a runtime thread, without the GIL: PyO3 then defers the
/// decrement to the next time Python calls in (`take`, `send`).
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer is never written (Python bytes are immutable) and lives as long as
// `_obj`, whose reference PyO3 may release from any thread (deferred without the GIL).
unsafe impl Send for PyBytesOwner {}
unsafe impl Sync for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send impl: valid and unchanged for the owner's whole life.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn message_bytes(obj: &Bound<'_, PyAny>) -> PyResult<grpc::Framed> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let data = b.as_bytes();
        if data.len() >= SHARED_MESSAGE_MIN {
            // Megabyte answers (big ranges) would otherwise be copied here, on the event
            // loop's thread, holding the GIL.
            let (ptr, len) = (data.as_ptr(), data.len());
            let owner = PyBytesOwner { _obj: b.clone().unbind(), ptr, len };
            return Ok(grpc::Framed::around(bytes::Bytes::from_owner(owner)));
        }
        return Ok(grpc::frame(data).into());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(grpc::frame(&b.to_vec()).into());
    }
    Err(PyTypeError::new_err("a message must be bytes"))
}

#[pymethods]
impl Frontend {
    #[new]
    #[pyo3(signature = (listeners, *, max_recv_bytes, max_send_bytes, keepalive_min_time_ms,
                        keepalive_interval_ms, keepalive_timeout_ms, threads = 1,
                        http1 = false, tls = None, secure = None, plain_too = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        listeners: Vec<Listen>,
        max_recv_bytes: usize,
        max_send_bytes: usize,
        keepalive_min_time_ms: u64,
        keepalive_interval_ms: u64,
        keepalive_timeout_ms: u64,
        threads: usize,
        http1: bool,
        tls: Option<TlsArgs>,
        secure: Option<Vec<bool>>,
        plain_too: Option<Vec<bool>>,
    ) -> PyResult<Self> {
        let secure = secure.unwrap_or_else(|| vec![false; listeners.len()]);
        if secure.len() != listeners.len() {
            return Err(PyValueError::new_err("secure must have one entry per listener"));
        }
        let plain_too = plain_too.unwrap_or_else(|| vec![false; listeners.len()]);
        if plain_too.len() != listeners.len() {
            return Err(PyValueError::new_err("plain_too must have one entry per listener"));
        }
        let acceptor = match tls {
            Some((cert_pem, key_pem, ca_pem, versions, cipher_suites, crls, hostnames)) => {
                let crls = crls.unwrap_or_default();
                let allowed_hostnames = hostnames.unwrap_or_default();
                let settings = tls::Settings {
                    cert_pem,
                    key_pem,
                    ca_pem,
                    versions,
                    cipher_suites,
                    http1,
                    crls,
                    allowed_hostnames,
                };
                Some(tls::acceptor(&settings).map_err(PyValueError::new_err)?)
            }
            None => None,
        };
        if acceptor.is_none() && secure.iter().any(|s| *s) {
            return Err(PyValueError::new_err("a secure listener needs tls"));
        }
        let bound = py.detach(|| {
            let mut bound = Vec::with_capacity(listeners.len());
            for listen in &listeners {
                let (bound_one, shown) = match listen {
                    Listen::Tcp(host, port) => (
                        server::bind(host, *port).map(BoundListener::Tcp),
                        server::show_addr(host, *port),
                    ),
                    Listen::Unix(path) => {
                        (server::bind_unix(path).map(BoundListener::Unix), path.clone())
                    }
                };
                match bound_one {
                    Ok(l) => bound.push(l),
                    Err(e) => {
                        let text = format!("cannot listen on {}: {}", shown, server::os_text(&e));
                        return Err((e.raw_os_error(), text));
                    }
                }
            }
            Ok(bound)
        });
        let bound = match bound {
            Ok(b) => b,
            Err((Some(errno), text)) => return Err(PyOSError::new_err((errno, text))),
            Err((None, text)) => return Err(PyOSError::new_err(text)),
        };
        let mut ports = Vec::with_capacity(bound.len());
        for l in &bound {
            ports.push(match l {
                BoundListener::Tcp(l) => {
                    l.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port()
                }
                BoundListener::Unix(_) => 0,
            });
        }
        let bound: Vec<_> = bound
            .into_iter()
            .zip(secure.into_iter().zip(plain_too))
            .map(|(l, (s, p))| {
                let tls = if s { acceptor.clone() } else { None };
                (l, Security { plain_too: p && tls.is_some(), tls })
            })
            .collect();
        let cfg = Config {
            max_recv_bytes,
            max_send_bytes,
            keepalive_min_time_ms,
            keepalive_interval_ms,
            keepalive_timeout_ms,
            http1,
        };
        let shared = Shared::new(cfg).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Frontend {
            shared: Arc::new(shared),
            ports,
            threads: threads.max(1),
            state: Mutex::new(State::Bound(Some(bound))),
            interned: Mutex::new(Interned::default()),
        })
    }

    /// The bound ports, in listener order (0 for a Unix socket).
    fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// Starts serving.
    fn start(&self) -> PyResult<()> {
        let mut state = lock(&self.state);
        match &mut *state {
            State::Bound(listeners) => {
                let listeners = listeners.take().unwrap_or_default();
                let running = Running::start(listeners, self.shared.clone(), self.threads)
                    .map_err(|e| PyOSError::new_err(e.to_string()))?;
                *state = State::Running(running);
                Ok(())
            }
            State::Running(_) => Err(PyRuntimeError::new_err("the front end is already started")),
            State::Closed => Err(PyValueError::new_err("the front end is closed")),
        }
    }

    /// The eventfd that is readable whenever take() has events.
    fn fileno(&self) -> i32 {
        self.shared.eventfd()
    }

    /// Every queued event, in arrival order.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.shared.take();
        let mut out: Vec<Bound<'py, PyAny>> = Vec::with_capacity(events.len());
        let mut interned = lock(&self.interned);
        for ev in events {
            let t = match ev {
                Event::New { id, method, metadata, timeout, peer } => {
                    let mut md: Vec<Bound<'py, PyAny>> = Vec::with_capacity(metadata.len());
                    for (k, v) in metadata {
                        let item = match v {
                            MetaValue::Str(s) => interned.pair(py, k, s)?,
                            MetaValue::Bin(b) => (interned.text(py, &k), PyBytes::new(py, &b))
                                .into_pyobject(py)?
                                .into_any(),
                        };
                        md.push(item);
                    }
                    let md = PyTuple::new(py, md)?;
                    let method = interned.text(py, &method);
                    let peer = interned.text(py, &peer);
                    (0u8, id, method, md, timeout, peer).into_pyobject(py)?.into_any()
                }
                Event::Message(id, m) => {
                    (1u8, id, PyBytes::new(py, &m)).into_pyobject(py)?.into_any()
                }
                Event::HalfClose(id) => (2u8, id).into_pyobject(py)?.into_any(),
                Event::Cancel(id) => (3u8, id).into_pyobject(py)?.into_any(),
                Event::Drained(id) => (4u8, id).into_pyobject(py)?.into_any(),
                Event::Http1(fd, peer, certs) => {
                    let certs = match certs {
                        Some(c) => Some(PyTuple::new(py, c.iter().map(|d| PyBytes::new(py, d)))?),
                        None => None,
                    };
                    (8u8, fd.into_raw_fd(), &*peer, certs).into_pyobject(py)?.into_any()
                }
            };
            out.push(t);
        }
        PyList::new(py, out)
    }

    /// Queues response messages and call ends; returns the calls now over 1 MiB queued.
    fn send(&self, items: &Bound<'_, PyList>) -> PyResult<Vec<u64>> {
        let mut outs = Vec::with_capacity(items.len());
        for item in items.iter() {
            let t = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("send() items must be tuples"))?;
            let id: u64 = t.get_item(0)?.extract()?;
            match t.len() {
                2 => outs.push(Out::Msg(id, message_bytes(&t.get_item(1)?)?)),
                4 => {
                    let m = t.get_item(1)?;
                    let msg = if m.is_none() { None } else { Some(message_bytes(&m)?) };
                    let code: u32 = t.get_item(2)?.extract()?;
                    let details: String = t.get_item(3)?.extract()?;
                    outs.push(Out::Finish(id, msg, code, details));
                }
                _ => {
                    return Err(PyTypeError::new_err(
                        "send() items are (call_id, message) or (call_id, message, code, details)",
                    ))
                }
            }
        }
        // No py.detach: shared.send only takes short locks that runtime threads hold
        // without the GIL (they never take it), so it cannot wait long; giving the GIL up
        // cost the event loop ~1 ms per call to get it back from petcd's worker threads.
        Ok(self.shared.send(outs))
    }

    /// Closes the listeners (returns once they are closed); open connections go on.
    fn stop_accepting(&self, py: Python<'_>) {
        py.detach(|| {
            let mut state = lock(&self.state);
            match &mut *state {
                State::Bound(listeners) => *listeners = None,
                State::Running(r) => r.stop_accepting(&self.shared),
                State::Closed => {}
            }
        })
    }

    /// GOAWAY to every open connection: its calls in progress go on, the client starts no
    /// new ones on it (grpc clients take them to another connection). The listeners stay as
    /// they are: call stop_accepting() first.
    fn drain(&self) {
        self.shared.dispatch(); // what Python sent before goes out before the GOAWAY
        let conns: Vec<_> = lock(&self.shared.conns).values().cloned().collect();
        for c in conns {
            let _ = c.tx.send(ConnCmd::Drain);
        }
    }

    /// GOAWAY to every connection, every open call ended, the runtime stopped. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.close_now());
    }
}

impl Frontend {
    fn close_now(&self) {
        let previous = std::mem::replace(&mut *lock(&self.state), State::Closed);
        if let State::Running(mut r) = previous {
            r.stop();
        }
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        // The runtime threads never take the GIL, so joining them here cannot deadlock.
        self.close_now();
    }
}

/// etcd's RangeResponse bytes from petcd's stored KeyValue records (src/kv.rs). A record is
/// a `bytes` object or a read-only, contiguous buffer (a memoryview into the backend's
/// memory map, which the caller keeps valid until this returns).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn range_response<'py>(
    py: Python<'py>,
    cluster_id: u64,
    member_id: u64,
    revision: i64,
    raft_term: u64,
    records: &Bound<'py, PyList>,
    more: bool,
    count: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    let items: Vec<Bound<'py, PyAny>> = records.iter().collect();
    let mut buffers: Vec<PyBuffer<u8>> = Vec::new();
    let mut spans: Vec<(*const u8, usize)> = Vec::with_capacity(items.len());
    for item in &items {
        if let Ok(b) = item.cast::<PyBytes>() {
            let s = b.as_bytes();
            spans.push((s.as_ptr(), s.len()));
            continue;
        }
        let buf = PyBuffer::<u8>::get(item)
            .ok()
            .filter(|b| b.readonly() && b.is_c_contiguous())
            .ok_or_else(|| {
                PyTypeError::new_err("range_response() records must be bytes or read-only buffers")
            })?;
        spans.push((buf.buf_ptr() as *const u8, buf.len_bytes()));
        buffers.push(buf);
    }
    // SAFETY: each span is a bytes object's contents (`items` keeps it alive) or a read-only
    // contiguous buffer held by `buffers` until the end of this function; neither changes
    // while they are held.
    let views: Vec<&[u8]> = spans
        .iter()
        .map(|&(ptr, len)| if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, len) } })
        .collect();
    let header = kv::Header { cluster_id, member_id, revision, raft_term };
    let planned = kv::plan(&header, &views, more, count).map_err(PyValueError::new_err)?;
    let len = planned.len();
    // The answer is written straight into a new bytes object, and without the GIL (the
    // records are immutable bytes that `items` keeps alive, or read-only buffers that
    // `buffers` holds; no other thread can see the new object yet): a large Range encoded
    // in a worker thread leaves the event loop free meanwhile, and its megabytes are copied
    // once.
    // SAFETY: a NULL source asks CPython for an uninitialized bytes object of `len` bytes.
    let obj = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as pyo3::ffi::Py_ssize_t) };
    // SAFETY: `obj` is a new reference (or NULL with an exception set, which fails here).
    let out = unsafe { Bound::from_owned_ptr_or_err(py, obj)? }.cast_into::<PyBytes>()?;
    // SAFETY: the object's buffer holds `len` bytes, and nothing else refers to it yet.
    let buf = unsafe { std::slice::from_raw_parts_mut(pyo3::ffi::PyBytes_AsString(obj).cast::<u8>(), len) };
    py.detach(|| planned.write(&mut kv::Fill::new(buf)));
    drop(views);
    drop(buffers);
    Ok(out)
}

/// The IANA names of the TLS 1.2 cipher suites the front end can offer.
#[pyfunction]
fn tls12_cipher_suites() -> Vec<String> {
    tls::tls12_suite_names()
}

#[pymodule]
fn _frontend(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Frontend>()?;
    m.add_function(wrap_pyfunction!(range_response, m)?)?;
    m.add_function(wrap_pyfunction!(tls12_cipher_suites, m)?)?;
    m.add_class::<crate::pydecode::RequestDecoder>()?;
    for (name, kind) in [("NEW", 0), ("MESSAGE", 1), ("HALF_CLOSE", 2), ("CANCEL", 3), ("DRAINED", 4), ("HTTP1", 8)] {
        m.add(name, kind)?;
    }
    Ok(())
}
