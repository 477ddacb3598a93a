"""The table of etcd 3.5's command-line flags, as data.

Theory of operation
-------------------
``FLAGS`` lists every flag ``etcd`` 3.5 accepts, with its name, kind, default (as ``etcd --help``
shows it), help text, help group and how far petcd supports it. ``petcd.server.config`` parses
the command line, the ``ETCD_*`` environment and the ``--config-file`` YAML against this table;
``usage()`` renders the help text from it. Nothing here performs I/O.

Support levels:

- ``SUPPORTED``: petcd honours the flag.
- ``DEFAULT_ONLY``: a feature petcd does not implement yet (TLS, discovery, proxy ...). The
  flag is accepted at its default value; any other value is rejected with a clear message.
- ``IGNORED``: a tuning knob without meaning for petcd (bbolt freelist type, pprof ...). Any
  valid value is accepted; a non-default value is logged as ignored.

The environment variable of ``--some-flag`` is ``ETCD_SOME_FLAG``; the config-file key is
``some-flag``, except for the TLS flags that etcd nests under ``client-transport-security`` and
``peer-transport-security`` (``yaml_key`` holds the dotted path).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    STRING = "string"
    INT = "int"  # signed decimal integer
    UINT = "uint"  # unsigned decimal integer
    BOOL = "bool"  # Go's flag rules: "--x" alone means true; "--x=false" to clear
    URLS = "urls"  # comma-separated URLs
    DURATION = "duration"  # Go duration string: "5s", "2h45m", "100ms"
    STRINGS = "strings"  # comma-separated strings


class Support(enum.Enum):
    SUPPORTED = "supported"
    DEFAULT_ONLY = "default-only"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class FlagSpec:
    name: str
    kind: Kind
    default: str
    help: str
    group: str
    support: Support = Support.SUPPORTED
    yaml_key: str | None = None  # None: the flag name itself
    env: str | None = None  # None: ETCD_<NAME>; petcd's own flags use PETCD_<NAME>

    @property
    def env_name(self) -> str:
        if self.env is not None:
            return self.env
        return "ETCD_" + self.name.upper().replace("-", "_")

    @property
    def config_key(self) -> str:
        return self.yaml_key if self.yaml_key is not None else self.name


S, D, IG = Support.SUPPORTED, Support.DEFAULT_ONLY, Support.IGNORED
_M, _C, _SEC, _AUTH, _MON, _LOG, _EXP, _UNSAFE = (
    "Member",
    "Clustering",
    "Security",
    "Auth",
    "Profiling and Monitoring",
    "Logging",
    "Experimental feature",
    "Unsafe feature",
)
_TRACE, _PROXY = "Experimental distributed tracing", "v2 Proxy (to be deprecated in v3.6)"
_CTS, _PTS = "client-transport-security.", "peer-transport-security."

FLAGS: tuple[FlagSpec, ...] = (
    # --- Member ----------------------------------------------------------------------------
    FlagSpec("name", Kind.STRING, "default", "Human-readable name for this member.", _M),
    FlagSpec("data-dir", Kind.STRING, "${name}.etcd", "Path to the data directory.", _M),
    FlagSpec("wal-dir", Kind.STRING, "", "Path to the dedicated wal directory.", _M),
    FlagSpec(
        "snapshot-count",
        Kind.UINT,
        "100000",
        "Number of committed transactions to trigger a snapshot to disk.",
        _M,
    ),
    FlagSpec(
        "heartbeat-interval",
        Kind.UINT,
        "100",
        "Time (in milliseconds) of a heartbeat interval.",
        _M,
    ),
    FlagSpec(
        "election-timeout",
        Kind.UINT,
        "1000",
        "Time (in milliseconds) for an election to timeout. See tuning documentation for details.",
        _M,
    ),
    FlagSpec(
        "initial-election-tick-advance",
        Kind.BOOL,
        "true",
        "Whether to fast-forward initial election ticks on boot for faster election.",
        _M,
    ),
    FlagSpec(
        "listen-peer-urls",
        Kind.URLS,
        "http://localhost:2380",
        "List of URLs to listen on for peer traffic.",
        _M,
    ),
    FlagSpec(
        "listen-client-urls",
        Kind.URLS,
        "http://localhost:2379",
        "List of URLs to listen on for client grpc traffic and http as long as "
        "--listen-client-http-urls is not specified.",
        _M,
    ),
    FlagSpec(
        "listen-client-http-urls",
        Kind.URLS,
        "",
        "List of URLs to listen on for http only client traffic. Enabling this flag removes "
        "http services from --listen-client-urls.",
        _M,
    ),
    FlagSpec(
        "max-snapshots",
        Kind.UINT,
        "5",
        "Maximum number of snapshot files to retain (0 is unlimited).",
        _M,
    ),
    FlagSpec(
        "max-wals", Kind.UINT, "5", "Maximum number of wal files to retain (0 is unlimited).", _M
    ),
    FlagSpec(
        "quota-backend-bytes",
        Kind.INT,
        "0",
        "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).",
        _M,
    ),
    FlagSpec(
        "backend-bbolt-freelist-type",
        Kind.STRING,
        "map",
        "BackendFreelistType specifies the type of freelist that boltdb backend uses"
        "(array and map are supported types).",
        _M,
        IG,
    ),
    FlagSpec(
        "backend-batch-interval",
        Kind.DURATION,
        "",
        "BackendBatchInterval is the maximum time before commit the backend transaction.",
        _M,
        IG,
    ),
    FlagSpec(
        "backend-batch-limit",
        Kind.INT,
        "0",
        "BackendBatchLimit is the maximum operations before commit the backend transaction.",
        _M,
        IG,
    ),
    FlagSpec(
        "max-txn-ops",
        Kind.UINT,
        "128",
        "Maximum number of operations permitted in a transaction.",
        _M,
    ),
    FlagSpec(
        "max-request-bytes",
        Kind.UINT,
        "1572864",
        "Maximum client request size in bytes the server will accept.",
        _M,
    ),
    FlagSpec(
        "max-concurrent-streams",
        Kind.UINT,
        "math.MaxUint32",
        "Maximum concurrent streams that each client can open at a time.",
        _M,
        S,
    ),
    FlagSpec(
        "enable-grpc-gateway",
        Kind.BOOL,
        "true",
        "Serve the JSON gateway (/v3/...) on the client URLs.",
        _M,
    ),
    FlagSpec(
        "grpc-keepalive-min-time",
        Kind.DURATION,
        "5s",
        "Minimum duration interval that a client should wait before pinging server.",
        _M,
        IG,
    ),
    FlagSpec(
        "grpc-keepalive-interval",
        Kind.DURATION,
        "2h",
        "Frequency duration of server-to-client ping to check if a connection is alive "
        "(0 to disable).",
        _M,
        IG,
    ),
    FlagSpec(
        "grpc-keepalive-timeout",
        Kind.DURATION,
        "20s",
        "Additional duration of wait before closing a non-responsive connection (0 to disable).",
        _M,
        IG,
    ),
    FlagSpec(
        "socket-reuse-port",
        Kind.BOOL,
        "false",
        "Enable to set socket option SO_REUSEPORT on listeners allowing rebinding of a port "
        "already in use.",
        _M,
        D,
    ),
    FlagSpec(
        "socket-reuse-address",
        Kind.BOOL,
        "false",
        "Enable to set socket option SO_REUSEADDR on listeners allowing binding to an address "
        "in `TIME_WAIT` state.",
        _M,
        IG,
    ),
    FlagSpec(
        "raft-read-timeout",
        Kind.DURATION,
        "5s",
        "Read timeout on each peer connection (at least 5s).",
        _M,
        IG,
    ),
    FlagSpec(
        "raft-write-timeout",
        Kind.DURATION,
        "5s",
        "Write timeout on each peer connection (at least 5s).",
        _M,
    ),
    # --- Clustering ------------------------------------------------------------------------
    FlagSpec(
        "initial-advertise-peer-urls",
        Kind.URLS,
        "http://localhost:2380",
        "List of this member's peer URLs to advertise to the rest of the cluster.",
        _C,
    ),
    FlagSpec(
        "initial-cluster",
        Kind.STRING,
        "default=http://localhost:2380",
        "Initial cluster configuration for bootstrapping.",
        _C,
    ),
    FlagSpec(
        "initial-cluster-state",
        Kind.STRING,
        "new",
        "Initial cluster state ('new' or 'existing').",
        _C,
    ),
    FlagSpec(
        "initial-cluster-token",
        Kind.STRING,
        "etcd-cluster",
        "Initial cluster token for the etcd cluster during bootstrap. Specifying this can "
        "protect you from unintended cross-cluster interaction when running multiple clusters.",
        _C,
    ),
    FlagSpec(
        "advertise-client-urls",
        Kind.URLS,
        "http://localhost:2379",
        "List of this member's client URLs to advertise to the public. The client URLs "
        "advertised should be accessible to machines that talk to etcd cluster. etcd client "
        "libraries parse these URLs to connect to the cluster.",
        _C,
    ),
    FlagSpec("discovery", Kind.STRING, "", "Discovery URL used to bootstrap the cluster.", _C),
    FlagSpec(
        "discovery-fallback",
        Kind.STRING,
        "proxy",
        "Expected behavior ('exit' or 'proxy') when discovery services fails. "
        '"proxy" supports v2 API only.',
        _C,
    ),
    FlagSpec(
        "discovery-proxy",
        Kind.STRING,
        "",
        "HTTP proxy to use for traffic to discovery service.",
        _C,
    ),
    FlagSpec("discovery-srv", Kind.STRING, "", "DNS srv domain used to bootstrap the cluster.", _C),
    FlagSpec(
        "discovery-srv-name",
        Kind.STRING,
        "",
        "Suffix to the dns srv name queried when bootstrapping.",
        _C,
    ),
    FlagSpec(
        "strict-reconfig-check",
        Kind.BOOL,
        "true",
        "Reject reconfiguration requests that would cause quorum loss.",
        _C,
    ),
    FlagSpec("pre-vote", Kind.BOOL, "true", "Enable to run an additional Raft election phase.", _C),
    FlagSpec(
        "auto-compaction-retention",
        Kind.STRING,
        "0",
        "Auto compaction retention length. 0 means disable auto compaction.",
        _C,
    ),
    FlagSpec(
        "auto-compaction-mode",
        Kind.STRING,
        "periodic",
        "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for "
        "duration based retention, defaulting to hours if no time unit is provided "
        "(e.g. '5m'). 'revision' for revision number based retention.",
        _C,
    ),
    FlagSpec("enable-v2", Kind.BOOL, "false", "Accept etcd V2 client requests.", _C),
    FlagSpec(
        "v2-deprecation",
        Kind.STRING,
        "not-yet",
        "v2store deprecation stage: allowed values: not-yet|write-only|write-only-drop-data|gone",
        _C,
    ),
    # --- Security --------------------------------------------------------------------------
    FlagSpec(
        "cert-file",
        Kind.STRING,
        "",
        "Path to the client server TLS cert file.",
        _SEC,
        S,
        _CTS + "cert-file",
    ),
    FlagSpec(
        "key-file",
        Kind.STRING,
        "",
        "Path to the client server TLS key file.",
        _SEC,
        S,
        _CTS + "key-file",
    ),
    FlagSpec(
        "client-cert-auth",
        Kind.BOOL,
        "false",
        "Enable client cert authentication.",
        _SEC,
        S,
        _CTS + "client-cert-auth",
    ),
    FlagSpec(
        "client-cert-file",
        Kind.STRING,
        "",
        "Path to the certificate this member presents when it connects to client URLs as a "
        "client (default: --cert-file).",
        _SEC,
        S,
        _CTS + "client-cert-file",
    ),
    FlagSpec(
        "client-key-file",
        Kind.STRING,
        "",
        "Path to the key of --client-cert-file (default: --key-file).",
        _SEC,
        S,
        _CTS + "client-key-file",
    ),
    FlagSpec(
        "client-crl-file",
        Kind.STRING,
        "",
        "Path to the client certificate revocation list file.",
        _SEC,
        S,
        _CTS + "crl-file",
    ),
    FlagSpec(
        "client-cert-allowed-hostname",
        Kind.STRING,
        "",
        "Comma-separated list of allowed SAN hostnames for client cert authentication.",
        _SEC,
        S,
        _CTS + "allowed-hostname",
    ),
    FlagSpec(
        "trusted-ca-file",
        Kind.STRING,
        "",
        "Path to the client server TLS trusted CA cert file.",
        _SEC,
        S,
        _CTS + "trusted-ca-file",
    ),
    FlagSpec(
        "auto-tls",
        Kind.BOOL,
        "false",
        "Client TLS using generated certificates.",
        _SEC,
        S,
        _CTS + "auto-tls",
    ),
    FlagSpec(
        "peer-cert-file",
        Kind.STRING,
        "",
        "Path to the peer server TLS cert file.",
        _SEC,
        S,
        _PTS + "cert-file",
    ),
    FlagSpec(
        "peer-key-file",
        Kind.STRING,
        "",
        "Path to the peer server TLS key file.",
        _SEC,
        S,
        _PTS + "key-file",
    ),
    FlagSpec(
        "peer-client-cert-auth",
        Kind.BOOL,
        "false",
        "Enable peer client cert authentication.",
        _SEC,
        S,
        _PTS + "client-cert-auth",
    ),
    FlagSpec(
        "peer-trusted-ca-file",
        Kind.STRING,
        "",
        "Path to the peer server TLS trusted CA file.",
        _SEC,
        S,
        _PTS + "trusted-ca-file",
    ),
    FlagSpec(
        "peer-cert-allowed-cn",
        Kind.STRING,
        "",
        "Comma-separated list of allowed CNs for inter-peer TLS authentication.",
        _SEC,
        S,
        _PTS + "allowed-cn",
    ),
    FlagSpec(
        "peer-cert-allowed-hostname",
        Kind.STRING,
        "",
        "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.",
        _SEC,
        S,
        _PTS + "allowed-hostname",
    ),
    FlagSpec(
        "peer-auto-tls",
        Kind.BOOL,
        "false",
        "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file "
        "are not provided.",
        _SEC,
        S,
        _PTS + "auto-tls",
    ),
    FlagSpec(
        "peer-client-cert-file",
        Kind.STRING,
        "",
        "Path to the certificate this member presents when it dials its peers (default: "
        "--peer-cert-file).",
        _SEC,
        S,
        _PTS + "client-cert-file",
    ),
    FlagSpec(
        "peer-client-key-file",
        Kind.STRING,
        "",
        "Path to the key of --peer-client-cert-file (default: --peer-key-file).",
        _SEC,
        S,
        _PTS + "client-key-file",
    ),
    FlagSpec(
        "self-signed-cert-validity",
        Kind.UINT,
        "1",
        "The validity period of the client and peer certificates that are automatically "
        "generated by etcd when you specify ClientAutoTLS and PeerAutoTLS, the unit is year, "
        "and the default is 1.",
        _SEC,
        S,
    ),
    FlagSpec(
        "peer-crl-file",
        Kind.STRING,
        "",
        "Path to the peer certificate revocation list file.",
        _SEC,
        S,
        _PTS + "crl-file",
    ),
    FlagSpec(
        "cipher-suites",
        Kind.STRING,
        "",
        "Comma-separated list of supported TLS cipher suites between client/server and peers "
        "(empty will be auto-populated by Go).",
        _SEC,
        S,
    ),
    FlagSpec(
        "cors",
        Kind.STRING,
        "*",
        "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, "
        "(empty or * means allow all).",
        _SEC,
        S,
    ),
    FlagSpec(
        "host-whitelist",
        Kind.STRING,
        "*",
        "Acceptable hostnames from HTTP client requests, if server is not secure "
        "(empty or * means allow all).",
        _SEC,
        S,
    ),
    FlagSpec(
        "tls-min-version",
        Kind.STRING,
        "TLS1.2",
        "Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.",
        _SEC,
        S,
    ),
    FlagSpec(
        "tls-max-version",
        Kind.STRING,
        "",
        "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 "
        "(empty defers to Go).",
        _SEC,
        S,
    ),
    # --- Auth ------------------------------------------------------------------------------
    FlagSpec(
        "auth-token",
        Kind.STRING,
        "simple",
        "Specify a v3 authentication token type and its options ('simple' or 'jwt').",
        _AUTH,
        S,
    ),
    FlagSpec(
        "bcrypt-cost",
        Kind.UINT,
        "10",
        "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. "
        "Valid values are between 4 and 31.",
        _AUTH,
        S,
    ),
    FlagSpec(
        "auth-token-ttl", Kind.UINT, "300", "Time (in seconds) of the auth-token-ttl.", _AUTH, S
    ),
    # --- Profiling and Monitoring ----------------------------------------------------------
    FlagSpec(
        "enable-pprof",
        Kind.BOOL,
        "false",
        'Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"',
        _MON,
        D,
    ),
    FlagSpec(
        "metrics",
        Kind.STRING,
        "basic",
        "Set level of detail for exported metrics, specify 'extensive' to include server side "
        "grpc histogram metrics.",
        _MON,
        IG,
    ),
    FlagSpec(
        "listen-metrics-urls",
        Kind.URLS,
        "",
        "List of URLs to listen on for the metrics and health endpoints.",
        _MON,
    ),
    # --- Logging ---------------------------------------------------------------------------
    FlagSpec(
        "logger",
        Kind.STRING,
        "zap",
        "Currently only supports 'zap' for structured logging.",
        _LOG,
    ),
    FlagSpec(
        "log-outputs",
        Kind.STRINGS,
        "default",
        "Specify 'stdout' or 'stderr' to skip journald logging even when running under "
        "systemd, or list of comma separated output targets.",
        _LOG,
    ),
    FlagSpec(
        "log-level",
        Kind.STRING,
        "info",
        "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
        _LOG,
    ),
    FlagSpec(
        "enable-log-rotation",
        Kind.BOOL,
        "false",
        "Enable log rotation of a single log-outputs file target.",
        _LOG,
        D,
    ),
    FlagSpec(
        "log-rotation-config-json",
        Kind.STRING,
        '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}',
        "Configures log rotation if enabled with a JSON logger config. "
        "MaxSize(MB), MaxAge(days,0=no limit), MaxBackups(0=no limit), LocalTime(use computers "
        "local time), Compress(gzip)",
        _LOG,
        IG,
    ),
    # --- Experimental ----------------------------------------------------------------------
    FlagSpec(
        "experimental-initial-corrupt-check",
        Kind.BOOL,
        "false",
        "Enable to check data corruption before serving any client/peer traffic.",
        _EXP,
    ),
    FlagSpec(
        "experimental-corrupt-check-time",
        Kind.DURATION,
        "0s",
        "Duration of time between cluster corruption check passes.",
        _EXP,
    ),
    FlagSpec(
        "experimental-compact-hash-check-enabled",
        Kind.BOOL,
        "false",
        "Enable leader to periodically check followers compaction hashes.",
        _EXP,
    ),
    FlagSpec(
        "experimental-compact-hash-check-time",
        Kind.DURATION,
        "1m",
        "Duration of time between leader checks followers compaction hashes.",
        _EXP,
    ),
    FlagSpec(
        "experimental-enable-v2v3",
        Kind.STRING,
        "",
        "Serve v2 requests from the v3 store under this prefix (deprecated in etcd 3.5; petcd "
        "has no v2 API).",
        _EXP,
        D,
    ),
    FlagSpec(
        "experimental-enable-lease-checkpoint",
        Kind.BOOL,
        "false",
        "Enable leader to send regular checkpoints to other members to prevent reset of "
        "remaining TTL on leader change.",
        _EXP,
    ),
    FlagSpec(
        "experimental-enable-lease-checkpoint-persist",
        Kind.BOOL,
        "false",
        "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived "
        "leases. Always enabled in v3.6. Should be used to ensure smooth upgrade from v3.5 "
        "clusters with this feature enabled. Requires experimental-enable-lease-checkpoint "
        "to be enabled.",
        _EXP,
    ),
    FlagSpec(
        "experimental-compaction-batch-limit",
        Kind.INT,
        "1000",
        "Sets the maximum revisions deleted in each compaction batch.",
        _EXP,
    ),
    FlagSpec(
        "experimental-compaction-sleep-interval",
        Kind.DURATION,
        "10ms",
        "Sets the pause between two compaction batches.",
        _EXP,
    ),
    FlagSpec(
        "experimental-peer-skip-client-san-verification",
        Kind.BOOL,
        "false",
        "Skip verification of SAN field in client certificate for peer connections.",
        _EXP,
        D,
    ),
    FlagSpec(
        "experimental-watch-progress-notify-interval",
        Kind.DURATION,
        "10m",
        "Duration of periodic watch progress notifications.",
        _EXP,
    ),
    FlagSpec(
        "experimental-downgrade-check-time",
        Kind.DURATION,
        "5s",
        "Duration between two checks of a cluster downgrade's progress.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-warning-apply-duration",
        Kind.DURATION,
        "100ms",
        "Time duration after which a warning is generated if request takes more time.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-warning-unary-request-duration",
        Kind.DURATION,
        "300ms",
        "Time duration after which a warning is generated if a unary request takes more time.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-bootstrap-defrag-threshold-megabytes",
        Kind.UINT,
        "0",
        "Enable the defrag during etcd server bootstrap on condition that it will free at "
        "least the provided threshold of disk space. Needs to be set to non-zero value to "
        "take effect.",
        _EXP,
        S,
    ),
    FlagSpec(
        "experimental-memory-mlock",
        Kind.BOOL,
        "false",
        "Enable to enforce etcd pages (in particular bbolt) to stay in RAM.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-txn-mode-write-with-shared-buffer",
        Kind.BOOL,
        "true",
        "Enable the write transaction to use a shared buffer in its readonly check operations.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-snapshot-catchup-entries",
        Kind.UINT,
        "5000",
        "Number of entries for a slow follower to catch up after compacting the raft storage "
        "entries.",
        _EXP,
    ),
    FlagSpec(
        "experimental-wait-cluster-ready-timeout",
        Kind.DURATION,
        "5s",
        "Maximum duration to wait for the cluster to be ready.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-stop-grpc-service-on-defrag",
        Kind.BOOL,
        "false",
        "Enable etcd gRPC service to stop serving client requests on defragmentation.",
        _EXP,
        IG,
    ),
    FlagSpec(
        "experimental-max-learners",
        Kind.INT,
        "1",
        "Sets the maximum number of learners that can be available in the cluster membership.",
        _EXP,
        IG,
    ),
    # --- Experimental distributed tracing ---------------------------------------------------
    FlagSpec(
        "experimental-enable-distributed-tracing",
        Kind.BOOL,
        "false",
        "Enable experimental distributed tracing using OpenTelemetry Tracing.",
        _TRACE,
        D,
    ),
    # Read only with tracing on, which petcd refuses: accepted, without effect.
    FlagSpec(
        "experimental-distributed-tracing-address",
        Kind.STRING,
        "localhost:4317",
        "Address of the distributed tracing collector.",
        _TRACE,
        IG,
    ),
    FlagSpec(
        "experimental-distributed-tracing-service-name",
        Kind.STRING,
        "etcd",
        "Service name for distributed tracing, the same on every member.",
        _TRACE,
        IG,
    ),
    FlagSpec(
        "experimental-distributed-tracing-instance-id",
        Kind.STRING,
        "",
        "Instance id for distributed tracing, unique per member.",
        _TRACE,
        IG,
    ),
    FlagSpec(
        "experimental-distributed-tracing-sampling-rate",
        Kind.INT,
        "0",
        "Spans sampled per million for distributed tracing (0: none).",
        _TRACE,
        IG,
    ),
    # --- v2 Proxy: the v2 API's proxy mode, which petcd does not have ------------------------
    FlagSpec(
        "proxy", Kind.STRING, "off", "Proxy mode setting ('off', 'readonly' or 'on').", _PROXY, D
    ),
    # Read only in proxy mode: accepted, without effect.
    FlagSpec(
        "proxy-failure-wait",
        Kind.UINT,
        "5000",
        "Time (in milliseconds) an endpoint is held in a failed state.",
        _PROXY,
        IG,
    ),
    FlagSpec(
        "proxy-refresh-interval",
        Kind.UINT,
        "30000",
        "Time (in milliseconds) between two refreshes of the endpoints.",
        _PROXY,
        IG,
    ),
    FlagSpec(
        "proxy-dial-timeout",
        Kind.UINT,
        "1000",
        "Time (in milliseconds) before a dial times out.",
        _PROXY,
        IG,
    ),
    FlagSpec(
        "proxy-write-timeout",
        Kind.UINT,
        "5000",
        "Time (in milliseconds) before a write times out.",
        _PROXY,
        IG,
    ),
    FlagSpec(
        "proxy-read-timeout",
        Kind.UINT,
        "0",
        "Time (in milliseconds) before a read times out (0: never).",
        _PROXY,
        IG,
    ),
    # --- Unsafe ----------------------------------------------------------------------------
    FlagSpec(
        "force-new-cluster",
        Kind.BOOL,
        "false",
        "Force to create a new one-member cluster.",
        _UNSAFE,
    ),
    FlagSpec(
        "unsafe-no-fsync",
        Kind.BOOL,
        "false",
        "Disables fsync, unsafe, will cause data loss.",
        _UNSAFE,
        S,
    ),
    # --- petcd's own flags (not etcd's: their variables are PETCD_*, which etcd ignores) ----
    FlagSpec(
        "client-transport",
        Kind.STRING,
        "native",
        "The gRPC server for client traffic: 'native' (petcd's Rust front end, built by make "
        "install) or 'grpcio' (grpc.aio, the slower fallback). Also PETCD_CLIENT_TRANSPORT, "
        "which applies even with --config-file when the file does not set client-transport.",
        "petcd",
        env="PETCD_CLIENT_TRANSPORT",
    ),
    # --- the config file itself ------------------------------------------------------------
    FlagSpec(
        "config-file",
        Kind.STRING,
        "",
        "Path to the server configuration file. Note that if a configuration file is provided, "
        "other command line flags and environment variables will be ignored.",
        "",
    ),
)

FLAGS_BY_NAME: dict[str, FlagSpec] = {f.name: f for f in FLAGS}
assert len(FLAGS_BY_NAME) == len(FLAGS), "duplicate flag in FLAGS"

_GROUP_ORDER = (_M, _C, _SEC, _AUTH, _MON, _LOG, _TRACE, _PROXY, _EXP, _UNSAFE, "petcd")


def usage() -> str:
    """The text of ``petcd --help``, laid out like ``etcd --help``."""
    lines = [
        "Usage:",
        "",
        "  petcd [flags]",
        "    Start a petcd server (an etcd 3.5 compatible cluster member).",
        "",
        "  petcd --version",
        "    Show the version of petcd and of the etcd API it implements.",
        "",
        "  petcd -h | --help",
        "    Show the help information about petcd.",
        "",
        "  petcd --config-file",
        "    " + FLAGS_BY_NAME["config-file"].help,
        "",
        "  petcd gateway",
        "    Run the stateless pass-through etcd TCP connection forwarding proxy.",
        "",
    ]
    for group in _GROUP_ORDER:
        lines.append(group + ":")
        for spec in FLAGS:
            if spec.group != group:
                continue
            lines.append(f"  --{spec.name} '{spec.default}'")
            note = ""
            if spec.support is Support.DEFAULT_ONLY:
                note = " [petcd: not supported yet; only the default is accepted]"
            elif spec.support is Support.IGNORED:
                note = " [petcd: accepted and ignored]"
            lines.append("    " + spec.help + note)
        lines.append("")
    return "\n".join(lines)
