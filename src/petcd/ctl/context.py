"""Global flags, environment variables, output streams and the client of one run.

Theory of operation: :class:`Invocation` is everything a command function
needs: its positional arguments, the parsed flag values, the three standard
streams (binary, so that keys and values are written byte for byte), the
environment, and a client factory that tests may replace. It mirrors the order
in which etcdctl 3.5 prepares a command (``clientConfigFromCmd``): first the
``ETCDCTL_*`` environment variables fill the global flags that were not given
on the command line (a variable that shadows a given flag is fatal, an unknown
``ETCDCTL_*`` variable is only warned about), then ``--debug`` is honoured,
then the endpoints and timeouts are read, then the output printer is chosen
(``unsupported output format`` exits 4), and only then is the client made.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from petcd.client import Client, ClientError, TLSConfig
from petcd.client.aio import AsyncClient
from petcd.ctl.command import Command, Flag, FlagKind, format_flag_value
from petcd.ctl.errors import (
    EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    ExitError,
    SilentExit,
)

ENV_PREFIX = "ETCDCTL"

GLOBAL_FLAGS: list[Flag] = [
    Flag("endpoints", FlagKind.STRING_SLICE, ["127.0.0.1:2379"], "gRPC endpoints"),
    Flag("debug", FlagKind.BOOL, False, "enable client-side debug logging"),
    Flag(
        "write-out",
        FlagKind.STRING,
        "simple",
        "set the output format (fields, json, protobuf, simple, table)",
        "w",
    ),
    Flag("hex", FlagKind.BOOL, False, "print byte strings as hex encoded strings"),
    Flag("dial-timeout", FlagKind.DURATION, 2.0, "dial timeout for client connections"),
    Flag(
        "command-timeout",
        FlagKind.DURATION,
        5.0,
        "timeout for short running command (excluding dial timeout)",
    ),
    Flag("keepalive-time", FlagKind.DURATION, 2.0, "keepalive time for client connections"),
    Flag("keepalive-timeout", FlagKind.DURATION, 6.0, "keepalive timeout for client connections"),
    Flag(
        "insecure-transport",
        FlagKind.BOOL,
        True,
        "disable transport security for client connections",
    ),
    Flag(
        "insecure-discovery",
        FlagKind.BOOL,
        True,
        "accept insecure SRV records describing cluster endpoints",
    ),
    Flag(
        "insecure-skip-tls-verify",
        FlagKind.BOOL,
        False,
        "skip server certificate verification (CAUTION: this option should be enabled only "
        "for testing purposes)",
    ),
    Flag("cert", FlagKind.STRING, "", "identify secure client using this TLS certificate file"),
    Flag("key", FlagKind.STRING, "", "identify secure client using this TLS key file"),
    Flag(
        "cacert",
        FlagKind.STRING,
        "",
        "verify certificates of TLS-enabled secure servers using this CA bundle",
    ),
    Flag(
        "user",
        FlagKind.STRING,
        "",
        "username[:password] for authentication (prompt if password is not supplied)",
    ),
    Flag(
        "password",
        FlagKind.STRING,
        "",
        "password for authentication (if this option is used, --user option shouldn't include "
        "password)",
    ),
    Flag(
        "discovery-srv",
        FlagKind.STRING,
        "",
        "domain name to query for SRV records describing cluster endpoints",
        "d",
    ),
    Flag(
        "discovery-srv-name", FlagKind.STRING, "", "service name to query when using DNS discovery"
    ),
]


def flag_to_env(name: str) -> str:
    return f"{ENV_PREFIX}_{name.upper().replace('-', '_')}"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What the client is built from (etcdctl's clientConfig)."""

    endpoints: tuple[str, ...]
    dial_timeout_s: float
    command_timeout_s: float
    keepalive_time_s: float
    keepalive_timeout_s: float
    insecure_transport: bool
    tls: TLSConfig | None
    user: str
    password: str


def _client_options(config: ClientConfig) -> dict[str, Any]:
    return {
        "tls": config.tls,
        "insecure_transport": config.insecure_transport,
        "keepalive_time_s": config.keepalive_time_s,
        "keepalive_timeout_s": config.keepalive_timeout_s,
        "username": config.user or None,
        "password": config.password,
    }


def default_client_factory(config: ClientConfig) -> Client:
    return Client(
        list(config.endpoints),
        config.dial_timeout_s,
        config.command_timeout_s,
        **_client_options(config),
    )


def async_client(config: ClientConfig) -> AsyncClient:
    """The asyncio client for ``config`` (for commands that run many requests at once)."""
    return AsyncClient(
        list(config.endpoints),
        config.dial_timeout_s,
        config.command_timeout_s,
        **_client_options(config),
    )


def zap_line(level: str, msg: str, caller: str = "flags/flag.go:93", **fields: str) -> str:
    """A log line shaped like etcd's zap JSON logs (they are noise, not output)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    record = {"level": level, "ts": now.replace("+00:00", "Z"), "caller": caller}
    record["msg"] = msg
    record.update(fields)
    return json.dumps(record, separators=(",", ":")) + "\n"


@dataclass
class Invocation:
    """One run of one command."""

    command: Command
    args: list[str]
    values: dict[str, Any]
    changed: set[str]
    stdin: IO[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]
    environ: Mapping[str, str]
    client_factory: Callable[[ClientConfig], Client] = default_client_factory
    # The whole command line (etcdctl's watch looks at the raw os.Args).
    argv: list[str] = field(default_factory=list)
    _env_applied: bool = field(default=False, repr=False)
    _client: Client | None = field(default=None, repr=False)
    _discovered: list[str] | None = field(default=None, repr=False)  # --discovery-srv's

    # ------------------------------------------------------------ flags and output

    def flag(self, name: str) -> Any:
        return self.values[name]

    def out(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else os.fsencode(text)
        self.stdout.write(data)

    def err(self, text: str) -> None:
        self.stderr.write(os.fsencode(text))

    def arg_bytes(self, index: int) -> bytes:
        """A positional argument as the bytes the user typed."""
        return os.fsencode(self.args[index])

    # ------------------------------------------------------------ client set-up

    def apply_environment(self) -> None:
        """Fill the inherited (global) flags from ETCDCTL_* variables."""
        if self._env_applied:
            return
        self._env_applied = True
        inherited = self.command.inherited_flags() or self.command.local_flags()
        used: set[str] = set()
        already_set: set[str] = set()
        for flag in inherited:
            key = flag_to_env(flag.name)
            if flag.name in self.changed:
                already_set.add(key)
                continue
            value = self.environ.get(key, "")
            if value:
                used.add(key)
                try:
                    parsed = flag.parse(value, self.values[flag.name], False)
                except ValueError:
                    continue  # etcdctl ignores the error and keeps the default
                self.values[flag.name] = parsed
        for key, value in self.environ.items():
            if key in used:
                continue
            if key in already_set:
                self.err(
                    zap_line(
                        "fatal",
                        "conflicting environment variable is shadowed by corresponding "
                        "command-line flag (either unset environment variable or disable flag))",
                        **{"environment-variable": key},
                    )
                )
                raise SilentExit(EXIT_ERROR)
            if key.startswith(ENV_PREFIX + "_"):
                self.err(
                    zap_line(
                        "warn",
                        "unrecognized environment variable",
                        **{"environment-variable": f"{key}={value}"},
                    )
                )
        if self.values.get("debug"):
            for flag in inherited:
                text = format_flag_value(flag.kind, self.values[flag.name])
                self.err(f"{flag_to_env(flag.name)}={text}\n")

    def output_format(self) -> str:
        fmt = str(self.values["write-out"])
        if fmt not in ("simple", "json", "fields", "protobuf", "table"):
            raise ExitError(EXIT_BAD_FEATURE, "unsupported output format")
        return fmt

    def endpoints(self) -> list[str]:
        """etcdctl's endpointsFromCmd: the endpoints DNS names (``--discovery-srv``), else
        ``--endpoints``."""
        if self._discovered is None:
            self._discovered = self._discover_endpoints()
        if self._discovered:
            return list(self._discovered)
        return [e.strip() for e in self.values["endpoints"]]

    def _discover_endpoints(self) -> list[str]:
        domain = str(self.values["discovery-srv"])
        if not domain:
            return []
        from petcd.server.srv import SrvError, client_endpoints  # dnspython: only if used

        try:
            found = client_endpoints(domain, str(self.values["discovery-srv-name"]))
        except SrvError as e:
            raise ExitError(EXIT_ERROR, str(e)) from None
        if self.values["insecure-discovery"]:
            return found
        secure = []
        for ep in found:
            if ep.startswith("http://"):
                self.err(f'ignoring discovered insecure endpoint "{ep}"\n')
                continue
            secure.append(ep)
        return secure

    def client_config(self) -> ClientConfig:
        self.apply_environment()
        tls = None
        if self.values["cert"] or self.values["key"] or self.values["cacert"]:
            tls = TLSConfig(
                ca_file=self.values["cacert"] or None,
                cert_file=self.values["cert"] or None,
                key_file=self.values["key"] or None,
            )
        user, password = self.auth_config()
        config = ClientConfig(
            endpoints=tuple(self.endpoints()),
            dial_timeout_s=float(self.values["dial-timeout"]),
            command_timeout_s=float(self.values["command-timeout"]),
            keepalive_time_s=float(self.values["keepalive-time"]),
            keepalive_timeout_s=float(self.values["keepalive-timeout"]),
            insecure_transport=bool(self.values["insecure-transport"]),
            tls=tls,
            user=user,
            password=password,
        )
        self.output_format()
        return config

    def auth_config(self) -> tuple[str, str]:
        """etcdctl's authCfgFromCmd: ``--user name[:password]`` and ``--password``."""
        user = str(self.values["user"])
        password = str(self.values["password"])
        if not user:
            return "", ""
        if password:
            return user, password
        name, colon, inline = user.partition(":")
        if colon:
            return name, inline
        self.out("Password: ")
        self.stdout.flush()
        if self.stdin.isatty():
            import getpass

            return name, getpass.getpass("")
        return name, os.fsdecode(self.stdin.readline()).rstrip("\r\n")

    def client(self) -> Client:
        """etcdctl's mustClientFromCmd: a failed login exits 2, as clientv3.New does."""
        if self._client is None:
            config = self.client_config()
            client = self.client_factory(config)
            if config.user:
                try:
                    client.authenticate()
                except ClientError as exc:
                    client.close()
                    raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
