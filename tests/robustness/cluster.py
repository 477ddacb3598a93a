"""Clusters of real server processes (petcd or etcd) and the faults injected into them.

Theory of operation
-------------------
A :class:`Cluster` is ``size`` members on loopback ports, each a
:class:`tests.integration.petcd_proc.PetcdProcess` whose binary may be petcd or the real
etcd (both take etcd's flags), bootstrapped together with ``--initial-cluster``. Faults act
on exactly the processes the cluster started, by pid:

- ``kill(i)``: SIGKILL (no flush, no clean shutdown), then ``restart(i)`` on the same data
  directory, which waits until the member reports a leader;
- ``pause(i)`` / ``resume(i)``: SIGSTOP / SIGCONT (a frozen process whose sockets stay open:
  clients time out instead of being refused, peers see a silent member).

- ``isolate_inbound(i)`` / ``reconnect(i)`` (with ``proxied=True``): every member's
  advertised peer URL is a :class:`~tests.robustness.proxy.TcpProxy` in front of its real
  peer listener, so proxy i carries everything member i receives from its peers (each
  member sends on the connections it dials); blackholing or dropping it is an asymmetric
  partition: i hears nobody, everybody still hears i.
- ``cut(i, j)`` / ``isolate(i)`` / ``partition(group, ...)`` (petcd, ``proxied=True``): the
  proxies tell the dialing member by its peer handshake (``petcd_peer_sender``), so a pair
  can be cut in both directions while every other pair still talks: a symmetric isolation
  of one member, a split into groups, or a partial partition (two members that cannot talk
  to each other but both reach a third); ``cut_one_way(i, j)`` and ``slow_one_way(i, j, ms)``
  act on what i sends j only. ``connect_all()`` undoes them.

``heal()`` reconnects, resumes paused members and restarts killed ones. ``stop()`` kills
everything. The log of member ``name`` is ``<base>/<name>/petcd-<name>.log`` whatever the
binary.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from petcd.api.etcdserverpb import rpc_pb2
from petcd.server.ids import member_id
from tests.integration.petcd_proc import PETCD_BIN, PetcdProcess, maintenance_stub
from tests.ports import free_port
from tests.robustness.proxy import PETCD_PEER_SNIFF_BYTES, Mode, TcpProxy, petcd_peer_sender

ETCD_BIN = "/usr/bin/etcd"
BINARIES = {"petcd": PETCD_BIN, "etcd": ETCD_BIN}


READY_TIMEOUT_S = 30.0


@dataclass
class Member(PetcdProcess):
    binary: str = PETCD_BIN
    paused: bool = False

    def __post_init__(self) -> None:
        # Python's fault handler: a member that never gets ready is sent SIGABRT before it is
        # killed, so its log ends with every thread's stack (petcd; etcd ignores the variable).
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.env = {**env, "PYTHONFAULTHANDLER": "1"}

    def command(self) -> list[str]:
        return [self.binary, *(self.args or [])]

    def wait_ready(self) -> None:
        """Until Status names a leader; a member stuck past the timeout dumps its stacks."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last: Exception | None = None
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = maintenance_stub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if stub.Status(rpc_pb2.StatusRequest(), timeout=1.0).leader != 0:
                        return
                except grpc.RpcError as e:
                    last = e
                time.sleep(0.05)
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.kill()
        raise RuntimeError(
            f"{self.name} not ready after {READY_TIMEOUT_S}s ({last}); its stacks are at the "
            f"end of {self.log_path}\n{self.log_tail(60)}"
        )


@dataclass
class Cluster:
    base: Path
    target: str = "petcd"  # "petcd" or "etcd"
    size: int = 1
    extra_args: list[str] = field(default_factory=list)
    # A TcpProxy in front of every member's peer listener (what the others dial).
    proxied: bool = False
    members: list[Member] = field(default_factory=list)
    proxies: list[TcpProxy] = field(default_factory=list)
    # Each member's id (etcd's formula over its advertised peer URL and the cluster token).
    member_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.target in BINARIES, self.target
        names = [f"m{i}" for i in range(self.size)]
        peer_ports = {n: free_port() for n in names}
        advertised = dict(peer_ports)
        token = f"robustness-{self.target}"
        if self.proxied:
            for n in names:
                proxy = TcpProxy("127.0.0.1", peer_ports[n])
                if self.target == "petcd":  # etcd's peers speak HTTP: no per-pair cuts
                    proxy.sniff, proxy.sniff_bytes = petcd_peer_sender, PETCD_PEER_SNIFF_BYTES
                proxy.start()
                self.proxies.append(proxy)
                advertised[n] = proxy.listen_port
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in advertised.items())
        for n in names:
            client_url = f"http://127.0.0.1:{free_port()}"
            peer_url = f"http://127.0.0.1:{peer_ports[n]}"
            data_dir = self.base / n / "data"
            args = [
                "--name", n,
                "--data-dir", str(data_dir),
                "--listen-client-urls", client_url,
                "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{advertised[n]}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                *self.extra_args,
            ]  # fmt: skip
            m = Member(data_dir, name=n, args=args, binary=BINARIES[self.target])
            m.client_port = int(client_url.rsplit(":", 1)[1])
            m.peer_port = peer_ports[n]
            self.members.append(m)
            self.member_ids.append(member_id([f"http://127.0.0.1:{advertised[n]}"], token))

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        for m in self.members:
            m.start(wait=False)
        for i in range(self.size):
            self.wait_ready(i)

    def running(self, i: int) -> bool:
        proc = self.members[i].proc
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        m = self.members[i]
        m.kill()  # SIGKILL works on a stopped process too
        m.paused = False

    def restart(self, i: int, wait: bool = True) -> None:
        m = self.members[i]
        assert not self.running(i)
        m.start(wait=False)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i: int) -> None:
        try:
            self.members[i].wait_ready()
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.dump_state()}") from None

    def dump_state(self) -> str:
        """For a member that never got ready: every other member's stacks, the proxies."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None and not m.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.proc.pid, signal.SIGABRT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(timeout=10)
        proxies = [
            f"{self.members[i].name}: {p.mode.value}, {p.connections} connections, "
            f"{len(p._writers)} open sockets, {p.bytes_forwarded} bytes"
            for i, p in enumerate(self.proxies)
        ]
        journals = []
        for i, p in enumerate(self.proxies):
            events = [f"  {_iso(t)} :{port} {what}" for t, port, what in list(p.journal)[-15:]]
            journals.append(f"proxy of {self.members[i].name}:\n" + "\n".join(events))
        return f"stacks of all members at the end of their logs; proxies: {proxies}\n" + "\n".join(
            journals
        )

    def pause(self, i: int) -> None:
        m = self.members[i]
        assert m.proc is not None and not m.paused
        os.kill(m.proc.pid, signal.SIGSTOP)
        m.paused = True

    def resume(self, i: int) -> None:
        m = self.members[i]
        assert m.proc is not None and m.paused
        with contextlib.suppress(ProcessLookupError):
            os.kill(m.proc.pid, signal.SIGCONT)
        m.paused = False

    def isolate_inbound(self, i: int, mode: Mode = Mode.BLACKHOLE) -> None:
        """Member ``i`` receives nothing from its peers (what it sends still arrives)."""
        assert self.proxied, "a cluster without proxies cannot be partitioned"
        self.proxies[i].set_mode(mode)

    def reconnect(self, i: int) -> None:
        self.proxies[i].set_mode(Mode.PASS)

    def cut(self, i: int, j: int, mode: Mode = Mode.BLACKHOLE) -> None:
        """Members ``i`` and ``j`` cannot talk to each other, in either direction."""
        assert self.proxied and self.proxies[i].sniff is not None, "needs petcd with proxies"
        assert i != j
        self.proxies[j].set_sender_mode(self.member_ids[i], mode)
        self.proxies[i].set_sender_mode(self.member_ids[j], mode)

    def cut_one_way(self, i: int, j: int, mode: Mode = Mode.BLACKHOLE) -> None:
        """Member ``j`` hears nothing from ``i`` (``i`` still hears ``j``)."""
        assert self.proxied and self.proxies[j].sniff is not None, "needs petcd with proxies"
        assert i != j
        self.proxies[j].set_sender_mode(self.member_ids[i], mode)

    def slow_one_way(self, i: int, j: int, delay_ms: float) -> None:
        """What ``i`` sends ``j`` arrives ``delay_ms`` late (0: on time again)."""
        assert self.proxied and self.proxies[j].sniff is not None, "needs petcd with proxies"
        self.proxies[j].set_sender_delay(self.member_ids[i], delay_ms)

    def isolate(self, i: int, mode: Mode = Mode.BLACKHOLE) -> None:
        """Member ``i`` can talk to nobody and nobody to it (a symmetric partition)."""
        for j in range(self.size):
            if j != i:
                self.cut(i, j, mode)

    def partition(self, *groups: list[int], mode: Mode = Mode.BLACKHOLE) -> None:
        """Members talk only within their group; every member must be in one group."""
        assert sorted(i for g in groups for i in g) == list(range(self.size)), groups
        for a, ga in enumerate(groups):
            for gb in groups[a + 1 :]:
                for i in ga:
                    for j in gb:
                        self.cut(i, j, mode)

    def connect_all(self) -> None:
        """Undo ``cut``, ``isolate`` and ``partition``."""
        for p in self.proxies:
            p.clear_sender_modes()

    def leader_index(self, timeout_s: float = 2.0) -> int | None:
        """The index of the member that some running member names as leader, if any."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None or m.paused:
                continue
            try:
                with grpc.insecure_channel(m.endpoint) as ch:
                    st = maintenance_stub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout_s)
            except grpc.RpcError:
                continue
            if st.leader in self.member_ids:
                return self.member_ids.index(st.leader)
        return None

    def heal(self) -> None:
        """Every member running, not paused, and reachable."""
        for p in self.proxies:
            if p.mode is not Mode.PASS:
                p.set_mode(Mode.PASS)
            if p.sender_modes:
                p.clear_sender_modes()
        for i, m in enumerate(self.members):
            if m.paused:
                self.resume(i)
        down = [i for i in range(self.size) if not self.running(i)]
        for i in down:
            self.restart(i, wait=False)
        for i in down:
            self.wait_ready(i)

    def kill_all_and_restart(self) -> None:
        for i in range(self.size):
            self.kill(i)
        for i in range(self.size):
            self.restart(i, wait=False)
        for i in range(self.size):
            self.wait_ready(i)

    def stop(self) -> None:
        for i, m in enumerate(self.members):
            if m.paused:
                self.resume(i)
            m.stop()
        for p in self.proxies:
            p.close()

    def log_tails(self, n: int = 30) -> str:
        return "\n".join(f"--- {m.name} ({m.log_path})\n{m.log_tail(n)}" for m in self.members)


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
