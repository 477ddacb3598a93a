"""petcdctl end to end in-process, against a fake client (no server, no network).

The fake records the requests petcdctl sends and answers with canned responses,
so these tests pin down both directions: the request etcdctl would send for a
command line, and the bytes etcdctl would print for a response.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.client import CompactedError
from petcd.ctl.context import ClientConfig
from petcd.ctl.main import run

HEADER = rpc_pb2.ResponseHeader(cluster_id=11, member_id=22, revision=7, raft_term=3)


@dataclass
class FakeClient:
    config: ClientConfig
    calls: list[tuple[str, Any]] = field(default_factory=list)
    kvs: list[Any] = field(default_factory=list)
    fail: Exception | None = None

    def _record(self, name: str, request: Any) -> None:
        self.calls.append((name, request))
        if self.fail is not None:
            raise self.fail

    def range(self, request: Any, **_: Any) -> Any:
        self._record("range", request)
        kvs = [] if request.count_only else self.kvs
        return rpc_pb2.RangeResponse(header=HEADER, kvs=kvs, count=len(self.kvs))

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        self._record("put", rpc_pb2.PutRequest(key=key, value=value, **kw))
        prev = self.kvs[0] if kw.get("prev_kv") and self.kvs else None
        return rpc_pb2.PutResponse(header=HEADER, prev_kv=prev)

    def delete(self, key: bytes, range_end: bytes = b"", **kw: Any) -> Any:
        self._record("delete", rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, **kw))
        return rpc_pb2.DeleteRangeResponse(header=HEADER, deleted=len(self.kvs))

    def txn(self, compare: Any, success: Any, failure: Any, **_: Any) -> Any:
        self._record("txn", rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure))
        ops = [rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse(header=HEADER)) for _ in success]
        return rpc_pb2.TxnResponse(header=HEADER, succeeded=True, responses=ops)

    def compact(self, revision: int, physical: bool = False, **_: Any) -> Any:
        self._record("compact", rpc_pb2.CompactionRequest(revision=revision, physical=physical))
        return rpc_pb2.CompactionResponse(header=HEADER)

    def auth(self, method: str, request: Any, **_: Any) -> Any:
        self._record(method, request)
        if method == "AuthStatus":
            return rpc_pb2.AuthStatusResponse(header=HEADER, enabled=True, authRevision=4)
        if method == "RoleGet":
            perms = [
                auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"a/", range_end=b"a0"),
                auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"k"),
                auth_pb2.Permission(
                    permType=auth_pb2.Permission.WRITE, key=b"z", range_end=b"\x00"
                ),
            ]
            return rpc_pb2.AuthRoleGetResponse(header=HEADER, perm=perms)
        raise AssertionError(method)

    def close(self) -> None:
        pass


@dataclass
class Runner:
    kvs: list[Any] = field(default_factory=list)
    fail: Exception | None = None
    clients: list[FakeClient] = field(default_factory=list)

    def __call__(
        self, *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> tuple[int, bytes, bytes]:
        out, err = io.BytesIO(), io.BytesIO()

        def factory(config: ClientConfig) -> Any:
            client = FakeClient(config, kvs=self.kvs, fail=self.fail)
            self.clients.append(client)
            return client

        code = run(
            list(argv),
            stdin=io.BytesIO(stdin),
            stdout=out,
            stderr=err,
            environ=env or {},
            client_factory=factory,
        )
        return code, out.getvalue(), err.getvalue()

    @property
    def requests(self) -> list[tuple[str, Any]]:
        return [call for client in self.clients for call in client.calls]


@pytest.fixture
def ctl() -> Runner:
    kv = kv_pb2.KeyValue(key=b"foo", value=b"bar", create_revision=2, mod_revision=5, version=3)
    return Runner(kvs=[kv])


def test_get_builds_etcds_range_request(ctl: Runner) -> None:
    assert ctl("get", "a", "--prefix", "--limit", "3", "--rev", "4", "--consistency=s")[0] == 0
    ((name, request),) = ctl.requests
    assert name == "range"
    assert (request.key, request.range_end, request.limit, request.revision) == (b"a", b"b", 3, 4)
    assert request.serializable
    ctl("get", "", "--prefix")
    assert (ctl.requests[-1][1].key, ctl.requests[-1][1].range_end) == (b"\x00", b"\x00")
    ctl("get", "a\udcff", "--prefix")  # argv bytes arrive surrogate-escaped
    assert ctl.requests[-1][1].range_end == b"b"
    ctl("get", "k", "--sort-by", "KEY", "--order", "ASCEND")
    assert ctl.requests[-1][1].sort_order == rpc_pb2.RangeRequest.NONE  # dropped, as clientv3 does
    ctl("get", "k", "--sort-by", "modify")
    request = ctl.requests[-1][1]
    assert (request.sort_target, request.sort_order) == (rpc_pb2.RangeRequest.MOD, 0)


def test_get_output_formats(ctl: Runner) -> None:
    assert ctl("get", "foo") == (0, b"foo\nbar\n", b"")
    assert ctl("get", "foo", "--print-value-only") == (0, b"bar\n", b"")
    assert ctl("get", "foo", "--hex")[1] == b"\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n"
    assert ctl("get", "foo", "-w", "json")[1] == (
        b'{"header":{"cluster_id":11,"member_id":22,"revision":7,"raft_term":3},"kvs":[{"key":'
        b'"Zm9v","create_revision":2,"mod_revision":5,"version":3,"value":"YmFy"}],"count":1}\n'
    )
    assert ctl("get", "foo", "-w", "fields")[1] == (
        b'"ClusterID" : 11\n"MemberID" : 22\n"Revision" : 7\n"RaftTerm" : 3\n'
        b'"Key" : "foo"\n"CreateRevision" : 2\n"ModRevision" : 5\n"Version" : 3\n'
        b'"Value" : "bar"\n"Lease" : 0\n"More" : false\n"Count" : 1\n'
    )
    code, out, _ = ctl("get", "foo", "-w", "protobuf")
    assert code == 0 and rpc_pb2.RangeResponse.FromString(out).kvs[0].value == b"bar"
    assert ctl("get", "foo", "-w", "table") == (
        4,
        b"",
        b"Error: table not supported as output format\n",
    )


def test_count_only_is_fields_only(ctl: Runner) -> None:
    code, out, _ = ctl("get", "foo", "--count-only", "-w", "fields")
    assert code == 0 and b'"Count" : 1\n' in out and b"Key" not in out
    assert ctl("get", "foo", "--count-only") == (
        128,
        b"",
        b"Error: --count-only is only for `--write-out=fields`\n",
    )


def test_argument_errors_exit_128_before_any_request(ctl: Runner) -> None:
    assert ctl("get")[0::2] == (
        128,
        b"Error: get command needs one argument as key and an optional argument as range_end\n",
    )
    assert ctl("put", "k")[0] == 128  # no value and empty stdin
    assert ctl("del", "a", "b", "c")[0] == 128
    assert ctl("put", "k", "v", "--lease", "0x1")[0::2] == (
        128,
        b'Error: bad lease ID (strconv.ParseInt: parsing "0x1": invalid syntax), '
        b"expecting ID in Hex\n",
    )
    assert ctl("compaction", "1", "2")[0] == 128
    assert ctl.requests == []


def test_bad_feature_values_exit_4(ctl: Runner) -> None:
    assert ctl("get", "k", "--order", "up")[0::2] == (4, b"Error: bad sort order up\n")
    assert ctl("get", "k", "--consistency", "q")[0::2] == (
        4,
        b'Error: unknown consistency flag "q"\n',
    )
    assert ctl("get", "k", "-w", "yaml")[0::2] == (4, b"Error: unsupported output format\n")


def test_flag_error_prints_usage_between_two_errors(ctl: Runner) -> None:
    code, out, err = ctl("put", "--bogus")
    assert code == 1
    assert out.startswith(b"NAME:\n\tput - Puts the given key into the store\n")
    assert err == b"Error: unknown flag: --bogus\n\nError: unknown flag: --bogus\n"


def test_help_and_group_commands_print_usage(ctl: Runner) -> None:
    assert ctl("put", "--help")[0] == 0
    code, out, _ = ctl("endpoint")
    assert code == 0 and b"COMMANDS:\n\thashkv\t" in out
    code, out, _ = ctl()
    assert code == 0 and out.startswith(b"NAME:\n\tetcdctl - A simple command line client")
    assert ctl("help", "get")[1] == ctl("get", "-h")[1]
    assert ctl("bogus")[0::2] == (
        1,
        b'Error: unknown command "bogus" for "etcdctl"\nRun \'etcdctl --help\' for usage.\n'
        b'Error: unknown command "bogus" for "etcdctl"\n',
    )


def test_put_from_stdin_and_prev_kv(ctl: Runner) -> None:
    assert ctl("put", "k", "--prev-kv", stdin=b"v\x00w") == (0, b"OK\nfoo\nbar\n", b"")
    ((_, request),) = ctl.requests
    assert (request.key, request.value, request.prev_kv) == (b"k", b"v\x00w", True)
    ctl("put", "k", "--ignore-value", "--ignore-lease", "--lease", "ff")
    request = ctl.requests[-1][1]
    assert (request.value, request.ignore_value, request.ignore_lease, request.lease) == (
        b"",
        True,
        True,
        255,
    )


def test_delete_range_warns_like_etcdctl_3_5(ctl: Runner) -> None:
    code, out, err = ctl("del", "a", "c")
    assert (code, out) == (0, b"1\n")
    assert err.startswith(b"In etcd v3.6, the operation will be suspended")
    assert ctl("del", "a", "c", "--range")[2] == b""
    request = ctl.requests[-1][1]
    assert (request.key, request.range_end) == (b"a", b"c")


def test_server_errors_are_printed_as_etcdctl_does(ctl: Runner) -> None:
    ctl.fail = CompactedError(
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
    )
    assert ctl("get", "k", "--rev", "1") == (
        1,
        b"",
        b"Error: etcdserver: mvcc: required revision has been compacted\n",
    )
    assert ctl("compaction", "3") == (
        1,
        b"",
        b"Error: etcdserver: mvcc: required revision has been compacted\n",
    )


def test_compaction(ctl: Runner) -> None:
    assert ctl("compaction", "--physical", "12") == (0, b"compacted revision 12\n", b"")
    assert ctl.requests[-1][1] == rpc_pb2.CompactionRequest(revision=12, physical=True)
    assert ctl("compaction", "x1") == (
        1,
        b"",
        b'Error: strconv.ParseInt: parsing "x1": invalid syntax\n',
    )


def test_txn_reads_three_sections(ctl: Runner) -> None:
    stdin = b'mod("k") > "4"\nvalue("k") != "x y"\n\nput k v --prev-kv\nget k --prefix\n\ndel k\n\n'
    code, out, _ = ctl("txn", stdin=stdin)
    assert code == 0 and out == b"SUCCESS\n\nOK\n\nOK\n"
    ((_, request),) = ctl.requests
    assert [c.target for c in request.compare] == [rpc_pb2.Compare.MOD, rpc_pb2.Compare.VALUE]
    assert request.compare[0].mod_revision == 4
    assert request.compare[1].result == rpc_pb2.Compare.NOT_EQUAL
    assert request.compare[1].value == b"x y"
    assert request.success[0].request_put.prev_kv
    assert request.success[1].request_range.range_end == b"l"
    assert request.failure[0].request_delete_range.key == b"k"
    code, out, _ = ctl("txn", "-i", stdin=b"\n\n\n")
    assert out.startswith(
        b"compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
    )


@pytest.mark.parametrize(
    ("stdin", "code", "error"),
    [
        (b"", 3, b"Error: EOF\n"),
        (b'mod("k") = "1"', 3, b"Error: EOF\n"),
        (b"nonsense\n", 3, b"Error: malformed comparison: nonsense\n"),
        (
            b'size("k") = "1"\n',
            3,
            b'Error: malformed comparison: size("k") = "1" (unknown target size)\n',
        ),
        (b'ver("k") = "one"\n', 3, b'Error: invalid txn compare request: ver("k") = "one"\n'),
        (
            b'ver("k") =\n',
            3,
            b'Error: malformed comparison: ver("k") =; got ver("k") = ""\n',
        ),
        (b"\nput\n", 3, b"Error: invalid txn compare request: put\n"),
        (
            b"\nput k\n",
            128,
            b"Error: put command needs 1 argument and input from stdin or 2 arguments\n",
        ),
        (b"\nwatch k v\n", 3, b"Error: invalid txn request: watch k v\n"),
        (b"\nput k v\n", 3, b"Error: EOF\n"),
        (
            b"\nget k --prefix --from-key\n",
            128,
            b"Error: `--prefix` and `--from-key` cannot be set at the same time, choose one\n",
        ),
    ],
)
def test_txn_input_errors(ctl: Runner, stdin: bytes, code: int, error: bytes) -> None:
    got = ctl("txn", stdin=stdin)
    assert (got[0], got[2]) == (code, error)


def test_environment_fills_unset_global_flags(ctl: Runner) -> None:
    code, out, err = ctl("get", "foo", env={"ETCDCTL_WRITE_OUT": "json", "ETCDCTL_API": "3"})
    assert code == 0 and out.startswith(b'{"header"') and err == b""
    ctl("get", "foo", env={"ETCDCTL_ENDPOINTS": "h1:1,h2:2", "ETCDCTL_DIAL_TIMEOUT": "7s"})
    config = ctl.clients[-1].config
    assert config.endpoints == ("h1:1", "h2:2") and config.dial_timeout_s == 7.0
    ctl("get", "foo", env={"ETCDCTL_COMMAND_TIMEOUT": "not-a-duration"})
    assert ctl.clients[-1].config.command_timeout_s == 5.0  # ignored, as etcdctl does


def test_environment_conflicts_and_unknown_variables(ctl: Runner) -> None:
    code, _, err = ctl("--endpoints", "x:1", "get", "foo", env={"ETCDCTL_ENDPOINTS": "y:1"})
    assert code == 1 and b'"level":"fatal"' in err and b"ETCDCTL_ENDPOINTS" in err
    code, out, err = ctl("get", "foo", env={"ETCDCTL_BOGUS": "1"})
    assert code == 0 and out == b"foo\nbar\n"
    assert b'"msg":"unrecognized environment variable"' in err and b"ETCDCTL_BOGUS=1" in err
    assert ctl("version", env={"ETCDCTL_API": "2"}) == (
        1,
        b"",
        b"unsupported API version: 2\n",
    )


def test_debug_prints_the_effective_global_flags(ctl: Runner) -> None:
    _, _, err = ctl("get", "foo", "--debug", "--hex")
    lines = err.decode().splitlines()
    assert lines[0] == "ETCDCTL_CACERT="
    assert "ETCDCTL_DEBUG=true" in lines and "ETCDCTL_HEX=true" in lines
    assert "ETCDCTL_ENDPOINTS=[127.0.0.1:2379]" in lines
    assert "ETCDCTL_DIAL_TIMEOUT=2s" in lines


def test_version(ctl: Runner) -> None:
    import petcd

    assert ctl("version") == (
        0,
        f"etcdctl version: {petcd.ETCD_VERSION}\nAPI version: 3.5\n".encode(),
        b"",
    )


def test_auth_status_is_3_5_only_and_printed_like_etcdctl(ctl: Runner) -> None:
    assert ctl("auth", "status") == (0, b"Authentication Status: true\nAuthRevision: 4\n", b"")
    assert ctl("auth", "status", "-w", "json")[1] == (
        b'{"header":{"cluster_id":11,"member_id":22,"revision":7,"raft_term":3},'
        b'"enabled":true,"authRevision":4}\n'
    )
    assert ctl("auth", "status", "-w", "fields")[0::2] == (
        4,
        b"Error: fields not supported as output format\n",
    )
    assert ctl("auth", "status", "x")[0] == 128


def test_role_get_lists_read_and_write_ranges(ctl: Runner) -> None:
    code, out, _ = ctl("role", "get", "r")
    assert code == 0
    assert out == (
        b"Role r\nKV Read:\n\t[a/, a0) (prefix a/)\n\tk\nKV Write:\n\tk\n\t[z, <open ended>\n"
    )
    _, fields, _ = ctl("role", "get", "r", "-w", "fields")
    assert b'"PermType" :  READWRITE\n"Key" : "k"\n"RangeEnd" : ""\n' in fields
