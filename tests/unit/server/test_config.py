"""petcd.server.config: etcd's flags, ETCD_* environment and --config-file, as etcd 3.5 has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.server.config import (
    Action,
    CompactionMode,
    Url,
    parse,
    parse_duration_seconds,
)
from petcd.server.errors import ConfigError, FlagError, UnsupportedFeatureError
from petcd.server.flags import FLAGS, FLAGS_BY_NAME, usage


def run(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    parsed = parse(argv, env or {})
    assert parsed.action is Action.RUN
    assert parsed.config is not None
    return parsed.config, parsed.warnings


def test_defaults_match_etcd() -> None:
    cfg, warnings = run([])
    assert cfg.name == "default"
    assert cfg.data_dir == "default.etcd"
    assert cfg.listen_client_urls == (Url("http", "localhost", 2379),)
    assert cfg.advertise_client_urls == (Url("http", "localhost", 2379),)
    assert cfg.listen_peer_urls == (Url("http", "localhost", 2380),)
    assert cfg.snapshot_count == 100000
    assert cfg.heartbeat_interval_ms == 100
    assert cfg.election_timeout_ms == 1000
    assert cfg.election_ticks == 10
    assert cfg.max_request_bytes == 1572864
    assert cfg.max_txn_ops == 128
    assert cfg.auto_compaction_mode is CompactionMode.PERIODIC
    assert cfg.auto_compaction_retention_seconds == 0
    assert cfg.initial_cluster_token == "etcd-cluster"
    assert cfg.initial_cluster == (("default", (Url("http", "localhost", 2380),)),)
    assert cfg.wal_path == "default.etcd/member/wal"
    assert cfg.backend_path == "default.etcd/member/snap/db"
    assert warnings == ()


def test_make_run_command_line() -> None:
    cfg, _ = run(["--name", "default", "--data-dir", "default.petcd"])
    assert cfg.data_dir == "default.petcd"
    assert cfg.listen_client_urls[0].bind_host == "127.0.0.1"
    assert cfg.listen_client_urls[0].port == 2379


def test_data_dir_defaults_to_name_dot_etcd() -> None:
    cfg, _ = run(["--name=n1"])
    assert cfg.data_dir == "n1.etcd"
    assert cfg.initial_cluster == (("n1", (Url("http", "localhost", 2380),)),)


@pytest.mark.parametrize(
    "argv",
    [
        ["--snapshot-count", "7"],
        ["--snapshot-count=7"],
        ["-snapshot-count", "7"],
        ["-snapshot-count=7"],
    ],
)
def test_go_flag_syntaxes(argv: list[str]) -> None:
    cfg, _ = run(argv)
    assert cfg.snapshot_count == 7


def test_last_occurrence_wins() -> None:
    cfg, _ = run(["--max-txn-ops", "3", "--max-txn-ops", "9"])
    assert cfg.max_txn_ops == 9


def test_bool_flags_follow_go_rules() -> None:
    cfg, _ = run(["--experimental-initial-corrupt-check"])
    assert cfg.experimental_initial_corrupt_check is True
    cfg, _ = run(["--strict-reconfig-check=false"])
    assert cfg.strict_reconfig_check is False
    # A bool flag never consumes the next argument: "false" is then a stray argument.
    with pytest.raises(ConfigError, match="'false' is not a valid flag"):
        parse(["--strict-reconfig-check", "false"], {})
    with pytest.raises(FlagError, match='invalid boolean value "maybe" for -pre-vote'):
        parse(["--pre-vote=maybe"], {})


def test_unknown_flag_is_a_usage_error() -> None:
    with pytest.raises(FlagError, match="flag provided but not defined: -bogus"):
        parse(["--bogus"], {})


def test_missing_value_and_bad_number() -> None:
    with pytest.raises(FlagError, match="flag needs an argument: -name"):
        parse(["--name"], {})
    with pytest.raises(FlagError, match='invalid value "ten" for flag -snapshot-count'):
        parse(["--snapshot-count", "ten"], {})


def test_max_concurrent_streams_is_a_uint32_as_etcd_parses_it() -> None:
    assert run([])[0].max_concurrent_streams == 2**32 - 1  # math.MaxUint32
    assert run(["--max-concurrent-streams", "3"])[0].max_concurrent_streams == 3
    assert run(["--max-concurrent-streams=0x10"])[0].max_concurrent_streams == 16
    assert run(["--max-concurrent-streams=4294967295"])[0].max_concurrent_streams == 2**32 - 1
    with pytest.raises(FlagError, match='parsing "4294967296": value out of range'):
        parse(["--max-concurrent-streams=4294967296"], {})
    with pytest.raises(FlagError, match='parsing "-1": invalid syntax'):
        parse(["--max-concurrent-streams=-1"], {})


def test_help_and_version_actions() -> None:
    assert parse(["--help"], {}).action is Action.HELP
    assert parse(["-h"], {}).action is Action.HELP
    assert parse(["--version"], {}).action is Action.VERSION


def test_env_vars_fill_unset_flags_and_flags_win() -> None:
    env = {"ETCD_DATA_DIR": "/tmp/from-env", "ETCD_NAME": "envname", "ETCD_MAX_TXN_OPS": "5"}
    cfg, warnings = run(["--name", "flagname"], env)
    assert cfg.name == "flagname"
    assert cfg.data_dir == "/tmp/from-env"
    assert cfg.max_txn_ops == 5
    assert any("shadowed by corresponding flag ETCD_NAME" in w for w in warnings)


def test_unrecognized_env_var_is_warned_and_ignored() -> None:
    cfg, warnings = run([], {"ETCD_NO_SUCH_THING": "1", "ETCDCTL_API": "3", "HOME": "/"})
    assert cfg.name == "default"
    assert warnings == ("unrecognized environment variable ETCD_NO_SUCH_THING=1",)


def test_bad_env_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match='invalid value "x" for ETCD_SNAPSHOT_COUNT'):
        parse([], {"ETCD_SNAPSHOT_COUNT": "x"})


def test_listen_client_urls_requires_advertise_client_urls() -> None:
    with pytest.raises(ConfigError, match="--advertise-client-urls is required"):
        parse(["--listen-client-urls", "http://127.0.0.1:3000"], {})
    cfg, _ = run(
        [
            "--listen-client-urls=http://127.0.0.1:3000,http://127.0.0.1:3001",
            "--advertise-client-urls=http://127.0.0.1:3000",
        ]
    )
    assert [u.port for u in cfg.listen_client_urls] == [3000, 3001]


def test_bad_urls() -> None:
    with pytest.raises(FlagError, match="URL scheme must be http, https, unix, or unixs"):
        parse(["--listen-peer-urls", "ftp://127.0.0.1:1"], {})
    with pytest.raises(FlagError, match='does not have the form "host:port"'):
        parse(["--listen-peer-urls", "http://127.0.0.1"], {})
    with pytest.raises(ConfigError, match=r"cannot listen on TLS for 127\.0\.0\.1:1: KeyFile"):
        parse(["--listen-peer-urls", "https://127.0.0.1:1"], {})
    with pytest.raises(ConfigError, match=r"cannot listen on TLS for etcd\.unix:1: KeyFile"):
        parse(["--listen-peer-urls", "unixs://etcd.unix:1"], {})
    with pytest.raises(ConfigError, match=r"for client url unixs://x:1 with HTTPS scheme"):
        parse(["--listen-client-urls", "unixs://x:1", "--advertise-client-urls", "http://a:1"], {})
    with pytest.raises(FlagError, match="URL must name a unix socket file"):
        parse(["--listen-peer-urls", "unix:relative"], {})


def test_unix_urls() -> None:
    """etcd's unix:// URLs: host:port (and path) as written is the socket file's path."""
    cfg, _ = run(
        [
            "--name=e1",
            "--listen-peer-urls=unix://etcd.unix:1",
            "--initial-advertise-peer-urls=unix://etcd.unix:1",
            "--initial-cluster=e1=unix://etcd.unix:1",
            "--listen-client-urls=unix://Local.sock,unix:///run/x/etcd.sock,http://127.0.0.1:3",
            "--advertise-client-urls=unix://Local.sock",
        ]
    )
    (peer,) = cfg.listen_peer_urls
    assert (peer.socket, peer.host, peer.port, str(peer)) == (
        "etcd.unix:1",
        "etcd.unix",
        1,
        "unix://etcd.unix:1",
    )
    assert cfg.initial_cluster == (("e1", (peer,)),)
    assert [u.listen_address for u in cfg.listen_client_urls] == [
        "Local.sock",
        "/run/x/etcd.sock",
        ("127.0.0.1", 3),
    ]
    assert [str(u) for u in cfg.advertise_client_urls] == ["unix://Local.sock"]
    assert not any(u.secure for u in cfg.listen_client_urls)


def test_election_timeout_rules() -> None:
    with pytest.raises(ConfigError, match=r"should be at least as 5 times as --heartbeat-interval"):
        parse(["--heartbeat-interval", "100", "--election-timeout", "400"], {})
    with pytest.raises(ConfigError, match="is too long"):
        parse(["--heartbeat-interval", "100", "--election-timeout", "60000"], {})
    cfg, _ = run(["--heartbeat-interval", "10", "--election-timeout", "100"])
    assert cfg.election_ticks == 10


def test_initial_cluster_must_contain_this_member() -> None:
    with pytest.raises(ConfigError, match="couldn't find local name 'x'"):
        parse(["--name", "x", "--initial-cluster", "y=http://127.0.0.1:2380"], {})
    with pytest.raises(ConfigError, match="missing from --initial-advertise-peer-urls"):
        parse(["--initial-cluster", "default=http://127.0.0.1:9999"], {})
    cfg, _ = run(
        [
            "--name=a",
            "--initial-advertise-peer-urls=http://127.0.0.1:1",
            "--initial-cluster=a=http://127.0.0.1:1,b=http://127.0.0.1:2",
        ]
    )
    assert [n for n, _ in cfg.initial_cluster] == ["a", "b"]


def test_unsupported_feature_flags_only_at_default() -> None:
    run(["--peer-client-cert-auth=false", "--auth-token=simple"])
    with pytest.raises(UnsupportedFeatureError, match="--client-crl-file"):
        parse(["--client-crl-file", "/crl.pem"], {})
    with pytest.raises(ConfigError, match="--auth-token=jwt: auth: invalid auth signature"):
        parse(["--auth-token", "jwt"], {})


def test_ignored_tuning_flags_are_recorded() -> None:
    cfg, warnings = run(["--backend-batch-limit", "5", "--metrics", "extensive"])
    assert dict(cfg.ignored) == {"backend-batch-limit": "5", "metrics": "extensive"}
    assert len(warnings) == 2


def test_invalid_choices() -> None:
    with pytest.raises(ConfigError, match="initial-cluster-state"):
        parse(["--initial-cluster-state", "old"], {})
    with pytest.raises(ConfigError, match="unknown auto-compaction-mode"):
        parse(["--auto-compaction-mode", "sometimes"], {})
    with pytest.raises(ConfigError, match="log-level"):
        parse(["--log-level", "loud"], {})


def test_auto_compaction_retention() -> None:
    cfg, _ = run(["--auto-compaction-retention", "2"])
    assert cfg.auto_compaction_retention_seconds == 7200
    cfg, _ = run(["--auto-compaction-retention", "30m"])
    assert cfg.auto_compaction_retention_seconds == 1800
    cfg, _ = run(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"])
    assert cfg.auto_compaction_retention_revisions == 1000
    assert cfg.auto_compaction_retention_seconds == 0
    with pytest.raises(ConfigError, match="CompactionRetention"):
        parse(["--auto-compaction-retention", "soon"], {})


def test_go_durations() -> None:
    assert parse_duration_seconds("1h30m") == 5400
    assert parse_duration_seconds("100ms") == pytest.approx(0.1)
    assert parse_duration_seconds("0") == 0
    with pytest.raises(ValueError):
        parse_duration_seconds("5")


def test_config_file_overrides_flags_and_env(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(
        "name: 'from-file'\n"
        "data-dir: /var/lib/x\n"
        "snapshot-count: 42\n"
        "listen-client-urls: http://127.0.0.1:4001,http://127.0.0.1:4002\n"
        "advertise-client-urls: http://127.0.0.1:4001\n"
        "initial-advertise-peer-urls: http://127.0.0.1:4380\n"
        "initial-cluster: from-file=http://127.0.0.1:4380\n"
        "log-outputs: [stderr]\n"
        "strict-reconfig-check: false\n"
        "client-transport-security:\n"
        "  client-cert-auth: false\n"
        "unknown-key: ignored\n"
    )
    env = {"ETCD_NAME": "envname", "ETCD_MAX_TXN_OPS": "5"}
    cfg, _ = run(["--config-file", str(path), "--name", "flagname"], env)
    assert cfg.name == "from-file"
    assert cfg.data_dir == "/var/lib/x"
    assert cfg.snapshot_count == 42
    assert cfg.max_txn_ops == 128  # env ignored
    assert [u.port for u in cfg.listen_client_urls] == [4001, 4002]
    assert cfg.log_outputs == ("stderr",)
    assert cfg.strict_reconfig_check is False
    assert cfg.config_file == str(path)


def test_config_file_from_env_and_nested_tls(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(
        "listen-client-urls: https://127.0.0.1:2379\n"
        "advertise-client-urls: https://127.0.0.1:2379\n"
        "client-transport-security:\n  cert-file: /c.pem\n  key-file: /k.pem\n"
        "  trusted-ca-file: /ca.pem\n  client-cert-auth: true\n"
        "tls-min-version: TLS1.3\n"
    )
    parsed = parse([], {"ETCD_CONFIG_FILE": str(path)})
    cfg = parsed.config
    assert cfg is not None
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file) == ("/c.pem", "/k.pem", "/ca.pem")
    assert cfg.client_cert_auth and cfg.tls_versions == ("1.3",)
    path.write_text("peer-transport-security:\n  cert-file: /c.pem\n  key-file: /k.pem\n")
    cfg = parse([], {"ETCD_CONFIG_FILE": str(path)}).config
    assert cfg is not None and (cfg.peer_cert_file, cfg.peer_key_file) == ("/c.pem", "/k.pem")
    path.write_text("peer-transport-security:\n  allowed-cn: [etcd, etcd2]\n")
    cfg = parse([], {"ETCD_CONFIG_FILE": str(path)}).config
    assert cfg is not None and cfg.peer_cert_allowed_cn == ("etcd", "etcd2")
    path.write_text("peer-transport-security:\n  client-cert-auth: true\n")
    with pytest.raises(UnsupportedFeatureError, match="--peer-client-cert-auth needs"):
        parse([], {"ETCD_CONFIG_FILE": str(path)})


def test_cors_and_host_whitelist() -> None:
    """etcd's access controller flags: ``--cors`` is ``*`` or origin URLs with host:port
    (etcd's UniqueURLs, the same refusal text), ``--host-whitelist`` any names."""
    cfg, _ = run([])
    assert (cfg.cors, cfg.host_whitelist) == (("*",), ("*",))
    cfg, _ = run(
        ["--cors=http://a.example:8080,https://b:1,http://a.example:8080", "--host-whitelist=x,y"]
    )
    assert cfg.cors == ("http://a.example:8080", "https://b:1")
    assert cfg.host_whitelist == ("x", "y")
    with pytest.raises(FlagError, match=r'flag -cors: URL address does not have the form "host'):
        parse(["--cors=http://a.example"], {})
    cfg, _ = run([], {"ETCD_CORS": "http://c:2", "ETCD_HOST_WHITELIST": "z"})
    assert (cfg.cors, cfg.host_whitelist) == (("http://c:2",), ("z",))


def test_http_and_https_on_one_port() -> None:
    """etcd 3.5 serves an http and an https client URL of one port on one socket; petcd's
    client port does too (``merge_schemes``), its separate HTTP listeners cannot."""
    tls = ["--cert-file=/c.pem", "--key-file=/k.pem"]
    cfg, _ = run(
        [
            "--listen-client-urls=http://127.0.0.1:1,https://127.0.0.1:1",
            "--advertise-client-urls=http://127.0.0.1:1",
            *tls,
        ]
    )
    assert [(u.scheme, u.listen_address) for u in cfg.listen_client_urls] == [
        ("http", ("127.0.0.1", 1)),
        ("https", ("127.0.0.1", 1)),
    ]
    for flag in ("--listen-client-http-urls", "--listen-metrics-urls"):
        with pytest.raises(ConfigError, match=rf"{flag}: petcd cannot serve both http and https"):
            parse([f"{flag}=http://127.0.0.1:5,https://localhost:5", *tls], {})
    # Different ports, or the same scheme twice: fine.
    run(["--listen-metrics-urls=http://127.0.0.1:5,https://127.0.0.1:6", *tls])
    run(["--listen-metrics-urls=http://127.0.0.1:5,http://localhost:5"])


def test_client_tls_flags() -> None:
    cfg, _ = run(
        [
            "--listen-client-urls=https://127.0.0.1:1,http://127.0.0.1:2",
            "--advertise-client-urls=https://127.0.0.1:1",
            "--cert-file=/c.pem",
            "--key-file=/k.pem",
            "--cipher-suites=TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,TLS_AES_128_GCM_SHA256",
            "--tls-max-version=TLS1.2",
        ]
    )
    assert [u.scheme for u in cfg.listen_client_urls] == ["https", "http"]
    assert cfg.cipher_suites == ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",)
    assert cfg.tls_versions == ("1.2",) and cfg.client_tls_given
    cfg, _ = run(
        [
            "--listen-client-urls=https://127.0.0.1:1",
            "--advertise-client-urls=https://127.0.0.1:1",
            "--auto-tls",
        ]
    )
    assert cfg.client_tls_given and cfg.tls_versions == ("1.2", "1.3")
    with pytest.raises(ConfigError, match=r"for client url https://127\.0\.0\.1:1 "):
        parse(
            ["--listen-client-urls=https://127.0.0.1:1", "--advertise-client-urls=https://a:1"], {}
        )
    with pytest.raises(ConfigError, match="must be provided for metrics secure url"):
        parse(["--listen-metrics-urls=https://127.0.0.1:3"], {})
    with pytest.raises(ConfigError, match=r"KeyFile and CertFile must both be present\[key: /k"):
        parse(["--key-file=/k.pem"], {})
    with pytest.raises(UnsupportedFeatureError, match="--client-cert-auth needs --trusted-ca-file"):
        parse(["--cert-file=/c", "--key-file=/k", "--client-cert-auth"], {})
    with pytest.raises(ConfigError, match=r"only TLS1\.3 is enabled"):
        parse(
            ["--tls-min-version=TLS1.3", "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            {},
        )


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        parse(["--config-file", str(tmp_path / "missing.yaml")], {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("snapshot-count: many\n")
    with pytest.raises(ConfigError, match="snapshot-count"):
        parse(["--config-file", str(bad)], {})


def test_usage_lists_every_flag() -> None:
    text = usage()
    for spec in FLAGS:
        assert f"--{spec.name}" in text
    assert "--data-dir '${name}.etcd'" in text


def test_lease_checkpoint_flags() -> None:
    cfg, _ = run([])
    assert not cfg.experimental_enable_lease_checkpoint
    cfg, warnings = run(
        [
            "--experimental-enable-lease-checkpoint",
            "--experimental-enable-lease-checkpoint-persist=true",
        ]
    )
    assert cfg.experimental_enable_lease_checkpoint
    assert cfg.experimental_enable_lease_checkpoint_persist
    assert warnings == ()


def test_unsafe_no_fsync_from_flag_env_and_config_file(tmp_path: Path) -> None:
    # envtest and other throw-away test set-ups start etcd with --unsafe-no-fsync=True.
    assert run([])[0].unsafe_no_fsync is False
    assert run(["--unsafe-no-fsync"])[0].unsafe_no_fsync is True
    assert run(["--unsafe-no-fsync=True"])[0].unsafe_no_fsync is True
    assert run(["--unsafe-no-fsync=false"])[0].unsafe_no_fsync is False
    assert run([], {"ETCD_UNSAFE_NO_FSYNC": "true"})[0].unsafe_no_fsync is True
    path = tmp_path / "etcd.yaml"
    path.write_text("unsafe-no-fsync: true\n")
    assert run(["--config-file", str(path)])[0].unsafe_no_fsync is True
    with pytest.raises(FlagError):
        parse(["--unsafe-no-fsync=maybe"], {})


# etcd 3.5.17's flags (its etcdmain/config.go and help.go): every one is accepted.
ETCD_35_FLAGS_ADDED_LATE = (
    "client-cert-file", "client-key-file", "peer-client-cert-file", "peer-client-key-file",
    "enable-grpc-gateway", "raft-read-timeout", "raft-write-timeout", "proxy",
    "proxy-failure-wait", "proxy-refresh-interval", "proxy-dial-timeout", "proxy-write-timeout",
    "proxy-read-timeout", "experimental-enable-v2v3", "experimental-compaction-sleep-interval",
    "experimental-downgrade-check-time", "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-service-name", "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
)  # fmt: skip


def test_etcd_3_5_flags_are_known_with_their_defaults() -> None:
    cfg, warnings = run(
        [f"--{name}={FLAGS_BY_NAME[name].default}" for name in ETCD_35_FLAGS_ADDED_LATE]
    )
    assert warnings == () and cfg.ignored == ()
    assert cfg.enable_grpc_gateway and cfg.raft_write_timeout_s == 5.0
    assert cfg.experimental_compaction_sleep_interval_s == 0.01
    assert FLAGS_BY_NAME["proxy"].default == "off"
    text = usage()
    # etcd's help groups, in etcd's order
    assert (
        text.index("Experimental distributed tracing:")
        < text.index("v2 Proxy (to be deprecated in v3.6):")
        < text.index("Experimental feature:")
    )


def test_etcd_3_5_flags_values() -> None:
    cfg, _ = run(
        [
            "--enable-grpc-gateway=false",
            "--raft-write-timeout=7s",
            "--experimental-compaction-sleep-interval=250ms",
            "--cert-file=/c",
            "--key-file=/k",
            "--client-cert-file=/cc",
            "--client-key-file=/ck",
            "--peer-client-cert-file=/pc",
            "--peer-client-key-file=/pk",
        ]
    )
    assert not cfg.enable_grpc_gateway and cfg.raft_write_timeout_s == 7.0
    assert cfg.experimental_compaction_sleep_interval_s == 0.25
    assert (cfg.client_cert_file, cfg.client_key_file) == ("/cc", "/ck")
    assert (cfg.peer_client_cert_file, cfg.peer_client_key_file) == ("/pc", "/pk")
    # v2-only and tracing knobs: accepted, recorded as ignored; their switches stay refused.
    cfg, _ = run(["--proxy-dial-timeout=20", "--experimental-distributed-tracing-sampling-rate=5"])
    assert dict(cfg.ignored) == {
        "proxy-dial-timeout": "20",
        "experimental-distributed-tracing-sampling-rate": "5",
    }
    with pytest.raises(UnsupportedFeatureError, match="--proxy"):
        parse(["--proxy=on"], {})
    with pytest.raises(UnsupportedFeatureError, match="--experimental-enable-v2v3"):
        parse(["--experimental-enable-v2v3=/v2"], {})
    with pytest.raises(
        ConfigError,
        match=r"ClientKeyFile and ClientCertFile must both be present or both absent: key: , "
        r"cert: /cc\]",
    ):
        parse(["--client-cert-file=/cc"], {})
    with pytest.raises(ConfigError, match=r"key: /pk, cert: \]"):
        parse(["--peer-client-key-file=/pk"], {})
    with pytest.raises(ConfigError, match="--experimental-compaction-sleep-interval must be >=0"):
        parse(["--experimental-compaction-sleep-interval=-1s"], {})
    with pytest.raises(FlagError):
        parse(["--raft-read-timeout=soon"], {})


def test_etcd_3_5_tls_client_files_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(
        "client-transport-security:\n  client-cert-file: /cc\n  client-key-file: /ck\n"
        "peer-transport-security:\n  client-cert-file: /pc\n  client-key-file: /pk\n"
        "enable-grpc-gateway: false\n"
    )
    cfg = parse(["--config-file", str(path)], {}).config
    assert cfg is not None and not cfg.enable_grpc_gateway
    assert (cfg.client_cert_file, cfg.peer_client_key_file) == ("/cc", "/pk")


def test_discovery_flags() -> None:
    url = "http://127.0.0.1:2379/v2/keys/discovery/abc"
    cfg, _ = run(
        ["--name=a", "--initial-advertise-peer-urls=http://127.0.0.1:1", "--discovery", url]
    )
    # The member's own entry is what it registers; the discovery URL is the cluster token.
    assert [(n, [str(u) for u in us]) for n, us in cfg.initial_cluster] == [
        ("a", ["http://127.0.0.1:1"])
    ]
    assert cfg.initial_cluster_token == url
    assert (cfg.discovery_url, cfg.discovery_fallback, cfg.discovery_proxy) == (url, "proxy", "")
    cfg, _ = run(["--discovery", url, "--discovery-fallback=exit", "--discovery-proxy=p:3128"])
    assert (cfg.discovery_fallback, cfg.discovery_proxy) == ("exit", "p:3128")
    with pytest.raises(ConfigError, match="multiple discovery or bootstrap flags are set"):
        parse(["--discovery", url, "--initial-cluster", "default=http://localhost:2380"], {})
    with pytest.raises(
        FlagError, match='invalid value "x" for flag -discovery-fallback: invalid value'
    ):
        parse(["--discovery-fallback", "x"], {})


def test_force_new_cluster_flag() -> None:
    assert run([])[0].force_new_cluster is False
    assert run(["--force-new-cluster"])[0].force_new_cluster is True
    assert run([], {"ETCD_FORCE_NEW_CLUSTER": "true"})[0].force_new_cluster is True
