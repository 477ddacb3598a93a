"""The member's configuration: etcd's flags, ``ETCD_*`` environment variables and config file.

Theory of operation
-------------------
``parse(argv, environ)`` turns a command line and an environment into a ``Parsed``: what to do
(run, print help, print the version), the validated ``Config`` and the warnings to log once the
logger exists. It follows etcd 3.5 (``etcdmain/config.go``, ``pkg/flags``):

- Go's flag syntax: ``-flag value``, ``--flag value``, ``--flag=value``; a boolean flag takes no
  separate value (``--x`` is true, ``--x=false`` clears it); ``--`` ends the flags; the first
  argument that is not a flag ends parsing and is reported as ``'<arg>' is not a valid flag``.
  The last occurrence of a flag wins.
- An unknown flag or a malformed value is a ``FlagError`` (etcd prints the message and the
  usage, and exits with 2). Anything else wrong is a ``ConfigError`` (exit 1).
- Every flag not given on the command line is read from ``ETCD_<NAME>`` (dashes become
  underscores). A variable shadowed by a flag, and an ``ETCD_*`` variable that names no flag,
  give a warning (etcd 3.5 warns; 3.4 refused the first).
- ``--config-file`` (or ``ETCD_CONFIG_FILE``) names a YAML file with etcd's keys; when it is
  given, every other flag and environment variable is ignored, as etcd documents. Unknown keys
  are ignored, as etcd's YAML decoder does.

Flags for features petcd does not have yet (``Support.DEFAULT_ONLY`` in ``petcd.server.flags``)
are rejected with ``UnsupportedFeatureError`` unless left at their default.

This module reads the config file it is given and nothing else; it never touches the data dir.
"""

from __future__ import annotations

import enum
import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from petcd.server.errors import ConfigError, FlagError, UnsupportedFeatureError
from petcd.server.flags import FLAGS, FLAGS_BY_NAME, FlagSpec, Kind, Support
from petcd.server.hostport import join_host_port
from petcd.server.tls import check_files, cipher_suites, tls_versions

# etcd: embed.maxElectionMs
ELECTION_TIMEOUT_MS_MAX = 50000
# etcd: the quota used when --quota-backend-bytes is 0 (DefaultQuotaBytes, 2 GiB).
QUOTA_BACKEND_BYTES_DEFAULT = 2 * 1024 * 1024 * 1024
# Environment variables etcd itself reads that name no flag.
_ENV_KNOWN_NON_FLAGS = frozenset({"ETCD_UNSUPPORTED_ARCH"})

_LOG_LEVELS = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")
CLIENT_TRANSPORTS = ("grpcio", "native")


class Action(enum.Enum):
    RUN = "run"
    HELP = "help"
    VERSION = "version"


class CompactionMode(enum.Enum):
    PERIODIC = "periodic"
    REVISION = "revision"


@dataclass(frozen=True, slots=True)
class Url:
    """One ``scheme://host:port`` URL of a listener or an advertised address.

    A ``unix://`` or ``unixs://`` URL names a Unix socket file: ``socket`` is what follows
    ``//`` as written (``unix://etcd.unix:1`` is the file ``etcd.unix:1`` in the working
    directory, ``unix:///run/etcd.sock`` an absolute path, as etcd takes them); ``host`` and
    ``port`` are then its host name (the TLS server name of ``unixs``) and port, if any.
    """

    scheme: str
    host: str
    port: int
    socket: str = ""

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.scheme}://{self.socket}"
        return f"{self.scheme}://{join_host_port(self.host, self.port)}"

    @property
    def is_unix(self) -> bool:
        return self.scheme in ("unix", "unixs")

    @property
    def secure(self) -> bool:
        """Served with TLS: ``https`` and ``unixs``."""
        return self.scheme in ("https", "unixs")

    @property
    def listen_address(self) -> tuple[str, int] | str:
        """What a listener binds: (host, port), or a Unix socket's path."""
        return self.socket if self.is_unix else (self.bind_host, self.port)

    @property
    def bind_host(self) -> str:
        """The address to bind: ``localhost`` binds the IPv4 loopback, as tests and etcd expect."""
        return "127.0.0.1" if self.host == "localhost" else self.host


@dataclass(frozen=True, slots=True)
class Config:
    """A validated member configuration; field names are etcd's flag names in snake case."""

    name: str = "default"
    data_dir: str = "default.etcd"
    wal_dir: str = ""
    snapshot_count: int = 100000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    initial_election_tick_advance: bool = True
    listen_peer_urls: tuple[Url, ...] = (Url("http", "localhost", 2380),)
    listen_client_urls: tuple[Url, ...] = (Url("http", "localhost", 2379),)
    listen_client_http_urls: tuple[Url, ...] = ()
    listen_metrics_urls: tuple[Url, ...] = ()
    advertise_client_urls: tuple[Url, ...] = (Url("http", "localhost", 2379),)
    initial_advertise_peer_urls: tuple[Url, ...] = (Url("http", "localhost", 2380),)
    initial_cluster: tuple[tuple[str, tuple[Url, ...]], ...] = (
        ("default", (Url("http", "localhost", 2380),)),
    )
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    # --discovery (etcd's v2 discovery protocol, petcd.server.discovery): the initial cluster
    # is who registered under this URL, and the URL is the cluster token, as etcd's.
    discovery_url: str = ""
    discovery_proxy: str = ""
    discovery_fallback: str = "proxy"
    # --discovery-srv: the initial cluster from DNS SRV records (petcd.server.srv).
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    strict_reconfig_check: bool = True
    pre_vote: bool = True
    max_snapshots: int = 5
    max_wals: int = 5
    quota_backend_bytes: int = 0
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    # etcd's gRPC HTTP/2 streams per connection; petcd applies it to the JSON gateway's calls
    # in flight (petcd.http.gateway), where etcd's own gateway connection feels it.
    max_concurrent_streams: int = 2**32 - 1
    auto_compaction_mode: CompactionMode = CompactionMode.PERIODIC
    auto_compaction_retention: str = "0"
    logger: str = "zap"
    log_outputs: tuple[str, ...] = ("default",)
    log_level: str = "info"
    experimental_initial_corrupt_check: bool = False
    experimental_corrupt_check_time_s: float = 0.0  # 0: no periodic corruption check
    experimental_compact_hash_check_enabled: bool = False
    experimental_compact_hash_check_time_s: float = 60.0
    experimental_compaction_batch_limit: int = 1000  # 0: the default, as etcd
    experimental_compaction_sleep_interval_s: float = 0.01  # 0: the default, as etcd
    enable_grpc_gateway: bool = True
    enable_v2: bool = False  # etcd's v2 API (docs/enhancements/0014-v2-api.md)
    v2_deprecation: str = "not-yet"  # etcd's --v2-deprecation stage
    raft_write_timeout_s: float = 5.0  # as given: the member raises it to RAFT_TIMEOUT_MIN_S
    experimental_snapshot_catchup_entries: int = 5000
    experimental_enable_lease_checkpoint: bool = False
    experimental_watch_progress_notify_interval_s: float = 600.0
    experimental_enable_lease_checkpoint_persist: bool = False
    unsafe_no_fsync: bool = False
    # --force-new-cluster: a restarted member drops every other member (etcd's
    # restartAsStandaloneNode), for a cluster that lost its quorum for good.
    force_new_cluster: bool = False
    config_file: str = ""
    client_transport: str = "native"  # petcd's own: the gRPC server of the client listeners
    # Client TLS, as given (petcd.server.tls resolves them at start).
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    auto_tls: bool = False
    self_signed_cert_validity: int = 1
    tls_versions: tuple[str, ...] = ("1.2", "1.3")
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    peer_auto_tls: bool = False
    # --client-cert-file / --client-key-file: what this member presents when it connects to
    # client URLs (its peers' HashKV); "" = the served certificate. --peer-client-*: when
    # it dials its peers; "" = --peer-cert-file.
    client_cert_file: str = ""
    client_key_file: str = ""
    peer_client_cert_file: str = ""
    peer_client_key_file: str = ""
    client_crl_file: str = ""
    peer_crl_file: str = ""
    experimental_bootstrap_defrag_threshold_megabytes: int = 0
    cipher_suites: tuple[str, ...] = ()
    client_cert_allowed_hostname: tuple[str, ...] = ()
    cors: tuple[str, ...] = ("*",)  # origins; "*" (or none) allows all (petcd.http.server)
    host_whitelist: tuple[str, ...] = ("*",)  # Host names of plain HTTP requests; "*": all
    peer_cert_allowed_cn: tuple[str, ...] = ()
    peer_cert_allowed_hostname: tuple[str, ...] = ()
    auth_token: str = "simple"  # as given; petcd.auth.token_provider reads it
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    # Flags petcd accepted but ignores, with their values (logged at start).
    ignored: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("--name must not be empty")
        if self.heartbeat_interval_ms <= 0:
            raise ConfigError(
                f"--heartbeat-interval must be >0 (set to {self.heartbeat_interval_ms}ms)"
            )
        if self.election_timeout_ms <= 0:
            raise ConfigError(
                f"--election-timeout must be >0 (set to {self.election_timeout_ms}ms)"
            )
        if 5 * self.heartbeat_interval_ms > self.election_timeout_ms:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] should be at least as 5 times "
                f"as --heartbeat-interval[{self.heartbeat_interval_ms}ms]"
            )
        if self.election_timeout_ms > ELECTION_TIMEOUT_MS_MAX:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] is too long, and should be set "
                f"less than {ELECTION_TIMEOUT_MS_MAX}ms"
            )
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError(
                f'invalid value "{self.initial_cluster_state}" for flag -initial-cluster-state: '
                'valid values are "new", "existing"'
            )
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(
                f'invalid value "{self.log_level}" for flag -log-level: '
                "valid values are debug, info, warn, error, dpanic, panic, fatal"
            )
        if self.client_transport not in CLIENT_TRANSPORTS:
            raise ConfigError(
                f'invalid value "{self.client_transport}" for flag -client-transport: '
                'valid values are "grpcio", "native"'
            )
        if self.logger != "zap":
            raise ConfigError(f"unknown logger option {self.logger!r} (petcd supports 'zap')")
        for target in self.log_outputs:
            if target not in ("default", "stderr", "stdout") and not target.startswith("/"):
                raise ConfigError(f"unknown log output {target!r} (stderr, stdout or a file path)")
        if self.max_txn_ops <= 0:
            raise ConfigError("--max-txn-ops must be >0")
        if self.max_request_bytes <= 0:
            raise ConfigError("--max-request-bytes must be >0")
        if self.snapshot_count <= 0:
            raise ConfigError("--snapshot-count must be >0")
        if self.experimental_corrupt_check_time_s < 0:
            raise ConfigError("--experimental-corrupt-check-time must be >=0")
        if self.experimental_compact_hash_check_time_s <= 0:
            # etcd's text; Go prints the duration (0 as "0s")
            t = self.experimental_compact_hash_check_time_s
            shown = "0s" if t == 0 else f"{t:g}s"
            raise ConfigError(f"--experimental-compact-hash-check-time must be >0 (set to {shown})")
        if self.experimental_compaction_batch_limit < 0:
            # etcd takes it and never finishes a compaction: refused instead.
            raise ConfigError("--experimental-compaction-batch-limit must be >=0")
        if self.experimental_compaction_sleep_interval_s < 0:
            # etcd panics (a ticker of a negative period): refused instead.
            raise ConfigError("--experimental-compaction-sleep-interval must be >=0")
        if self.experimental_watch_progress_notify_interval_s <= 0:
            raise ConfigError("--experimental-watch-progress-notify-interval must be >0")
        self._check_tls()

    @property
    def client_tls_given(self) -> bool:
        """etcd's ``!ClientTLSInfo.Empty()`` after ``--auto-tls``: a certificate to serve."""
        return bool(self.cert_file) or self.auto_tls

    def _check_tls(self) -> None:
        for cert, key in (
            (self.client_cert_file, self.client_key_file),
            (self.peer_client_cert_file, self.peer_client_key_file),
        ):
            if bool(cert) != bool(key):  # etcd's text
                raise ConfigError(
                    "ClientKeyFile and ClientCertFile must both be present or both absent: "
                    f"key: {key}, cert: {cert}]"
                )
        check_files(
            self.cert_file,
            self.key_file,
            self.trusted_ca_file,
            self.client_cert_auth,
            crl_file=self.client_crl_file,
        )
        check_files(
            self.peer_cert_file,
            self.peer_key_file,
            self.peer_trusted_ca_file,
            self.peer_client_cert_auth,
            peer=True,
            crl_file=self.peer_crl_file,
        )
        for u in self.listen_peer_urls:
            if u.secure and not (self.peer_cert_file or self.peer_auto_tls):
                address = u.socket if u.is_unix else join_host_port(u.host, u.port)
                raise ConfigError(
                    f"cannot listen on TLS for {address}: KeyFile and CertFile are not presented"
                )
        for u in [*self.listen_client_urls, *self.listen_client_http_urls]:
            if u.secure and not self.client_tls_given:
                raise ConfigError(
                    f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
                    f"{u} with HTTPS scheme"
                )
        for u in self.listen_metrics_urls:
            if u.secure and not self.client_tls_given:
                raise ConfigError(
                    "client TLS key/cert (--cert-file, --key-file) must be provided for metrics "
                    "secure url"
                )
        for flag, urls in (
            ("--listen-client-http-urls", self.listen_client_http_urls),
            ("--listen-metrics-urls", self.listen_metrics_urls),
        ):
            addresses, _, plain_too = merge_schemes(
                [u.listen_address for u in urls], [u.secure for u in urls]
            )
            both = [a for a, p in zip(addresses, plain_too, strict=True) if p]
            if both:
                shown = both[0] if isinstance(both[0], str) else f"{both[0][0]}:{both[0][1]}"
                raise ConfigError(
                    f"{flag}: petcd cannot serve both http and https on one port ({shown}); "
                    "give them different ports (--listen-client-urls can share one)"
                )
        if not self.listen_client_urls:
            raise ConfigError("--listen-client-urls must not be empty")
        names = [n for n, _ in self.initial_cluster]
        if len(set(names)) != len(names):
            raise ConfigError(f"--initial-cluster has a duplicate member name: {names}")
        _parse_retention(self.auto_compaction_mode, self.auto_compaction_retention)
        if self.initial_cluster_state == "new":
            mine = dict(self.initial_cluster).get(self.name)
            if mine is None:
                raise ConfigError(
                    f"couldn't find local name {self.name!r} in the initial cluster configuration"
                )
            if sorted(map(str, mine)) != sorted(map(str, self.initial_advertise_peer_urls)):
                raise ConfigError(
                    f"--initial-cluster has {self.name}={','.join(map(str, mine))} but missing "
                    "from --initial-advertise-peer-urls="
                    f"{','.join(map(str, self.initial_advertise_peer_urls))}"
                )

    # --- derived values ----------------------------------------------------------------------

    @property
    def member_dir(self) -> str:
        return f"{self.data_dir}/member"

    @property
    def wal_path(self) -> str:
        return self.wal_dir if self.wal_dir else f"{self.member_dir}/wal"

    @property
    def snap_path(self) -> str:
        return f"{self.member_dir}/snap"

    @property
    def backend_path(self) -> str:
        return f"{self.member_dir}/snap/db"

    @property
    def election_ticks(self) -> int:
        return self.election_timeout_ms // self.heartbeat_interval_ms

    @property
    def quota_backend_bytes_effective(self) -> int:
        """The backend quota in bytes (etcd: 0 means the 2 GiB default, <0 means none)."""
        if self.quota_backend_bytes == 0:
            return QUOTA_BACKEND_BYTES_DEFAULT
        return self.quota_backend_bytes if self.quota_backend_bytes > 0 else 0

    @property
    def auto_compaction_retention_seconds(self) -> float:
        """Periodic mode: the retention window in seconds (0: disabled)."""
        if self.auto_compaction_mode is not CompactionMode.PERIODIC:
            return 0.0
        return _parse_retention(self.auto_compaction_mode, self.auto_compaction_retention)

    @property
    def auto_compaction_retention_revisions(self) -> int:
        """Revision mode: how many revisions to keep (0: disabled)."""
        if self.auto_compaction_mode is not CompactionMode.REVISION:
            return 0
        return int(_parse_retention(self.auto_compaction_mode, self.auto_compaction_retention))

    @property
    def cluster_members(self) -> dict[str, tuple[Url, ...]]:
        return dict(self.initial_cluster)


@dataclass(frozen=True, slots=True)
class Parsed:
    action: Action
    config: Config | None
    warnings: tuple[str, ...] = ()


# --- value parsing -------------------------------------------------------------------------

_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration_seconds(text: str) -> float:
    """Go's ``time.ParseDuration``, in seconds: ``"1h30m"`` -> 5400.0; raises ``ValueError``."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS_S[m.group(2)]
        pos = m.end()
    return sign * total


def _parse_retention(mode: CompactionMode, retention: str) -> float:
    """etcd's parseCompactionRetention: an integer is hours (periodic) or revisions."""
    try:
        n = int(retention)
    except ValueError:
        n = -1
    if n >= 0:
        return float(n) * 3600.0 if mode is CompactionMode.PERIODIC else float(n)
    if mode is CompactionMode.REVISION:
        raise ConfigError(
            f"error parsing CompactionRetention: invalid revision count {retention!r}"
        )
    try:
        seconds = parse_duration_seconds(retention)
    except ValueError as e:
        raise ConfigError(f"error parsing CompactionRetention: {e}") from None
    if seconds < 0:
        raise ConfigError(f"error parsing CompactionRetention: negative {retention!r}")
    return seconds


def parse_url(text: str) -> Url:
    """One listener/advertised URL, checked as etcd's ``types.NewURLs`` does."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https", "unix", "unixs"):
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme in ("unix", "unixs"):
        # etcd checks nothing more: the rest is the socket file's path.
        path = parts.netloc + parts.path
        if not path or not text.strip().startswith(f"{parts.scheme}://"):
            raise ValueError(f"URL must name a unix socket file: {text}")
        return Url(parts.scheme, parts.hostname or "", port or 0, path)
    if parts.hostname is None or port is None:
        raise ValueError(f'URL address does not have the form "host:port": {text}')
    if parts.path not in ("", "/"):
        raise ValueError(f"URL must not contain a path: {text}")
    return Url(parts.scheme, parts.hostname, port)


def merge_schemes(
    listeners: Sequence[tuple[str, int] | str], secure: Sequence[bool]
) -> tuple[list[tuple[str, int] | str], list[bool], list[bool]]:
    """One listener per address: etcd serves an ``http://`` and an ``https://`` client URL of
    the same host and port (or a ``unix://`` and a ``unixs://`` one of the same path) on one
    socket, telling a client's TLS from its plain connections by their first bytes. Returns
    the distinct addresses in first-seen order, whether each serves TLS, and whether a TLS
    one serves plain connections too."""
    merged: dict[tuple[str, int] | str, set[bool]] = {}
    for address, is_secure in zip(listeners, secure, strict=True):
        merged.setdefault(address, set()).add(is_secure)
    return (
        list(merged),
        [True in schemes for schemes in merged.values()],
        [len(schemes) == 2 for schemes in merged.values()],
    )


def parse_urls(text: str) -> tuple[Url, ...]:
    if text.strip() == "":
        return ()
    return tuple(parse_url(u) for u in text.split(","))


def parse_initial_cluster(text: str) -> tuple[tuple[str, tuple[Url, ...]], ...]:
    """``"a=http://h1:2380,b=http://h2:2380,a=http://h1:2381"`` -> ((a, (u1, u3)), (b, (u2,)))."""
    members: dict[str, list[Url]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"error parsing --initial-cluster: malformed entry {item!r}")
        members.setdefault(name.strip(), []).append(parse_url(url))
    return tuple((n, tuple(us)) for n, us in members.items())


_GO_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_GO_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _parse_bool(text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError("parse error")


def _uint32(text: str) -> int:
    """A Uint32 flag's value (etcd's flags.Uint32Value: strconv.ParseUint(text, 0, 32))."""
    if text == "math.MaxUint32":
        return 2**32 - 1
    m = re.fullmatch(r"0[xX]([0-9a-fA-F]+)|0[bB]([01]+)|0[oO]?([0-7]+)|([1-9][0-9]*|0)", text)
    if m is None:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    hexadecimal, binary, octal, decimal = m.groups()
    if hexadecimal is not None:
        value = int(hexadecimal, 16)
    elif binary is not None:
        value = int(binary, 2)
    elif octal is not None:
        value = int(octal, 8)
    else:
        value = int(decimal)
    if value > 2**32 - 1:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def _check_value(spec: FlagSpec, text: str) -> None:
    """Raise ``ValueError`` (with Go's wording) when ``text`` is not a valid ``spec`` value."""
    kind = spec.kind
    if kind is Kind.BOOL:
        _parse_bool(text)
    elif kind in (Kind.INT, Kind.UINT):
        if spec.default == "math.MaxUint32":
            _uint32(text)
            return
        if not re.fullmatch(r"[+-]?[0-9]+" if kind is Kind.INT else r"\+?[0-9]+", text):
            raise ValueError("parse error")
    elif kind is Kind.DURATION:
        if text != "":
            parse_duration_seconds(text)
    elif kind is Kind.URLS:
        parse_urls(text)
    elif spec.name == "cors" and text != "*":
        parse_urls(text)  # etcd: URLs with host:port, or exactly "*"
    elif spec.name == "discovery-fallback" and text not in ("exit", "proxy"):
        raise ValueError("invalid value")


# petcd's own flags (PETCD_* variables), as opposed to etcd's.
_PETCD_FLAGS = tuple(s.name for s in FLAGS if s.env_name.startswith("PETCD_"))


# --- command line --------------------------------------------------------------------------


def _split_argv(argv: Sequence[str]) -> tuple[dict[str, str], bool, bool]:
    """Go ``flag`` parsing: returns (values set, help requested, version requested)."""
    values: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            if i < len(argv):
                raise ConfigError(f"'{argv[i]}' is not a valid flag")
            break
        if len(arg) < 2 or arg[0] != "-":
            raise ConfigError(f"'{arg}' is not a valid flag")
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        name, has_value, value = body.partition("=")
        if name in ("h", "help"):
            return values, True, False
        if name == "version":
            if has_value and not _parse_bool(value):
                continue
            return values, False, True
        spec = FLAGS_BY_NAME.get(name)
        if spec is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        if spec.kind is Kind.BOOL:
            if not has_value:
                value = "true"
            try:
                _parse_bool(value)
            except ValueError:
                raise FlagError(
                    f'invalid boolean value "{value}" for -{name}: parse error'
                ) from None
        elif not has_value:
            if i >= len(argv):
                raise FlagError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        try:
            _check_value(spec, value)
        except ValueError as e:
            raise FlagError(f'invalid value "{value}" for flag -{name}: {e}') from None
        values[name] = value
    return values, False, False


def _from_environment(
    environ: Mapping[str, str], given: Mapping[str, str], warnings: list[str]
) -> dict[str, str]:
    values: dict[str, str] = {}
    env_to_spec = {spec.env_name: spec for spec in FLAGS}
    for key in sorted(environ):
        if not key.startswith("ETCD_") and key not in env_to_spec:
            continue
        spec = env_to_spec.get(key)
        if spec is None:
            if key not in _ENV_KNOWN_NON_FLAGS:
                warnings.append(f"unrecognized environment variable {key}={environ[key]}")
            continue
        if spec.name in given:
            warnings.append(
                f"recognized environment variable, but unused: shadowed by corresponding flag {key}"
            )
            continue
        value = environ[key]
        try:
            _check_value(spec, value)
        except ValueError as e:
            raise ConfigError(f'invalid value "{value}" for {key}: {e}') from None
        values[spec.name] = value
    return values


def _yaml_scalar_text(spec: FlagSpec, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return str(int(value))
        return str(value)
    if isinstance(value, list):
        return ",".join(_yaml_scalar_text(spec, v) for v in value)
    if value is None:
        return spec.default if spec.default != "${name}.etcd" else ""
    return str(value)


def _from_config_file(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"error parsing the config file {path!r}: {e}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"the config file {path!r} is not a YAML mapping")
    values: dict[str, str] = {}
    for spec in FLAGS:
        node: object = doc
        for part in spec.config_key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue
        text = _yaml_scalar_text(spec, node)
        try:
            _check_value(spec, text)
        except ValueError as e:
            raise ConfigError(
                f"invalid value {text!r} for {spec.config_key!r} in {path!r}: {e}"
            ) from None
        values[spec.name] = text
    values["config-file"] = path
    return values


def _strings(text: str) -> tuple[str, ...]:
    """etcd's comma-separated list flags (``flags.StringsFromFlag``)."""
    return tuple(s for s in text.split(",") if s)


def _unique_strings(text: str) -> tuple[str, ...]:
    """etcd's ``--host-whitelist`` (``flags.UniqueStringsValue``): the comma-separated values
    as a set, an empty one included."""
    return tuple(dict.fromkeys(text.split(",")))


def _cors(text: str) -> tuple[str, ...]:
    """etcd's ``--cors`` (``flags.UniqueURLsWithExceptions``): exactly ``*``, or URLs with
    host:port, each kept as a client's ``Origin`` header names it (scheme://host:port)."""
    if text == "*":
        return ("*",)
    return tuple(dict.fromkeys(str(u) for u in parse_urls(text)))


def _go_strings(items: tuple[str, ...]) -> str:
    return "[" + " ".join(f'"{s}"' for s in items) + "]"


def _auth_token(option: str) -> str:
    """``--auth-token``, refused at start if it cannot be used (key files included)."""
    from petcd.auth.errors import AuthOptionsError
    from petcd.auth.tokens import token_provider

    try:
        token_provider(option, 300, parse_duration_seconds)
    except AuthOptionsError as e:
        raise ConfigError(f"--auth-token={option}: {e}") from None
    return option


def _bcrypt_cost(cost: int) -> int:
    if not 4 <= cost <= 31:
        raise ConfigError(f"invalid bcrypt-cost {cost}: valid values are between 4 and 31")
    return cost


def _build(values: Mapping[str, str], warnings: list[str]) -> Config:
    def get(name: str) -> str:
        if name in values:
            return values[name]
        return FLAGS_BY_NAME[name].default

    def get_int(name: str) -> int:
        return int(get(name))

    def get_bool(name: str) -> bool:
        return _parse_bool(get(name))

    for spec in FLAGS:
        if spec.name not in values or values[spec.name] == spec.default:
            continue
        if spec.support is Support.DEFAULT_ONLY:
            raise UnsupportedFeatureError(
                f"--{spec.name}={values[spec.name]}: petcd does not support this feature yet; "
                f"leave --{spec.name} at its default ({spec.default!r})"
            )
        if spec.support is Support.IGNORED:
            warnings.append(f"--{spec.name}={values[spec.name]} is accepted and ignored by petcd")

    name = get("name")
    data_dir = values.get("data-dir") or f"{name}.etcd"
    listen_client_urls = parse_urls(get("listen-client-urls"))
    listen_peer_urls = parse_urls(get("listen-peer-urls"))
    advertise_peer = parse_urls(get("initial-advertise-peer-urls"))
    if "listen-client-urls" in values and "advertise-client-urls" not in values:
        raise ConfigError(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        )
    discovery_url = get("discovery")
    if sum(map(bool, (discovery_url, "initial-cluster" in values, get("discovery-srv")))) > 1:
        raise ConfigError(
            "multiple discovery or bootstrap flags are set. Choose one of "
            '"initial-cluster", "discovery" or "discovery-srv"'
        )
    if "initial-cluster" in values:
        initial_cluster = parse_initial_cluster(values["initial-cluster"])
    else:
        # Also with --discovery: the member's own entry, its id from its peer URLs and the
        # discovery URL (the token), is what it registers (etcd's PeerURLsMapAndToken); with
        # --discovery-srv the member replaces it by what DNS says when it bootstraps.
        initial_cluster = ((name, advertise_peer),)
    suites = cipher_suites(get("cipher-suites"))
    cns = _strings(get("peer-cert-allowed-cn"))
    hostnames = _strings(get("peer-cert-allowed-hostname"))
    if cns and hostnames:
        raise ConfigError(
            f"AllowedCNs and AllowedHostnames are mutually exclusive (cns={_go_strings(cns)}, "
            f"hostnames={_go_strings(hostnames)})"
        )
    try:
        mode = CompactionMode(get("auto-compaction-mode"))
    except ValueError:
        raise ConfigError(
            f"unknown auto-compaction-mode {get('auto-compaction-mode')!r} "
            "(valid modes: periodic, revision)"
        ) from None
    return Config(
        name=name,
        data_dir=data_dir,
        wal_dir=get("wal-dir"),
        snapshot_count=get_int("snapshot-count"),
        heartbeat_interval_ms=get_int("heartbeat-interval"),
        election_timeout_ms=get_int("election-timeout"),
        initial_election_tick_advance=get_bool("initial-election-tick-advance"),
        listen_peer_urls=listen_peer_urls,
        listen_client_urls=listen_client_urls,
        listen_client_http_urls=parse_urls(get("listen-client-http-urls")),
        listen_metrics_urls=parse_urls(get("listen-metrics-urls")),
        advertise_client_urls=parse_urls(get("advertise-client-urls")),
        initial_advertise_peer_urls=advertise_peer,
        initial_cluster=initial_cluster,
        initial_cluster_state=get("initial-cluster-state"),
        initial_cluster_token=discovery_url or get("initial-cluster-token"),
        discovery_url=discovery_url,
        discovery_proxy=get("discovery-proxy"),
        discovery_fallback=get("discovery-fallback"),
        force_new_cluster=get_bool("force-new-cluster"),
        discovery_srv=get("discovery-srv"),
        discovery_srv_name=get("discovery-srv-name"),
        strict_reconfig_check=get_bool("strict-reconfig-check"),
        pre_vote=get_bool("pre-vote"),
        max_snapshots=get_int("max-snapshots"),
        max_wals=get_int("max-wals"),
        quota_backend_bytes=get_int("quota-backend-bytes"),
        max_txn_ops=get_int("max-txn-ops"),
        max_request_bytes=get_int("max-request-bytes"),
        max_concurrent_streams=_uint32(get("max-concurrent-streams")),
        auto_compaction_mode=mode,
        auto_compaction_retention=get("auto-compaction-retention"),
        logger=get("logger"),
        log_outputs=tuple(o.strip() for o in get("log-outputs").split(",") if o.strip()),
        log_level=get("log-level"),
        experimental_initial_corrupt_check=get_bool("experimental-initial-corrupt-check"),
        experimental_corrupt_check_time_s=parse_duration_seconds(
            get("experimental-corrupt-check-time")
        ),
        experimental_compact_hash_check_enabled=get_bool("experimental-compact-hash-check-enabled"),
        experimental_compact_hash_check_time_s=parse_duration_seconds(
            get("experimental-compact-hash-check-time")
        ),
        experimental_compaction_batch_limit=get_int("experimental-compaction-batch-limit"),
        experimental_compaction_sleep_interval_s=parse_duration_seconds(
            get("experimental-compaction-sleep-interval")
        ),
        enable_grpc_gateway=get_bool("enable-grpc-gateway"),
        enable_v2=get_bool("enable-v2"),
        v2_deprecation=get("v2-deprecation") or "not-yet",
        raft_write_timeout_s=parse_duration_seconds(get("raft-write-timeout")),
        experimental_snapshot_catchup_entries=get_int("experimental-snapshot-catchup-entries"),
        experimental_enable_lease_checkpoint=get_bool("experimental-enable-lease-checkpoint"),
        experimental_watch_progress_notify_interval_s=parse_duration_seconds(
            get("experimental-watch-progress-notify-interval")
        ),
        experimental_enable_lease_checkpoint_persist=get_bool(
            "experimental-enable-lease-checkpoint-persist"
        ),
        unsafe_no_fsync=get_bool("unsafe-no-fsync"),
        config_file=get("config-file"),
        client_transport=get("client-transport"),
        cert_file=get("cert-file"),
        key_file=get("key-file"),
        trusted_ca_file=get("trusted-ca-file"),
        client_cert_auth=get_bool("client-cert-auth"),
        auto_tls=get_bool("auto-tls"),
        self_signed_cert_validity=get_int("self-signed-cert-validity"),
        tls_versions=tls_versions(get("tls-min-version"), get("tls-max-version"), suites),
        cipher_suites=suites,
        peer_cert_file=get("peer-cert-file"),
        peer_key_file=get("peer-key-file"),
        peer_trusted_ca_file=get("peer-trusted-ca-file"),
        peer_client_cert_auth=get_bool("peer-client-cert-auth"),
        peer_auto_tls=get_bool("peer-auto-tls"),
        client_cert_file=get("client-cert-file"),
        client_key_file=get("client-key-file"),
        peer_client_cert_file=get("peer-client-cert-file"),
        peer_client_key_file=get("peer-client-key-file"),
        experimental_bootstrap_defrag_threshold_megabytes=get_int(
            "experimental-bootstrap-defrag-threshold-megabytes"
        ),
        client_crl_file=get("client-crl-file"),
        peer_crl_file=get("peer-crl-file"),
        client_cert_allowed_hostname=_strings(get("client-cert-allowed-hostname")),
        cors=_cors(get("cors")),
        host_whitelist=_unique_strings(get("host-whitelist")),
        peer_cert_allowed_cn=cns,
        peer_cert_allowed_hostname=hostnames,
        auth_token=_auth_token(get("auth-token")),
        auth_token_ttl=get_int("auth-token-ttl"),
        bcrypt_cost=_bcrypt_cost(get_int("bcrypt-cost")),
        ignored=tuple(
            (s.name, values[s.name])
            for s in FLAGS
            if s.support is Support.IGNORED and s.name in values and values[s.name] != s.default
        ),
    )


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Parsed:
    """Parse ``argv`` (without the program name) and ``environ`` the way etcd 3.5 does.

    Raises ``FlagError`` (usage error, exit 2) or ``ConfigError`` (exit 1).
    """
    given, want_help, want_version = _split_argv(argv)
    if want_help:
        return Parsed(Action.HELP, None)
    if want_version:
        return Parsed(Action.VERSION, None)
    warnings: list[str] = []
    from_env = _from_environment(environ, given, warnings)
    config_file = given.get("config-file") or from_env.get("config-file")
    if config_file:
        values = _from_config_file(config_file)
        warnings.append(f"loaded server configuration from {config_file!r}; other flags ignored")
        for name in _PETCD_FLAGS:  # petcd's own variables still apply unless the file sets them
            if name not in values and name in from_env:
                values[name] = from_env[name]
    else:
        values = {**from_env, **given}
    return Parsed(Action.RUN, _build(values, warnings), tuple(warnings))
