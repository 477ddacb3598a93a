"""etcd 3.5's later flags that change what a member does, on real processes.

- ``--enable-grpc-gateway=false``: no JSON gateway (``/v3/...`` answers 404) on the client
  port nor on ``--listen-client-http-urls``, while gRPC and ``/health`` are served;
- ``--peer-client-cert-file``/``--peer-client-key-file``: the certificate a member presents
  when it dials its peers. The members serve a certificate for server authentication only,
  which their peer listeners (``--peer-client-cert-auth``) refuse as a client certificate:
  they form a cluster only through the client certificate these flags name;
- ``--experimental-compaction-sleep-interval``: the pause between two compaction batches
  (``--experimental-compaction-batch-limit``), so a physical compaction of n batches takes
  at least n - 1 pauses.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.petcd_proc import PetcdProcess, etcdctl
from tests.ports import free_port
from tests.tlsfiles import make_tls_files


def _post(url: str, body: bytes = b'{"key":"YQ=="}') -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return int(r.status)


def test_the_gateway_can_be_turned_off(tmp_path: Path) -> None:
    http_port = free_port()
    on = PetcdProcess(tmp_path / "on" / "data", name="on")
    off = PetcdProcess(
        tmp_path / "off" / "data",
        name="off",
        extra_args=[
            "--enable-grpc-gateway=false",
            f"--listen-client-http-urls=http://127.0.0.1:{http_port}",
        ],
    )
    try:
        on.start()
        off.start()
        assert _post(f"http://{on.endpoint}/v3/kv/range") == 200
        for base in (f"http://{off.endpoint}", f"http://127.0.0.1:{http_port}"):
            assert _post(f"{base}/v3/kv/range") == 404, base
            assert _post(f"{base}/v3/watch", b'{"create_request":{"key":"YQ=="}}') == 404
            assert _get(f"{base}/health") == 200
        put = etcdctl(off.endpoint, "put", "a", "1")
        assert (put.returncode, put.stdout) == (0, "OK\n"), put.stderr
    finally:
        off.stop()
        on.stop()


def test_members_dial_their_peers_with_the_peer_client_certificate(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "certs")
    ports = {n: (free_port(), free_port()) for n in ("a", "b", "c")}
    initial = ",".join(f"{n}=https://127.0.0.1:{p}" for n, (_, p) in ports.items())
    members = []
    for name, (client_port, peer_port) in ports.items():
        client, peer = f"http://127.0.0.1:{client_port}", f"https://127.0.0.1:{peer_port}"
        data = tmp_path / name / "data"
        member = PetcdProcess(
            data,
            name=name,
            client_port=client_port,
            peer_port=peer_port,
            args=[
                "--name", name, "--data-dir", str(data),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-token", "peer-client",
                "--peer-cert-file", files["server"], "--peer-key-file", files["server_key"],
                "--peer-trusted-ca-file", files["ca"], "--peer-client-cert-auth",
                "--peer-client-cert-file", files["client"],
                "--peer-client-key-file", files["client_key"],
            ],
        )  # fmt: skip
        members.append(member)
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()  # a leader was elected: the peers reached each other
        put = etcdctl(members[0].endpoint, "put", "k", "v")
        assert put.returncode == 0, put.stderr
        for m in members:
            deadline = time.monotonic() + 10
            while etcdctl(m.endpoint, "get", "k", "--consistency=s").stdout != "k\nv\n":
                assert time.monotonic() < deadline, m.log_tail()
                time.sleep(0.1)
    finally:
        for m in members:
            m.stop()


def test_compaction_pauses_between_batches(tmp_path: Path) -> None:
    m = PetcdProcess(
        tmp_path / "data",
        extra_args=[
            "--experimental-compaction-batch-limit=1",
            "--experimental-compaction-sleep-interval=300ms",
        ],
    )
    try:
        m.start()
        for i in range(7):
            assert etcdctl(m.endpoint, "put", "k", str(i)).returncode == 0
        started = time.monotonic()
        out = etcdctl(m.endpoint, "compaction", "--physical", "7")
        took = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        # 6 records to delete one batch at a time (after the index's batch): >= 5 pauses.
        assert took >= 1.5, took
    finally:
        m.stop()
