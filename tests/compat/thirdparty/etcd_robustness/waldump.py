"""Print a stopped petcd member's WAL entries as JSON lines, for etcd's robustness framework.

Usage: ``python waldump.py <data dir>`` (with petcd's ``src`` on ``PYTHONPATH``).

Theory of operation: etcd's robustness framework validates a recorded history against the
requests persisted in the members' WALs, read with etcd's WAL reader. petcd's WAL is its own
format (``docs/enhancements/0001-wal-format.md``) with its own entry encoding (``0003``), so
``robustness_test.go`` runs this script on each member's data dir and writes what it prints
into an etcd-format WAL for the framework's reader. Each line is one entry of the log as
etcd's WAL reader would return it when asked for everything from index 0: ``Index``, ``Term``,
``Kind`` ("normal" / "conf") and, for a client request, one field named
after etcd's ``InternalRaftRequest`` field holding the base64 protobuf encoding of etcd's
request message (what etcd itself would have logged for it). Requests the framework does not
model (member attributes, lease checkpoints, alarms, auth) are ``"Other": true``. A request
checked under auth (``Guarded``) is reported as the request it guards.

Reading follows etcd's ``ReadAll`` (``server/storage/wal``) as the framework calls it: an entry
at an index already read replaces it and every later one (a new leader rewrote the tail); an
entry beyond the next index (the log after a snapshot installed from the leader) ends the
read, and the member's log is the prefix read so far (etcd's ``ErrSliceOutOfRange``, which the
framework accepts). The framework then requires the members' logs to agree on their common
prefix. A torn tail ends the read of a segment, as etcd's repair would cut it.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.mvcc.requests import CompactionRequest, DeleteRangeRequest, PutRequest, TxnRequest
from petcd.raft.types import Entry, EntryType
from petcd.server import entry
from petcd.wal import record


def _fields(data: bytes) -> dict[str, Any]:
    request = entry.decode(data).request
    while isinstance(request, entry.Guarded):
        request = request.request
    if isinstance(request, PutRequest):
        message, name = convert.put_request_pb(request), "Put"
    elif isinstance(request, DeleteRangeRequest):
        message, name = convert.delete_range_request_pb(request), "DeleteRange"
    elif isinstance(request, TxnRequest):
        message, name = convert.txn_request_pb(request), "Txn"
    elif isinstance(request, CompactionRequest):
        message = rpc_pb2.CompactionRequest(revision=request.revision, physical=request.physical)
        name = "Compaction"
    elif isinstance(request, entry.LeaseGrant):
        message = rpc_pb2.LeaseGrantRequest(ID=request.id, TTL=request.ttl_seconds)
        name = "LeaseGrant"
    elif isinstance(request, entry.LeaseRevoke):
        message, name = rpc_pb2.LeaseRevokeRequest(ID=request.id), "LeaseRevoke"
    else:
        return {"Other": True}
    return {name: base64.b64encode(message.SerializeToString()).decode()}


def _read_from_start(wal_dir: Path) -> list[Entry]:
    segments = sorted(wal_dir.glob("*.wal"))
    if not segments:
        raise SystemExit(f"no WAL segment in {wal_dir}")
    entries: list[Entry] = []
    for path in segments:
        records, _ = record.decode_records(path.read_bytes())
        for rtype, _, value in records:
            if rtype != record.RecordType.ENTRY:
                continue
            assert isinstance(value, Entry)
            if value.index > len(entries) + 1:
                return entries  # the log went on from a snapshot: a gap
            del entries[value.index - 1 :]
            entries.append(value)
    return entries


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: waldump.py <data dir>", file=sys.stderr)
        return 2
    out = sys.stdout
    for e in _read_from_start(Path(argv[1]) / "member" / "wal"):
        line: dict[str, Any] = {"Index": e.index, "Term": e.term}
        if e.type == EntryType.NORMAL:
            line["Kind"] = "normal"
            if e.data:
                line.update(_fields(e.data))
        else:
            line["Kind"] = "conf"
        out.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
