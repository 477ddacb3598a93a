"""Kubernetes' storage call patterns through the Go client, etcd against petcd.

Theory of operation: ``main.go`` (built once per test session with ``go build``
into a temporary directory; Go's own build cache makes later sessions fast) is
run against a fresh reference etcd and a fresh target server of its own (it
compacts the whole keyspace, so it must not share the session's servers). It
prints a JSON-lines transcript, already normalised by the program (lease and
member ids by order of appearance, no raft terms, the endpoint as
``ENDPOINT``); revisions are kept and must agree exactly. The transcript is
cut into sections (``{"step": "section"}`` lines) and each section is one test,
so a difference in one pattern does not hide the others.

If the Go toolchain or the modules are missing the tests fail with a message
that says so: they never skip silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import _targets
from tests.compat.servers import ServerProcess
from tests.robustness.cluster import Cluster

HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 120.0
SECTIONS = (
    "crud",
    "list",
    "leases",
    "watch-cache",
    "compaction",
    "health",
    "mutex",
    "election",
    "stm",
    "large-objects",
    "watch-multiplex",
    "namespace",
)

Transcript = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def goclient_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None
    )
    if go is None:
        pytest.fail(
            "the Go toolchain is needed for tests/compat/goclient (go not on PATH, "
            "no /usr/local/go/bin/go); install Go >= the version in go.mod"
        )
    out = tmp_path_factory.mktemp("goclient") / "k8sclient"
    try:
        proc = subprocess.run(
            [go, "build", "-o", str(out), "."],
            cwd=HERE,
            capture_output=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"go build of {HERE} took more than {BUILD_TIMEOUT_S}s (module download?)")
    if proc.returncode != 0:
        pytest.fail(
            f"go build of {HERE} failed (Go toolchain or modules unavailable? the module "
            f"proxy must be reachable for a cold build):\n{proc.stderr.decode(errors='replace')}"
        )
    return out


def run_transcript(binary: Path, endpoints: list[str]) -> tuple[Transcript, str]:
    proc = subprocess.run(
        [str(binary), "-endpoint", ",".join(endpoints)],
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    sections: Transcript = {}
    current: list[dict[str, Any]] = []
    for line in proc.stdout.decode().splitlines():
        record = json.loads(line)
        if record["step"] == "section":
            current = sections.setdefault(record["name"], [])
        else:
            current.append(record)
    report = f"exit {proc.returncode}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
    return sections, report


@pytest.fixture(scope="module", params=_targets())
def transcripts(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    goclient_binary: Path,
) -> Iterator[tuple[str, Transcript, str, Transcript, str]]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"goclient-{kind}")
    reference = ServerProcess("etcd", base / "reference" / "data", name="k8s")
    target = ServerProcess(kind, base / "target" / "data", name="k8s")
    try:
        reference.start()
        target.start()
        ref, ref_report = run_transcript(goclient_binary, [reference.endpoint])
        tgt, tgt_report = run_transcript(goclient_binary, [target.endpoint])
        yield kind, ref, ref_report, tgt, tgt_report
    finally:
        target.stop()
        reference.stop()


def _compare(section: str, transcripts: tuple[str, Transcript, str, Transcript, str]) -> None:
    kind, ref, ref_report, tgt, tgt_report = transcripts
    assert section in ref and "done" in [r["step"] for r in ref.get("namespace", [])], (
        f"the Go program failed against the reference etcd:\n{ref_report}"
    )
    assert section in tgt, f"the Go program stopped before {section} on {kind}:\n{tgt_report}"
    fatal = [r for r in tgt[section] if r["step"] == "fatal"]
    assert not fatal, f"{section} failed on {kind}: {fatal}"
    for i, (want, got) in enumerate(zip(ref[section], tgt[section], strict=False)):
        assert want == got, f"{section} step {i} ({want['step']}) differs on {kind}"
    assert len(ref[section]) == len(tgt[section]), f"{section}: {tgt[section]}"


@pytest.mark.parametrize("section", SECTIONS)
def test_k8s_pattern_transcript(
    section: str, transcripts: tuple[str, Transcript, str, Transcript, str]
) -> None:
    _compare(section, transcripts)


def test_reference_transcript_is_meaningful(
    transcripts: tuple[str, Transcript, str, Transcript, str],
) -> None:
    """The reference run shows the behaviours the comparison relies on."""
    _, ref, report, _, _ = transcripts
    steps = [r for section in SECTIONS for r in ref.get(section, [])]
    assert [r["step"] for r in ref.get("namespace", [])][-1:] == ["done"], report
    assert steps and steps[-1]["step"] == "done", report
    by_step: dict[str, list[dict[str, Any]]] = {}
    for record in steps:
        by_step.setdefault(record["step"], []).append(record)
    assert [r["txn"]["succeeded"] for r in by_step["create"]] == [True] * 3
    assert by_step["create-exists"][0]["txn"]["succeeded"] is False
    compacted = "etcdserver: mvcc: required revision has been compacted"
    assert {r["error"] for r in by_step["get-compacted"]} == {compacted}
    assert by_step["watch-compacted"][0]["error"] == compacted
    assert by_step["watch-compacted"][0]["compact"] > 0
    assert by_step["cache-progress"][0]["progress"] is True
    assert by_step["trylock"][0]["locked"] is True
    assert by_step["put-too-large"][0]["error"] == "etcdserver: request is too large"
    assert by_step["list-large"][0]["bytes"] > 10 * 1024 * 1024
    # WithFragment: the ~10 MiB catch-up is split on the wire and joined by the client.
    assert by_step["watch-large-fragment"][0]["events"] == 12
    assert by_step["watch-large-fragment"][0]["responses"] == 1
    lease_gone = "etcdserver: requested lease not found"
    assert by_step["create-revoked-lease"][0]["error"] == lease_gone
    assert [kv["key"] for kv in by_step["ns-get"][0]["kvs"]] == ["x", "y", "z"]
    assert by_step["stm"][0]["sum"] == 500 and by_step["stm"][0]["commits"] == 40


@pytest.fixture(scope="module", params=_targets())
def cluster_transcripts(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    goclient_binary: Path,
) -> Iterator[tuple[str, Transcript, str, Transcript, str]]:
    """The same program against 3-member clusters, all endpoints given to the client."""
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"goclient-cluster-{kind}")
    reference = Cluster(base / "reference", "etcd", 3)
    target = Cluster(base / "target", kind, 3)
    try:
        reference.start()
        target.start()
        ref, ref_report = run_transcript(goclient_binary, reference.endpoints)
        tgt, tgt_report = run_transcript(goclient_binary, target.endpoints)
        yield kind, ref, ref_report, tgt, tgt_report
    finally:
        target.stop()
        reference.stop()


@pytest.mark.long
@pytest.mark.parametrize("section", SECTIONS)
def test_k8s_pattern_transcript_on_a_cluster(
    section: str, cluster_transcripts: tuple[str, Transcript, str, Transcript, str]
) -> None:
    _compare(section, cluster_transcripts)


KEEPALIVE_HOLD = "45s"


@pytest.mark.long
def test_idle_watch_survives_client_keepalive_pings(
    request: pytest.FixtureRequest,
    servers: tuple[ServerProcess, ServerProcess],
    goclient_binary: Path,
) -> None:
    """An apiserver's client pings an idle connection; the server must not send GOAWAY.

    etcd enforces a minimum ping interval of --grpc-keepalive-min-time (5 s);
    pings every 10 s (grpc-go's floor; Kubernetes uses 30 s) are within it.
    """
    reference, target = servers
    procs = [
        subprocess.Popen(
            [str(goclient_binary), "-endpoint", s.endpoint, "-keepalive-probe", KEEPALIVE_HOLD],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for s in (reference, target)
    ]
    transcripts, errs = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, (out, err)
        transcripts.append([json.loads(line) for line in out.decode().splitlines()])
        errs.append(err.decode(errors="replace"))
    ref, tgt = transcripts
    assert ref == [
        {"step": "keepalive-start", "state": "READY"},
        {"step": "keepalive-held", "changes": []},
        {"step": "keepalive-event", "events": 1},
    ], ref
    assert tgt == ref, errs[1]  # grpc-go logs the GOAWAY and its debug data
