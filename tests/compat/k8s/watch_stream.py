"""A bidirectional Watch stream over the generated stubs, read with timeouts.

Theory of operation: :class:`WatchStream` owns one gRPC channel and one Watch
call. Requests go through a queue that the call's request iterator drains;
responses are read by a daemon thread into another queue, so a test can wait
for the next response with a timeout instead of blocking forever on a server
that never answers. :meth:`close` half-closes the request side and cancels the
call; the reader thread ends with the call. Nothing here sleeps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

RESPONSE_TIMEOUT_S = 15.0


class StreamEnded(Exception):
    """The Watch call ended (or timed out) while a response was expected.

    ``code`` and ``details`` are the call's final status, if it ended with one.
    """

    def __init__(self, message: str, error: grpc.RpcError | None = None) -> None:
        super().__init__(message)
        self.code = error.code() if error is not None else None
        self.details = error.details() if error is not None else None


class WatchStream:
    def __init__(self, endpoint: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        stub = rpc_pb2_grpc.WatchStub(self.channel)  # type: ignore[no-untyped-call]
        self._call = stub.Watch(self._request_iter(), metadata=metadata or None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _request_iter(self) -> Iterator[Any]:
        while (item := self._requests.get()) is not None:
            yield item

    def _read(self) -> None:
        try:
            for resp in self._call:
                self._responses.put(resp)
        except grpc.RpcError as exc:
            self._responses.put(exc)
        self._responses.put(None)

    def create(self, key: bytes, range_end: bytes, start_revision: int = 0, **flags: Any) -> int:
        """Create a watcher and return its id (after the created response)."""
        self._requests.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=key, range_end=range_end, start_revision=start_revision, **flags
                )
            )
        )
        resp = self.next()
        assert resp.created, resp
        watch_id: int = resp.watch_id
        return watch_id

    def request_progress(self) -> None:
        self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def next(self, timeout_s: float = RESPONSE_TIMEOUT_S) -> Any:
        try:
            item = self._responses.get(timeout=timeout_s)
        except queue.Empty:
            raise StreamEnded(f"no watch response within {timeout_s}s") from None
        if item is None:
            raise StreamEnded("watch stream ended")
        if isinstance(item, grpc.RpcError):
            raise StreamEnded(f"watch stream ended: {item}", item)
        return item

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self.channel.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
