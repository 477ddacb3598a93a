"""The corruption checks reach peers whose client URLs are https (``petcd.grpc.peer_hash``).

Three members serve clients on https only, with client certificates required
(``--cert-file``, ``--trusted-ca-file``, ``--client-cert-auth``; the served certificate is for
server authentication only). One member's data is changed behind raft's back, and it restarts
with ``--experimental-initial-corrupt-check``:

- with only its served certificate it cannot be a TLS client of its peers (their listeners
  refuse a certificate without client authentication): they are unreachable, it starts;
- with ``--client-cert-file``/``--client-key-file`` naming a client certificate it gets their
  hashes and refuses to start, as it does on plain http client URLs (``test_corrupt.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import PetcdProcess, kv_stub
from tests.integration.test_corrupt import CHECK_FLAG, corrupt_value
from tests.ports import free_port
from tests.tlsfiles import make_tls_files


def _members(base: Path, files: dict[str, str]) -> list[PetcdProcess]:
    ports = {n: (free_port(), free_port()) for n in ("a", "b", "c")}
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, (_, p) in ports.items())
    credentials = grpc.ssl_channel_credentials(
        Path(files["ca"]).read_bytes(),
        Path(files["client_key"]).read_bytes(),
        Path(files["client"]).read_bytes(),
    )
    members = []
    for name, (client_port, peer_port) in ports.items():
        client, peer = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        data = base / name / "data"
        member = PetcdProcess(
            data,
            name=name,
            client_port=client_port,
            peer_port=peer_port,
            credentials=credentials,
            args=[
                "--name", name, "--data-dir", str(data),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-token", "corrupt-tls",
                "--cert-file", files["server"], "--key-file", files["server_key"],
                "--trusted-ca-file", files["ca"], "--client-cert-auth",
            ],
        )  # fmt: skip
        members.append(member)
    return members


@pytest.fixture
def members(tmp_path: Path) -> Iterator[tuple[list[PetcdProcess], dict[str, str]]]:
    files = make_tls_files(tmp_path / "certs")
    ms = _members(tmp_path, files)
    try:
        for m in ms:
            m.start(wait=False)
        for m in ms:
            m.wait_ready()
        yield ms, files
    finally:
        for m in ms:
            m.stop()


def _put(m: PetcdProcess, key: bytes, value: bytes, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with m.channel() as ch:
        while True:
            try:
                kv_stub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _messages(m: PetcdProcess) -> list[str]:
    return [str(r.get("msg")) for r in m.log_records()]


def test_initial_check_reaches_https_peers_with_the_client_certificate(
    members: tuple[list[PetcdProcess], dict[str, str]],
) -> None:
    ms, files = members
    _put(ms[0], b"corrupt-me", b"the original value")
    _put(ms[0], b"other", b"x")  # every member applied the first put by now or soon
    victim = ms[2]
    time.sleep(1.0)  # the victim applies both puts before it stops
    victim.stop()
    corrupt_value(victim, b"corrupt-me")  # type: ignore[arg-type]
    base_args = list(victim.args or [])

    # Its served certificate is not a client certificate: the peers refuse it, it starts.
    victim.args = [*base_args, CHECK_FLAG]
    victim.start()
    messages = _messages(victim)
    assert "failed hash kv request" in messages
    assert "found data inconsistency with peers" not in " ".join(messages)
    victim.stop()

    # With --client-cert-file it gets its peers' hashes over https and refuses to start.
    victim.args = [
        *base_args,
        CHECK_FLAG,
        "--client-cert-file", files["client"], "--client-key-file", files["client_key"],
    ]  # fmt: skip
    victim.start(wait=False)
    assert victim.proc is not None
    assert victim.proc.wait(timeout=60) == 1, victim.log_tail()
    tail = victim.log_tail()
    assert "found data inconsistency with peers" in tail, tail
