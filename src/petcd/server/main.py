"""``petcd``: the server program, a drop-in for ``etcd``.

Theory of operation
-------------------
``main()`` parses etcd's flags, environment and config file (``petcd.server.config``), then:

- ``petcd gateway ...`` (the first argument, as etcd's): the L4 gateway (``petcd.server
  .gateway``), its own command line; ``petcd grpc-proxy ...``: the L7 gRPC proxy
  (``petcd.proxy``);
- ``--help``: the usage text on stdout, exit 0; ``--version``: etcd's version lines, exit 0;
- a flag error: the message and the usage on stderr, exit 2 (Go's flag package, as etcd);
- a configuration error: one fatal JSON log line, exit 1 (etcd's ``lg.Fatal``);
- otherwise: run a member until SIGTERM or SIGINT.

Running: one asyncio event loop (uvloop when available) holds the member (``petcd.server
.member``), the gRPC server (``petcd.grpc``) on ``--listen-client-urls`` and the HTTP endpoints
(``petcd.http``) on ``--listen-client-http-urls`` and ``--listen-metrics-urls``. A ``unix://`` or
``unixs://`` URL among them is a Unix socket file: as etcd, an existing file of that name is
removed before listening, and the socket file when the listener closes. The client port
(gRPC, and HTTP on it) is bound at start, so that a port in use fails at once, but served only
once the member is ready: it has a leader, applied its term's entries and published itself
through raft (etcd's ``ReadyNotify``, which its ``serveCtx.serve`` awaits before it serves a
client connection). A restarted or newly added member therefore never answers from a state
older than what the cluster had committed when it started (a Status revision below a
compaction, a serializable read of a past the client had already seen); connections made
before then wait, as etcd's do. The HTTP listeners of ``--listen-client-http-urls`` and
``--listen-metrics-urls`` serve at once. On SIGTERM or
SIGINT it stops accepting requests, lets the member finish its round, flushes the backend and
closes the WAL, then dies of the same signal with the default handler, as etcd does. A fatal
member error (failed fsync, corrupt log) logs and exits with 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from petcd import ETCD_CLUSTER_VERSION, ETCD_VERSION, __version__
from petcd.http.accepted import HttpOnClientPort
from petcd.http.access import AccessPolicy
from petcd.server.config import Action, Config, parse
from petcd.server.discovery import DUPLICATE_ID, DUPLICATE_NAME, FULL_CLUSTER, DiscoveryError
from petcd.server.errors import ConfigError, FlagError, MemberRemovedError
from petcd.server.flags import usage
from petcd.server.ids import format_id
from petcd.server.log import Logger, open_outputs
from petcd.server.srv import SrvBootstrapError
from petcd.server.tls import ClientTLS, client_tls, peer_tls, warn_plain_tls
from petcd.snap import bbolt

if TYPE_CHECKING:
    from petcd.server.member import Member

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "AMD64": "amd64", "arm64": "arm64"}
_GC_GEN0_THRESHOLD = 20_000  # allocations between young-generation collections (_tune_gc)


def version_text() -> str:
    arch = _ARCH.get(platform.machine(), platform.machine())
    return (
        f"etcd Version: {ETCD_VERSION}\n"
        "Git SHA: Not provided (petcd)\n"
        f"Go Version: python{platform.python_version()}\n"
        f"Go OS/Arch: {sys.platform}/{arch}\n"
        f"petcd Version: {__version__}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gateway"]:
        from petcd.server.gateway import main as gateway_main

        return gateway_main(args[1:], sys.argv[0] if argv is None else "petcd")
    if args[:1] == ["grpc-proxy"]:
        from petcd.proxy.main import main as grpc_proxy_main

        return grpc_proxy_main(args[1:], sys.argv[0] if argv is None else "petcd")
    try:
        parsed = parse(args, os.environ)
    except FlagError as e:
        sys.stderr.write(f"{e}\n{usage()}\n")
        return 2
    except ConfigError as e:
        Logger("info").fatal("failed to verify flags", error=str(e))
        return 1
    if parsed.action is Action.HELP:
        sys.stdout.write(usage() + "\n")
        return 0
    if parsed.action is Action.VERSION:
        sys.stdout.write(version_text())
        return 0
    cfg = parsed.config
    assert cfg is not None
    log = Logger(cfg.log_level, open_outputs(cfg.log_outputs))
    log.info("Running: ", args=[sys.argv[0] if argv is None else "petcd", *args])
    for w in parsed.warnings:
        log.warn(w)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    received: list[int] = []
    # What start-up builds (modules, the key index, the leases) lives as long as the process,
    # and a collection pass finds nothing to free in it: the collector stays off until the
    # member serves (_tune_gc), and is on again when main returns, whatever happened.
    collecting = gc.isenabled()
    gc.disable()
    try:
        code = int(runner(_serve(cfg, log, received)))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    finally:
        if collecting:
            gc.enable()
    if received and code == 0:
        sig = received[0]
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return code


def _log_discovery_failure(cfg: Config, log: Logger, e: DiscoveryError) -> None:
    """What etcd says when bootstrapping through ``--discovery`` failed (then it exits 1)."""
    if e.reason != FULL_CLUSTER:
        log.warn("failed to start etcd", error=str(e))
    if e.reason == FULL_CLUSTER and cfg.discovery_fallback == "proxy":
        # etcd would run as a v2 proxy of the cluster; petcd serves the v3 API only.
        log.error(
            "discovery cluster is full; petcd cannot fall back to a proxy (etcd's v2 proxy): "
            "add this member with `member add` and start it with "
            "--initial-cluster-state=existing, or bootstrap with a new discovery token",
            fallback_proxy=cfg.discovery_fallback,
            error=str(e),
        )
    elif e.reason == DUPLICATE_ID:
        log.warn(
            "member has been registered with discovery service",
            name=cfg.name,
            discovery_token=cfg.discovery_url,
            error=e.reason,
        )
        log.warn("but could not find valid cluster configuration", data_dir=cfg.data_dir)
        log.warn("check data dir if previous bootstrap succeeded")
        log.warn("or use a new discovery token if previous bootstrap failed")
    elif e.reason == DUPLICATE_NAME:
        log.warn(
            "member with duplicated name has already been registered",
            discovery_token=cfg.discovery_url,
            error=e.reason,
        )
        log.warn("cURL the discovery token URL for details")
        log.warn("do not reuse discovery token; generate a new one to bootstrap a cluster")
    else:
        log.warn(
            "failed to bootstrap; discovery token was already used",
            discovery_token=cfg.discovery_url,
            error=str(e),
        )
        log.warn("do not reuse discovery token; generate a new one to bootstrap a cluster")


async def _serve(cfg: Config, log: Logger, received: list[int]) -> int:
    from petcd.grpc.native import NativeTransportUnavailable
    from petcd.grpc.services import make_server
    from petcd.server.member import Member
    from petcd.wal import exists as wal_exists

    log.info(
        "starting an etcd server",
        etcd_version=ETCD_VERSION,
        petcd_version=__version__,
        python_version=platform.python_version(),
        name=cfg.name,
        data_dir=cfg.data_dir,
        wal_dir=cfg.wal_dir,
        snapshot_count=cfg.snapshot_count,
        heartbeat_interval=f"{cfg.heartbeat_interval_ms}ms",
        election_timeout=f"{cfg.election_timeout_ms}ms",
        listen_client_urls=[str(u) for u in cfg.listen_client_urls],
        advertise_client_urls=[str(u) for u in cfg.advertise_client_urls],
        initial_cluster=",".join(f"{n}={','.join(map(str, us))}" for n, us in cfg.initial_cluster),
        initial_cluster_state=cfg.initial_cluster_state,
        initial_cluster_token=cfg.initial_cluster_token,
        quota_backend_bytes=cfg.quota_backend_bytes_effective,
        max_request_bytes=cfg.max_request_bytes,
        max_txn_ops=cfg.max_txn_ops,
        auto_compaction_mode=cfg.auto_compaction_mode.value,
        auto_compaction_retention=cfg.auto_compaction_retention,
    )
    for name, value in cfg.ignored:
        log.warn("flag accepted and ignored by petcd", flag=name, value=value)
    v2_write_only = cfg.v2_deprecation in ("write-only", "write-only-drop-data", "gone")
    if cfg.enable_v2:
        if v2_write_only:
            error = f"--enable-v2 and --v2-deprecation={cfg.v2_deprecation} are mutually exclusive"
            log.warn("failed to start etcd", error=error)
            log.fatal("discovery failed", error=error)
            return 1
        log.warn("Flag `enable-v2` is deprecated and will get removed in etcd 3.6.")
    try:
        tls = client_tls(cfg, log)
        if tls is not None:
            tls.frontend_args()  # the files are readable, before anything is created
            tls.dial_credentials()
        # Listeners first, as etcd: a port in use must not leave a freshly created data dir.
        member = Member(cfg, log, peer_tls=peer_tls(cfg, log))
    except ConfigError as e:
        log.fatal("cannot use the TLS configuration", error=str(e))
        return 1
    warn_plain_tls(cfg, log)
    log.info(
        "configuring client listeners",
        listen_client_urls=[str(u) for u in cfg.listen_client_urls],
        client_transport=cfg.client_transport,
    )
    listeners = [u.listen_address for u in cfg.listen_client_urls]
    sockets = [
        u.socket
        for u in (*cfg.listen_client_urls, *cfg.listen_client_http_urls, *cfg.listen_metrics_urls)
        if u.is_unix
    ]
    # etcd serves HTTP/1 (health, version, metrics, the JSON gateway) on its client port too;
    # the native front end hands such connections over (grpc.aio cannot share its sockets).
    on_client_port: HttpOnClientPort | None = None
    access = AccessPolicy.of(cfg.cors, cfg.host_whitelist, cfg.client_cert_auth)
    if cfg.client_transport == "native":
        on_client_port = HttpOnClientPort(
            member,
            log,
            cfg.max_concurrent_streams,
            gateway=cfg.enable_grpc_gateway,
            v2=cfg.enable_v2,
            access=access,
        )
    try:
        _remove_socket_files(sockets)
        grpc_server = make_server(
            member,
            listeners,
            cfg.max_request_bytes,
            log,
            transport=cfg.client_transport,
            http1=None if on_client_port is None else on_client_port.accept,
            tls=tls,
            secure=[u.secure for u in cfg.listen_client_urls],
        )
    except ConfigError as e:
        log.fatal("cannot use the TLS configuration", error=str(e))
        return 1
    except NativeTransportUnavailable as e:
        log.fatal("cannot start the client transport", error=str(e))
        return 1
    except (OSError, RuntimeError) as e:
        log.fatal("failed to listen on client urls", error=str(e))
        _remove_socket_files(sockets)
        return 1
    if not _convert_etcd_data_dir(cfg, log):
        await grpc_server.stop(None)
        _remove_socket_files(sockets)
        return 1
    restarted = wal_exists(cfg.wal_path)  # etcd checks only a member that has data
    try:
        member.open_data()
    except DiscoveryError as e:
        _log_discovery_failure(cfg, log, e)
        await grpc_server.stop(None)
        _remove_socket_files(sockets)
        return 1
    except SrvBootstrapError as e:
        log.warn("failed to start etcd", error=str(e))  # etcd's words
        log.fatal("discovery failed", error=str(e))
        await grpc_server.stop(None)
        _remove_socket_files(sockets)
        return 1
    except Exception as e:
        log.fatal("failed to start the member", error=str(e))
        await grpc_server.stop(None)
        _remove_socket_files(sockets)
        return 1
    if member.v2 is not None and member.v2.has_custom_content():
        if v2_write_only:  # etcd's assertNoV2StoreContent
            error = (
                "detected disallowed custom content in v2store for stage "
                f"--v2-deprecation={cfg.v2_deprecation}"
            )
            log.fatal("failed to start the member", error=error)
            await grpc_server.stop(None)
            _remove_socket_files(sockets)
            return 1
        log.warn(
            "detected custom v2store content. Etcd v3.5 is the last version allowing to access "
            "it using API v2. Please remove the content."
        )
    if not await _corruption_checks(member, cfg, log, restarted, tls):
        await grpc_server.stop(None)
        _remove_socket_files(sockets)
        return 1
    await member.start()
    _tune_gc()
    http_urls = [*cfg.listen_client_http_urls, *cfg.listen_metrics_urls]
    http: list[Any] = []
    if http_urls:
        from petcd.http.server import HttpServer  # aiohttp costs 0.4 s to import: only if used

        context = None if tls is None else tls.ssl_context()
        for urls, gateway in (
            (cfg.listen_client_http_urls, True),
            (cfg.listen_metrics_urls, False),
        ):
            if urls:
                http.append(
                    HttpServer(
                        member,
                        [u.listen_address for u in urls],
                        gateway=gateway and cfg.enable_grpc_gateway,
                        secure=[u.secure for u in urls],
                        ssl_context=context,
                        gateway_calls_max=cfg.max_concurrent_streams,
                        log=log,
                        v2=gateway and cfg.enable_v2,
                        # the client URLs' (not the metrics URLs'): /debug/vars, CORS ...
                        access=access if gateway else None,
                    )
                )
    try:
        for h in http:
            await h.start()
    except OSError as e:
        log.fatal("failed to listen", error=str(e))
        await grpc_server.stop(None)
        await member.stop()
        _remove_socket_files(sockets)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):

        def on_signal(s: int = sig) -> None:
            received.append(s)
            stop.set()

        loop.add_signal_handler(sig, on_signal)

    ready = asyncio.create_task(member.wait_ready())
    failed = asyncio.create_task(member.wait_stopped())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({ready, failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    publishing: asyncio.Task[None] | None = None
    if ready in done:
        # Retried until it succeeds (etcd's publishV3); a stop or a failure ends the wait.
        publishing = asyncio.create_task(member.publish())
        done, _ = await asyncio.wait(
            {publishing, failed, stopping}, return_when=asyncio.FIRST_COMPLETED
        )
    code = 0
    if publishing is not None and publishing in done and publishing.exception() is None:
        try:
            await grpc_server.start()
        except OSError as e:
            log.fatal("failed to listen", error=str(e))
            code = 1
            stop.set()
    if publishing is not None and publishing in done and code == 0:
        log.info("enabled capabilities for version", cluster_version=ETCD_CLUSTER_VERSION[:3])
        log.info("ready to serve client requests")
        for u in cfg.listen_client_urls:
            address = u.socket if u.is_unix else f"{u.bind_host}:{u.port}"
            if u.secure:
                log.info("serving client traffic securely", address=address)
            else:
                log.warn(
                    "serving client traffic insecurely; this is strongly discouraged!",
                    address=address,
                )
        for u in [*(cfg.listen_client_urls if on_client_port is not None else ()), *http_urls]:
            log.info("serving HTTP endpoints (health, version, metrics)", address=str(u))
    if publishing is not None:
        if not done & {failed, stopping}:
            done, _ = await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        publishing.cancel()
        with contextlib.suppress(BaseException):
            await publishing
    if code == 0:  # else the client port could not be served: logged above
        if isinstance(member.fatal_error, MemberRemovedError):
            # etcd: the removed member stops and the process exits 0.
            log.warn("server error", error=str(member.fatal_error))
            log.warn("data-dir used by this member must be removed", data_dir=cfg.data_dir)
        elif member.fatal_error is not None:
            log.fatal("member failed", error=repr(member.fatal_error))
            code = 1
        else:
            name = signal.Signals(received[0]).name if received else "stop"
            log.info(
                "received signal; shutting down",
                signal={"SIGTERM": "terminated", "SIGINT": "interrupt"}.get(name, name),
            )
    log.info(
        "closing etcd server",
        name=cfg.name,
        data_dir=cfg.data_dir,
        advertise_client_urls=[str(u) for u in cfg.advertise_client_urls],
    )
    for t in (ready, failed, stopping):
        t.cancel()
    await grpc_server.stop(1.0)
    if on_client_port is not None:
        await on_client_port.stop()
    for h in http:
        await h.stop()
    _remove_socket_files(sockets)
    if member.fatal_error is None:
        # etcd's Stop: a leader hands over first, so that the cluster elects no new leader.
        try:
            await member.transfer_leadership()
        except Exception as e:
            log.warn(
                "leadership transfer failed", local_member_id=format_id(member.id), error=str(e)
            )
    with contextlib.suppress(Exception):
        await member.stop()
    log.info("closed etcd server", name=cfg.name, data_dir=cfg.data_dir)
    return code


_LMDB_MAGIC = 0xBEEFC0DE  # LMDB's meta page: after the 16-byte page header


def _is_etcd_backend(path: str) -> bool:
    """bbolt's magic, and not LMDB's: a petcd value on a page where bbolt may keep a meta page
    (the sniff also tries other page sizes) must not make petcd take its own dir for etcd's."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    if len(head) == 20 and int.from_bytes(head[16:20], "little") == _LMDB_MAGIC:
        return False
    return bbolt.sniff(path)


def _convert_etcd_data_dir(cfg: Config, log: Logger) -> bool:
    """An etcd member's data dir is converted in place before it is opened (0013); False
    (logged as fatal) if it cannot be done safely."""
    data_dir = cfg.data_dir
    if not (
        _is_etcd_backend(os.path.join(data_dir, "member", "snap", "db"))
        or os.path.isdir(os.path.join(data_dir, ".member.petcd-convert"))
    ):
        return True  # petcd's data dir, or none yet: the usual case, nothing more is loaded
    from petcd.utl import etcd_datadir  # loads the importer, the converters

    if etcd_datadir.interrupted(data_dir):
        etcd_datadir.finish_interrupted(data_dir)
        log.info("finished an interrupted conversion of an etcd data dir", data_dir=data_dir)
        return True
    if not _is_etcd_backend(os.path.join(data_dir, "member", "snap", "db")):
        return True

    def hint(reason: str) -> str:
        urls = ",".join(map(str, cfg.initial_advertise_peer_urls))
        cluster = ",".join(f"{n}={u}" for n, us in cfg.initial_cluster for u in us)
        return (
            f"{data_dir} is an etcd data dir that petcd cannot convert in place: {reason}. "
            "To migrate it, start etcd on it, save a snapshot (etcdctl snapshot save "
            "<file>), stop etcd, then run `petcdutl snapshot restore <file> --data-dir "
            f"<new data dir> --name {cfg.name} --initial-cluster {cluster} "
            f"--initial-cluster-token {cfg.initial_cluster_token} "
            f"--initial-advertise-peer-urls {urls}` and start petcd on the new data dir"
        )

    if cfg.wal_dir:
        log.fatal("failed to start the member", error=hint("--wal-dir is not supported here"))
        return False
    log.info("converting etcd data dir", data_dir=data_dir)
    try:
        done = etcd_datadir.convert_data_dir(data_dir, hint)
    except etcd_datadir.EtcdDataDirError as e:
        log.fatal("failed to start the member", error=str(e))
        return False
    except Exception as e:  # I/O errors: the originals are back in place
        log.fatal("failed to start the member", error=f"converting etcd data dir: {e}")
        return False
    c = done.counts
    log.info(
        "converted etcd data dir",
        data_dir=data_dir,
        etcd_originals=done.originals,
        local_member_id=format_id(done.member_id),
        cluster_id=format_id(done.cluster_id),
        members=done.members,
        applied_index=done.applied_index,
        commit_index=done.commit_index,
        last_index=done.last_index,
        revision=done.revision,
        requests_after_applied=c.requests,
    )
    if c.v2_writes_dropped:
        log.warn(
            "the etcd WAL held v2 store writes after the applied index; petcd has no v2 store",
            dropped=c.v2_writes_dropped,
        )
    return True


def _remove_socket_files(paths: Sequence[str]) -> None:
    """etcd's Unix socket listener removes the file of its path before it listens (a file left
    by a member that was killed, or any other file of that name) and when it closes."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _tune_gc() -> None:
    """The cyclic garbage collector, for a long-running server (``main`` turned it off for
    the start-up).

    What start-up built (modules, the key index and leases of the data loaded) lives as long
    as the process: ``gc.freeze()`` keeps it out of every later scan. With 1,000,000 keys the
    collector's passes during start-up took about 0.3 s of its 2.9 s; one full pass here,
    before the freeze, frees whatever cycles start-up left behind instead. A busy member
    makes many short-lived objects per request, nearly none of them in reference cycles
    (reference counting frees them), so the young generation is collected every 20,000
    allocations instead of every 700: the collector's passes took 3-6% of the event loop
    under put.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, _GC_GEN0_THRESHOLD), gen1, gen2)
    gc.enable()


async def _corruption_checks(
    member: Member, cfg: Config, log: Logger, restarted: bool, tls: ClientTLS | None
) -> bool:
    """Wire petcd.server.corrupt; run the initial check (False: the member must not start).
    ``tls``: this member's client TLS, whose CAs and client certificate reach the peers'
    ``https`` client URLs."""
    from petcd.grpc.peer_hash import GrpcPeerHashFetcher
    from petcd.server import corrupt

    fetch = GrpcPeerHashFetcher(
        member.id,
        log,
        member.request_timeout_s,
        None if tls is None else tls.dial_credentials(),
    )
    member.peer_hash_fetcher = fetch
    if not (cfg.experimental_initial_corrupt_check and restarted):
        return True
    try:
        await corrupt.initial_check(
            corrupt.MemberHasher(member), fetch, log, member.request_timeout_s
        )
    except corrupt.InitialCheckError as e:
        log.error("checkInitialHashKV failed", error=str(e))
        log.fatal("discovery failed", error=str(e))  # etcd's etcdmain, then exit 1
        return False
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
