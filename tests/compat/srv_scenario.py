"""DNS SRV discovery, etcd 3.4 against petcd, inside a network and mount namespace of its own.

Run by ``test_srv_discovery_compat.py`` as ``unshare --mount --net --propagation private --
python -m tests.compat.srv_scenario <tmp dir>``; prints one JSON document on stdout.

Theory of operation: DNS discovery reads the system's resolver configuration, so the scenario
gives itself a private one. In a fresh network namespace (only its own loopback, which it
brings up; every port is free) and a private mount namespace (``/etc/resolv.conf`` replaced by
a bind mount of a file naming ``127.0.0.1``), it serves a small zone ``petcd.test`` on
127.0.0.1:53 (``FakeDns``: dnspython parses the queries and builds the answers): SRV records
of three members' peer and client endpoints and the A records of their host names
(``m1.petcd.test`` is 127.0.0.1, ``m2`` 127.0.0.2, ``m3`` 127.0.0.3). Then, for etcd and
for petcd in turn: three members bootstrap with ``--discovery-srv petcd.test``; the member list
and the cluster id are recorded; the real ``etcdctl`` and ``petcdctl`` list the members through
``--discovery-srv``; a gateway (``etcd gateway start`` / ``petcd gateway start``) finds its
endpoints through ``--discovery-srv`` and a put and get go through it; a member whose advertised
peer URL is not in the records is refused. Every process is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.tlsfiles import make_peer_files

REPO = Path(__file__).resolve().parents[2]
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"
PETCD_BIN = str(REPO / ".venv" / "bin" / "petcd")
PETCDCTL_BIN = str(REPO / ".venv" / "bin" / "petcdctl")
ZONE = "petcd.test"
HOSTS = {f"m{i}.{ZONE}.": f"127.0.0.{i}" for i in (1, 2, 3)}
GATEWAY = "127.0.0.9:23790"


class FakeDns:
    """An authoritative answerer for ``petcd.test`` on 127.0.0.1:53 (UDP), in a thread."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            data, peer = self.sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
            except Exception:  # not a query: ignore it
                continue
            reply = dns.message.make_response(query)
            q = query.question[0]
            name, kind = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
            answers = self.records.get((name, kind))
            if answers:
                reply.answer.append(_rrset(name, kind, answers))
            elif not any(n == name for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)


def _rrset(name: str, kind: str, answers: list[str]) -> dns.rrset.RRset:
    """The records; SRV targets written uncompressed (Go's resolver refuses compressed ones,
    which dnspython would write)."""
    if kind != "SRV":
        return dns.rrset.from_text_list(name, 60, "IN", kind, answers)
    rrset = dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.SRV)
    for text in answers:
        priority, weight, port, target = text.split()
        raw = struct.pack(">HHH", int(priority), int(weight), int(port))
        raw += dns.name.from_text(target).to_wire() or b""
        rrset.add(dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.SRV, raw), 60)
    return rrset


def _private_network_and_resolver(tmp: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    conf = tmp / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.running.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.running:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.running.clear()


def _member_argv(binary: str, i: int, data: Path, tls: dict[str, str]) -> list[str]:
    ip = f"127.0.0.{i}"
    argv = [binary, "--name", f"m{i}", "--data-dir", str(data / f"m{i}")]
    argv += ["--listen-client-urls", f"http://{ip}:2379"]
    argv += ["--advertise-client-urls", f"http://m{i}.{ZONE}:2379"]
    argv += ["--listen-peer-urls", f"https://{ip}:2380"]
    argv += ["--initial-advertise-peer-urls", f"https://m{i}.{ZONE}:2380"]
    argv += ["--peer-cert-file", tls["peer"], "--peer-key-file", tls["peer_key"]]
    argv += ["--peer-trusted-ca-file", tls["ca"]]
    argv += ["--discovery-srv", ZONE]
    if binary == ETCD_BIN:
        argv += ["--logger", "zap"]
    return argv


def _wait_leader(endpoint: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{endpoint}: exited {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                if stub.Status(rpc_pb2.StatusRequest(), timeout=1).leader:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{endpoint}: no leader")


def _run(argv: list[str], timeout_s: float = 30) -> dict[str, Any]:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    return {"code": done.returncode, "out": done.stdout, "err": done.stderr}


def _warnings(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("level") not in ("info", "debug"):
                out.append({k: rec[k] for k in ("level", "msg", "error") if k in rec})
    return out


def scenario(target: str, tmp: Path, tls: dict[str, str]) -> dict[str, Any]:
    binary = ETCD_BIN if target == "etcd" else PETCD_BIN
    ctl = ETCDCTL_BIN if target == "etcd" else PETCDCTL_BIN
    data = tmp / target
    procs = Procs(tmp)
    result: dict[str, Any] = {}
    try:
        members = [
            procs.start(_member_argv(binary, i, data, tls), f"{target}-m{i}.log") for i in (1, 2, 3)
        ]
        for i, p in enumerate(members, 1):
            _wait_leader(f"127.0.0.{i}:2379", p)
        with grpc.insecure_channel("127.0.0.1:2379") as ch:
            stub = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
            listed = stub.MemberList(rpc_pb2.MemberListRequest(linearizable=True), timeout=10)
        result["cluster_id"] = listed.header.cluster_id
        result["members"] = sorted(
            [m.ID, m.name, list(m.peerURLs), list(m.clientURLs)] for m in listed.members
        )
        discovery = ["--discovery-srv", ZONE, "--insecure-discovery"]
        result["etcdctl"] = _run([ETCDCTL_BIN, *discovery, "member", "list", "-w", "simple"])
        result["ctl"] = _run([ctl, *discovery, "member", "list", "-w", "simple"])
        result["ctl_health"] = _run([ctl, *discovery, "endpoint", "health"])
        missing = ["--discovery-srv", f"nothere.{ZONE}"]
        result["ctl_nxdomain"] = _run([ctl, *missing, "get", "x"])
        result["gateway_nxdomain"] = _run([binary, "gateway", "start", *missing])
        # Without --insecure-discovery, http endpoints are dropped (then none is left).
        result["ctl_secure_only"] = _run([ctl, "--discovery-srv", ZONE, "get", "x"], 15)
        gateway = procs.start(
            [
                binary,
                "gateway",
                "start",
                "--discovery-srv",
                ZONE,
                "--listen-addr",
                "127.0.0.9:23790",
            ],
            f"{target}-gateway.log",
        )
        time.sleep(1.0)
        result["gateway_put"] = _run(
            [ETCDCTL_BIN, "--endpoints", "127.0.0.9:23790", "put", "k", "v"]
        )
        result["gateway_get"] = _run([ETCDCTL_BIN, "--endpoints", "127.0.0.9:23790", "get", "k"])
        result["gateway_alive"] = gateway.poll() is None
        procs.stop_all()

        # A member whose advertised peer URL is not among the records.
        stray_argv = [binary, "--name", "m4", "--data-dir", str(data / "m4")]
        stray_argv += ["--listen-client-urls", "http://127.0.0.4:2379"]
        stray_argv += ["--advertise-client-urls", "http://127.0.0.4:2379"]
        stray_argv += ["--listen-peer-urls", "https://127.0.0.4:2380"]
        stray_argv += ["--initial-advertise-peer-urls", "https://127.0.0.4:2380"]
        stray_argv += ["--peer-cert-file", tls["peer"], "--peer-key-file", tls["peer_key"]]
        stray_argv += ["--peer-trusted-ca-file", tls["ca"], "--discovery-srv", ZONE]
        if binary == ETCD_BIN:
            stray_argv += ["--logger", "zap"]
        stray = procs.start(stray_argv, f"{target}-m4.log")
        result["stray_code"] = stray.wait(timeout=30)
        result["stray_warnings"] = _warnings(tmp / f"{target}-m4.log")
    finally:
        procs.stop_all()
    return result


def main() -> int:
    tmp = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    _private_network_and_resolver(tmp)
    records: dict[tuple[str, str], list[str]] = {
        # Peers over https only: etcd 3.4 reads only the https records (a bug 3.5 fixed), and
        # etcd 3.5 and petcd read both, the http lookup failing here.
        (f"_etcd-server-ssl._tcp.{ZONE}.", "SRV"): [f"0 0 2380 {h}" for h in HOSTS],
        (f"_etcd-client._tcp.{ZONE}.", "SRV"): [f"0 0 2379 {h}" for h in HOSTS],
    }
    for host, ip in HOSTS.items():
        records[(host, "A")] = [ip]
    FakeDns(records)
    names = (*(h.rstrip(".") for h in HOSTS), *HOSTS.values())
    tls = make_peer_files(tmp / "tls", names)
    out = {target: scenario(target, tmp, tls) for target in ("etcd", "petcd")}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
