"""``petcd gateway start``: etcd's L4 gateway, a stateless TCP proxy in front of a cluster.

Theory of operation
-------------------
``petcd gateway start --endpoints=a:2379,b:2379 --listen-addr=127.0.0.1:23790`` listens on one
TCP address and forwards every accepted connection, byte for byte, to one of the endpoints. It
knows nothing of gRPC or HTTP: clients talk to a member through it exactly as they would
directly (TLS, if any, is end to end).

Command line (etcd's cobra tree under ``etcd gateway``): flags may stand before or after
``start``; ``petcd gateway`` with anything but ``start`` prints the command's help, exit 0;
``-h``/``--help`` prints the help of the command it follows, exit 0; an unknown or malformed
flag prints ``Error: <what>``, the usage and ``<what>`` again on stderr, exit 1.

Start-up checks, in etcd's order, each one line and exit 1: an endpoint that is not
``host:port`` (a ``scheme://`` prefix is dropped), a listen address that is not ``host:port``,
a listen host or an endpoint host that does not resolve, an endpoint that resolves to the
listen address and port (the gateway would dial itself), no endpoint at all, a listen address
that cannot be bound. With ``--discovery-srv`` the endpoints are the client endpoints the
domain's SRV records name (``petcd.server.srv``; without ``--insecure-discovery`` only https
ones that accept a TCP connection), or ``--endpoints`` when none is left.

Choosing an endpoint (``RoundRobin``, pure): each new connection goes to the next endpoint in
``--endpoints`` order, round robin, skipping those marked inactive. A dial that fails marks
that endpoint inactive (etcd's "deactivated endpoint" warning) and the next one is tried, until
one answers or none is active: then the client's connection is closed at once, without a byte.
Every ``--retry-delay`` (0 means five minutes, as etcd) each inactive endpoint is dialled once
in the background; one that answers is active again ("activated").

Forwarding: two pumps, client to member and member to client. Half-closes are not carried
over: as etcd's proxy, the first end of file or error on either side closes both connections
entirely. Established connections are never moved to another endpoint: a member that dies
ends its connections, and the clients reconnect through the gateway to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from petcd.server.config import parse_duration_seconds
from petcd.server.corrupt import go_duration
from petcd.server.hostport import join_host_port, split_host_port
from petcd.server.log import Logger

_DEFAULT_LISTEN_ADDR = "127.0.0.1:23790"
_DEFAULT_ENDPOINTS = ("127.0.0.1:2379",)
_DEFAULT_RETRY_DELAY_S = 60.0
_RETRY_DELAY_WHEN_ZERO_S = 300.0  # etcd's tcpproxy: a zero monitor interval means 5 minutes
_PUMP_CHUNK_BYTES = 64 * 1024

_GATEWAY_SHORT = "gateway related command"
_GATEWAY_USAGE = """\
Usage:
  petcd gateway [command]

Available Commands:
  start       start the gateway

Flags:
  -h, --help   help for gateway

Use "petcd gateway [command] --help" for more information about a command.
"""

_START_SHORT = "start the gateway"
_START_USAGE = """\
Usage:
  petcd gateway start [flags]

Flags:
      --discovery-srv string        DNS domain used to bootstrap initial cluster
      --discovery-srv-name string   service name to query when using DNS discovery
      --endpoints strings           comma separated etcd cluster endpoints \
(default [127.0.0.1:2379])
  -h, --help                        help for start
      --insecure-discovery          accept insecure SRV records
      --listen-addr string          listen address (default "127.0.0.1:23790")
      --retry-delay duration        duration of delay before retrying failed endpoints \
(default 1m0s)
      --trusted-ca-file string      path to the client server TLS CA file for verifying the \
discovered endpoints when discovery-srv is provided.
"""

_START_VALUE_FLAGS = frozenset(
    (
        "listen-addr",
        "discovery-srv",
        "discovery-srv-name",
        "trusted-ca-file",
        "endpoints",
        "retry-delay",
    )
)
_START_BOOL_FLAGS = frozenset(("insecure-discovery", "help"))
# name -> whether the flag is a boolean (parse_flags)
_START_FLAGS = {
    **dict.fromkeys(_START_VALUE_FLAGS, False),
    **dict.fromkeys(_START_BOOL_FLAGS, True),
}
_GO_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_GO_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


class GatewayFlagError(Exception):
    """A flag cobra/pflag would refuse; the text is theirs (``unknown flag: --x`` ...)."""


class GatewayStartError(Exception):
    """A start-up check failed: ``stream`` gets the text as is, and the gateway exits 1."""

    def __init__(self, text: str, stream: str = "stdout") -> None:
        super().__init__(text)
        self.text = text
        self.stream = stream


@dataclass(slots=True)
class StartOptions:
    """The flags of ``gateway start``, with etcd's defaults."""

    listen_addr: str = _DEFAULT_LISTEN_ADDR
    endpoints: list[str] = field(default_factory=lambda: list(_DEFAULT_ENDPOINTS))
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    insecure_discovery: bool = False
    trusted_ca_file: str = ""
    retry_delay_s: float = _DEFAULT_RETRY_DELAY_S
    help: bool = False
    endpoints_set: bool = False  # pflag: the first --endpoints replaces the default, later append


# --- the command line ------------------------------------------------------------------------


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def find_subcommand(args: Sequence[str], parent: str) -> tuple[str, list[str]]:
    """cobra's lookup below ``parent`` (``gateway``, ``grpc-proxy``): ("start", the other
    args) or (``parent``, args).

    Only the parent's own flag (``-h/--help``, a boolean) is known while looking, so any
    other ``--flag`` without ``=`` is taken to own the next argument as its value."""
    i = 0
    while i < len(args):
        s = args[i]
        if s == "--":
            break
        takes_value = (s.startswith("--") and "=" not in s and s[2:] != "help") or (
            len(s) == 2 and s.startswith("-") and s != "-h" and s != "--"
        )
        if takes_value:
            if len(args) - (i + 1) <= 1:  # cobra stops looking when the value is the last arg
                break
            i += 2
            continue
        if s and not s.startswith("-"):
            if s == "start":
                return "start", [*args[:i], *args[i + 1 :]]
            return parent, list(args)
        i += 1
    return parent, list(args)


def check_parent_flags(args: Sequence[str], error: type[Exception]) -> None:
    """The parent command's own flags (``gateway``, ``grpc-proxy``): only ``-h/--help``;
    anything else raises ``error`` with pflag's text."""
    for s in args:
        if s == "--":
            return
        if s.startswith("--"):
            name = s[2:].partition("=")[0]
            if not name or name[0] in "-=":
                raise error(f"bad flag syntax: {s}")
            if name != "help":
                raise error(f"unknown flag: --{name}")
        elif s.startswith("-") and len(s) > 1:
            for j, ch in enumerate(s[1:], start=1):
                if ch != "h":
                    raise error(f"unknown shorthand flag: {ch!r} in -{s[j:]}")


def _find_command(args: Sequence[str]) -> tuple[str, list[str]]:
    return find_subcommand(args, "gateway")


def _parse_gateway_flags(args: Sequence[str]) -> None:
    check_parent_flags(args, GatewayFlagError)


_GO_DURATION_UNITS = frozenset(("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h"))


def _duration_problem(text: str) -> str:
    """What Go's ``time.ParseDuration`` says of a duration it refuses."""
    invalid = f"invalid duration {_go_quote(text)}"
    s = text[1:] if text[:1] in ("+", "-") else text
    if not s:
        return invalid
    i = 0
    while i < len(s):
        start = i
        while i < len(s) and s[i].isdigit():
            i += 1
        if i < len(s) and s[i] == ".":
            i += 1
            while i < len(s) and s[i].isdigit():
                i += 1
        if not s[start:i].strip("."):
            return invalid
        start = i
        while i < len(s) and s[i] not in "0123456789.":
            i += 1
        unit = s[start:i]
        if not unit:
            return f"missing unit in duration {_go_quote(text)}"
        if unit not in _GO_DURATION_UNITS:
            return f"unknown unit {_go_quote(unit)} in duration {_go_quote(text)}"
    return invalid


def _parse_bool(name: str, value: str) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise GatewayFlagError(
        f"invalid argument {_go_quote(value)} for {_go_quote('--' + name)} flag: "
        f"strconv.ParseBool: parsing {_go_quote(value)}: invalid syntax"
    )


def _set_flag(opts: StartOptions, name: str, value: str) -> None:
    if name == "listen-addr":
        opts.listen_addr = value
    elif name == "discovery-srv":
        opts.discovery_srv = value
    elif name == "discovery-srv-name":
        opts.discovery_srv_name = value
    elif name == "trusted-ca-file":
        opts.trusted_ca_file = value
    elif name == "endpoints":
        try:
            items = next(csv.reader([value], strict=True)) if value else []
        except csv.Error as e:
            raise GatewayFlagError(
                f"invalid argument {_go_quote(value)} for {_go_quote('--endpoints')} flag: {e}"
            ) from None
        opts.endpoints = [*opts.endpoints, *items] if opts.endpoints_set else items
        opts.endpoints_set = True
    elif name == "retry-delay":
        try:
            opts.retry_delay_s = parse_duration_seconds(value)
        except ValueError:
            raise GatewayFlagError(
                f"invalid argument {_go_quote(value)} for {_go_quote('--retry-delay')} flag: "
                f"time: {_duration_problem(value)}"
            ) from None
    elif name == "insecure-discovery":
        opts.insecure_discovery = _parse_bool(name, value)
    else:
        assert name == "help", name
        opts.help = _parse_bool(name, value)


def parse_start_flags(args: Sequence[str]) -> StartOptions:
    """pflag's parse of ``gateway start``'s flags: interspersed with other arguments (which
    are ignored), ``--name=value`` or ``--name value``, booleans bare or ``=value``, ``--``
    ends the flags."""
    opts = StartOptions()

    def set_help() -> None:
        opts.help = True

    parse_flags(args, _START_FLAGS, functools.partial(_set_flag, opts), set_help, GatewayFlagError)
    return opts


def parse_flags(
    args: Sequence[str],
    flags: Mapping[str, bool],
    set_flag: Callable[[str, str], None],
    set_help: Callable[[], None],
    error: type[Exception],
) -> None:
    """pflag's parse of the flags of ``start`` (``gateway``'s, ``grpc-proxy``'s): interspersed
    with other arguments (which are ignored), ``--name=value`` or ``--name value``, booleans
    bare or ``=value``, ``--`` ends the flags, ``-h`` (``set_help``) the only shorthand.
    ``flags`` maps each flag's name to whether it is a boolean; ``set_flag(name, value)`` gets
    the flags given, in order; anything else raises ``error`` with pflag's text."""
    i = 0
    while i < len(args):
        s = args[i]
        i += 1
        if s == "--":
            break
        if s.startswith("--"):
            name, eq, value = s[2:].partition("=")
            if not name or name[0] in "-=":
                raise error(f"bad flag syntax: {s}")
            is_bool = flags.get(name)
            if is_bool is None:
                raise error(f"unknown flag: --{name}")
            if is_bool:
                value = value if eq else "true"
            elif not eq:
                if i >= len(args):
                    raise error(f"flag needs an argument: {s}")
                value = args[i]
                i += 1
            set_flag(name, value)
        elif s.startswith("-") and len(s) > 1:
            for j, ch in enumerate(s[1:], start=1):
                if ch != "h":
                    raise error(f"unknown shorthand flag: {ch!r} in -{s[j:]}")
                set_help()


# --- addresses -------------------------------------------------------------------------------


def _strip_scheme(endpoint: str) -> str:
    """etcd's stripSchema: ``http://host:port`` -> ``host:port``; others are kept."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return endpoint
    if parts.scheme and parts.netloc:
        return parts.netloc.rpartition("@")[2]
    return endpoint


def _go_port(text: str) -> int:
    """``fmt.Sscanf(p, "%d", &uint16)``: leading decimal digits, 0 when there are none."""
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    n = int(digits) if digits else 0
    return n if n <= 0xFFFF else 0


def _lookup_host(host: str) -> set[str] | None:
    """Go's ``net.LookupHost``: the host's addresses; None when it does not resolve."""
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return {str(info[4][0]) for info in infos}


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)


def discover_endpoints(opts: StartOptions, log: Logger) -> list[str]:
    """``--discovery-srv``: the client endpoints the domain's SRV records name (etcd's
    ``discoverEndpoints``); without ``--insecure-discovery`` only the https ones that accept
    a TCP connection. Empty: none (then ``--endpoints`` serve)."""
    if not opts.discovery_srv:
        return []
    from petcd.server.srv import SrvError, client_endpoints  # dnspython: only if used

    domain = opts.discovery_srv
    try:
        found = client_endpoints(domain, opts.discovery_srv_name)
    except SrvError as e:
        raise GatewayStartError(f"{e}\n", "stderr") from None
    log.info("discovered cluster from SRV", srv_server=domain, endpoints=found)
    if opts.insecure_discovery:
        return found
    log.info("validating discovered SRV endpoints", srv_server=domain, endpoints=found)
    valid: list[str] = []
    errors: list[str] = []
    for ep in found:
        if not ep.startswith("https://"):
            errors.append(f"{_go_quote(ep)} is insecure")
            continue
        hp = split_host_port(ep[len("https://") :])
        try:
            assert hp is not None
            socket.create_connection((hp[0], int(hp[1])), timeout=5).close()
        except (OSError, AssertionError, ValueError) as e:
            errors.append(f"{_go_quote(ep)} failed to dial ({e})")
            continue
        valid.append(ep)
    if errors:
        log.warn(
            "failed to validate discovered endpoints",
            srv_server=domain,
            endpoints=valid,
            error=",".join(errors),
        )
    else:
        log.info("using validated discovered SRV endpoints", srv_server=domain, endpoints=valid)
    return valid


def resolve_endpoints(opts: StartOptions, discovered: list[str] | None = None) -> list[Endpoint]:
    """etcd's start-up checks on the endpoints (those ``--discovery-srv`` found, else
    ``--endpoints``) and ``--listen-addr``, in its order."""
    eps: list[Endpoint] = []
    for raw in discovered or opts.endpoints:
        stripped = _strip_scheme(raw)
        hp = split_host_port(stripped)
        if hp is None:
            raise GatewayStartError(f"error parsing endpoint {_go_quote(stripped)}")
        eps.append(Endpoint(hp[0], _go_port(hp[1])))
    listen = split_host_port(opts.listen_addr)
    if listen is None:
        raise GatewayStartError(f"failed to validate listen address: {opts.listen_addr}\n")
    lhost, lport = listen
    laddrs = _lookup_host(lhost)
    if laddrs is None:
        raise GatewayStartError(f"failed to resolve listen host: {lhost}\n")
    for ep in eps:
        eaddrs = _lookup_host(ep.host)
        if eaddrs is None:
            raise GatewayStartError(f"failed to resolve endpoint host: {ep.host}\n")
        if str(ep.port) != lport:
            continue
        for ea in sorted(eaddrs):
            if ea in laddrs:
                raise GatewayStartError(
                    f"SRV or endpoint ({ep.host}:{ep.port}->{ea}:{ep.port}) should not resolve "
                    f"to the gateway listen addr ({opts.listen_addr})\n"
                )
    if not eps:
        raise GatewayStartError("no endpoints found\n")
    return eps


def _go_errno_text(e: OSError) -> str:
    text = os.strerror(e.errno) if e.errno else str(e)
    return text[:1].lower() + text[1:]


def listen(listen_addr: str) -> socket.socket:
    """Go's ``net.Listen("tcp", addr)``: one socket on the host's first address (IPv4 first),
    SO_REUSEADDR set; errors in Go's words (``listen tcp 127.0.0.1:23790: bind: address
    already in use``)."""
    hp = split_host_port(listen_addr)
    assert hp is not None, listen_addr
    host, port = hp
    try:
        infos = socket.getaddrinfo(
            host, port or "0", type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as e:
        raise GatewayStartError(f"listen tcp {listen_addr}: {e}\n", "stderr") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    shown = join_host_port(str(sockaddr[0]), int(sockaddr[1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except OSError as e:
        sock.close()
        raise GatewayStartError(
            f"listen tcp {shown}: bind: {_go_errno_text(e)}\n", "stderr"
        ) from None
    sock.setblocking(False)
    return sock


def _dial_error(ep: Endpoint, e: OSError) -> str:
    """A failed dial in the words of Go's net package (``dial tcp 127.0.0.1:1: connect:
    connection refused``), which etcd logs."""
    if isinstance(e, socket.gaierror):
        return f"dial tcp: lookup {ep.host}: {e.strerror}"
    if e.errno:
        return f"dial tcp {ep.address}: connect: {_go_errno_text(e)}"
    return f"dial tcp {ep.address}: {e}"


# --- choosing an endpoint --------------------------------------------------------------------


class RoundRobin:
    """etcd's endpoint choice without SRV priorities: the next endpoint in order on every
    pick, skipping inactive ones; None when all are inactive. The pick counter moves past the
    skipped ones too, as etcd's does."""

    def __init__(self, count: int) -> None:
        assert count > 0
        self._inactive = [False] * count
        self._pick_count = 0

    def pick(self) -> int | None:
        n = len(self._inactive)
        for _ in range(n):
            i = self._pick_count % n
            self._pick_count += 1
            if not self._inactive[i]:
                return i
        return None

    def inactivate(self, i: int) -> None:
        self._inactive[i] = True

    def activate(self, i: int) -> None:
        self._inactive[i] = False

    def inactive(self) -> list[int]:
        return [i for i, off in enumerate(self._inactive) if off]


# --- the proxy -------------------------------------------------------------------------------


class TcpProxy:
    """Accepts on ``sock`` and forwards each connection to an endpoint (module docstring)."""

    def __init__(
        self, log: Logger, sock: socket.socket, endpoints: Sequence[Endpoint], retry_delay_s: float
    ) -> None:
        self._log = log
        self._sock = sock
        self._endpoints = list(endpoints)
        self._interval_s = retry_delay_s if retry_delay_s != 0 else _RETRY_DELAY_WHEN_ZERO_S
        self._picker = RoundRobin(len(self._endpoints))
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        self._log.info(
            "ready to proxy client requests", endpoints=[ep.address for ep in self._endpoints]
        )
        server = await asyncio.start_server(self._serve, sock=self._sock)
        async with server:
            self._spawn(self._monitor())
            await server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while upstream is None:
            i = self._picker.pick()
            if i is None:
                break
            ep = self._endpoints[i]
            try:
                upstream = await asyncio.open_connection(ep.host, ep.port)
            except OSError as e:
                self._picker.inactivate(i)
                self._log.warn(
                    "deactivated endpoint",
                    address=ep.address,
                    interval=go_duration(self._interval_s),
                    error=_dial_error(ep, e),
                )
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (up_writer, writer):
                w.close()
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(max(self._interval_s, 0.0))
            for i in self._picker.inactive():
                self._spawn(self._try_reactivate(i))
            if self._interval_s < 0:  # etcd checks without pause; let the dials run first
                await asyncio.sleep(0.01)

    async def _try_reactivate(self, i: int) -> None:
        ep = self._endpoints[i]
        try:
            _, w = await asyncio.open_connection(ep.host, ep.port)
        except OSError as e:
            self._log.warn(
                "failed to activate endpoint (stay inactive for another interval)",
                address=ep.address,
                interval=go_duration(self._interval_s),
                error=_dial_error(ep, e),
            )
            return
        w.close()
        self._picker.activate(i)
        self._log.info("activated", address=ep.address)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copies until end of file or an error on either side; the caller then closes both."""
    with contextlib.suppress(OSError):
        while True:
            data = await src.read(_PUMP_CHUNK_BYTES)
            if not data:
                return
            dst.write(data)
            await dst.drain()


def _notify_systemd(log: Logger) -> None:
    """etcd's notifySystemd: READY=1 on $NOTIFY_SOCKET when set (nothing to do otherwise)."""
    log.info("notifying init daemon")
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path:
        address = "\0" + path[1:] if path.startswith("@") else path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"READY=1", address)
        except OSError as e:
            log.error("failed to notify systemd for readiness", error=str(e))
            return
    log.info("successfully notified init daemon")


# --- the program -----------------------------------------------------------------------------


def _flag_error(message: str, usage: str) -> int:
    sys.stderr.write(f"Error: {message}\n{usage}\n{message}")
    return 1


def main(args: Sequence[str], argv0: str = "petcd") -> int:
    """``petcd gateway ...`` (``args`` after ``gateway``); returns the exit code."""
    command, rest = _find_command(args)
    if command == "gateway":
        try:
            _parse_gateway_flags(rest)
        except GatewayFlagError as e:
            return _flag_error(str(e), _GATEWAY_USAGE)
        sys.stdout.write(f"{_GATEWAY_SHORT}\n\n{_GATEWAY_USAGE}")
        return 0
    try:
        opts = parse_start_flags(rest)
    except GatewayFlagError as e:
        return _flag_error(str(e), _START_USAGE)
    if opts.help:
        sys.stdout.write(f"{_START_SHORT}\n\n{_START_USAGE}")
        return 0
    log = Logger("info")
    log.info("Running: ", args=[argv0, "gateway", *args])
    try:
        endpoints = resolve_endpoints(opts, discover_endpoints(opts, log))
        sock = listen(opts.listen_addr)
    except GatewayStartError as e:
        (sys.stderr if e.stream == "stderr" else sys.stdout).write(e.text)
        return 1
    _notify_systemd(log)
    # As a Go program: SIGINT and SIGTERM end the process at once, by the signal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    runner(TcpProxy(log, sock, endpoints, opts.retry_delay_s).run())
    return 0
