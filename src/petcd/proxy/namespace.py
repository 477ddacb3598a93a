"""``--namespace``: the proxy's clients see a keyspace whose keys all carry a hidden prefix.

Theory of operation
-------------------
Pure functions over the decoded protobuf messages, in place (each message is the proxy's own
copy). On the way up a key ``k`` becomes ``prefix + k``; a range end ``e`` becomes
``prefix + e``, except ``"\\0"`` (the end of the keyspace: ``--from-key`` and ``--prefix ''``)
which becomes the end of the namespace, the prefix plus one (``"\\0"`` again when the prefix is
all ``0xff``). On the way down the prefix is cut from every returned key: ranged key-values,
previous key-values, watch events, a lease's attached keys (keys outside the namespace are
dropped there). This is what etcd's ``clientv3/namespace`` wrappers do under its proxy's KV,
Watch and Lease; like etcd's, election and lock names are not prefixed (its proxy sends them to
the cluster as they come). A request for the empty key (not a range from it) is refused with
``etcdserver: key is not provided`` before anything is sent, as the wrapper does.
"""

from __future__ import annotations

from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client.requests import prefix_range_end


class EmptyKeyError(Exception):
    """The empty key outside of a range: etcd's ``ErrEmptyKey``."""


def prefix_interval(prefix: bytes, key: bytes, end: bytes) -> tuple[bytes, bytes]:
    if end == b"\0":
        return prefix + key, prefix_range_end(prefix)
    return prefix + key, (prefix + end if end else b"")


class Namespace:
    """The request and response rewrites for one ``--namespace`` prefix."""

    def __init__(self, prefix: bytes) -> None:
        assert prefix, "an empty namespace rewrites nothing"
        self.prefix = prefix

    # --- requests --------------------------------------------------------------------------

    def _interval(self, r: Any) -> None:
        r.key, r.range_end = prefix_interval(self.prefix, r.key, r.range_end)

    def range_request(self, r: Any) -> None:
        if not r.key:
            raise EmptyKeyError
        self._interval(r)

    def put_request(self, r: Any) -> None:
        if not r.key:
            raise EmptyKeyError
        r.key = self.prefix + r.key

    delete_request = range_request

    def txn_request(self, r: Any) -> None:
        for c in r.compare:
            key, end = prefix_interval(self.prefix, c.key, c.range_end)
            c.key = key
            if c.range_end:
                c.range_end = end
        for op in (*r.success, *r.failure):
            self.request_op(op)

    def request_op(self, op: Any) -> None:
        which = op.WhichOneof("request")
        if which == "request_range":
            self.range_request(op.request_range)
        elif which == "request_put":
            self.put_request(op.request_put)
        elif which == "request_delete_range":
            self.delete_request(op.request_delete_range)
        elif which == "request_txn":
            self.txn_request(op.request_txn)

    def watch_request(self, r: Any) -> None:
        if r.WhichOneof("request_union") == "create_request":
            self._interval(r.create_request)

    # --- responses -------------------------------------------------------------------------

    def _cut(self, kv: Any) -> None:
        if kv.key.startswith(self.prefix):
            kv.key = kv.key[len(self.prefix) :]

    def range_response(self, r: Any) -> None:
        for kv in r.kvs:
            self._cut(kv)

    def put_response(self, r: Any) -> None:
        if r.HasField("prev_kv"):
            self._cut(r.prev_kv)

    def delete_response(self, r: Any) -> None:
        for kv in r.prev_kvs:
            self._cut(kv)

    def txn_response(self, r: Any) -> None:
        for op in r.responses:
            which = op.WhichOneof("response")
            if which == "response_range":
                self.range_response(op.response_range)
            elif which == "response_put":
                self.put_response(op.response_put)
            elif which == "response_delete_range":
                self.delete_response(op.response_delete_range)
            elif which == "response_txn":
                self.txn_response(op.response_txn)

    def watch_response(self, r: Any) -> None:
        for ev in r.events:
            self._cut(ev.kv)
            if ev.HasField("prev_kv"):
                self._cut(ev.prev_kv)

    def lease_time_to_live_response(self, r: Any) -> None:
        keys = [k[len(self.prefix) :] for k in r.keys if k.startswith(self.prefix)]
        del r.keys[:]
        r.keys.extend(keys)


# method -> (request class, response class, request rewrite, response rewrite)
_KV = "/etcdserverpb.KV/"
REWRITES: dict[str, tuple[Any, Any, str, str]] = {
    _KV + "Range": (rpc_pb2.RangeRequest, rpc_pb2.RangeResponse, "range_request", "range_response"),
    _KV + "Put": (rpc_pb2.PutRequest, rpc_pb2.PutResponse, "put_request", "put_response"),
    _KV + "DeleteRange": (
        rpc_pb2.DeleteRangeRequest,
        rpc_pb2.DeleteRangeResponse,
        "delete_request",
        "delete_response",
    ),
    _KV + "Txn": (rpc_pb2.TxnRequest, rpc_pb2.TxnResponse, "txn_request", "txn_response"),
    "/etcdserverpb.Watch/Watch": (
        rpc_pb2.WatchRequest,
        rpc_pb2.WatchResponse,
        "watch_request",
        "watch_response",
    ),
    "/etcdserverpb.Lease/LeaseTimeToLive": (
        rpc_pb2.LeaseTimeToLiveRequest,
        rpc_pb2.LeaseTimeToLiveResponse,
        "",
        "lease_time_to_live_response",
    ),
}
