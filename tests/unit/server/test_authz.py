"""petcd.server.authz: which permissions each request needs, and the guard at apply time."""

from __future__ import annotations

import pytest

from petcd.auth import errors
from petcd.auth.store import READ, READWRITE, WRITE, AuthOp, AuthRequest, AuthStore
from petcd.auth.tokens import AuthInfo, SimpleTokens
from petcd.lease import LeaseId, Lessor, MemoryLeaseStore
from petcd.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from petcd.server.authz import apply_check, check_request
from petcd.server.entry import LeaseRevoke
from tests.unit.auth.test_store import Buckets


def make() -> tuple[AuthStore, AuthInfo, Lessor]:
    store = AuthStore(Buckets(), SimpleTokens(300), bcrypt_cost=4)
    store.recover()
    for op, kw in [
        (AuthOp.USER_ADD, {"name": "root"}),
        (AuthOp.USER_GRANT_ROLE, {"name": "root", "role": "root"}),
        (AuthOp.USER_ADD, {"name": "u"}),
        (AuthOp.ROLE_ADD, {"name": "r"}),
        (AuthOp.USER_GRANT_ROLE, {"name": "u", "role": "r"}),
        (AuthOp.ROLE_GRANT_PERMISSION, {"name": "r", "perm_type": READ, "key": b"r"}),
        (AuthOp.ROLE_GRANT_PERMISSION, {"name": "r", "perm_type": WRITE, "key": b"w"}),
        (AuthOp.ROLE_GRANT_PERMISSION, {"name": "r", "perm_type": READWRITE, "key": b"rw"}),
        (AuthOp.ENABLE, {}),
    ]:
        store.apply(AuthRequest(op, **kw), 1)  # type: ignore[arg-type]
    lessor = Lessor(MemoryLeaseStore(), clock=lambda: 0.0)
    return store, AuthInfo("u", store.revision), lessor


def denied(store: AuthStore, info: AuthInfo, req: object, lessor: Lessor) -> bool:
    try:
        check_request(store, info, req, lessor)
    except errors.PermissionDeniedError:
        return True
    return False


def test_each_request_needs_etcds_permissions() -> None:
    store, info, lessor = make()
    assert not denied(store, info, RangeRequest(b"r"), lessor)
    assert denied(store, info, RangeRequest(b"w"), lessor)
    assert not denied(store, info, PutRequest(b"w"), lessor)
    assert denied(store, info, PutRequest(b"w", prev_kv=True), lessor)  # prev_kv reads
    assert not denied(store, info, PutRequest(b"rw", prev_kv=True), lessor)
    assert not denied(store, info, DeleteRangeRequest(b"w"), lessor)
    assert denied(store, info, DeleteRangeRequest(b"w", prev_kv=True), lessor)
    assert denied(store, info, DeleteRangeRequest(b"w", b"x"), lessor)


def test_txns_need_read_on_compares_and_every_op_nested_too() -> None:
    store, info, lessor = make()

    def txn(key: bytes, *ops: RequestOp) -> TxnRequest:
        compare = Compare(CompareResult.EQUAL, CompareTarget.VERSION, key, version=1)
        return TxnRequest(compare=(compare,), success=ops)

    put_w = RequestOp(request_put=PutRequest(b"w"))
    assert not denied(store, info, txn(b"r", put_w), lessor)
    assert denied(store, info, txn(b"w", put_w), lessor)  # a compare reads
    assert denied(store, info, txn(b"r", RequestOp(request_put=PutRequest(b"r"))), lessor)
    nested = RequestOp(
        request_txn=TxnRequest(success=(RequestOp(request_range=RangeRequest(b"w")),))
    )
    assert denied(store, info, txn(b"r", nested), lessor)


def test_a_put_on_a_lease_needs_write_on_its_keys() -> None:
    store, info, lessor = make()
    lessor.grant(LeaseId(7), 60)
    lessor.attach(7, b"r")
    assert denied(store, info, PutRequest(b"w", lease=7), lessor)
    assert not denied(store, AuthInfo("root", store.revision), PutRequest(b"w", lease=7), lessor)
    lessor.detach(7, b"r")
    lessor.attach(7, b"w")
    assert not denied(store, info, PutRequest(b"w", lease=7), lessor)


def test_apply_refuses_stale_guards_and_unguarded_client_requests() -> None:
    store, _, _ = make()
    revision = store.revision
    apply_check(store, PutRequest(b"k"), revision)
    with pytest.raises(errors.AuthOldRevisionError):
        apply_check(store, PutRequest(b"k"), revision - 1)
    for req in (
        PutRequest(b"k"),
        DeleteRangeRequest(b"k"),
        TxnRequest(),
        AuthRequest(AuthOp.ROLE_ADD, "x"),
    ):
        with pytest.raises(errors.UserEmptyError):
            apply_check(store, req, 0)
    # internal proposals and logins pass unguarded
    apply_check(store, LeaseRevoke(1), 0)
    apply_check(store, AuthRequest(AuthOp.AUTHENTICATE, "u"), 0)
    store.apply(AuthRequest(AuthOp.DISABLE), 2)
    apply_check(store, PutRequest(b"k"), 0)
    apply_check(store, PutRequest(b"k"), revision - 1)
