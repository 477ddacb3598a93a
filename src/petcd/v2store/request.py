"""A v2 request as it travels through raft (etcd's ``etcdserverpb.Request``, v2 fields).

Theory of operation
-------------------
``V2Request`` is what the member proposes for a v2 write, a quorum read or the leader's SYNC;
``apply`` runs it against a ``V2Store`` on every member alike (etcd's ``applierV2store``). Its
bytes are the body of the ``V2`` entry kind (``docs/enhancements/0014-v2-api.md``, an on-disk
format that never changes incompatibly)::

    uvarint method | flags(dir, recursive, sorted, refresh, prev_exist_set, prev_exist)
    | bytes path | bytes value | bytes prev_value | uvarint prev_index
    | svarint expire_ns | svarint time_ns
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from petcd.v2store.store import Event, V2Store


class Method(enum.IntEnum):
    PUT = 1
    POST = 2
    DELETE = 3
    QGET = 4
    SYNC = 5


class V2FormatError(ValueError):
    """A V2 entry body that does not follow the format."""


@dataclass(frozen=True, slots=True)
class V2Request:
    method: Method
    path: str = ""
    value: str = ""
    dir: bool = False
    recursive: bool = False
    sorted: bool = False
    refresh: bool = False
    prev_exist: bool | None = None
    prev_value: str = ""
    prev_index: int = 0
    expire_ns: int = 0  # absolute, Unix ns (the proposer's clock plus the ttl); 0: none
    time_ns: int = 0  # SYNC: the leader's clock

    def encode(self) -> bytes:
        out = bytearray()
        _uv(out, self.method)
        bits = (
            self.dir,
            self.recursive,
            self.sorted,
            self.refresh,
            self.prev_exist is not None,
            bool(self.prev_exist),
        )
        out.append(sum(1 << i for i, b in enumerate(bits) if b))
        for s in (self.path, self.value, self.prev_value):
            raw = s.encode("utf-8", "surrogateescape")
            _uv(out, len(raw))
            out += raw
        _uv(out, self.prev_index)
        for n in (self.expire_ns, self.time_ns):
            _uv(out, (n << 1) ^ (n >> 63))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> V2Request:
        r = _Reader(data)
        try:
            method = Method(r.uvarint())
        except ValueError:
            raise V2FormatError("unknown v2 method") from None
        flags = r.byte()
        if flags >> 6:
            raise V2FormatError("unknown v2 request flags")
        path, value, prev_value = (r.string() for _ in range(3))
        prev_index = r.uvarint()
        expire_ns, time_ns = (_unzig(r.uvarint()) for _ in range(2))
        if r.pos != len(data):
            raise V2FormatError("trailing bytes after the v2 request")
        return cls(
            method,
            path,
            value,
            bool(flags & 1),
            bool(flags & 2),
            bool(flags & 4),
            bool(flags & 8),
            bool(flags & 32) if flags & 16 else None,
            prev_value,
            prev_index,
            expire_ns,
            time_ns,
        )


def _uv(out: bytearray, n: int) -> None:
    assert 0 <= n < 1 << 64, n
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _unzig(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise V2FormatError("v2 request is truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def uvarint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
            if shift > 63:
                raise V2FormatError("varint too long")

    def string(self) -> str:
        size = self.uvarint()
        if self.pos + size > len(self.data):
            raise V2FormatError("v2 request is truncated")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode("utf-8", "surrogateescape")


def apply(store: V2Store, r: V2Request, now_ns: int) -> Event | None:
    """Apply ``r`` (etcd's applierV2store); raises ``V2Error``. SYNC answers None."""
    m = r.method
    if m is Method.PUT:
        if r.prev_exist is not None:
            if r.prev_exist:
                if r.prev_index == 0 and r.prev_value == "":
                    return store.update(r.path, r.value, r.expire_ns, r.refresh, now_ns)
                return store.compare_and_swap(
                    r.path, r.prev_value, r.prev_index, r.value, r.expire_ns, r.refresh, now_ns
                )
            return store.create(r.path, r.dir, r.value, False, r.expire_ns, now_ns)
        if r.prev_index > 0 or r.prev_value != "":
            return store.compare_and_swap(
                r.path, r.prev_value, r.prev_index, r.value, r.expire_ns, r.refresh, now_ns
            )
        return store.set(r.path, r.dir, r.value, r.expire_ns, r.refresh, now_ns)
    if m is Method.POST:
        return store.create(r.path, r.dir, r.value, True, r.expire_ns, now_ns)
    if m is Method.DELETE:
        if r.prev_index > 0 or r.prev_value != "":
            return store.compare_and_delete(r.path, r.prev_value, r.prev_index, now_ns)
        return store.delete(r.path, r.dir, r.recursive, now_ns)
    if m is Method.QGET:
        return store.get(r.path, r.recursive, r.sorted, now_ns)
    store.delete_expired(r.time_ns, now_ns)
    return None
