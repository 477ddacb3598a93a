//! Listeners and the runtime: binding (in the constructor, on Python's thread), the accept
//! loops, and the orderly shutdown. A listener is a TCP port or a Unix socket file (etcd's
//! unix:// and unixs:// client URLs); both serve the same connections.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::conn;
use crate::shared::{lock, ConnCmd, Event, Shared};

/// "host:port" as an error message shows it (IPv6 literals in brackets).
pub fn show_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An io::Error's text without Rust's " (os error N)" suffix.
pub fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Binds one listener: SO_REUSEADDR, a dual-stack socket for "::", the first IPv4 address
/// of a name that resolves to several (as Go's net.Listen does).
pub fn bind(host: &str, port: u16) -> io::Result<StdTcpListener> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if let SocketAddr::V6(a) = addr {
        if a.ip().is_unspecified() {
            sock.set_only_v6(false)?;
        }
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Binds a Unix socket at `path` (relative to the working directory, as etcd's). The caller
/// removes a stale file first, as etcd does: binding over an existing file fails.
pub fn bind_unix(path: &str) -> io::Result<StdUnixListener> {
    let l = StdUnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// How a listener serves its connections: plain, TLS, or both. Both is etcd's `http://` and
/// `https://` client URLs on one port: a connection whose first byte begins a TLS handshake
/// record (0x16) is served TLS, any other plainly (etcd's cmux tries its plain matchers, HTTP/2
/// and HTTP/1, first and hands what is left to TLS; a client's first bytes tell them apart the
/// same way).
#[derive(Clone)]
pub struct Security {
    pub tls: Option<TlsAcceptor>,
    pub plain_too: bool,
}

/// A bound listener, not serving yet.
pub enum Bound {
    Tcp(StdTcpListener),
    Unix(StdUnixListener),
}

/// The running runtime, as Python's side holds it.
pub struct Running {
    stop_tx: watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts the runtime on its own thread(s), all named "petcd-frontend".
    pub fn start(
        listeners: Vec<(Bound, Security)>,
        shared: Arc<Shared>,
        threads: usize,
    ) -> io::Result<Running> {
        let rt = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("petcd-frontend")
                .enable_all()
                .build()?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        shared.listening.fetch_add(listeners.len(), Ordering::SeqCst);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new().name("petcd-frontend".into()).spawn(move || {
            rt.block_on(run(listeners, shared, stop_rx, shutdown_rx));
            rt.shutdown_timeout(Duration::from_millis(500));
        })?;
        Ok(Running { stop_tx, shutdown: Some(shutdown_tx), thread: Some(thread) })
    }

    /// Closes the listeners and waits (up to 2 s) until they are closed.
    pub fn stop_accepting(&self, shared: &Shared) {
        let _ = self.stop_tx.send(true);
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while shared.listening.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops accepting, closes every connection (GOAWAY) and joins the runtime.
    pub fn stop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                eprintln!("petcd._frontend: the runtime thread panicked");
            }
        }
    }
}

async fn run(
    listeners: Vec<(Bound, Security)>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    shutdown: oneshot::Receiver<()>,
) {
    for (l, tls) in listeners {
        let spawned = match l {
            Bound::Tcp(l) => TcpListener::from_std(l)
                .map(|l| tokio::spawn(accept_loop(l, tls, shared.clone(), stop.clone()))),
            Bound::Unix(l) => UnixListener::from_std(l)
                .map(|l| tokio::spawn(accept_loop(l, tls, shared.clone(), stop.clone()))),
        };
        match spawned {
            Ok(_) => {}
            Err(e) => {
                shared.listening.fetch_sub(1, Ordering::SeqCst);
                eprintln!("petcd._frontend: cannot use a listener: {e}");
            }
        }
    }
    tokio::spawn(dispatcher(shared.clone()));
    let _ = shutdown.await;
    shared.dispatch(); // what Python sent before close() goes out before the GOAWAY
    let conns: Vec<_> = lock(&shared.conns).values().cloned().collect();
    for c in conns {
        let _ = c.tx.send(ConnCmd::Close);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while !lock(&shared.conns).is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Calls of connections that did not finish in time.
    let mut events: Vec<Event> =
        lock(&shared.calls).drain().map(|(id, _)| Event::Cancel(id)).collect();
    shared.push_events(&mut events);
}

/// Hands `send()`'s batches to their connections (see `Shared::outbox`).
async fn dispatcher(shared: Arc<Shared>) {
    loop {
        shared.outbox_ready.notified().await;
        shared.dispatch();
    }
}

/// What the accept loops take connections from: a TCP or a Unix listener.
trait Accept: Send + Sync + 'static {
    type Stream: conn::Socket;
    fn poll_accept_stream(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(Self::Stream, String)>>;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    fn poll_accept_stream(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(Self::Stream, String)>> {
        self.poll_accept(cx).map_ok(|(s, a)| (s, peer_string(a)))
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    fn poll_accept_stream(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(Self::Stream, String)>> {
        // grpc's peer of a Unix socket connection: "unix:" and the (unnamed) client's path.
        self.poll_accept(cx).map_ok(|(s, _)| (s, "unix:".to_owned()))
    }
}

/// grpc's peer format; IPv4-mapped IPv6 addresses are shown as IPv4, as grpc does.
fn peer_string(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("ipv4:{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => format!("ipv4:{}:{}", v4, a.port()),
            None => format!("ipv6:[{}]:{}", a.ip(), a.port()),
        },
    }
}

async fn accept_loop<L: Accept>(
    l: L,
    sec: Security,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    accept_until_stopped(&l, &sec, &shared, stop).await;
    drop(l);
    shared.listening.fetch_sub(1, Ordering::SeqCst);
}

async fn accept_until_stopped<L: Accept>(
    l: &L,
    sec: &Security,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            r = std::future::poll_fn(|cx| l.poll_accept_stream(cx)) => match r {
                Ok((sock, peer)) => {
                    tokio::spawn(conn::serve(sock, peer, shared.clone(), sec.clone()));
                }
                Err(e) => {
                    // EMFILE and the like: do not spin.
                    eprintln!("petcd._frontend: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = stop.changed() => if r.is_err() { return },
        }
    }
}
