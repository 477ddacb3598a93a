"""The three-member cluster etcd-rs's tests drive, as real processes instead of docker-compose.

Theory of operation: etcd-rs's ``tests/support.rs`` runs ``make setup-etcd-cluster``,
``make start-etcd-node ETCD_NODE=etcd-N``, ``make stop-etcd-node``, ``make
teardown-etcd-cluster`` and ``make etcd-cluster-status`` in the crate's directory; the crate's
Makefile does that with docker-compose. Ours (``Makefile`` next to this file, copied over the
crate's by ``test_rust_etcd_rs.py``) runs this script instead, one command per target:

- ``setup [--tls]``: what ``teardown`` does, then (with ``--tls``) certificates where the
  tests read them, ``hack/certs/ca.pem``, ``etcd-N.pem``, ``etcd-N-key.pem`` (one CA; each
  member's certificate names 127.0.0.1, localhost and ``etcd-N``, the name the tests verify,
  for server and client authentication, as the crate's cfssl "peer" profile), then the three
  members, and waits until each reports a leader (docker-compose ``up -d`` returns at once;
  the tests connect right away).
- ``start etcd-N``: starts the member again on its data directory (what ``docker-compose
  start`` does to a stopped container) and waits until its client port takes connections:
  etcd binds within milliseconds, petcd's Python needs a second or two to import itself.
- ``stop etcd-N``: as ``docker stop``: SIGTERM, then SIGKILL after 10 seconds; returns once
  the process is gone.
- ``teardown``: stops every member that runs and removes the data directories (``docker-compose
  down`` removes the containers and their data).
- ``status``: each member's pid and ``etcdctl endpoint status`` (printed only, as the crate's).

The members are those of the crate's compose file: ``etcd-N`` with client URL
``127.0.0.1:N2379`` and peer URL ``127.0.0.1:N2380``, one cluster token, client and peer TLS
with client certificates required when ``--tls``. The server is ``$PETCD_ETCD_RS_TARGET``:
``etcd`` (``/usr/bin/etcd``, 3.4) or ``petcd`` (``python -m petcd.server.main`` with
``$PETCD_ETCD_RS_SRC`` on ``PYTHONPATH``). Everything lives in ``$PETCD_ETCD_RS_STATE``: a
data directory, a log and a pid file per member. A pid is only signalled while its command
line still names the member's data directory (a pid file can outlive its process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MEMBERS = ("etcd-1", "etcd-2", "etcd-3")
STOP_GRACE_S = 10.0  # docker stop's default before SIGKILL
READY_TIMEOUT_S = 60.0
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"


def _index(member: str) -> int:
    assert member in MEMBERS, member
    return int(member.rsplit("-", 1)[1])


def client_port(member: str) -> int:
    return _index(member) * 10000 + 2379


def peer_port(member: str) -> int:
    return _index(member) * 10000 + 2380


def _state() -> Path:
    return Path(os.environ["PETCD_ETCD_RS_STATE"])


def _certs() -> Path:
    return Path("hack") / "certs"  # relative to the crate, where the tests read them


def _tls() -> bool:
    return (_state() / "tls").exists()


def _scheme() -> str:
    return "https" if _tls() else "http"


def _command(member: str) -> list[str]:
    target = os.environ["PETCD_ETCD_RS_TARGET"]
    if target == "etcd":
        argv = [ETCD_BIN]
    else:
        assert target == "petcd", target
        argv = [sys.executable, "-m", "petcd.server.main"]
    scheme = _scheme()
    client = f"{scheme}://127.0.0.1:{client_port(member)}"
    peer = f"{scheme}://127.0.0.1:{peer_port(member)}"
    cluster = ",".join(f"{m}={scheme}://127.0.0.1:{peer_port(m)}" for m in MEMBERS)
    argv += [
        "--name",
        member,
        "--data-dir",
        str(_state() / f"{member}.data"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster-token",
        "etcd-cluster",
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        "new",
    ]
    if _tls():
        certs = _certs().resolve()
        ca, cert, key = certs / "ca.pem", certs / f"{member}.pem", certs / f"{member}-key.pem"
        argv += ["--client-cert-auth", "--trusted-ca-file", str(ca)]
        argv += ["--cert-file", str(cert), "--key-file", str(key)]
        argv += ["--peer-client-cert-auth", "--peer-trusted-ca-file", str(ca)]
        argv += ["--peer-cert-file", str(cert), "--peer-key-file", str(key)]
    return argv


def _pid(member: str) -> int | None:
    """The member's process, if it still runs (not a zombie, and still the member's)."""
    try:
        pid = int((_state() / f"{member}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return None
    if str(_state() / f"{member}.data").encode() not in cmdline.split(b"\0"):
        return None
    return pid


def start(member: str) -> subprocess.Popen[bytes] | None:
    """Starts the member unless it runs; its process, if started."""
    if _pid(member) is not None:
        return None
    # The tests' make variables reach us as ETCD_NODE, ETCD_CLUSTER_WITH_TLS: the servers would
    # read them as flags (a container has an environment of its own).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    if os.environ["PETCD_ETCD_RS_TARGET"] == "petcd":
        env["PYTHONPATH"] = os.environ["PETCD_ETCD_RS_SRC"]
    with open(_state() / f"{member}.log", "ab") as log:
        proc = subprocess.Popen(
            _command(member),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    (_state() / f"{member}.pid").write_text(str(proc.pid))
    return proc


def _wait_listening(member: str, proc: subprocess.Popen[bytes] | None, deadline: float) -> None:
    while time.monotonic() < deadline:
        # Not _pid(): until the child has exec'ed, its command line is still ours.
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{member} exited; see {_state() / member}.log")
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", client_port(member))) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{member} not listening after {READY_TIMEOUT_S} s")


def _has_leader(member: str) -> bool:
    import grpc

    from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    target = f"127.0.0.1:{client_port(member)}"
    if _tls():
        certs = _certs()
        credentials = grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(),
            (certs / f"{member}-key.pem").read_bytes(),
            (certs / f"{member}.pem").read_bytes(),
        )
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
        try:
            return bool(stub.Status(rpc_pb2.StatusRequest(), timeout=1.0).leader)
        except grpc.RpcError:
            return False


def stop(member: str) -> None:
    pid = _pid(member)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while _pid(member) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid(member) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _pid(member) is not None:
            time.sleep(0.05)


def teardown() -> None:
    for member in MEMBERS:  # SIGTERM to all first: they stop together, as compose's down
        pid = _pid(member)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for member in MEMBERS:
        stop(member)
        shutil.rmtree(_state() / f"{member}.data", ignore_errors=True)
        (_state() / f"{member}.pid").unlink(missing_ok=True)
    (_state() / "tls").unlink(missing_ok=True)


def _write_certificates() -> None:
    from tests.tlsfiles import make_member_files

    shutil.rmtree(_certs(), ignore_errors=True)
    make_member_files(_certs(), {m: ("127.0.0.1", "localhost", m) for m in MEMBERS})


def setup(tls: bool) -> None:
    teardown()
    _state().mkdir(parents=True, exist_ok=True)
    if tls:
        _write_certificates()
        (_state() / "tls").touch()
    procs = {member: start(member) for member in MEMBERS}
    deadline = time.monotonic() + READY_TIMEOUT_S
    for member in MEMBERS:
        _wait_listening(member, procs[member], deadline)
    for member in MEMBERS:
        while not _has_leader(member):
            if time.monotonic() > deadline:
                raise SystemExit(f"{member} has no leader after {READY_TIMEOUT_S} s")
            if _pid(member) is None:
                raise SystemExit(f"{member} exited; see {_state() / member}.log")
            time.sleep(0.1)


def status() -> None:
    for member in MEMBERS:
        print(f"{member}: pid {_pid(member)}")
    argv = [ETCDCTL_BIN, "endpoint", "status", "-w", "table", "--command-timeout", "2s"]
    argv.append("--endpoints=" + ",".join(f"127.0.0.1:{client_port(m)}" for m in MEMBERS))
    if _tls():
        certs = _certs()
        argv += [f"--cacert={certs / 'ca.pem'}", f"--cert={certs / 'etcd-1.pem'}"]
        argv += [f"--key={certs / 'etcd-1-key.pem'}"]
    subprocess.run(argv, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30, check=False)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup").add_argument("--tls", choices=("true", "false"), default="false")
    sub.add_parser("start").add_argument("member", choices=MEMBERS)
    sub.add_parser("stop").add_argument("member", choices=MEMBERS)
    sub.add_parser("teardown")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup(args.tls == "true")
    elif args.command == "start":
        proc = start(args.member)
        _wait_listening(args.member, proc, time.monotonic() + READY_TIMEOUT_S)
    elif args.command == "stop":
        stop(args.member)
    elif args.command == "teardown":
        teardown()
    else:
        status()


if __name__ == "__main__":
    main(sys.argv[1:])
