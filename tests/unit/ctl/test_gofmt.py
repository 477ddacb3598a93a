"""Go formatting rules petcdctl reproduces (expected values are what Go prints)."""

from __future__ import annotations

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.ctl.gofmt import (
    ascii_table,
    go_duration,
    go_json,
    go_quote_bytes,
    go_unquote_prefix,
    humanize_bytes,
    json_string,
    parse_go_duration,
    tabwrite,
)


@pytest.mark.parametrize(
    ("data", "quoted"),
    [
        (b"foo", '"foo"'),
        (b'a"b\\c', '"a\\"b\\\\c"'),
        (b"\x00\x01\n\t\x7f", '"\\x00\\x01\\n\\t\\x7f"'),
        (b"\xfe\xff", '"\\xfe\\xff"'),
        ("h\u00e9llo \u2603".encode(), '"h\u00e9llo \u2603"'),
        ("\u2028".encode(), '"\\u2028"'),
        (b"\x07\x08\x0b\x0c\r", '"\\a\\b\\v\\f\\r"'),
    ],
)
def test_go_quote(data: bytes, quoted: str) -> None:
    assert go_quote_bytes(data) == quoted


def test_go_unquote_round_trips_and_rejects_garbage() -> None:
    assert go_unquote_prefix('"a\\"b" rest') == ('a"b', " rest")
    assert go_unquote_prefix('"\\x41\\u00e9\\101"') == ("A\u00e9A", "")
    assert go_unquote_prefix("`raw\\n`x") == ("raw\\n", "x")
    assert go_unquote_prefix("noquote") is None
    assert go_unquote_prefix('"unterminated') is None
    assert go_unquote_prefix('"bad \\q escape"') is None


def test_json_string_is_html_safe_like_encoding_json() -> None:
    assert (
        json_string('<a href="x">&</a>') == '"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"'
    )
    assert json_string("tab\there\x01") == '"tab\\there\\u0001"'
    assert json_string("\u2029") == '"\\u2029"'


def test_go_json_omits_zero_fields_and_base64_encodes_bytes() -> None:
    resp = rpc_pb2.RangeResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4),
        kvs=[kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=2, version=1)],
        count=1,
    )
    assert go_json(resp) == (
        '{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4},'
        '"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1}],"count":1}'
    )
    assert go_json(rpc_pb2.RangeResponse()) == "{}"
    assert go_json(rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader())) == '{"header":{}}'


def test_go_json_renders_oneofs_as_gogoproto_interfaces() -> None:
    resp = rpc_pb2.TxnResponse(
        succeeded=True,
        responses=[
            rpc_pb2.ResponseOp(
                response_put=rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=9))
            ),
            rpc_pb2.ResponseOp(response_delete_range=rpc_pb2.DeleteRangeResponse(deleted=2)),
        ],
    )
    assert go_json(resp) == (
        '{"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":9}}}},'
        '{"Response":{"ResponseDeleteRange":{"deleted":2}}}]}'
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.000000500, "500ns"),
        (0.0000015, "1.5µs"),
        (0.001878715, "1.878715ms"),
        (2, "2s"),
        (90.5, "1m30.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_parse_go_duration() -> None:
    assert parse_go_duration("2s") == 2.0
    assert parse_go_duration("1m30s") == 90.0
    assert parse_go_duration("1.5h") == 5400.0
    assert parse_go_duration("250ms") == pytest.approx(0.25)
    assert parse_go_duration("0") == 0.0
    with pytest.raises(ValueError, match=r'^time: invalid duration "xyz"$'):
        parse_go_duration("xyz")
    with pytest.raises(ValueError, match=r'^time: missing unit in duration "5"$'):
        parse_go_duration("5")
    with pytest.raises(ValueError, match=r'^time: unknown unit "d" in duration "5d"$'):
        parse_go_duration("5d")


@pytest.mark.parametrize(
    ("size", "text"),
    [(5, "5 B"), (1500, "1.5 kB"), (20480, "20 kB"), (24576, "25 kB"), (12185600, "12 MB")],
)
def test_humanize_bytes(size: int, text: str) -> None:
    assert humanize_bytes(size) == text


def test_tabwrite_aligns_each_block_of_lines_separately() -> None:
    text = "a\tb\nlonger-cell\tc\nno tabs\nx\ty\n"
    assert tabwrite(text) == "a\t\tb\nlonger-cell\tc\nno tabs\nx\ty\n"
    # an empty leading cell is one tab stop wide
    assert tabwrite("\tname - short\n") == "\tname - short\n"


def test_ascii_table_like_tablewriter() -> None:
    table = ascii_table(["endpoint", "health"], [["127.0.0.1:2379", "true"]])
    assert table == (
        "+----------------+--------+\n"
        "|    ENDPOINT    | HEALTH |\n"
        "+----------------+--------+\n"
        "| 127.0.0.1:2379 |   true |\n"
        "+----------------+--------+\n"
    )
