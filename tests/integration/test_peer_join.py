"""The peer transport's side of joining and of snapshots: the member listing a joining member
asks for (``KIND_MEMBERS``), and a snapshot sent with the metadata its file really holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from petcd.peer import PeerTransport, SnapshotFile, TransportConfig
from petcd.peer.codec import HandshakeStatus
from petcd.raft.types import (
    ConfState,
    Index,
    MemberId,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from petcd.server import join

CLUSTER = 0xC1A5


def _transport(
    mid: int,
    tmp: Path,
    *,
    members: dict[MemberId, tuple[str, ...]] | None = None,
    source: SnapshotFile | None = None,
    received: list[tuple[Message, Path]] | None = None,
    reports: list[tuple[MemberId, bool]] | None = None,
) -> PeerTransport:
    snap_dir = tmp / f"snap-{mid}"
    snap_dir.mkdir(exist_ok=True)
    return PeerTransport(
        TransportConfig(cluster_id=CLUSTER, member_id=MemberId(mid), snapshot_dir=snap_dir),
        on_messages=lambda ms: None,
        report_unreachable=lambda i: None,
        report_snapshot=lambda i, failed: (reports if reports is not None else []).append(
            (i, failed)
        ),
        snapshot_source=(lambda meta: source) if source is not None else None,
        on_snapshot=lambda m, p: (received if received is not None else []).append((m, p)),
        members_source=(lambda: members) if members is not None else None,
    )


def test_a_joining_member_learns_the_cluster_and_its_id_from_a_listener(tmp_path: Path) -> None:
    async def main() -> None:
        members = {
            MemberId(0xA): ("http://127.0.0.1:1",),
            MemberId(0x5EED): ("http://127.0.0.1:7", "http://127.0.0.1:8"),
        }
        t = _transport(0xA, tmp_path, members=members)
        old = _transport(0xB, tmp_path)  # a listener without a member list: refuses the kind
        await t.start(["http://127.0.0.1:0"])
        await old.start(["http://127.0.0.1:0"])
        url = f"http://127.0.0.1:{t.listen_addresses[0][1]}"
        old_url = f"http://127.0.0.1:{old.listen_addresses[0][1]}"
        try:
            status, reason = await asyncio.to_thread(join.list_members, url, CLUSTER)
            assert status == HandshakeStatus.OK
            assert reason == (
                '{"members":[{"id":"a","peerURLs":["http://127.0.0.1:1"]},'
                '{"id":"5eed","peerURLs":["http://127.0.0.1:7","http://127.0.0.1:8"]}]}'
            )
            status, _ = await asyncio.to_thread(join.list_members, url, 0xBAD)
            assert status == HandshakeStatus.CLUSTER_MISMATCH
            status, _ = await asyncio.to_thread(join.list_members, old_url, CLUSTER)
            assert status == HandshakeStatus.BAD_PROTOCOL
            info = await asyncio.to_thread(
                join.discover,
                ["http://127.0.0.1:8", "http://127.0.0.1:7"],
                [[old_url], [url]],
                timeout_s=5.0,
            )
            assert info == join.JoinInfo(
                CLUSTER, MemberId(0x5EED), {MemberId(0xA): ("http://127.0.0.1:1",)}
            )
        finally:
            await t.stop()
            await old.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_snapshot_goes_with_the_metadata_of_the_file_sent(tmp_path: Path) -> None:
    """Raft picked its snapshot at index 40; the file sent holds index 57 (the live backend):
    the receiver must get 57, its term and configuration, which it records with the file."""

    async def main() -> None:
        db = tmp_path / "db.copy"
        db.write_bytes(b"state machine at 57")
        held = SnapshotMetadata(
            Index(57), Term(4), ConfState(frozenset({MemberId(1), MemberId(2), MemberId(3)}))
        )
        received: list[tuple[Message, Path]] = []
        reports: list[tuple[MemberId, bool]] = []
        a = _transport(1, tmp_path, source=SnapshotFile(str(db), held), reports=reports)
        b = _transport(2, tmp_path, received=received)
        await a.start(["http://127.0.0.1:0"])
        await b.start(["http://127.0.0.1:0"])
        a.add_peer(MemberId(2), [f"http://127.0.0.1:{b.listen_addresses[0][1]}"])
        b.add_peer(MemberId(1), [f"http://127.0.0.1:{a.listen_addresses[0][1]}"])
        try:
            raft_meta = SnapshotMetadata(Index(40), Term(3), ConfState(frozenset({MemberId(1)})))
            msg = Message(
                MessageType.SNAP,
                to=MemberId(2),
                from_=MemberId(1),
                term=Term(4),
                snapshot=Snapshot(raft_meta),
            )
            a.send([msg])
            deadline = time.monotonic() + 20
            while not reports:
                assert time.monotonic() < deadline, "no snapshot report"
                await asyncio.sleep(0.01)
            assert reports == [(MemberId(2), False)]
            ((got, path),) = received
            assert got.snapshot is not None and got.snapshot.metadata == held
            assert got.term == Term(4) and got.from_ == MemberId(1)
            assert path.read_bytes() == b"state machine at 57"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
