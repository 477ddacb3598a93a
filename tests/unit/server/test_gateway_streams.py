"""petcd.http.gateway's streams (POST /v3/lease/keepalive) against a fake member: grpc-gateway's
chunked answer, its error chunk, Go's texts for a body that is not JSON, requests read as
they arrive, and the limit of calls in flight (etcd's --max-concurrent-streams)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from petcd.http.server import make_app
from petcd.lease import LeaseInfo
from petcd.mvcc.requests import ResponseHeader
from petcd.server.errors import NoLeaderError
from petcd.server.metrics import ServerMetrics

HEADER = '{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"4"}'


class FakeMember:
    """What the gateway's keep-alive and lease routes use; lease 13 finds no leader."""

    auth_enabled = False
    is_learner = False
    gate = None

    def __init__(self) -> None:
        self.metrics = ServerMetrics()
        self.renewed: list[int] = []

    async def check_health(self, serializable: bool, exclude: frozenset[str] = frozenset()) -> str:
        return ""

    async def check_read(self, serializable: bool) -> None:
        return None

    def active_alarms(self) -> frozenset[str]:
        return frozenset()

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    async def lease_keep_alive(self, lease_id: int) -> tuple[ResponseHeader, int]:
        if lease_id == 13:
            raise NoLeaderError()
        self.renewed.append(lease_id)
        return ResponseHeader(1, 2, 3, 4), 60 if lease_id == 7 else 0

    async def lease_leases(self) -> tuple[ResponseHeader, list[LeaseInfo]]:
        return ResponseHeader(1, 2, 3, 4), []


def _run(test: Any, calls_max: int = 2**32 - 1) -> Any:
    async def main() -> Any:
        member = FakeMember()
        app = make_app(member, member, gateway_calls_max=calls_max)
        async with TestClient(TestServer(app)) as client:
            return await test(client, member)

    return asyncio.run(main())


def test_keepalive_answers_each_request_in_a_chunk_and_ends_with_the_body() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        resp = await client.post("/v3/lease/keepalive", data='{"ID":7}\n{"ID":"7"} {"ID":99}')
        return resp.status, resp.headers, await resp.text()

    status, headers, body = _run(test)
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Type"] == "application/json"
    assert headers["Grpc-Metadata-Content-Type"] == "application/grpc"
    assert body == (
        f'{{"result":{{"header":{HEADER},"ID":"7","TTL":"60"}}}}\n' * 2
        + f'{{"result":{{"header":{HEADER},"ID":"99"}}}}\n'  # TTL 0 (no such lease) left out
    )


def test_an_empty_body_is_an_empty_stream() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        resp = await client.post("/v3/lease/keepalive", data="")
        return resp.status, "Grpc-Metadata-Content-Type" in resp.headers, await resp.text()

    assert _run(test) == (200, False, "")


def test_an_error_is_the_last_chunk_with_its_http_status_if_nothing_was_sent() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        first = await client.post("/v3/lease/keepalive", data='{"ID":13}{"ID":7}')
        later = await client.post("/v3/lease/keepalive", data='{"ID":7}{"ID":13}{"ID":7}')
        return (first.status, await first.text()), (later.status, await later.text())

    first, later = _run(test)
    error = (
        '{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader",'
        '"http_status":"Service Unavailable"}}'
    )
    assert first == (503, error)
    assert later == (200, f'{{"result":{{"header":{HEADER},"ID":"7","TTL":"60"}}}}\n' + error)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"ID":', "unexpected EOF"),
        ("xyz", "invalid character 'x' looking for beginning of value"),
        ('{"ID" 7}', "invalid character '7' after object key"),
        ('{"ID":7 "x":1}', "invalid character '\"' after object key:value pair"),
        ("[]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
    ],
)
def test_a_first_message_that_is_not_json_is_grpc_gateways_500(body: str, message: str) -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        resp = await client.post("/v3/lease/keepalive", data=body)
        return resp.status, await resp.text(), member.renewed

    text = json.dumps({"error": message, "code": 2, "message": message}, separators=(",", ":"))
    assert _run(test) == (500, text, [])


def test_a_later_bad_message_ends_the_requests() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        resp = await client.post("/v3/lease/keepalive", data='{"ID":7} garbage {"ID":7}')
        return resp.status, await resp.text(), member.renewed

    status, body, renewed = _run(test)
    assert (status, body.count("\n"), renewed) == (200, 1, [7])


def test_requests_are_answered_as_they_arrive() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        answered = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b'{"ID":'  # a message split across chunks of the body
            yield b"7}"
            await answered.wait()  # the body goes on only once the first was answered
            yield b'{"ID":7}'

        resp = await client.post("/v3/lease/keepalive", data=body())
        first = await resp.content.readline()
        answered.set()
        return first, await resp.content.read()

    first, rest = _run(test)
    assert first == f'{{"result":{{"header":{HEADER},"ID":"7","TTL":"60"}}}}\n'.encode()
    assert rest == first


def test_calls_beyond_the_limit_wait_for_a_slot() -> None:
    async def test(client: TestClient[Any, Any], member: FakeMember) -> Any:
        done = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b'{"ID":7}'
            await done.wait()

        stream = await client.post("/v3/lease/keepalive", data=body())
        await stream.content.readline()  # the stream holds the only slot
        unary = asyncio.ensure_future(client.post("/v3/lease/leases", data="{}"))
        waited = await asyncio.wait({unary}, timeout=0.5)
        done.set()  # the body ends, the stream ends, its slot is free
        await stream.read()
        resp = await asyncio.wait_for(unary, 10)
        return not waited[0], resp.status, await resp.json()

    waited, status, answer = _run(test, calls_max=1)
    assert waited
    assert status == 200
    assert answer["header"]["revision"] == "3"
