"""``etcd grpc-proxy start`` (etcd 3.4, /usr/bin/etcd) and ``petcd grpc-proxy start`` side by
side.

Command-line texts: flag errors, etcd's argument checks and the parent command's help must
match byte for byte (the program's name aside); ``start --help`` must list the same flags with
the same texts, except those etcd 3.5 added. Then an etcd member with etcd's proxy in front
and a petcd member with petcd's proxy in front get the same etcdctl commands, through the
proxies: the outputs must be equal once lease ids are normalised (the member ids and ports do
not show in them). At the gRPC level: the same answers to a too large request, MemberPromote
and MemberList, and (a documented difference) the member's status code kept where etcd's proxy
says UNKNOWN. With ``--resolver-prefix`` both register the same key and value and list the
registered proxies as members.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, PETCD_BIN, ServerProcess
from tests.ports import free_port

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="real etcd not installed")

BINARIES = {"etcd": ETCD_BIN, "petcd": PETCD_BIN}
_LOG_LINE = re.compile(r"^\{.*\}$")
# Flags of etcd 3.5's grpc-proxy start that 3.4 does not have.
_NEW_IN_35 = (
    "dial-keepalive-time",
    "dial-keepalive-timeout",
    "endpoints-auto-sync-interval",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "permit-without-stream",
    "self-signed-cert-validity",
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


def _run(binary: str, *args: str) -> tuple[int, str, str]:
    out = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=30, env=_env(), check=False
    )
    stderr = "\n".join(line for line in out.stderr.split("\n") if not _LOG_LINE.match(line))
    return out.returncode, out.stdout, stderr


def _as_etcd(text: str) -> str:
    return re.sub(r"\bpetcd\b", "etcd", text)


def _without_35_flags(text: str) -> str:
    lines = [
        " ".join(line.split())
        for line in text.splitlines()
        if not any(f"--{name} " in line for name in _NEW_IN_35)
    ]
    return "\n".join(lines)


@pytest.mark.parametrize(
    "args",
    [
        ["grpc-proxy"],
        ["grpc-proxy", "--help"],
        ["grpc-proxy", "nonsense"],
        ["grpc-proxy", "--bogus"],
        ["grpc-proxy", "start", "--bogus"],
        ["grpc-proxy", "start", "-x"],
        ["grpc-proxy", "start", "--listen-addr"],
        ["grpc-proxy", "start", "--max-send-bytes=x"],
        ["grpc-proxy", "start", "--max-concurrent-streams=-1"],
        ["grpc-proxy", "start", "--resolver-ttl=1.5"],
        ["grpc-proxy", "start", "--debug=maybe"],
        ["grpc-proxy", "start", "--resolver-prefix=/p"],
        ["grpc-proxy", "start", "--resolver-ttl=3"],
        [
            "grpc-proxy",
            "start",
            "--resolver-prefix=/p",
            "--resolver-ttl=3",
            "--advertise-client-url=",
        ],
    ],
)
def test_command_line_texts_match(args: list[str]) -> None:
    code, out, err = _run(BINARIES["petcd"], *args)
    ref_code, ref_out, ref_err = _run(BINARIES["etcd"], *args)
    assert code == ref_code
    # the usage in an error lists 3.5's flags: compared without them
    assert _without_35_flags(_as_etcd(out)) == _without_35_flags(ref_out)
    assert _without_35_flags(_as_etcd(err)) == _without_35_flags(ref_err)


def test_start_help_lists_the_same_flags() -> None:
    code, out, _ = _run(BINARIES["petcd"], "grpc-proxy", "start", "--help")
    ref_code, ref_out, _ = _run(BINARIES["etcd"], "grpc-proxy", "start", "--help")
    assert code == ref_code == 0
    assert _without_35_flags(_as_etcd(out)) == _without_35_flags(ref_out)


class _Proxy:
    def __init__(self, binary: str, log: Path, endpoint: str, *extra: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        argv = [
            binary,
            "grpc-proxy",
            "start",
            f"--listen-addr={self.address}",
            f"--endpoints={endpoint}",
            "--advertise-client-url=proxy.example:2379",
            *extra,
        ]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + 20
        while "started gRPC proxy" not in log.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class _Member:
    """A member's address, kept next to the proxies."""

    def __init__(self, address: str) -> None:
        self.address = address


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("grpc-proxy-compat")
    members: list[ServerProcess] = []
    out: dict[str, Any] = {}
    try:
        for target in ("etcd", "petcd"):
            m = ServerProcess(target, base / target / "data", name="proxied")
            members.append(m)
            m.start()
            out[target] = _Proxy(BINARIES[target], base / f"{target}-proxy.log", m.endpoint)
            out[f"{target}-member"] = _Member(m.endpoint)
        yield out
    finally:
        for p in out.values():
            if isinstance(p, _Proxy):
                p.stop()
        for m in members:
            m.stop()


def _ctl(address: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    done = subprocess.run(
        [ETCDCTL_BIN, f"--endpoints={address}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={**_env(), "ETCDCTL_API": "3"},
        check=False,
    )
    stderr = "\n".join(line for line in done.stderr.split("\n") if not _LOG_LINE.match(line))
    return done.returncode, done.stdout, stderr


def _normal(text: str, leases: dict[str, str]) -> str:
    def lease(m: re.Match[str]) -> str:
        return leases.setdefault(m.group(0), f"LEASE{len(leases)}")

    text = re.sub(r"\b[0-9a-f]{16}\b", lease, text)
    text = re.sub(r"took = [0-9.]+[µmn]?s", "took = T", text)
    return text.replace(os.uname().nodename, "HOST")


SESSION = [
    ("put", "k1", "v1"),
    ("put", "k2", "v2", "--prev-kv"),
    ("put", "k2", "v3", "--prev-kv"),
    ("get", "k", "--prefix"),
    ("get", "k1", "--print-value-only", "--rev=2"),
    ("txn",),
    ("del", "k2", "--prev-kv"),
    ("get", "", "--from-key", "--keys-only"),
    ("lease", "grant", "60"),
    ("lease", "revoke", "123abc"),
    ("lease", "timetolive", "123abc"),
    ("member", "list"),
    ("compaction", "3"),
    ("get", "k1", "--rev=2"),
    ("put", "", "v"),
    ("lock", "l1", "echo", "held"),
    ("endpoint", "health"),
]
_TXN = 'value("k1") = "v1"\n\nput k3 v3\n\nput k3 other\n\n'


def test_etcdctl_session_through_both_proxies(proxies: dict[str, _Proxy]) -> None:
    seen: dict[str, list[tuple[int, str, str]]] = {}
    for target in ("etcd", "petcd"):
        proxy = proxies[target]
        leases: dict[str, str] = {}
        rows = []
        for args in SESSION:
            code, out, err = _ctl(proxy.address, *args, stdin=_TXN if args == ("txn",) else "")
            out = out.replace(proxy.address, "PROXY")
            err = err.replace(proxy.address, "PROXY")
            rows.append((code, _normal(out, leases), _normal(err, leases)))
        seen[target] = rows
    for args, mine, ref in zip(SESSION, seen["petcd"], seen["etcd"], strict=True):
        assert mine == ref, args


def _rpc(address: str, call: str) -> tuple[str, str]:
    """(status code name, message) of one call through a proxy ("OK", str(response))."""
    with grpc.insecure_channel(address) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        cluster = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
        lease = rpc_pb2_grpc.LeaseStub(ch)  # type: ignore[no-untyped-call]
        try:
            if call == "big-put":
                kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * 2_000_000), timeout=5)
            elif call == "promote":
                cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=1), timeout=5)
            elif call == "member-list":
                return "OK", str(cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=5))
            elif call == "revoke":
                lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=123), timeout=5)
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    return "OK", ""


@pytest.mark.parametrize("call", ["big-put", "promote", "member-list"])
def test_proxy_answers_match_at_the_grpc_level(proxies: dict[str, _Proxy], call: str) -> None:
    mine = _rpc(proxies["petcd"].address, call)
    ref = _rpc(proxies["etcd"].address, call)
    assert mine == ref


def test_member_errors_keep_their_status_code(proxies: dict[str, _Proxy]) -> None:
    """A documented difference: etcd's proxy sends KV and Lease errors back as UNKNOWN (its
    client library turns them into plain errors); petcd's keeps the member's code. The
    message, which etcd's clients match on, is the same."""
    mine = _rpc(proxies["petcd"].address, "revoke")
    ref = _rpc(proxies["etcd"].address, "revoke")
    assert mine == ("NOT_FOUND", "etcdserver: requested lease not found")
    assert ref == ("UNKNOWN", "etcdserver: requested lease not found")


def test_resolver_registration_matches(proxies: dict[str, _Proxy], tmp_path: Path) -> None:
    """Both proxies register under --resolver-prefix with the same key and value, and list the
    registered proxies as the cluster's members."""
    seen = {}
    for target in ("etcd", "petcd"):
        member = proxies[f"{target}-member"].address
        p = _Proxy(
            BINARIES[target],
            tmp_path / f"{target}-reg.log",
            member,
            "--resolver-prefix=/reg",
            "--resolver-ttl=10",
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                _, value, _ = _ctl(member, "get", "/reg/proxy.example:2379", "--print-value-only")
                _, listed, _ = _ctl(p.address, "member", "list")
                if value and "proxy.example" in listed:
                    break
                assert time.monotonic() < deadline, (target, value, listed)
                time.sleep(0.1)
            _, keys, _ = _ctl(member, "get", "/reg", "--prefix", "--keys-only")
            seen[target] = (keys, value, listed.replace(os.uname().nodename, "HOST"))
        finally:
            p.stop()
    assert seen["petcd"] == seen["etcd"]
