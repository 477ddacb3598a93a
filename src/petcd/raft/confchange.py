"""The binary encoding of ``ConfChange``, the payload of conf-change log entries.

Theory of operation
-------------------
A conf-change entry is written to the WAL and shipped to peers like any entry, so its payload
needs a stable encoding that never depends on Python's pickling. The format (all integers
big-endian, unsigned)::

    offset  size  field
    0       1     version (1)
    1       1     type (ConfChangeType value)
    2       8     node_id
    10      8     id (the caller's request id)
    18      4     len(context)
    22      n     context

``decode(encode(cc)) == cc`` for every valid ``ConfChange``; ``decode`` raises
``ConfChangeDecodeError`` on anything else (wrong version, unknown type, wrong length).
"""

from __future__ import annotations

import struct

from petcd.raft.errors import RaftError
from petcd.raft.types import ConfChange, ConfChangeType, MemberId

VERSION = 1
_HEAD = struct.Struct(">BBQQI")


class ConfChangeDecodeError(RaftError, ValueError):
    """The bytes are not an encoded ``ConfChange``."""


def encode(cc: ConfChange) -> bytes:
    return _HEAD.pack(VERSION, int(cc.type), cc.node_id, cc.id, len(cc.context)) + cc.context


def decode(data: bytes) -> ConfChange:
    if len(data) < _HEAD.size:
        raise ConfChangeDecodeError(f"conf change too short: {len(data)} bytes")
    version, type_, node_id, id_, n = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ConfChangeDecodeError(f"unknown conf change version {version}")
    if len(data) != _HEAD.size + n:
        raise ConfChangeDecodeError(f"conf change length {len(data)} != {_HEAD.size + n}")
    try:
        t = ConfChangeType(type_)
    except ValueError:
        raise ConfChangeDecodeError(f"unknown conf change type {type_}") from None
    return ConfChange(t, MemberId(node_id), bytes(data[_HEAD.size :]), id_)
