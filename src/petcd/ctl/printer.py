"""etcdctl's output formats: simple, json, fields, protobuf and table.

Theory of operation: a command makes its RPC first and only then hands the
response to the printer chosen by ``-w/--write-out``, as etcdctl does; so a
``put`` with ``-w table`` is applied and *then* fails with ``table not
supported as output format`` (exit 4). Each printer writes bytes to the
invocation's stdout exactly as etcdctl 3.5 formats them: raw keys and values
(or ``\\xNN`` with ``--hex``) for simple, Go's ``json.Marshal`` of the response
for json, Go-quoted ``"Name" : value`` lines for fields, the serialized
response for protobuf, and ASCII tables for the endpoint commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_FEATURE, ExitError
from petcd.ctl.gofmt import ascii_table, go_json, go_quote, go_quote_bytes, humanize_bytes
from petcd.ctl.gofmt import json_string as js


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    endpoint: str
    health: bool
    took: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    endpoint: str
    status: Any  # StatusResponse


@dataclass(frozen=True, slots=True)
class EndpointHashKV:
    endpoint: str
    hash_kv: Any  # HashKVResponse


def _as_3_5(hash_kv: Any) -> Any:
    """HashKVResponse without etcd 3.6's hash_revision: etcdctl 3.5 does not know it."""
    copy = type(hash_kv)()
    copy.CopyFrom(hash_kv)
    copy.ClearField("hash_revision")
    return copy


def _hex(data: bytes) -> bytes:
    return "".join(f"\\x{b:02x}" for b in data).encode("ascii")


def status_row(st: EndpointStatus) -> list[str]:
    r = st.status
    return [
        st.endpoint,
        f"{r.header.member_id:x}",
        r.version,
        humanize_bytes(r.dbSize),
        "true" if r.leader == r.header.member_id else "false",
        "true" if r.isLearner else "false",
        str(r.raftTerm),
        str(r.raftIndex),
        str(r.raftAppliedIndex),
        ", ".join(r.errors),
    ]


STATUS_HEADER = [
    "endpoint",
    "ID",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "errors",
]
HEALTH_HEADER = ["endpoint", "health", "took", "error"]
HASHKV_HEADER = ["endpoint", "hash"]


class Printer:
    """Base printer: every method is unsupported (etcdctl's printerUnsupported)."""

    name = ""

    def __init__(self, inv: Invocation) -> None:
        self.inv = inv
        self.hex = bool(inv.values.get("hex"))

    def unsupported(self) -> None:
        raise ExitError(EXIT_BAD_FEATURE, f"{self.name} not supported as output format")

    def get(self, resp: Any) -> None:
        self.unsupported()

    def put(self, resp: Any) -> None:
        self.unsupported()

    def delete(self, resp: Any) -> None:
        self.unsupported()

    def txn(self, resp: Any) -> None:
        self.unsupported()

    def _txn_op(self, op: Any) -> bool:
        """One ResponseOp of a Txn, printed as its delete, put or get response; False for an
        op of another kind (nothing printed)."""
        which = op.WhichOneof("response")
        if which == "response_delete_range":
            self.delete(op.response_delete_range)
        elif which == "response_put":
            self.put(op.response_put)
        elif which == "response_range":
            self.get(op.response_range)
        else:
            return False
        return True

    def endpoint_health(self, items: Sequence[EndpointHealth]) -> None:
        self.unsupported()

    def endpoint_status(self, items: Sequence[EndpointStatus]) -> None:
        self.unsupported()

    def endpoint_hashkv(self, items: Sequence[EndpointHashKV]) -> None:
        self.unsupported()


class SimplePrinter(Printer):
    name = "simple"

    def __init__(self, inv: Invocation, value_only: bool = False) -> None:
        super().__init__(inv)
        self.value_only = value_only

    def kv(self, kv: Any) -> None:
        key, value = (_hex(kv.key), _hex(kv.value)) if self.hex else (kv.key, kv.value)
        if not self.value_only:
            self.inv.out(key + b"\n")
        self.inv.out(value + b"\n")

    def get(self, resp: Any) -> None:
        for kv in resp.kvs:
            self.kv(kv)

    def put(self, resp: Any) -> None:
        self.inv.out("OK\n")
        if resp.HasField("prev_kv"):
            self.kv(resp.prev_kv)

    def delete(self, resp: Any) -> None:
        self.inv.out(f"{resp.deleted}\n")
        for kv in resp.prev_kvs:
            self.kv(kv)

    def txn(self, resp: Any) -> None:
        self.inv.out("SUCCESS\n" if resp.succeeded else "FAILURE\n")
        for op in resp.responses:
            self.inv.out("\n")
            if not self._txn_op(op):
                self.inv.out(f"unexpected response {op}\n")

    def endpoint_health(self, items: Sequence[EndpointHealth]) -> None:
        for h in items:
            if not h.error:
                self.inv.out(
                    f"{h.endpoint} is healthy: successfully committed proposal: took = {h.took}\n"
                )
            else:
                self.inv.err(f"{h.endpoint} is unhealthy: failed to commit proposal: {h.error}\n")

    def endpoint_status(self, items: Sequence[EndpointStatus]) -> None:
        for st in items:
            self.inv.out(", ".join(status_row(st)) + "\n")

    def endpoint_hashkv(self, items: Sequence[EndpointHashKV]) -> None:
        for h in items:
            self.inv.out(f"{h.endpoint}, {h.hash_kv.hash}\n")


class JsonPrinter(Printer):
    name = "json"

    def _print(self, resp: Any) -> None:
        self.inv.out(go_json(resp) + "\n")

    get = put = delete = txn = _print

    def endpoint_health(self, items: Sequence[EndpointHealth]) -> None:
        parts = []
        for h in items:
            text = f'{{"endpoint":{js(h.endpoint)},"health":{"true" if h.health else "false"}'
            text += f',"took":{js(h.took)}'
            if h.error:
                text += f',"error":{js(h.error)}'
            parts.append(text + "}")
        self.inv.out("[" + ",".join(parts) + "]\n")

    def endpoint_status(self, items: Sequence[EndpointStatus]) -> None:
        parts = [f'{{"Endpoint":{js(s.endpoint)},"Status":{go_json(s.status)}}}' for s in items]
        self.inv.out("[" + ",".join(parts) + "]\n")

    def endpoint_hashkv(self, items: Sequence[EndpointHashKV]) -> None:
        parts = [
            f'{{"Endpoint":{js(h.endpoint)},"HashKV":{go_json(_as_3_5(h.hash_kv))}}}' for h in items
        ]
        self.inv.out("[" + ",".join(parts) + "]\n")


class FieldsPrinter(Printer):
    name = "fields"

    def line(self, name: str, value: object) -> None:
        if isinstance(value, bool):
            value = "true" if value else "false"
        self.inv.out(f'"{name}" : {value}\n')

    def hdr(self, resp: Any) -> None:
        h = resp.header
        self.line("ClusterID", h.cluster_id)
        self.line("MemberID", h.member_id)
        self.line("Revision", h.revision)
        self.line("RaftTerm", h.raft_term)

    def kv(self, prefix: str, kv: Any) -> None:
        self.line(f"{prefix}Key", go_quote_bytes(kv.key))
        self.line(f"{prefix}CreateRevision", kv.create_revision)
        self.line(f"{prefix}ModRevision", kv.mod_revision)
        self.line(f"{prefix}Version", kv.version)
        self.line(f"{prefix}Value", go_quote_bytes(kv.value))
        self.line(f"{prefix}Lease", kv.lease)

    def get(self, resp: Any) -> None:
        self.hdr(resp)
        for kv in resp.kvs:
            self.kv("", kv)
        self.line("More", resp.more)
        self.line("Count", resp.count)

    def put(self, resp: Any) -> None:
        self.hdr(resp)
        if resp.HasField("prev_kv"):
            self.kv("Prev", resp.prev_kv)

    def delete(self, resp: Any) -> None:
        self.hdr(resp)
        self.line("Deleted", resp.deleted)
        for kv in resp.prev_kvs:
            self.kv("Prev", kv)

    def txn(self, resp: Any) -> None:
        self.hdr(resp)
        self.line("Succeeded", resp.succeeded)
        for op in resp.responses:
            self._txn_op(op)

    def endpoint_health(self, items: Sequence[EndpointHealth]) -> None:
        for h in items:
            self.line("Endpoint", go_quote(h.endpoint))
            self.line("Health", h.health)
            self.line("Took", h.took)
            self.line("Error", h.error)
            self.inv.out("\n")

    def endpoint_status(self, items: Sequence[EndpointStatus]) -> None:
        for st in items:
            r = st.status
            self.hdr(r)
            self.line("Version", go_quote(r.version))
            self.line("DBSize", r.dbSize)
            self.line("Leader", r.leader)
            self.line("IsLearner", r.isLearner)
            self.line("RaftIndex", r.raftIndex)
            self.line("RaftTerm", r.raftTerm)
            self.line("RaftAppliedIndex", r.raftAppliedIndex)
            self.line("Errors", "[" + " ".join(r.errors) + "]")
            self.line("Endpoint", go_quote(st.endpoint))
            self.inv.out("\n")

    def endpoint_hashkv(self, items: Sequence[EndpointHashKV]) -> None:
        for h in items:
            self.hdr(h.hash_kv)
            self.line("Endpoint", go_quote(h.endpoint))
            self.line("Hash", h.hash_kv.hash)
            self.inv.out("\n")


class ProtobufPrinter(Printer):
    name = "protobuf"

    def _print(self, resp: Any) -> None:
        self.inv.out(resp.SerializeToString())

    get = put = delete = txn = _print


class TablePrinter(Printer):
    name = "table"

    def endpoint_health(self, items: Sequence[EndpointHealth]) -> None:
        rows = [[h.endpoint, "true" if h.health else "false", h.took, h.error] for h in items]
        self.inv.out(ascii_table(HEALTH_HEADER, rows))

    def endpoint_status(self, items: Sequence[EndpointStatus]) -> None:
        self.inv.out(ascii_table(STATUS_HEADER, [status_row(s) for s in items]))

    def endpoint_hashkv(self, items: Sequence[EndpointHashKV]) -> None:
        rows = [[h.endpoint, str(h.hash_kv.hash)] for h in items]
        self.inv.out(ascii_table(HASHKV_HEADER, rows))


def make_printer(inv: Invocation) -> Printer:
    """The printer for ``-w`` (after the environment has been applied)."""
    kinds: dict[str, type[Printer]] = {
        "simple": SimplePrinter,
        "json": JsonPrinter,
        "fields": FieldsPrinter,
        "protobuf": ProtobufPrinter,
        "table": TablePrinter,
    }
    return kinds[inv.output_format()](inv)


def print_response(
    inv: Invocation, resp: Any, simple: Callable[[], None], *, fields: bool = True
) -> None:
    """Print ``resp`` as etcdctl prints the responses of most commands: ``simple`` writes the
    simple format; json is Go's JSON of the response, protobuf its bytes; fields is the
    header (with ``fields``; without, as table, not supported)."""
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        simple()
    elif isinstance(printer, JsonPrinter):
        inv.out(go_json(resp) + "\n")
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.SerializeToString())
    elif isinstance(printer, FieldsPrinter) and fields:
        printer.hdr(resp)
    else:
        printer.unsupported()
