"""Differential tests of the key-value commands: etcdctl vs petcdctl.

Each step runs the same command line with etcdctl against the reference etcd
and with petcdctl against the server under test, in order, so both servers go
through the same revisions; outputs, errors and exit codes must agree. Where
etcdctl 3.5 (which petcdctl follows) differs from the installed 3.4, the test
says so and checks petcdctl against the 3.5 behaviour directly.
"""

from __future__ import annotations

from petcd.api.etcdserverpb import rpc_pb2
from tests.compat.harness import Differ

DEL_RANGE_WARNING = (
    b"In etcd v3.6, the operation will be suspended for a few seconds to provide the user "
    b"time to verify range.\n"
)


def test_put_and_get_basics(differ: Differ) -> None:
    differ.check("put", "foo", "bar")
    differ.check("get", "foo")
    differ.check("put", "foo", "bar2", "--prev-kv")
    differ.check("put", "foo", "bar3", "--prev-kv", "-w", "json")
    differ.check("put", "foo", "bar4", "--prev-kv", "-w", "fields")
    differ.check("put", "foo", "bar5", "--prev-kv", "-w", "protobuf", proto=rpc_pb2.PutResponse)
    differ.check("put", "foo", "bar6", "-w", "table")  # applied, then exit 4
    differ.check("get", "foo", "-w", "json")
    differ.check("get", "foo", "-w", "fields")
    differ.check("get", "foo", "-w", "protobuf", proto=rpc_pb2.RangeResponse)
    differ.check("get", "foo", "-w", "table")
    differ.check("get", "missing")
    differ.check("get", "missing", "-w", "json")
    differ.check("get", "missing", "-w", "fields")


def test_put_flags_and_errors(differ: Differ) -> None:
    differ.check("put")
    differ.check("put", "k", "v", "--ignore-value")
    differ.check("put", "foo", "--ignore-value", "--prev-kv")
    differ.check("put", "never-written", "--ignore-value")
    differ.check("put", "foo", "again", "--ignore-lease")
    differ.check("put", "foo", "x", "--lease", "zz")
    differ.check("put", "foo", "x", "--lease", "1234")
    differ.check("put", "from-stdin", stdin=b"line one\nline two\n")
    differ.check("get", "from-stdin")
    differ.check("put", "empty-stdin", stdin=b"")
    differ.check("put", "--", "dash", "-value")
    differ.check("get", "dash")
    differ.check("put", "bin", stdin=b"\x00\x01\xfe\xff")
    differ.check("get", "bin", "--hex")
    differ.check("get", "bin", "-w", "fields")
    differ.check("get", "bin", "-w", "json")
    differ.check("put", "unicode", "h\u00e9llo \u2603 <&>")
    differ.check("get", "unicode", "-w", "json")
    differ.check("get", "unicode", "-w", "fields")


def test_get_ranges_sorting_and_limits(differ: Differ) -> None:
    for i, key in enumerate(["r/a", "r/b", "r/c", "r/d", "s/a"]):
        differ.check("put", key, f"v{5 - i}")
    differ.check("put", "r/b", "bb")
    differ.check("get", "r/", "--prefix")
    differ.check("get", "r/b", "r/d")
    differ.check("get", "r/c", "--from-key")
    differ.check("get", "", "--prefix", "--keys-only")
    differ.check("get", "", "--from-key", "-w", "json")
    differ.check("get", "r/", "--prefix", "--limit", "2", "-w", "json")
    differ.check("get", "r/", "--prefix", "--limit=0x2", "-w", "fields")
    differ.check("get", "r/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND")
    differ.check("get", "r/", "--prefix", "--sort-by=value")
    differ.check("get", "r/", "--prefix", "--sort-by", "CREATE", "--order", "ascend")
    differ.check("get", "r/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND")
    differ.check("get", "r/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND", "--limit", "1")
    differ.check("get", "r/", "--prefix", "--order", "up")
    differ.check("get", "r/", "--prefix", "--sort-by", "SIZE")
    differ.check("get", "r/", "--prefix", "--keys-only", "-w", "json")
    differ.check("get", "r/", "--prefix", "--print-value-only")
    differ.check("get", "r/a", "--print-value-only", "-w", "json")
    differ.check("get", "r/a", "--consistency", "s")
    differ.check("get", "r/a", "--consistency=x")
    differ.check("get", "r/", "--prefix", "--from-key")
    differ.check("get", "r/a", "r/c", "--prefix")
    differ.check("get")
    # Flag errors print the usage, which in 3.5 also lists --count-only.
    count_only = (b"--count-only[=false]",)
    differ.check("get", "r/a", "--limit", "abc", drop_stdout_lines=count_only)
    differ.check("get", "r/a", "--bogus", drop_stdout_lines=count_only)
    differ.check("get", "r/a", "-x", drop_stdout_lines=count_only)
    differ.check("get", "r/a", "--limit", drop_stdout_lines=count_only)


def test_get_past_revisions(differ: Differ) -> None:
    ref, _ = differ.check("put", "hist", "one", "-w", "json")
    differ.check("put", "hist", "two")
    differ.check("put", "hist", "three")
    revision = int(ref.stdout.split(b'"revision":')[1].split(b",")[0])
    differ.check("get", "hist", "--rev", str(revision))
    differ.check("get", "hist", "--rev", str(revision + 1), "-w", "json")
    differ.check("get", "hist", "--rev", str(revision - 1))
    differ.check("get", "hist", "--rev", "100000")


def test_count_only_follows_etcdctl_3_5(differ: Differ) -> None:
    # etcdctl 3.4 has no --count-only; 3.5 prints the fields output without kvs.
    ref, _ = differ.run_both("get", "r/", "--prefix", "-w", "fields")
    assert ref.code == 0
    _, counted = differ.run_both("get", "r/", "--prefix", "-w", "fields", "--count-only")
    expected = [line for line in ref.stdout.split(b"\n") if line.startswith(b'"ClusterID"')]
    lines = counted.stdout.split(b"\n")
    assert counted.code == 0
    assert lines[0].startswith(b'"ClusterID" : ')
    assert b'"Count" : 4' in lines and b'"Key" :' not in counted.stdout
    assert len(expected) == 1
    _, bad = differ.run_both("get", "r/", "--prefix", "--count-only")
    assert (bad.code, bad.stderr) == (
        128,
        b"Error: --count-only is only for `--write-out=fields`\n",
    )
    _, both = differ.run_both("get", "r/", "--prefix", "--count-only", "--keys-only")
    assert both.code == 128
    assert both.stderr == (
        b"Error: `--keys-only` and `--count-only` cannot be set at the same time, choose one\n"
    )


def test_delete(differ: Differ) -> None:
    for key in ["d/a", "d/b", "d/c", "d/d", "e/a", "f/a"]:
        differ.check("put", key, key.upper())
    differ.check("del", "d/a")
    differ.check("del", "d/a")
    differ.check("del", "d/b", "--prev-kv")
    differ.check("del", "d/", "--prefix", "--prev-kv", "-w", "json")
    differ.check("put", "d/x", "1")
    differ.check("del", "d/", "--prefix", "-w", "fields")
    differ.check("put", "d/y", "2")
    differ.check("del", "d/", "--prefix", "-w", "protobuf", proto=rpc_pb2.DeleteRangeResponse)
    # etcdctl 3.5 warns about ranges given without --range; 3.4 does not.
    differ.check("del", "e/", "e/z", drop_stderr=(DEL_RANGE_WARNING,))
    _, tgt = differ.run_both("del", "e/", "e/z", "--range")
    assert tgt.stderr == b"" and tgt.stdout == b"0\n"
    differ.check("del", "f/", "--from-key", "--prev-kv")
    differ.check("del")
    differ.check("del", "a", "b", "c")
    differ.check("del", "a", "--prefix", "--from-key")
    differ.check("del", "a", "b", "--prefix")
    differ.check("del", "nothing", "-w", "table")


def test_txn(differ: Differ) -> None:
    differ.check("put", "t/k", "v1")
    differ.check("put", "t/n", "5")
    success = (
        b'value("t/k") = "v1"\n'
        b'mod("t/k") > "0"\n'
        b'create("t/k") != "0"\n'
        b'version("t/k") < "100"\n'
        b"\n"
        b"put t/k v2 --prev-kv\n"
        b"get t/ --prefix\n"
        b"del t/none\n"
        b"\n"
        b"get t/k\n"
        b"\n"
    )
    differ.check("txn", stdin=success)
    differ.check("txn", stdin=success)  # now the compare fails
    differ.check("txn", "-w", "json", stdin=success)
    differ.check("txn", "-w", "fields", stdin=success)
    differ.check("txn", "-w", "protobuf", stdin=success, proto=rpc_pb2.TxnResponse)
    differ.check("txn", "-i", stdin=b'val("t/k") = "v2"\n\nput t/k v3\n\n\n')
    differ.check("txn", "--interactive", "-w", "json", stdin=b"\n\nget t/n\n\n\n")
    differ.check("txn", stdin=b'ver("t/k") = "3"\n\ndel t/ --prefix --prev-kv\n\nput x y\n\n')
    differ.check("txn", stdin=b'c("t/q") = "0"\n\nput "t/q" "quoted value"\nget t/q\n\n\n')
    differ.check("txn", stdin=b"value(t/k) = v\n\n\n\n")
    differ.check("txn", stdin=b'bogus("t/k") = "1"\n\n\n\n')
    differ.check("txn", stdin=b'mod("t/k") = "abc"\n\n\n\n')
    differ.check("txn", stdin=b"no paren\n\n\n\n")
    differ.check("txn", stdin=b"\nput onlyone\n\n\n")
    differ.check("txn", stdin=b"\nwatch a b\n\n\n")
    # cobra's usage of the op command goes to stderr; 3.5's get also has --count-only.
    differ.check(
        "txn",
        stdin=b"\nget a --bogus\n\n\n",
        drop_stderr=(b"      --count-only           Get only the count\n",),
    )
    differ.check("txn", stdin=b"\nput a b --lease\n\n\n")
    differ.check(
        "txn",
        stdin=b"\ndel a --prev-kv=maybe\n\n\n",
        drop_stderr=(b"      --range      delete range of keys\n",),
    )
    differ.check("txn", stdin=b"\nget a --prefix --from-key\n\n\n")
    differ.check("txn", stdin=b"\nput a b\n")
    differ.check("txn", stdin=b"")
    differ.check("txn", "extra")
    differ.check("txn", "-w", "table", stdin=b"\n\n\n")


def test_compaction(differ: Differ) -> None:
    ref, _ = differ.check("put", "c/k", "1", "-w", "json")
    revision = int(ref.stdout.split(b'"revision":')[1].split(b",")[0])
    differ.check("put", "c/k", "2")
    differ.check("put", "c/k", "3")
    differ.check("compaction", str(revision))
    differ.check("compaction", str(revision))
    differ.check("get", "c/k", "--rev", str(revision - 1))
    differ.check("get", "c/k", "--rev", str(revision + 1))
    differ.check("compaction", "--physical", str(revision + 1))
    differ.check("compaction", "100000")
    differ.check("compaction", "abc")
    differ.check("compaction")
    differ.check("compaction", "1", "2")
    differ.check("txn", stdin=f"\n\nget c/k --rev {revision}\n\n".encode())


def test_global_flags_and_environment(differ: Differ) -> None:
    differ.check("put", "g/k", "v")
    differ.check("get", "g/k", env_endpoint=True)
    differ.check("get", "g/k", env={"ETCDCTL_WRITE_OUT": "json"})
    differ.check("get", "g/k", env={"ETCDCTL_HEX": "true"})
    differ.check("get", "g/k", env={"ETCDCTL_DIAL_TIMEOUT": "3s", "ETCDCTL_COMMAND_TIMEOUT": "9s"})
    differ.check("get", "g/k", env={"ETCDCTL_DIAL_TIMEOUT": "garbage"})
    differ.check("get", "g/k", "--hex", "-w", "json")
    differ.check("get", "g/k", "--dial-timeout=3s", "--command-timeout", "10s")
    differ.check("get", "g/k", "--dial-timeout=xyz", drop_stdout_lines=(b"--count-only[=false]",))
    differ.check(
        "get",
        "g/k",
        "--insecure-transport=false",
        "--insecure-skip-tls-verify",
        "--command-timeout=500ms",
    )
    differ.check("get", "g/k", "-wjson")
    differ.check("get", "g/k", "--write-out=yaml")
    differ.check("--write-out", "fields", "get", "g/k")
    differ.check("ge", "g/k")
    differ.check("bogus")
    differ.check("gett", "g/k")
    differ.check("g", "g/k")
    ref, tgt = differ.run_both("get", "g/k", env={"ETCDCTL_ENDPOINTS": "127.0.0.1:1"})
    assert ref.code == tgt.code == 1  # the flag shadows the variable: fatal in both
    ref, tgt = differ.run_both("get", "g/k", "--debug")
    env_lines = [
        [line for line in r.stderr.split(b"\n") if line.startswith(b"ETCDCTL_")] for r in (ref, tgt)
    ]
    assert env_lines[0][0] == b"ETCDCTL_CACERT=" and len(env_lines[0]) == 18
    assert [line.split(b"=")[0] for line in env_lines[0]] == [
        line.split(b"=")[0] for line in env_lines[1]
    ]
    assert ref.stdout == tgt.stdout == b"g/k\nv\n"


def test_help_texts_shared_by_3_4_and_3_5(differ: Differ) -> None:
    for argv in (
        ("put", "--help"),
        ("txn", "-h"),
        ("compaction", "--help"),
        ("endpoint", "status", "--help"),
        ("endpoint", "health", "--help"),
        ("help", "put"),
    ):
        differ.check(*argv)


def test_unreachable_endpoint(differ: Differ) -> None:
    ref, tgt = differ.run_both(
        "--endpoints", "127.0.0.1:1", "--command-timeout=500ms", "get", "a", with_endpoint=False
    )
    assert ref.code == tgt.code == 1
    assert tgt.stderr.endswith(b"Error: context deadline exceeded\n")
    assert ref.stderr.endswith(b"Error: context deadline exceeded\n")
