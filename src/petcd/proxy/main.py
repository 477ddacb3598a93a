"""``petcd grpc-proxy start``: etcd's L7 gRPC proxy, a stateless client of the cluster.

Theory of operation
-------------------
``main`` follows etcd 3.5's ``startGRPCProxy``, in its order and with its texts:

1. the command line (``petcd.proxy.flags``): help on stdout, exit 0; a bad flag as cobra
   prints it (``Error: ...``, the usage, the error again) on stderr, exit 1;
2. etcd's argument checks (``invalid resolver-ttl 0`` ...), one line on stderr, exit 1; then
   petcd's refusals of what it does not build (``UNSUPPORTED``), exit 1;
3. the listener's TLS (``--cert-file``/``--key-file``/``--trusted-ca-file``, or a certificate
   made for ``--auto-tls`` in ``<data-dir>/fixtures/proxy``), logged as "gRPC proxy server
   TLS"; the listen address bound ("listening for gRPC proxy client requests");
4. the upstream client: the endpoints (``--discovery-srv``'s, else ``--endpoints``), then
   ``--cert``/``--key``/``--cacert`` (a client certificate whose Common Name is not empty is
   refused: ``cert has non empty Common Name (<cn>): <file>``, exit 1);
5. the services (``petcd.proxy.service``), the registration under ``--resolver-prefix``
   (``petcd.proxy.register``), the ``--metrics-addr`` HTTP listener (``/metrics`` relayed
   from an endpoint, ``/health``, ``/proxy/health``, ``/proxy/metrics``); "started gRPC
   proxy"; then it serves until SIGINT or SIGTERM, which end it by the signal, as a Go
   program.

``--endpoints-auto-sync-interval``: every interval the endpoint list becomes the cluster's
client URLs (``Upstream.sync``), logged as "set etcd endpoints by autoSync" (etcd logs it at
debug level; its gRPC library's info lines name the new addresses, which etcd's e2e test
waits for).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2
from petcd.proxy.flags import (
    PARENT_SHORT,
    PARENT_USAGE,
    START_SHORT,
    START_USAGE,
    ProxyFlagError,
    StartOptions,
    check_parent_flags,
    find_command,
    parse_start_flags,
)
from petcd.proxy.register import register, watch_registry
from petcd.proxy.service import ProxyHandler, Registry
from petcd.proxy.upstream import Upstream, UpstreamTLS
from petcd.server.errors import ConfigError
from petcd.server.gateway import GatewayStartError, discover_endpoints, listen
from petcd.server.log import Logger

_SERVER_RECV_BYTES_MAX = 4 * 1024 * 1024  # grpc-go's server default, which etcd's proxy keeps
_INT32_MAX = 2**31 - 1
_CLIENT_SEND_BYTES_DEFAULT = 2 * 1024 * 1024  # etcd's client when not told otherwise

# Flags petcd's proxy refuses (exit 1): the feature is not built.
UNSUPPORTED = {
    "experimental-leasing-prefix": "the leasing KV (disconnected linearizable reads)",
    "experimental-serializable-ordering": "the ordering KV",
    "insecure-skip-tls-verify": "skipping the verification of the members' certificates",
    "client-crl-file": "certificate revocation lists on the proxy's listener",
}
# Flags accepted and ignored (a warning in the log): nothing a client could observe.
IGNORED = ("enable-pprof",)


def _flag_error(message: str, usage: str) -> int:
    sys.stderr.write(f"Error: {message}\n{usage}\n{message}\n")
    return 1


def check_args(opts: StartOptions) -> str | None:
    """etcd's checkArgs: the first problem's text, or None."""
    if opts.resolver_prefix and opts.resolver_ttl < 1:
        return f"invalid resolver-ttl {opts.resolver_ttl}"
    if not opts.resolver_prefix and opts.resolver_ttl > 0:
        return f'invalid resolver-prefix "{opts.resolver_prefix}"'
    if opts.resolver_prefix and opts.resolver_ttl > 0 and not opts.advertise_client_url:
        return f'invalid advertise-client-url "{opts.advertise_client_url}"'
    if opts.auto_tls and opts.self_signed_cert_validity == 0:
        return "selfSignedCertValidity is invalid,it should be greater than 0"
    return None


def _unsupported(opts: StartOptions) -> str | None:
    for name, what in UNSUPPORTED.items():
        value = getattr(opts, name.replace("-", "_"))
        if value:
            return f"petcd grpc-proxy: --{name} ({what}) is not supported"
    return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"open {path}: {(e.strerror or str(e)).lower()}") from None


def endpoints(opts: StartOptions, log: Logger) -> list[str]:
    """``--discovery-srv``'s endpoints (etcd's ``discoverEndpoints``, shared with the gateway:
    ``_etcd-client[-ssl][-<name>]._tcp.<domain>``, only https ones that answer unless
    ``--insecure-discovery``), else ``--endpoints``; GatewayStartError with etcd's text."""
    found = discover_endpoints(opts, log) if opts.discovery_srv else []  # type: ignore[arg-type]
    return found or list(opts.endpoints)


def upstream_tls(opts: StartOptions) -> UpstreamTLS | None:
    """``--cacert``/``--cert``/``--key``, checked as etcd's client does (a client certificate
    must have an empty Common Name); ConfigError with etcd's text."""
    if not (opts.cacert or opts.cert or opts.key):
        return None
    if bool(opts.cert) != bool(opts.key):
        raise ConfigError(
            f"KeyFile and CertFile must both be present[key: {opts.key}, cert: {opts.cert}]"
        )
    cert = key = None
    if opts.cert:
        cert, key = _read(opts.cert), _read(opts.key)
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        try:
            parsed = x509.load_pem_x509_certificate(cert)
        except ValueError as e:
            raise ConfigError(f"tls: failed to parse certificate: {e}") from None
        cns = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cns and cns[0].value:
            cn = cns[0].value
            raise ConfigError(f"cert has non empty Common Name ({cn!s}): {opts.cert}")
    ca = _read(opts.cacert) if opts.cacert else None
    return UpstreamTLS(ca, key, cert)


def _server_credentials(opts: StartOptions, log: Logger) -> grpc.ServerCredentials | None:
    cert, key, ca = opts.cert_file, opts.key_file, opts.trusted_ca_file
    if not (cert or key or ca) and opts.auto_tls:
        from petcd.server.tls import self_cert

        host = urlsplit("https://" + opts.listen_addr).hostname or "127.0.0.1"
        directory = os.path.join(opts.data_dir, "fixtures", "proxy")

        def made(msg: str, path: str) -> None:
            log.info(msg, path=path)

        cert, key = self_cert(directory, [host], opts.self_signed_cert_validity, made)
    if not (cert or key or ca):
        return None
    log.info(
        "gRPC proxy server TLS",
        tls_info=f"cert = {cert}, key = {key}, client-cert=, client-key=, trusted-ca = {ca}, "
        f"client-cert-auth = false, crl-file = {opts.client_crl_file}",
    )
    if bool(cert) != bool(key) or not cert:
        raise ConfigError(f"KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")
    root = _read(ca) if ca else None
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))], root_certificates=root, require_client_auth=root is not None
    )


def _cipher_suites(opts: StartOptions, log: Logger) -> None:
    """``--listen-cipher-suites``: the names are checked as etcd checks them (an unknown one
    is an error), but gRPC's TLS for Python cannot limit its suites: it offers its defaults
    (TLS 1.2 ECDHE with AES-GCM or ChaCha20, and TLS 1.3), and says so in the log."""
    from petcd.server.tls import cipher_suites

    if cipher_suites(",".join(opts.listen_cipher_suites)):
        log.warn(
            "petcd grpc-proxy does not limit the listener's TLS cipher suites; "
            "--listen-cipher-suites is checked and ignored",
            cipher_suites=opts.listen_cipher_suites,
        )


def _send_bytes_max(opts: StartOptions) -> int:
    """etcd passes a positive --max-send-bytes to its client, which otherwise sends 2 MiB."""
    return opts.max_send_bytes if opts.max_send_bytes > 0 else _CLIENT_SEND_BYTES_DEFAULT


def _recv_bytes_max(opts: StartOptions) -> int:
    return min(opts.max_recv_bytes, _INT32_MAX) if opts.max_recv_bytes > 0 else _INT32_MAX


def _upstream_options(opts: StartOptions) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", _send_bytes_max(opts)),
        ("grpc.max_receive_message_length", _recv_bytes_max(opts)),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]
    if opts.dial_keepalive_time_s > 0:
        options.append(("grpc.keepalive_time_ms", int(opts.dial_keepalive_time_s * 1000)))
        options.append(("grpc.keepalive_timeout_ms", int(opts.dial_keepalive_timeout_s * 1000)))
    if opts.permit_without_stream:
        options.append(("grpc.keepalive_permit_without_calls", 1))
    return options


def _server_options(opts: StartOptions) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", _SERVER_RECV_BYTES_MAX),
        ("grpc.max_concurrent_streams", min(opts.max_concurrent_streams, _INT32_MAX)),
    ]
    if opts.grpc_keepalive_min_time_s > 0:
        ms = int(opts.grpc_keepalive_min_time_s * 1000)
        options.append(("grpc.http2.min_ping_interval_without_data_ms", ms))
    if opts.grpc_keepalive_interval_s > 0:
        options.append(("grpc.keepalive_time_ms", int(opts.grpc_keepalive_interval_s * 1000)))
    if opts.grpc_keepalive_timeout_s > 0:
        options.append(("grpc.keepalive_timeout_ms", int(opts.grpc_keepalive_timeout_s * 1000)))
    return options


def main(args: Sequence[str], argv0: str = "petcd") -> int:
    """``petcd grpc-proxy ...`` (``args`` after ``grpc-proxy``); returns the exit code."""
    command, rest = find_command(args)
    if command == "grpc-proxy":
        try:
            check_parent_flags(rest)
        except ProxyFlagError as e:
            return _flag_error(str(e), PARENT_USAGE)
        sys.stdout.write(f"{PARENT_SHORT}\n\n{PARENT_USAGE}")
        return 0
    try:
        opts = parse_start_flags(rest)
    except ProxyFlagError as e:
        return _flag_error(str(e), START_USAGE)
    if opts.help:
        sys.stdout.write(f"{START_SHORT}\n\n{START_USAGE}")
        return 0
    problem = check_args(opts) or _unsupported(opts)
    if problem:
        sys.stderr.write(problem + "\n")
        return 1
    log = Logger("debug" if opts.debug else "info")
    for name in IGNORED:
        if name in opts.given:
            log.warn(f"petcd grpc-proxy ignores --{name}", flag=name)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        _cipher_suites(opts, log)
        creds = _server_credentials(opts, log)
        if opts.listen_cipher_suites and creds is None:
            log.warn("--listen-cipher-suites has no effect without TLS on the listener")
        try:
            listen(opts.listen_addr).close()
        except GatewayStartError as e:
            sys.stderr.write(e.text if e.text.endswith("\n") else e.text + "\n")
            return 1
        log.info("listening for gRPC proxy client requests", address=opts.listen_addr)
        try:
            opts.endpoints = endpoints(opts, log)
        except GatewayStartError as e:
            sys.stderr.write(e.text if e.text.endswith("\n") else e.text + "\n")
            return 1
        tls = upstream_tls(opts)
        if tls is not None:
            log.info(
                "gRPC proxy client TLS",
                tls_info=f"cert = {opts.cert}, key = {opts.key}, client-cert=, client-key=, "
                f"trusted-ca = {opts.cacert}, client-cert-auth = false, crl-file = ",
            )
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    return int(runner(_serve(opts, log, creds, tls)))


async def _serve(
    opts: StartOptions,
    log: Logger,
    creds: grpc.ServerCredentials | None,
    tls: UpstreamTLS | None,
) -> int:
    upstream = Upstream(opts.endpoints, tls, _upstream_options(opts))
    namespace = opts.namespace.encode()
    registry = Registry() if opts.resolver_prefix and opts.advertise_client_url else None
    if opts.advertise_client_url:
        log.info("create proxy client", grpcProxyAdvertiseClientURL=opts.advertise_client_url)
    server = grpc.aio.server(options=_server_options(opts))
    server.add_generic_rpc_handlers(
        (
            ProxyHandler(
                upstream, namespace, opts.advertise_client_url, registry, _send_bytes_max(opts)
            ),
        )
    )
    try:
        if creds is None:
            server.add_insecure_port(opts.listen_addr)
        else:
            server.add_secure_port(opts.listen_addr, creds)
    except RuntimeError as e:
        sys.stderr.write(f"listen tcp {opts.listen_addr}: {e}\n")
        return 1
    await server.start()
    tasks: list[asyncio.Task[Any]] = []
    if opts.resolver_prefix:
        tasks.append(
            asyncio.create_task(
                register(
                    log,
                    upstream,
                    namespace,
                    opts.resolver_prefix,
                    opts.advertise_client_url,
                    opts.resolver_ttl,
                )
            )
        )
        if registry is not None:
            tasks.append(
                asyncio.create_task(
                    watch_registry(log, upstream, namespace, opts.resolver_prefix, registry)
                )
            )
    if opts.endpoints_auto_sync_interval_s > 0:
        tasks.append(
            asyncio.create_task(_auto_sync(log, upstream, opts.endpoints_auto_sync_interval_s))
        )
    runner = None
    if opts.metrics_addr:
        from petcd.proxy.http import start_metrics

        try:
            runner = await start_metrics(opts, upstream)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"{e}\n")
            return 1
        log.info("gRPC proxy listening for metrics", address=opts.metrics_addr)
    log.info("started gRPC proxy", address=opts.listen_addr)
    _notify_systemd(log)
    if runner is not None:
        log.info("gRPC proxy server metrics URL serving")
    try:
        await server.wait_for_termination()
    finally:
        for t in tasks:
            t.cancel()
        if runner is not None:
            await runner.cleanup()
        await upstream.close()
    return 0


async def _auto_sync(log: Logger, upstream: Upstream, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            eps = await upstream.sync(interval_s if interval_s < 5.0 else 5.0)
        except grpc.aio.AioRpcError as e:
            log.info("Auto sync endpoints failed.", error=e.details() or str(e.code()))
            continue
        if eps is None:
            continue
        for ch in upstream.set_endpoints(eps):
            # calls may still run on a dropped endpoint: its channel closes a minute later
            asyncio.get_running_loop().call_later(60.0, _close_later, ch)
        log.info("set etcd endpoints by autoSync", endpoints=eps)


_CLOSING: set[asyncio.Future[Any]] = set()


def _close_later(ch: grpc.aio.Channel) -> None:
    task = asyncio.ensure_future(ch.close())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


def _notify_systemd(log: Logger) -> None:
    from petcd.server.gateway import _notify_systemd as notify

    notify(log)


def health_json(ok: bool, reason: str) -> bytes:
    return json.dumps({"health": "true" if ok else "false", "reason": reason}).encode()


async def check_health(upstream: Upstream) -> tuple[bool, str]:
    """etcd's proxy health: a Get of "a" through the cluster; permission denied is healthy."""
    try:
        await upstream.unary(
            "/etcdserverpb.KV/Range",
            rpc_pb2.RangeRequest(key=b"a"),
            (),
            1.0,
            rpc_pb2.RangeRequest.SerializeToString,
            rpc_pb2.RangeResponse.FromString,
        )
    except grpc.aio.AioRpcError as e:
        if e.details() == "etcdserver: permission denied":
            return True, ""
        return False, f"GET ERROR:{e.details()}"
    return True, ""
