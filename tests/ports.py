"""Free TCP ports on 127.0.0.1 for the tests and the benchmarks (``bench/``).

Ports are drawn at random below the kernel's ephemeral range and never given twice in one
process. A port from the ephemeral range (what binding to port 0 returns) may be taken by any
outgoing connection (a member dialing its peers, a client) between the draw and the server's
bind, which made cluster tests fail now and then with "address already in use".

``make test`` runs the tests in several pytest-xdist workers (processes): each draws from its
own share of the range (the ports equal to its number modulo the number of workers, from
``PYTEST_XDIST_WORKER`` and ``PYTEST_XDIST_WORKER_COUNT``, which the processes a test starts
inherit), so that two workers never hand out the same port, one of them between its draw and
its server's bind.
"""

from __future__ import annotations

import os
import random
import socket


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_LOW = 10000
_PORTS_HIGH = max(_PORTS_LOW + 1000, _ephemeral_low() - 1)
# etcd's e2e framework (tests/compat/thirdparty/test_etcd_e2e.py) binds fixed ports from
# 20000 on (e2e.EtcdProcessBasePort): never hand those out.
_E2E_PORTS = range(20000, 21000)
_ports_given: set[int] = set()
_ports_random = random.Random()  # its own: hypothesis seeds the global one


def _shard() -> tuple[int, int]:
    """(this xdist worker's number, the number of workers); (0, 1) outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if count > 1 and worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]) % count, count
    return 0, 1


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, never the same twice in this process."""
    shard, shards = _shard()
    for _ in range(200):
        port = _ports_random.randrange(_PORTS_LOW + shard, _PORTS_HIGH + 1, shards)
        if port in _ports_given or port in _E2E_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {_PORTS_LOW}-{_PORTS_HIGH}")
