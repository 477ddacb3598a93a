"""``petcd grpc-proxy``: etcd 3.5's flag texts and checks, and the ``--namespace`` rewrites.

The help text is etcd 3.5.17's ``etcd grpc-proxy start --help`` (the program named petcd); the
flag errors are pflag's; the argument checks are etcd's ``checkArgs``. The namespace rewrites
follow etcd's ``clientv3/namespace``: keys and range ends prefixed (``\\0`` as the end of the
namespace), returned keys cut.
"""

from __future__ import annotations

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.client.requests import prefix_range_end
from petcd.proxy.flags import (
    START_USAGE,
    ProxyFlagError,
    find_command,
    parse_start_flags,
)
from petcd.proxy.main import check_args, main
from petcd.proxy.namespace import EmptyKeyError, Namespace


def test_help_has_etcd_35_flags_and_layout() -> None:
    lines = START_USAGE.splitlines()
    assert lines[:4] == ["Usage:", "  petcd grpc-proxy start [flags]", "", "Flags:"]
    assert (
        "      --endpoints-auto-sync-interval duration   etcd endpoints auto sync interval "
        "(disabled by default)" in lines
    )
    assert (
        "      --dial-keepalive-timeout duration         keepalive timeout for "
        "client(grpc-proxy) connections (default 20s). (default 20s)" in lines
    )
    assert (
        "      --max-concurrent-streams uint32           Maximum concurrent streams that each "
        "client can open at a time. (default 4294967295)" in lines
    )
    assert len(lines) == 4 + 37  # etcd 3.5.17 has 37 flags on start


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown flag: --bogus"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (
            ["--max-send-bytes=x"],
            'invalid argument "x" for "--max-send-bytes" flag: strconv.ParseInt: parsing "x": '
            "invalid syntax",
        ),
        (
            ["--max-concurrent-streams=-1"],
            'invalid argument "-1" for "--max-concurrent-streams" flag: strconv.ParseUint: '
            'parsing "-1": invalid syntax',
        ),
        (
            ["--endpoints-auto-sync-interval", "x"],
            'invalid argument "x" for "--endpoints-auto-sync-interval" flag: time: invalid '
            'duration "x"',
        ),
        (["--listen-addr"], "flag needs an argument: --listen-addr"),
    ],
)
def test_flag_errors(args: list[str], message: str) -> None:
    with pytest.raises(ProxyFlagError) as e:
        parse_start_flags(args)
    assert str(e.value) == message


def test_defaults_and_values() -> None:
    o = parse_start_flags([])
    assert (o.listen_addr, o.endpoints, o.advertise_client_url) == (
        "127.0.0.1:23790",
        ["127.0.0.1:2379"],
        "127.0.0.1:23790",
    )
    assert (o.max_send_bytes, o.max_recv_bytes, o.data_dir) == (1572864, 2**31 - 1, "default.proxy")
    o = parse_start_flags(
        ["--endpoints=a,b", "--endpoints", "c", "--endpoints-auto-sync-interval=1s"]
    )
    assert o.endpoints == ["a", "b", "c"]
    assert o.endpoints_auto_sync_interval_s == 1.0
    assert find_command(["--listen-addr", "x", "start", "-h"]) == (
        "start",
        ["--listen-addr", "x", "-h"],
    )
    assert find_command(["nonsense"])[0] == "grpc-proxy"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--resolver-prefix=p"], "invalid resolver-ttl 0"),
        (["--resolver-ttl=3"], 'invalid resolver-prefix ""'),
        (
            ["--resolver-prefix=p", "--resolver-ttl=3", "--advertise-client-url="],
            'invalid advertise-client-url ""',
        ),
        (
            ["--auto-tls", "--self-signed-cert-validity=0"],
            "selfSignedCertValidity is invalid,it should be greater than 0",
        ),
    ],
)
def test_etcd_argument_checks(args: list[str], text: str) -> None:
    assert check_args(parse_start_flags(args)) == text


def test_command_line_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["start", "--help"]) == 0
    assert capsys.readouterr().out.startswith("start the grpc proxy\n\nUsage:\n")
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("grpc-proxy related command\n\nUsage:\n")
    assert main(["start", "--bogus"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: unknown flag: --bogus\nUsage:\n")
    assert err.endswith("\nunknown flag: --bogus\n")
    assert main(["start", "--resolver-ttl=2"]) == 1
    assert capsys.readouterr().err == 'invalid resolver-prefix ""\n'
    assert main(["start", "--experimental-leasing-prefix=/l"]) == 1
    assert "--experimental-leasing-prefix (the leasing KV" in capsys.readouterr().err


def test_discovery_srv_gives_the_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    from petcd.proxy.main import endpoints
    from petcd.server import srv
    from petcd.server.log import Logger

    asked = []

    def client_endpoints(domain: str, suffix: str) -> list[str]:
        asked.append((domain, suffix))
        return ["http://m1.example.com:2379"]

    monkeypatch.setattr(srv, "client_endpoints", client_endpoints)
    opts = parse_start_flags(
        ["--discovery-srv=example.com", "--discovery-srv-name=c1", "--insecure-discovery"]
    )
    assert endpoints(opts, Logger("error")) == ["http://m1.example.com:2379"]
    assert asked == [("example.com", "c1")]
    assert endpoints(parse_start_flags(["--endpoints=a:1"]), Logger("error")) == ["a:1"]


def test_prefix_end() -> None:
    assert prefix_range_end(b"ns/") == b"ns0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_namespace_requests_and_responses() -> None:
    ns = Namespace(b"ns/")
    r = rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0")
    ns.range_request(r)
    assert (r.key, r.range_end) == (b"ns/\0", b"ns0")
    r = rpc_pb2.RangeRequest(key=b"a", range_end=b"b")
    ns.range_request(r)
    assert (r.key, r.range_end) == (b"ns/a", b"ns/b")
    with pytest.raises(EmptyKeyError):
        ns.put_request(rpc_pb2.PutRequest(key=b""))
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"c")],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"p"))],
        failure=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d"))],
    )
    ns.txn_request(txn)
    assert txn.compare[0].key == b"ns/c" and txn.compare[0].range_end == b""
    assert txn.success[0].request_put.key == b"ns/p"
    assert txn.failure[0].request_delete_range.key == b"ns/d"
    resp = rpc_pb2.TxnResponse(
        responses=[
            rpc_pb2.ResponseOp(
                response_range=rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"ns/x")])
            )
        ]
    )
    ns.txn_response(resp)
    assert resp.responses[0].response_range.kvs[0].key == b"x"
    w = rpc_pb2.WatchResponse(
        events=[kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"ns/k"), prev_kv=kv_pb2.KeyValue(key=b"ns/k"))]
    )
    ns.watch_response(w)
    assert (w.events[0].kv.key, w.events[0].prev_kv.key) == (b"k", b"k")
    ttl = rpc_pb2.LeaseTimeToLiveResponse(keys=[b"ns/a", b"other"])
    ns.lease_time_to_live_response(ttl)
    assert list(ttl.keys) == [b"a"]
