"""Bootstrapping through ``--discovery`` (etcd's v2 discovery protocol), etcd 3.4 against petcd.

The discovery service is a real etcd 3.4 with its v2 API on (``--enable-v2``), the way one
runs a private discovery service: a directory ``/v2/keys/discovery/<token>`` whose
``_config/size`` is the cluster size. Three etcd members bootstrap through a discovery URL;
then, after the directory is emptied and its size set again, three petcd members bootstrap
through the same URL on the same peer URLs. What must hold: the same member ids, names and peer
URLs, the same cluster id (both derive them from the peer URLs and the discovery URL as the
token), a working cluster; a member beyond the size is refused as etcd refuses it, with the
same log lines; a restarted member does not need the service.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.procs import Proc, member_list, wait_leader
from tests.compat.servers import ETCD_BIN, PETCD_BIN
from tests.ports import free_port

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="needs etcd 3.4")

START_TIMEOUT_S = 30.0


@dataclass
class Member:
    name: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def argv(self, binary: str, data_dir: Path, discovery: str, *extra: str) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [binary, "--name", self.name, "--data-dir", str(data_dir)]
        argv += ["--listen-client-urls", client, "--advertise-client-urls", client]
        argv += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        argv += ["--discovery", discovery, *extra]
        if binary == ETCD_BIN:
            argv += ["--logger", "zap"]
        return argv


class DiscoveryService:
    """A real etcd 3.4 serving the v2 keys API: the discovery service."""

    def __init__(self, tmp: Path, member: Member | None = None) -> None:
        self.member = member or Member("discovery")
        self.proc = Proc(
            [
                ETCD_BIN,
                "--enable-v2",
                "--name",
                "discovery",
                "--data-dir",
                str(tmp / "discovery.data"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.member.client_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.member.client_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.member.peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.member.peer_port}",
                "--initial-cluster",
                f"discovery=http://127.0.0.1:{self.member.peer_port}",
            ],
            tmp / "discovery.log",
        )
        self.proc.start()
        wait_leader(self.member.endpoint, self.proc)

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.member.client_port}/v2/keys/discovery/{token}"

    def reset(self, token: str, size: int) -> None:
        """An empty directory for ``token`` whose size is ``size``."""
        with contextlib.suppress(urllib.error.HTTPError):
            self._call("DELETE", self.url(token) + "?recursive=true")
        self._call("PUT", self.url(token) + "/_config/size", f"value={size}".encode())

    @staticmethod
    def _call(method: str, url: str, body: bytes | None = None) -> None:
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            resp.read()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DiscoveryService]:
    s = DiscoveryService(tmp_path)
    try:
        yield s
    finally:
        s.proc.stop()


def _bootstrap(
    binary: str, members: list[Member], tmp: Path, url: str, tag: str, procs: list[Proc]
) -> None:
    """Start every member through ``url`` (each waits for the others), then wait for a leader."""
    started = []
    for m in members:
        p = Proc(m.argv(binary, tmp / f"{tag}-{m.name}", url), tmp / f"{tag}-{m.name}.log")
        p.start()
        procs.append(p)
        started.append((m, p))
    for m, p in started:
        wait_leader(m.endpoint, p)


def test_members_bootstrap_through_discovery_as_etcd_members_do(
    service: DiscoveryService, tmp_path: Path
) -> None:
    members = [Member(f"m{i}") for i in range(1, 4)]
    url = service.url("token-a")
    procs: list[Proc] = []
    try:
        service.reset("token-a", 3)
        _bootstrap(ETCD_BIN, members, tmp_path, url, "etcd", procs)
        on_etcd = member_list(members[0].endpoint)
        extra = Member("m4")
        etcd_full = Proc(
            extra.argv(ETCD_BIN, tmp_path / "etcd-m4", url, "--discovery-fallback", "exit"),
            tmp_path / "etcd-m4.log",
        )
        etcd_full.start()
        assert etcd_full.wait_exit() == 1
        for p in procs:
            p.stop()
        procs.clear()

        service.reset("token-a", 3)
        _bootstrap(PETCD_BIN, members, tmp_path, url, "petcd", procs)
        on_petcd = member_list(members[0].endpoint)
        assert on_petcd == on_etcd
        assert {len(us) for _, _, us in on_petcd[1]} == {1}

        with grpc.insecure_channel(members[0].endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
        with grpc.insecure_channel(members[2].endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            got = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
            assert [x.value for x in got.kvs] == [b"v"]

        # A fourth member: the cluster is full. Refused as etcd refuses it, registering nothing.
        petcd_full = Proc(
            extra.argv(PETCD_BIN, tmp_path / "petcd-m4", url, "--discovery-fallback", "exit"),
            tmp_path / "petcd-m4.log",
        )
        petcd_full.start()
        assert petcd_full.wait_exit() == 1
        assert petcd_full.warnings() == etcd_full.warnings()
        assert "discovery: cluster is full" in str(petcd_full.warnings())
        # etcd's default fallback is a v2 proxy, which petcd does not have: it says so.
        proxy_fallback = Proc(
            extra.argv(PETCD_BIN, tmp_path / "petcd-m4b", url), tmp_path / "petcd-m4b.log"
        )
        proxy_fallback.start()
        assert proxy_fallback.wait_exit() == 1
        assert "cannot fall back to a proxy" in proxy_fallback.log_text()

        # A restarted member does not need the service any more.
        service.proc.stop()
        procs[0].stop()
        restarted = Proc(
            members[0].argv(PETCD_BIN, tmp_path / "petcd-m1", url), tmp_path / "petcd-m1.log"
        )
        restarted.start()
        procs.append(restarted)
        wait_leader(members[0].endpoint, restarted)
        assert "discovery token is ignored since cluster already initialized" in (
            restarted.log_text()
        )
    finally:
        for p in procs:
            p.stop()


def test_refusals_match_etcd(service: DiscoveryService, tmp_path: Path) -> None:
    """A token without a size, and a member registered before that lost its data dir."""
    m = Member("solo")
    for binary, tag in ((ETCD_BIN, "etcd"), (PETCD_BIN, "petcd")):
        # No _config/size under the token.
        p = Proc(
            m.argv(binary, tmp_path / f"{tag}-nosize", service.url(f"nosize-{tag}")),
            tmp_path / f"{tag}-nosize.log",
        )
        p.start()
        assert p.wait_exit() == 1
        # (etcd's own "size key not found" check never matches: the service's error text)
        error = str(p.warnings()[0]["error"])
        assert error.startswith("failed to join discovery cluster (100: Key not found ("), error
    size_warnings = {
        tag: Proc([], tmp_path / f"{tag}-nosize.log").warnings() for tag in ("etcd", "petcd")
    }
    assert size_warnings["petcd"] == size_warnings["etcd"]

    dup: dict[str, list[dict[str, object]]] = {}
    for binary, tag in ((ETCD_BIN, "etcd"), (PETCD_BIN, "petcd")):
        token = f"dup-{tag}"
        service.reset(token, 1)
        first = Proc(
            m.argv(binary, tmp_path / f"{tag}-dup1", service.url(token)),
            tmp_path / f"{tag}-dup1.log",
        )
        first.start()
        try:
            wait_leader(m.endpoint, first)
        finally:
            first.stop()
        # The same member with a new (empty) data dir: registered already.
        again = Proc(
            m.argv(binary, tmp_path / f"{tag}-dup2", service.url(token)),
            tmp_path / f"{tag}-dup2.log",
        )
        again.start()
        assert again.wait_exit() == 1
        dup[tag] = again.warnings()
    assert dup["petcd"] == dup["etcd"]
    assert dup["petcd"][1]["msg"] == "member has been registered with discovery service"


def test_a_service_not_up_yet_is_asked_again(tmp_path: Path) -> None:
    """The member retries (after 2, 4 ... s) until the service answers, then bootstraps."""
    where = Member("discovery")
    url = f"http://127.0.0.1:{where.client_port}/v2/keys/discovery/later"
    m = Member("solo")
    member = Proc(m.argv(PETCD_BIN, tmp_path / "solo", url), tmp_path / "solo.log")
    member.start()
    service: DiscoveryService | None = None
    try:
        deadline = time.monotonic() + 20
        while "retry connecting to discovery service" not in member.log_text():
            assert time.monotonic() < deadline, member.log_text()
            time.sleep(0.1)
        service = DiscoveryService(tmp_path, where)
        service.reset("later", 1)
        wait_leader(m.endpoint, member)
        _, listed = member_list(m.endpoint)
        assert [name for _, name, _ in listed] == ["solo"]
    finally:
        member.stop()
        if service is not None:
            service.proc.stop()
