"""Where petcd starts refusing a put as too large: exactly where etcd would.

etcd refuses a proposal whose InternalRaftRequest marshals to more than --max-request-bytes:
the request's protobuf bytes plus a header holding the request id, whose top 16 bits are the
member id's low 16 bits (so the id's varint takes 8, 9 or 10 bytes, by the member id). petcd
used to count its own, smaller encoding, and took puts of a few bytes more than etcd (found by
tests/compat/test_differential_fuzz.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import PetcdProcess, kv_stub, maintenance_stub

LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("size") / "data", extra_args=["--max-request-bytes", str(LIMIT)]
    )
    p.start()
    yield p
    p.stop()


def _etcd_size(value_bytes: int, member_id: int) -> int:
    put = 3 + 1 + 2 + value_bytes  # key "a"; the value's length takes 2 bytes here
    request_id = (member_id & 0xFFFF) << 48 | (1 << 47)  # etcd's ids: then time and count
    id_bytes = (request_id.bit_length() + 6) // 7
    header = 1 + id_bytes
    return 2 + 1 + header + 1 + 2 + put


def test_the_first_put_refused_is_the_first_etcd_refuses(server: PetcdProcess) -> None:
    with server.channel() as channel:
        kv = kv_stub(channel)
        member_id = maintenance_stub(channel).Status(rpc_pb2.StatusRequest()).header.member_id
        first_too_large = next(n for n in range(3900, LIMIT) if _etcd_size(n, member_id) > LIMIT)
        kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"v" * (first_too_large - 1)))
        with pytest.raises(grpc.RpcError) as refused:
            kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"v" * first_too_large))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "etcdserver: request is too large"
