"""The lessor with the real backend and mvcc store: the contract the server relies on.

Apply-time wiring as docs/design/lease.md describes it: the lessor persists into the
backend's ``lease`` bucket, mvcc keeps key attachments through its ``LeaseHook``, a revoke
deletes the returned keys through mvcc in one revision, and a restart rebuilds both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.backend import LEASE, Backend
from petcd.lease import (
    NO_LEASE,
    BucketLeaseStore,
    LeaseId,
    LeaseInfo,
    Lessor,
    NamedBucket,
)
from petcd.mvcc import (
    DeleteRangeRequest,
    KVStore,
    LeaseHook,
    PutRequest,
    RequestOp,
    TxnRequest,
)
from petcd.mvcc.errors import LeaseNotFoundError as MvccLeaseNotFoundError
from petcd.raft import Index, Term

from .conftest import FakeClock

L1, L2 = LeaseId(0x1111), LeaseId(0x2222)


class Member:
    """The apply-time half of a member: one backend, one lessor, one mvcc store."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.backend = Backend(str(path / "db"))
        self.lessor = Lessor(BucketLeaseStore(NamedBucket(self.backend, LEASE)), clock)
        hook: LeaseHook = self.lessor  # the lessor is mvcc's lease hook as it is
        self.kv = KVStore(self.backend, lessor=hook)
        self.index = int(self.backend.consistent_index()[0])

    def _next(self) -> tuple[Index, Term]:
        self.index += 1
        return Index(self.index), Term(1)

    def put(self, key: bytes, lease: int = 0) -> None:
        index, term = self._next()
        self.kv.apply(PutRequest(key=key, value=b"v", lease=lease), index=index, term=term)

    def revoke(self, lease_id: LeaseId) -> int:
        """Apply a LeaseRevoke: returns the revision the deletes got (0: no keys)."""
        keys = self.lessor.revoke(lease_id)
        index, term = self._next()
        if not keys:
            return 0
        ops = tuple(RequestOp(request_delete_range=DeleteRangeRequest(key=k)) for k in keys)
        resp = self.kv.apply(TxnRequest(success=ops), index=index, term=term)
        return resp.header.revision

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def member(tmp_path: Path, clock: FakeClock) -> Member:
    return Member(tmp_path, clock)


def test_puts_attach_and_revoke_deletes_in_one_revision(member: Member) -> None:
    member.lessor.grant(L1, 60)
    member.lessor.grant(L2, 60)
    member.put(b"b", L1)
    member.put(b"a", L1)
    member.put(b"c", L2)
    member.put(b"plain")
    assert member.lessor.keys(L1) == [b"a", b"b"]
    member.put(b"c", L1)  # put again with another lease: moves
    member.put(b"b")  # put again without a lease: detached
    assert member.lessor.keys(L1) == [b"a", b"c"]
    assert member.lessor.keys(L2) == []
    assert member.lessor.lease_of(b"b") == NO_LEASE
    before = member.kv.current_revision
    assert member.revoke(L1) == before + 1  # both deletes share one revision
    assert member.kv.get(b"a") is None and member.kv.get(b"c") is None
    assert member.kv.get(b"b") is not None and member.kv.get(b"plain") is not None
    assert member.lessor.lookup(L1) is None
    member.close()


def test_delete_range_detaches(member: Member) -> None:
    member.lessor.grant(L1, 60)
    member.put(b"k1", L1)
    member.put(b"k2", L1)
    index, term = member._next()
    member.kv.apply(DeleteRangeRequest(key=b"k1"), index=index, term=term)
    assert member.lessor.keys(L1) == [b"k2"]
    assert member.revoke(L1) > 0
    member.close()


def test_put_with_an_unknown_lease_fails_in_mvcc(member: Member) -> None:
    with pytest.raises(MvccLeaseNotFoundError):
        member.put(b"k", L1)
    assert member.kv.get(b"k") is None
    member.close()


def test_restart_rebuilds_leases_and_attachments(tmp_path: Path, clock: FakeClock) -> None:
    first = Member(tmp_path, clock)
    first.lessor.grant(L1, 60)
    first.lessor.grant(L2, 1)
    first.put(b"x", L1)
    first.put(b"y", L2)
    first.lessor.grant(LeaseId(3), 30)
    first.revoke(LeaseId(3))
    first.backend.commit()
    first.close()

    second = Member(tmp_path, clock)
    assert second.lessor.leases() == [LeaseInfo(L1, 60, 0), LeaseInfo(L2, 2, 0)]
    assert second.lessor.keys(L1) == [b"x"]
    assert second.lessor.keys(L2) == [b"y"]
    second.lessor.promote(0.0)
    clock.advance(2)
    assert second.lessor.expired_leases(10) == [L2]
    second.revoke(L2)
    assert second.kv.get(b"y") is None
    second.close()
