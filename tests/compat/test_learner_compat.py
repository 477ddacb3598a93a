"""A learner of etcd and a learner of petcd, side by side, through the real etcdctl.

Each side is a one-member cluster plus a learner that caught up with it (started with the
output of ``member add --learner``). The same etcdctl command lines are run against both
learners; exit codes, stdout and stderr must match once the cluster-specific parts (member
ids, endpoints, status numbers, etcdctl's JSON retry warnings) are normalised. What a learner
refuses, etcd's clientv3 retries for a few seconds before giving up, so this is ``long``.

One documented difference: the reference is etcd 3.4, whose learner also refuses the Snapshot
stream (etcdctl retries it forever); etcd 3.5 serves it, and so does petcd (checked on petcd's
side only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN
from tests.integration.petcd_proc import PETCD_BIN
from tests.ports import free_port
from tests.robustness.cluster import Member

pytestmark = pytest.mark.long

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("get", "foo", "--consistency=s"),
    ("get", "foo"),
    ("put", "x", "y"),
    ("del", "foo"),
    ("txn",),  # no input: etcdctl fails before sending anything
    ("compaction", "1"),
    ("defrag",),
    ("member", "list"),
    ("member", "promote", "<B>"),
    ("endpoint", "status"),
    ("endpoint", "health"),
    ("endpoint", "hashkv"),
    ("alarm", "list"),
    ("lease", "grant", "10"),
    ("lease", "list"),
    ("lock", "l"),
)
CATCH_UP_S = 30.0
_LOG_LINE = re.compile(r'^\{"level":.*\n', re.MULTILINE)


class LearnerPair:
    """A member and a learner of one binary; ``ids`` maps the learner's hex id to ``<B>``."""

    def __init__(self, base: Path, binary: str) -> None:
        self.base = base
        self.binary = binary
        self.members: list[Member] = []
        self.ids: dict[str, str] = {}

    def _member(self, name: str, peer_port: int, cluster: str, state: str) -> Member:
        client = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{peer_port}"
        data_dir = self.base / name / "data"
        args = [
            "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", "compat-learner",
        ]  # fmt: skip
        m = Member(data_dir, name=name, args=args, binary=self.binary)
        m.client_port = int(client.rsplit(":", 1)[1])
        m.peer_port = peer_port
        self.members.append(m)
        return m

    def start(self) -> None:
        a_port, b_port = free_port(), free_port()
        a = self._member("a", a_port, f"a=http://127.0.0.1:{a_port}", "new")
        a.start()
        assert ctl(a.endpoint, "put", "foo", "bar").returncode == 0
        out = ctl(
            a.endpoint, "member", "add", "b", f"--peer-urls=http://127.0.0.1:{b_port}", "--learner"
        )
        found = re.search(r"Member +([0-9a-f]+) added", out.stdout)
        assert found, (out.stdout, out.stderr)
        self.ids[found.group(1)] = "<B>"
        cluster = f"a=http://127.0.0.1:{a_port},b=http://127.0.0.1:{b_port}"
        b = self._member("b", b_port, cluster, "existing")
        b.start()
        deadline = time.monotonic() + CATCH_UP_S
        while ctl(b.endpoint, "get", "foo", "--consistency=s").stdout != "foo\nbar\n":
            assert time.monotonic() < deadline, f"the learner never caught up\n{b.log_tail()}"
            time.sleep(0.1)

    @property
    def learner(self) -> Member:
        return self.members[1]

    def run(self, args: tuple[str, ...]) -> tuple[int, str, str]:
        b_id = next(iter(self.ids))
        argv = tuple(b_id if a == "<B>" else a for a in args)
        out = ctl(self.learner.endpoint, *argv)
        return out.returncode, self.normalise(out.stdout, args), self.normalise(out.stderr, args)

    def normalise(self, text: str, args: tuple[str, ...]) -> str:
        text = _LOG_LINE.sub("", text).replace(self.learner.endpoint, "<EP>")
        for hex_id, alias in self.ids.items():
            text = text.replace(hex_id, alias)
        if args == ("endpoint", "status"):
            # endpoint, id, version, db size, is leader, is learner, term, index, applied, errors
            rows = [line.split(", ") for line in text.splitlines()]
            text = "\n".join(", ".join([r[0], r[1], r[4], r[5]]) for r in rows if len(r) >= 9)
        return text

    def stop(self) -> None:
        for m in reversed(self.members):
            m.stop()


def ctl(endpoint: str, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    return subprocess.run(
        [ETCDCTL_BIN, f"--endpoints={endpoint}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**env, "ETCDCTL_API": "3"},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LearnerPair, LearnerPair]]:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed")
    base = tmp_path_factory.mktemp("learner")
    reference = LearnerPair(base / "etcd", ETCD_BIN)
    target = LearnerPair(base / "petcd", PETCD_BIN)
    try:
        reference.start()
        target.start()
        yield reference, target
    finally:
        target.stop()
        reference.stop()


def test_etcdctl_against_a_learner_sees_what_etcd_answers(
    pairs: tuple[LearnerPair, LearnerPair],
) -> None:
    reference, target = pairs
    ref = {" ".join(args): reference.run(args) for args in COMMANDS}
    # The reference really is a learner refusing: a sample of what etcd answered.
    assert ref["put x y"] == (1, "", "Error: etcdserver: rpc not supported for learner\n"), ref
    assert ref["get foo --consistency=s"] == (0, "foo\nbar\n", ""), ref
    assert ref["endpoint status"][1] == "<EP>, <B>, false, true", ref
    got = {" ".join(args): target.run(args) for args in COMMANDS}
    assert got == ref, "\n".join(f"{c}: {ref[c]} | {got[c]}" for c in GATEWAY_CALLS)


def test_a_petcd_learner_streams_a_snapshot_as_etcd_3_5(
    pairs: tuple[LearnerPair, LearnerPair], tmp_path: Path
) -> None:
    _, target = pairs
    path = tmp_path / "learner.db"
    out = ctl(target.learner.endpoint, "snapshot", "save", str(path))
    assert out.returncode == 0, out.stderr
    assert f"Snapshot saved at {path}" in out.stdout, out.stdout
    assert path.stat().st_size > 0


# The JSON gateway's routes (path, body) asked of both learners: etcd's gateway calls go
# through its gRPC interceptors, so a learner refuses what it refuses over gRPC (the streams
# too: with their error chunk). Not /v3/auth/...: etcd 3.4's gateway has no such routes.
GATEWAY_CALLS: tuple[tuple[str, str], ...] = (
    ("/v3/kv/range", '{"key":"Zm9v"}'),
    ("/v3/kv/range", '{"key":"Zm9v","serializable":true}'),
    ("/v3/kv/put", '{"key":"eA==","value":"eQ=="}'),
    ("/v3/kv/deleterange", '{"key":"Zm9v"}'),
    ("/v3/kv/txn", "{}"),
    ("/v3/kv/compaction", '{"revision":"1"}'),
    ("/v3/lease/grant", '{"TTL":"10"}'),
    ("/v3/lease/leases", "{}"),
    ("/v3/maintenance/status", "{}"),
    ("/v3/maintenance/alarm", '{"action":"GET"}'),
    ("/v3/cluster/member/list", "{}"),
    ("/v3/lock/lock", '{"name":"bA=="}'),
    ("/v3/election/leader", '{"name":"ZQ=="}'),
    ("/v3/election/observe", '{"name":"ZQ=="}'),
    ("/v3/watch", '{"create_request":{"key":"Zm9v"}}'),
    ("/v3/lease/keepalive", '{"ID":"1"}'),
)


def _gateway(endpoint: str, path: str, body: str) -> tuple[int, object]:
    """HTTP status and body of one call: an error's as JSON (etcd 3.4's fields come in
    another order than 3.5's), a successful answer's first message reduced to its top-level
    field names (they carry cluster ids and revisions)."""
    url = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
    request = urllib.request.Request(url + path, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, text = resp.status, resp.read(4096).decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    except TimeoutError:
        return 0, "(no answer yet)"  # a stream that serves: it stays open
    if status == 200:
        first = json.loads(text.splitlines()[0]) if text.strip() else {}
        return status, " ".join(sorted(first))
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_the_gateway_of_a_learner_refuses_what_etcd_refuses(
    pairs: tuple[LearnerPair, LearnerPair],
) -> None:
    reference, target = pairs
    ref = {c: _gateway(reference.learner.endpoint, *c) for c in GATEWAY_CALLS}
    text = "etcdserver: rpc not supported for learner"
    learner_error = {"error": text, "code": 14, "message": text}
    assert ref[GATEWAY_CALLS[2]] == (503, learner_error), ref  # the reference refuses a put
    got = {c: _gateway(target.learner.endpoint, *c) for c in GATEWAY_CALLS}
    assert got == ref, "\n".join(f"{c}: {ref[c]} | {got[c]}" for c in GATEWAY_CALLS)
