"""Request builders shared by the sync and asyncio clients.

Theory of operation: etcd's Go client turns options such as ``WithPrefix`` and
``WithFromKey`` into plain request fields; these functions do the same, once,
so both clients send byte-identical requests. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from petcd.api.etcdserverpb import rpc_pb2


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``.

    Increment the last byte that is not 0xff and drop what follows; a prefix of
    only 0xff bytes (or an empty one) selects every key from it (``b"\\0"``).
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _range_end(key: bytes, range_end: bytes, prefix: bool, from_key: bool) -> bytes:
    if prefix:
        return prefix_range_end(key)
    if from_key:
        return b"\x00"
    return range_end


def range_request(
    key: bytes,
    range_end: bytes = b"",
    *,
    prefix: bool = False,
    from_key: bool = False,
    revision: int = 0,
    limit: int = 0,
    sort_order: int = 0,
    sort_target: int = 0,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> Any:
    return rpc_pb2.RangeRequest(
        key=key,
        range_end=_range_end(key, range_end, prefix, from_key),
        revision=revision,
        limit=limit,
        sort_order=cast(Any, sort_order),
        sort_target=cast(Any, sort_target),
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )


def put_request(
    key: bytes,
    value: bytes,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> Any:
    return rpc_pb2.PutRequest(
        key=key,
        value=value,
        lease=lease,
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def delete_request(
    key: bytes,
    range_end: bytes = b"",
    *,
    prefix: bool = False,
    from_key: bool = False,
    prev_kv: bool = False,
) -> Any:
    return rpc_pb2.DeleteRangeRequest(
        key=key, range_end=_range_end(key, range_end, prefix, from_key), prev_kv=prev_kv
    )


def txn_request(
    compare: Sequence[Any] = (), success: Sequence[Any] = (), failure: Sequence[Any] = ()
) -> Any:
    return rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)


def watch_create_request(
    key: bytes,
    range_end: bytes = b"",
    *,
    prefix: bool = False,
    from_key: bool = False,
    start_revision: int = 0,
    prev_kv: bool = False,
    progress_notify: bool = False,
    no_put: bool = False,
    no_delete: bool = False,
    watch_id: int = 0,
    fragment: bool = False,
) -> Any:
    filters = []
    if no_put:
        filters.append(rpc_pb2.WatchCreateRequest.NOPUT)
    if no_delete:
        filters.append(rpc_pb2.WatchCreateRequest.NODELETE)
    return rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(
            key=key,
            range_end=_range_end(key, range_end, prefix, from_key),
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
            watch_id=watch_id,
            fragment=fragment,
        )
    )
