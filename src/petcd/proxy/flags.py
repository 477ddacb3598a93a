"""The command line of ``petcd grpc-proxy``: etcd 3.5's cobra tree, flags and texts.

Theory of operation
-------------------
``find_command`` does cobra's lookup below ``grpc-proxy`` (``start`` or the parent itself);
``parse_start_flags`` is pflag's parse of ``start``'s flags into ``StartOptions``, with etcd's
defaults and pflag's error texts (``unknown flag: --x``, ``invalid argument "x" for "--n"
flag: strconv.ParseInt: parsing "x": invalid syntax`` ...). The help texts are etcd 3.5.17's,
with the program named ``petcd``. Nothing here opens a socket or reads a file.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from petcd.server.config import parse_duration_seconds
from petcd.server.gateway import _duration_problem, find_subcommand, parse_flags
from petcd.server.gateway import check_parent_flags as gateway_parent_flags

_KIB = 1024
DEFAULT_MAX_SEND_BYTES = 3 * _KIB * _KIB // 2  # etcd: 1.5 MiB
DEFAULT_MAX_RECV_BYTES = 2**31 - 1  # etcd: math.MaxInt32
DEFAULT_MAX_CONCURRENT_STREAMS = 2**32 - 1  # etcd: math.MaxUint32

PARENT_SHORT = "grpc-proxy related command"
PARENT_USAGE = """\
Usage:
  petcd grpc-proxy [command]

Available Commands:
  start       start the grpc proxy

Flags:
  -h, --help   help for grpc-proxy

Use "petcd grpc-proxy [command] --help" for more information about a command.
"""

START_SHORT = "start the grpc proxy"


class Kind(Enum):
    STRING = "string"
    BOOL = ""
    STRINGS = "strings"
    DURATION = "duration"
    INT = "int"
    UINT = "uint"
    UINT32 = "uint32"


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    usage: str
    default_shown: str = ""  # pflag's " (default ...)" text; "" when the default is zero


_FLAGS = (
    Flag(
        "advertise-client-url",
        Kind.STRING,
        "advertise address to register (must be reachable by client)",
        '"127.0.0.1:23790"',
    ),
    Flag("auto-tls", Kind.BOOL, "proxy TLS using generated certificates"),
    Flag(
        "cacert",
        Kind.STRING,
        "verify certificates of TLS-enabled secure etcd servers using this CA bundle",
    ),
    Flag(
        "cert",
        Kind.STRING,
        "identify secure connections with etcd servers using this TLS certificate file",
    ),
    Flag(
        "cert-file",
        Kind.STRING,
        "identify secure connections to the proxy using this TLS certificate file",
    ),
    Flag("client-crl-file", Kind.STRING, "proxy client certificate revocation list file."),
    Flag("data-dir", Kind.STRING, "Data directory for persistent data", '"default.proxy"'),
    Flag("debug", Kind.BOOL, "Enable debug-level logging for grpc-proxy."),
    Flag(
        "dial-keepalive-time",
        Kind.DURATION,
        "keepalive time for client(grpc-proxy) connections (default 0, disable).",
    ),
    Flag(
        "dial-keepalive-timeout",
        Kind.DURATION,
        "keepalive timeout for client(grpc-proxy) connections (default 20s).",
        "20s",
    ),
    Flag(
        "discovery-srv",
        Kind.STRING,
        "domain name to query for SRV records describing cluster endpoints",
    ),
    Flag("discovery-srv-name", Kind.STRING, "service name to query when using DNS discovery"),
    Flag(
        "enable-pprof",
        Kind.BOOL,
        'Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"',
    ),
    Flag("endpoints", Kind.STRINGS, "comma separated etcd cluster endpoints", "[127.0.0.1:2379]"),
    Flag(
        "endpoints-auto-sync-interval",
        Kind.DURATION,
        "etcd endpoints auto sync interval (disabled by default)",
    ),
    Flag(
        "experimental-leasing-prefix",
        Kind.STRING,
        "leasing metadata prefix for disconnected linearized reads.",
    ),
    Flag(
        "experimental-serializable-ordering",
        Kind.BOOL,
        "Ensure serializable reads have monotonically increasing store revisions across endpoints.",
    ),
    Flag(
        "grpc-keepalive-interval",
        Kind.DURATION,
        "Frequency duration of server-to-client ping to check if a connection is alive "
        "(0 to disable).",
        "2h0m0s",
    ),
    Flag(
        "grpc-keepalive-min-time",
        Kind.DURATION,
        "Minimum interval duration that a client should wait before pinging proxy.",
        "5s",
    ),
    Flag(
        "grpc-keepalive-timeout",
        Kind.DURATION,
        "Additional duration of wait before closing a non-responsive connection (0 to disable).",
        "20s",
    ),
    Flag("help", Kind.BOOL, "help for start"),
    Flag("insecure-discovery", Kind.BOOL, "accept insecure SRV records"),
    Flag(
        "insecure-skip-tls-verify",
        Kind.BOOL,
        "skip authentication of etcd server TLS certificates (CAUTION: this option should be "
        "enabled only for testing purposes)",
    ),
    Flag(
        "key",
        Kind.STRING,
        "identify secure connections with etcd servers using this TLS key file",
    ),
    Flag(
        "key-file",
        Kind.STRING,
        "identify secure connections to the proxy using this TLS key file",
    ),
    Flag("listen-addr", Kind.STRING, "listen address", '"127.0.0.1:23790"'),
    Flag(
        "listen-cipher-suites",
        Kind.STRINGS,
        "Comma-separated list of supported TLS cipher suites between client/proxy (empty will "
        "be auto-populated by Go).",
    ),
    Flag(
        "max-concurrent-streams",
        Kind.UINT32,
        "Maximum concurrent streams that each client can open at a time.",
        str(DEFAULT_MAX_CONCURRENT_STREAMS),
    ),
    Flag(
        "max-recv-bytes",
        Kind.INT,
        "message receive limits in bytes (default value is math.MaxInt32)",
        str(DEFAULT_MAX_RECV_BYTES),
    ),
    Flag(
        "max-send-bytes",
        Kind.INT,
        "message send limits in bytes (default value is 1.5 MiB)",
        str(DEFAULT_MAX_SEND_BYTES),
    ),
    Flag(
        "metrics-addr",
        Kind.STRING,
        "listen for endpoint /metrics requests on an additional interface",
    ),
    Flag("namespace", Kind.STRING, "string to prefix to all keys for namespacing requests"),
    Flag(
        "permit-without-stream",
        Kind.BOOL,
        "Enable client(grpc-proxy) to send keepalive pings even with no active RPCs.",
    ),
    Flag(
        "resolver-prefix",
        Kind.STRING,
        "prefix to use for registering proxy (must be shared with other grpc-proxy members)",
    ),
    Flag(
        "resolver-ttl",
        Kind.INT,
        "specify TTL, in seconds, when registering proxy endpoints",
    ),
    Flag(
        "self-signed-cert-validity",
        Kind.UINT,
        "The validity period of the proxy certificates, unit is year",
        "1",
    ),
    Flag(
        "trusted-ca-file",
        Kind.STRING,
        "verify certificates of TLS-enabled secure proxy using this CA bundle",
    ),
)
FLAGS = {f.name: f for f in _FLAGS}
_IS_BOOL = {name: flag.kind is Kind.BOOL for name, flag in FLAGS.items()}  # for parse_flags


def _start_usage() -> str:
    lefts = []
    for f in _FLAGS:
        head = "  -h, --help" if f.name == "help" else f"      --{f.name}"
        lefts.append(f"{head} {f.kind.value}" if f.kind.value else head)
    width = max(len(s) for s in lefts)
    lines = ["Usage:", "  petcd grpc-proxy start [flags]", "", "Flags:"]
    for f, left in zip(_FLAGS, lefts, strict=True):
        text = f.usage + (f" (default {f.default_shown})" if f.default_shown else "")
        lines.append(f"{left.ljust(width)}   {text}")
    return "\n".join(lines) + "\n"


START_USAGE = _start_usage()


class ProxyFlagError(Exception):
    """A flag cobra/pflag refuses; the text is theirs."""


@dataclass(slots=True)
class StartOptions:
    """``grpc-proxy start``'s flags, with etcd 3.5's defaults."""

    listen_addr: str = "127.0.0.1:23790"
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    metrics_addr: str = ""
    insecure_discovery: bool = False
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    endpoints_auto_sync_interval_s: float = 0.0
    dial_keepalive_time_s: float = 0.0
    dial_keepalive_timeout_s: float = 20.0
    permit_without_stream: bool = False
    advertise_client_url: str = "127.0.0.1:23790"
    resolver_prefix: str = ""
    resolver_ttl: int = 0
    namespace: str = ""
    enable_pprof: bool = False
    data_dir: str = "default.proxy"
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    max_recv_bytes: int = DEFAULT_MAX_RECV_BYTES
    grpc_keepalive_min_time_s: float = 5.0
    grpc_keepalive_interval_s: float = 7200.0
    grpc_keepalive_timeout_s: float = 20.0
    cert: str = ""
    key: str = ""
    cacert: str = ""
    insecure_skip_tls_verify: bool = False
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    listen_cipher_suites: list[str] = field(default_factory=list)
    auto_tls: bool = False
    client_crl_file: str = ""
    self_signed_cert_validity: int = 1
    experimental_serializable_ordering: bool = False
    experimental_leasing_prefix: str = ""
    debug: bool = False
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    help: bool = False
    given: set[str] = field(default_factory=set)  # the flags set on the command line


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _invalid(name: str, value: str, why: str) -> ProxyFlagError:
    return ProxyFlagError(f"invalid argument {_q(value)} for {_q('--' + name)} flag: {why}")


def _go_int(name: str, value: str, func: str, lo: int, hi: int) -> int:
    """strconv.ParseInt/ParseUint with base 0 (``0x``, ``0o``, ``0b`` prefixes, ``_``)."""
    text = value
    try:
        n = int(text, 0) if text.strip() == text and "_" not in text.strip("_") else None
    except ValueError:
        n = None
    if n is None or (func == "ParseUint" and text[:1] in "+-"):
        raise _invalid(name, value, f"strconv.{func}: parsing {_q(value)}: invalid syntax")
    if not lo <= n <= hi:
        raise _invalid(name, value, f"strconv.{func}: parsing {_q(value)}: value out of range")
    return n


_GO_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def _set(opts: StartOptions, name: str, value: str) -> None:
    kind = FLAGS[name].kind
    attr = name.replace("-", "_")
    parsed: object
    if kind is Kind.STRING:
        parsed = value
    elif kind is Kind.BOOL:
        if value not in _GO_BOOL:
            raise _invalid(name, value, f"strconv.ParseBool: parsing {_q(value)}: invalid syntax")
        parsed = _GO_BOOL[value]
    elif kind is Kind.STRINGS:
        try:
            items = next(csv.reader([value], strict=True)) if value else []
        except csv.Error as e:
            raise _invalid(name, value, str(e)) from None
        # pflag: the first use replaces the default, later ones append
        parsed = [*getattr(opts, attr), *items] if name in opts.given else items
    elif kind is Kind.DURATION:
        try:
            parsed = parse_duration_seconds(value)
        except ValueError:
            raise _invalid(name, value, f"time: {_duration_problem(value)}") from None
        attr += "_s"
    elif kind is Kind.INT:
        parsed = _go_int(name, value, "ParseInt", -(2**63), 2**63 - 1)
    elif kind is Kind.UINT:
        parsed = _go_int(name, value, "ParseUint", 0, 2**64 - 1)
    else:
        parsed = _go_int(name, value, "ParseUint", 0, 2**32 - 1)
    setattr(opts, attr, parsed)
    opts.given.add(name)


def parse_start_flags(args: Sequence[str]) -> StartOptions:
    """pflag's parse: flags interspersed with (ignored) arguments, ``--name=value`` or
    ``--name value``, booleans bare or ``=value``, ``--`` ends the flags."""
    opts = StartOptions()

    def set_help() -> None:
        opts.help = True

    parse_flags(args, _IS_BOOL, functools.partial(_set, opts), set_help, ProxyFlagError)
    return opts


def find_command(args: Sequence[str]) -> tuple[str, list[str]]:
    """cobra's lookup below ``grpc-proxy``: ("start", the other args) or ("grpc-proxy", args)
    (the gateway's, ``petcd.server.gateway.find_subcommand``)."""
    return find_subcommand(args, "grpc-proxy")


def check_parent_flags(args: Sequence[str]) -> None:
    """``grpc-proxy``'s own flags: only ``-h/--help``."""
    gateway_parent_flags(args, ProxyFlagError)
