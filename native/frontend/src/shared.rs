//! State shared between Python's thread and the runtime threads: the event queue with its
//! eventfd, the registry of live calls, and the connections' command channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::grpc;

/// A call is reported as over its send budget above this many queued bytes...
pub const HIGH_WATER: usize = 1 << 20;
/// ...and DRAINED once it is back at or below this.
pub const LOW_WATER: usize = 256 << 10;

/// A metadata value: text, or the decoded bytes of a `-bin` key.
pub enum MetaValue {
    Str(String),
    Bin(Vec<u8>),
}

/// What Python takes (see the .pyi stub for the tuple shapes).
pub enum Event {
    New {
        id: u64,
        method: String,
        metadata: Vec<(String, MetaValue)>,
        timeout: Option<f64>,
        peer: Arc<str>,
    },
    Message(u64, Bytes),
    HalfClose(u64),
    Cancel(u64),
    Drained(u64),
    /// A connection on the gRPC port that is not HTTP/2 (``Config::http1``): Python owns
    /// the socket from here on; a dropped event closes it. Behind TLS, the DER certificates
    /// the client presented and the verifier accepted (leaf first; empty without a client
    /// certificate; None without TLS): v2 auth reads their common names.
    Http1(std::os::fd::OwnedFd, Arc<str>, Option<Vec<Bytes>>),
}

/// One outgoing item of `send()`, already framed (5-byte prefix included).
pub enum Out {
    Msg(u64, grpc::Framed),
    Finish(u64, Option<grpc::Framed>, u32, String),
}

impl Out {
    fn id(&self) -> u64 {
        match self {
            Out::Msg(id, _) | Out::Finish(id, ..) => *id,
        }
    }
}

pub enum ConnCmd {
    Batch(Vec<Out>),
    /// GOAWAY: the calls in progress go on, the client opens no new ones here.
    Drain,
    Close,
}

/// Per-call counters shared by `send()` and the connection task.
#[derive(Default)]
pub struct CallShared {
    /// Bytes given to `send()` and not yet handed to HTTP/2 (whose own buffer is bounded
    /// by the peer's flow-control window).
    pub pending: AtomicUsize,
    /// Set when `send()` reported the call over HIGH_WATER; cleared with DRAINED.
    pub over: AtomicBool,
}

pub struct ConnHandle {
    pub id: u64,
    pub tx: UnboundedSender<ConnCmd>,
}

pub struct CallReg {
    pub conn: Arc<ConnHandle>,
    pub call: Arc<CallShared>,
}

pub struct Config {
    pub max_recv_bytes: usize,
    pub max_send_bytes: usize,
    pub keepalive_min_time_ms: u64,
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Hand connections that do not start with the HTTP/2 preface to Python (HTTP1 events)
    /// instead of failing their HTTP/2 handshake.
    pub http1: bool,
}

pub struct Shared {
    queue: Mutex<Vec<Event>>,
    /// Batches of `send()` not yet handed to their connections. The dispatcher task
    /// (`server::run`) hands them over from inside the runtime: a task woken from outside
    /// the runtime costs a syscall on the waking thread (the runtime's unpark), so one
    /// `send()` wakes the dispatcher once instead of waking every connection it feeds.
    outbox: Mutex<Vec<(Arc<ConnHandle>, Vec<Out>)>>,
    pub outbox_ready: tokio::sync::Notify,
    dispatching: Mutex<()>,
    eventfd: i32,
    pub calls: Mutex<HashMap<u64, CallReg>>,
    pub conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    pub next_call: AtomicU64,
    pub next_conn: AtomicU64,
    /// Listeners still open (their accept loops have not ended).
    pub listening: AtomicUsize,
    pub cfg: Config,
}

/// Locks a mutex even if a panicking thread poisoned it (the data stays consistent: every
/// critical section here is a plain insert/remove/swap).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(cfg: Config) -> std::io::Result<Shared> {
        // SAFETY: plain syscall; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Shared {
            queue: Mutex::new(Vec::with_capacity(1024)),
            outbox: Mutex::new(Vec::new()),
            outbox_ready: tokio::sync::Notify::new(),
            dispatching: Mutex::new(()),
            eventfd: efd,
            calls: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            listening: AtomicUsize::new(0),
            cfg,
        })
    }

    pub fn eventfd(&self) -> i32 {
        self.eventfd
    }

    /// Appends events; writes the eventfd only when the queue goes from empty to non-empty.
    pub fn push_events(&self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut q = lock(&self.queue);
        let was_empty = q.is_empty();
        q.append(events);
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to the eventfd we own. Under the
            // lock, so that "eventfd readable" and "queue non-empty" change together.
            unsafe { libc::write(self.eventfd, &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    /// Every queued event; resets the eventfd.
    pub fn take(&self) -> Vec<Event> {
        let mut q = lock(&self.queue);
        if q.is_empty() {
            return Vec::new();
        }
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from the (non-blocking) eventfd we own.
        unsafe { libc::read(self.eventfd, &mut buf as *mut u64 as *mut libc::c_void, 8) };
        std::mem::replace(&mut *q, Vec::with_capacity(1024))
    }

    /// Ends a call from the front end's side: forgets it and queues CANCEL. False if the
    /// call was already over (finished by Python or cancelled before).
    pub fn cancel(&self, id: u64, events: &mut Vec<Event>) -> bool {
        if lock(&self.calls).remove(&id).is_some() {
            events.push(Event::Cancel(id));
            true
        } else {
            false
        }
    }

    /// Hands `items` to their connections, one batch per connection. Returns the calls now
    /// over HIGH_WATER.
    pub fn send(&self, items: Vec<Out>) -> Vec<u64> {
        let max = self.cfg.max_send_bytes;
        let mut over = Vec::new();
        let mut cancels = Vec::new();
        let mut groups: Vec<(Arc<ConnHandle>, Vec<Out>)> = Vec::new();
        let mut group_of: HashMap<u64, usize> = HashMap::new();
        {
            let mut calls = lock(&self.calls);
            for item in items {
                let id = item.id();
                let Some(reg) = calls.get(&id) else { continue };
                let size = match &item {
                    Out::Msg(_, f) => Some(f.message_len()),
                    Out::Finish(_, Some(f), ..) => Some(f.message_len()),
                    Out::Finish(_, None, ..) => None,
                };
                let conn = reg.conn.clone();
                let item = match size {
                    Some(n) if n > max => {
                        calls.remove(&id);
                        cancels.push(Event::Cancel(id));
                        Out::Finish(
                            id,
                            None,
                            grpc::CODE_RESOURCE_EXHAUSTED,
                            format!("grpc: trying to send message larger than max ({n} vs. {max})"),
                        )
                    }
                    _ => {
                        if let Some(n) = size {
                            let call = &reg.call;
                            let p = call.pending.fetch_add(n + 5, Ordering::SeqCst) + n + 5;
                            if p > HIGH_WATER {
                                call.over.store(true, Ordering::SeqCst);
                                // The connection may have drained below LOW_WATER meanwhile
                                // without seeing the flag: then take it back.
                                if call.pending.load(Ordering::SeqCst) > LOW_WATER
                                    || !call.over.swap(false, Ordering::SeqCst)
                                {
                                    over.push(id);
                                }
                            }
                        }
                        if matches!(item, Out::Finish(..)) {
                            calls.remove(&id);
                        }
                        item
                    }
                };
                let g = *group_of.entry(conn.id).or_insert_with(|| {
                    groups.push((conn.clone(), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(item);
            }
        }
        if !groups.is_empty() {
            let mut outbox = lock(&self.outbox);
            let was_empty = outbox.is_empty();
            outbox.append(&mut groups);
            if was_empty {
                self.outbox_ready.notify_one();
            }
        }
        self.push_events(&mut cancels);
        over.sort_unstable();
        over.dedup();
        over
    }
}

impl Shared {
    /// Hands the batches queued by `send()` to their connections, in order. Holds
    /// `dispatching` (not the outbox, which `send()` takes) while it does, so that whatever
    /// a caller sends a connection after its own dispatch() (a Close) comes after them.
    pub fn dispatch(&self) {
        let _order = lock(&self.dispatching);
        let batches = std::mem::take(&mut *lock(&self.outbox));
        for (conn, batch) in batches {
            let _ = conn.tx.send(ConnCmd::Batch(batch));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the eventfd is ours and nothing uses it once Shared is gone.
        unsafe { libc::close(self.eventfd) };
    }
}
