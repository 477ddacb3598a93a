"""petcd.client (sync and asyncio) and the installed petcdctl script against the target."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from petcd.client import AsyncClient, Client, CompactedError, LeaseNotFoundError
from tests.compat.harness import Differ, run_ctl
from tests.compat.servers import ETCDCTL_BIN, PETCDCTL_BIN, ServerProcess


def test_sync_client_kv_and_leases(lone_target: ServerProcess) -> None:
    with Client([lone_target.endpoint]) as client:
        put = client.put(b"sc/a", b"1")
        client.put(b"sc/b", b"2", prev_kv=True)
        got = client.get(b"sc/", prefix=True)
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"sc/a", b"1"), (b"sc/b", b"2")]
        assert got.header.revision == put.header.revision + 1
        lease = client.lease_grant(30)
        assert lease.TTL == 30
        client.put(b"sc/leased", b"x", lease=lease.ID)
        ttl = client.lease_time_to_live(lease.ID, keys=True)
        assert ttl.keys == [b"sc/leased"] and 0 < ttl.TTL <= 30
        assert client.lease_keep_alive_once(lease.ID).ID == lease.ID
        assert lease.ID in [item.ID for item in client.lease_leases().leases]
        client.lease_revoke(lease.ID)
        assert client.get(b"sc/leased").count == 0
        with pytest.raises(LeaseNotFoundError):
            client.lease_revoke(lease.ID)
        client.compact(got.header.revision)
        with pytest.raises(CompactedError):
            client.get(b"sc/a", revision=got.header.revision - 1)
        deleted = client.delete(b"sc/", prefix=True, prev_kv=True)
        assert deleted.deleted == 2


def test_async_client_watch_and_kv(lone_target: ServerProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient([lone_target.endpoint]) as client:
            first = await client.put(b"ac/k", b"v0")
            # Watching from the next revision makes the test independent of when
            # the server registers the watch: missed events come from history.
            watch = client.watch(
                b"ac/", prefix=True, prev_kv=True, start_revision=first.header.revision + 1
            )
            events: list[tuple[int, bytes, bytes, bytes]] = []

            async def collect() -> None:
                async for response in watch:
                    for ev in response.events:
                        events.append((ev.type, ev.kv.key, ev.kv.value, ev.prev_kv.value))
                    if len(events) >= 2:
                        return

            task = asyncio.create_task(collect())
            await client.put(b"ac/k", b"v1")
            await client.delete(b"ac/k")
            await asyncio.wait_for(task, 10)
            assert events == [(0, b"ac/k", b"v1", b"v0"), (1, b"ac/k", b"", b"v1")]
            got = await client.get(b"ac/k", revision=first.header.revision)
            assert got.kvs[0].value == b"v0"
            status = await client.status()
            assert status.header.revision == first.header.revision + 2
            members = await client.member_list()
            assert len(members.members) == 1

    asyncio.run(scenario())


@pytest.mark.long  # a few seconds: many processes, see README
def test_console_script_against_etcdctl(differ: Differ) -> None:
    ref = run_ctl("/usr/bin/etcdctl", differ.reference, ("put", "entry", "point"))
    tgt = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "put", "entry", "point"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (ref.code, ref.stdout) == (tgt.returncode, tgt.stdout) == (0, b"OK\n")
    tgt = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "get", "entry", "-w", "table"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert tgt.returncode == 4
    assert tgt.stderr == b"Error: table not supported as output format\n"
    piped = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "put", "entry"],
        input=b"from a pipe",
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert piped.returncode == 0
    mirrored = run_ctl(ETCDCTL_BIN, differ.reference, ("put", "entry"), stdin=b"from a pipe")
    assert mirrored.code == 0  # keep the reference at the target's revision
    got = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "get", "entry", "--print-value-only"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert got.stdout == b"from a pipe\n"
