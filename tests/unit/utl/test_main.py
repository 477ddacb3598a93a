"""petcdutl's command line, run in-process: outputs, formats, errors and exit codes."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from petcd import ETCD_VERSION
from petcd.utl.main import run
from tests.unit.utl.test_snapshot import make_snapshot


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = run(list(argv), stdout=out, stderr=err, environ={})
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_version() -> None:
    major_minor = ".".join(ETCD_VERSION.split(".")[:2])
    assert cli("version") == (
        0,
        f"etcdutl version: {ETCD_VERSION}\nAPI version: {major_minor}\n",
        "",
    )


def test_help_lists_the_commands_in_cobra_format() -> None:
    code, out, err = cli("--help")
    assert code == 0 and err == ""
    assert out.startswith("Usage:\n  etcdutl [command]\n\nAvailable Commands:\n")
    for name in ("defrag", "hashkv", "snapshot", "version", "help"):
        assert f"\n  {name.ljust(11)} " in out
    assert "  -w, --write-out string   set the output format" in out
    assert out.endswith('Use "etcdutl [command] --help" for more information about a command.\n')
    # `help <command>` and `<command> -h` print the same.
    assert cli("help", "snapshot", "restore")[1] == cli("snapshot", "restore", "-h")[1]


def test_every_command_has_help() -> None:
    for argv in (["defrag"], ["hashkv"], ["snapshot"], ["snapshot", "restore"],
                 ["snapshot", "status"], ["version"]):  # fmt: skip
        code, out, _ = cli(*argv, "--help")
        assert code == 0
        assert out.startswith("Usage:\n")
        assert "-h, --help" in out


def test_snapshot_status_formats(tmp_path: Path) -> None:
    snap, rev, _ = make_snapshot(tmp_path)
    code, simple, _ = cli("snapshot", "status", str(snap))
    assert code == 0
    h, r, keys, size = simple.strip().split(", ")
    assert int(r) == rev and size.endswith("kB")
    code, js, _ = cli("snapshot", "status", str(snap), "-w", "json")
    obj = json.loads(js)
    assert list(obj) == ["hash", "revision", "totalKey", "totalSize"]
    assert f"{obj['hash']:x}" == h and obj["totalKey"] == int(keys)
    assert js == json.dumps(obj, separators=(",", ":")) + "\n"
    code, table, _ = cli("snapshot", "status", str(snap), "--write-out=table")
    lines = table.splitlines()
    assert lines[1].split("|")[1:5] == ["   HASH   ", " REVISION ", " TOTAL KEYS ", " TOTAL SIZE "]
    assert lines[3].split("|")[1].strip() == h
    code, fields, _ = cli("snapshot", "status", str(snap), "-w", "fields")
    assert fields == (
        f'"Hash" : {obj["hash"]}\n"Revision" : {rev}\n"Keys" : {keys}\n'
        f'"Size" : {obj["totalSize"]}\n'
    )


def test_unsupported_formats_exit_4(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    assert cli("snapshot", "status", str(snap), "-w", "protobuf") == (
        4,
        "",
        "Error: protobuf not supported as output format\n",
    )
    assert cli("snapshot", "status", str(snap), "-w", "xml") == (
        4,
        "",
        "Error: unsupported output format\n",
    )


def test_argument_count_errors() -> None:
    assert cli("snapshot", "status") == (
        128,
        "",
        "Error: snapshot status requires exactly one argument\n",
    )
    assert cli("snapshot", "restore", "a", "b", "--data-dir", "x")[0] == 128
    code, out, err = cli("hashkv")
    assert code == 1 and out == ""
    assert err.startswith("Error: accepts 1 arg(s), received 0\nUsage:\n  etcdutl hashkv")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    assert cli("snapshot", "status", str(missing)) == (
        1,
        "",
        f"Error: stat {missing}: no such file or directory\n",
    )


def test_required_and_unknown_flags() -> None:
    code, out, err = cli("defrag")
    assert code == 1 and out == ""
    assert err.startswith('Error: required flag(s) "data-dir" not set\nUsage:\n  etcdutl defrag')
    code, _, err = cli("snapshot", "restore", "x")
    assert code == 1 and 'required flag(s) "data-dir" not set' in err
    code, _, err = cli("version", "--bogus")
    assert code == 1 and err.startswith("Error: unknown flag: --bogus\n")
    code, _, err = cli("frobnicate")
    assert code == 1 and err.startswith('Error: unknown command "frobnicate" for "etcdutl"')


def test_snapshot_save_points_to_etcdctl() -> None:
    code, _, err = cli("snapshot", "save", "x")
    assert code == 128
    assert err == (
        'Command "save" is deprecated, Use `etcdctl snapshot save` to download snapshot\n'
        "Error: In order to download snapshot use: `etcdctl snapshot save ...`\n"
    )


def test_restore_logs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    out_dir = tmp_path / "new"
    code, out, err = cli("snapshot", "restore", str(snap), "--data-dir", str(out_dir))
    assert code == 0 and out == ""
    msgs = [json.loads(line)["msg"] for line in err.splitlines()]
    assert msgs == ["restoring snapshot", "added member", "restored snapshot"]
    assert (out_dir / "member" / "snap" / "db").is_file()
    code, out, err = cli("snapshot", "restore", str(snap), "--data-dir", str(out_dir))
    assert code == 1
    assert err.splitlines()[-1] == f'Error: data-dir "{out_dir}" not empty or could not be read'


def test_restore_mark_compacted_needs_bump(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    code, _, err = cli(
        "snapshot", "restore", str(snap), "--data-dir", str(tmp_path / "n"), "--mark-compacted"
    )
    assert code == 128
    assert err == "Error: --mark-compacted required if --revision-bump > 0\n"
    assert not (tmp_path / "n").exists()


def test_hashkv_and_defrag(tmp_path: Path) -> None:
    snap, rev, h = make_snapshot(tmp_path)
    assert cli("hashkv", str(snap)) == (0, f"{h}, {rev}, -1\n", "")
    code, js, _ = cli("hashkv", str(snap), "--rev", "3", "-w", "json")
    assert list(json.loads(js)) == ["hash", "hashRevision", "compactRevision"]
    assert json.loads(js)["hashRevision"] == 3
    code, out, err = cli("hashkv", str(snap), "--rev", "999")
    assert (code, err) == (1, "Error: mvcc: required revision is a future revision\n")
    data_dir = tmp_path / "d"
    assert cli("snapshot", "restore", str(snap), "--data-dir", str(data_dir))[0] == 0
    code, out, err = cli("defrag", "--data-dir", str(data_dir))
    assert code == 0 and out == ""
    records = [json.loads(line) for line in err.splitlines()]
    assert [r["msg"] for r in records] == ["defragmenting", "finished defragmenting directory"]
    assert records[1]["current-db-size-bytes"] == os.path.getsize(
        data_dir / "member" / "snap" / "db"
    )
    code, _, err = cli("defrag", "--data-dir", str(tmp_path / "none"))
    assert code == 1
    assert err.startswith(f"Error: Failed to defragment etcd data[{tmp_path / 'none'}] (")


@pytest.mark.parametrize("fmt", ["simple", "json", "table", "fields"])
def test_hashkv_formats(tmp_path: Path, fmt: str) -> None:
    snap, _, h = make_snapshot(tmp_path)
    code, out, _ = cli("-w", fmt, "hashkv", str(snap))
    assert code == 0 and str(h) in out


def test_restore_reports_progress_for_large_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import petcd.utl.main as utl_main
    import petcd.utl.snapshot as utl_snapshot

    snap, _, _ = make_snapshot(tmp_path, n_keys=200)
    # Treat this small file as "large" and copy it in small chunks.
    monkeypatch.setattr(utl_main, "_PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(utl_snapshot, "_COPY_CHUNK_BYTES", 4096)
    code, _, err = cli("snapshot", "restore", str(snap), "--data-dir", str(tmp_path / "d"))
    assert code == 0
    records = [json.loads(line) for line in err.splitlines()]
    percents = [r["percent"] for r in records if r["msg"] == "copying snapshot"]
    assert percents == sorted(percents) and percents[-1] == 100
    assert 2 <= len(percents) <= 11


def test_snapshot_convert_logs_progress_and_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import petcd.utl.main as utl_main
    from petcd.mvcc.kvstore import encode_kv
    from petcd.mvcc.requests import KeyValue
    from tests.unit.utl.test_etcd_export import petcd_snapshot
    from tests.unit.utl.test_etcd_export import rev as rev_key

    rev = 400
    puts = [
        ("key", rev_key(r), encode_kv(KeyValue(b"k%d" % r, r, r, 1, b"v", 0)))
        for r in range(100, rev + 1)
    ]
    snap = petcd_snapshot(tmp_path, puts=puts)
    out = tmp_path / "etcd.db"
    monkeypatch.setattr(utl_main, "_PROGRESS_MIN_BYTES", 0)  # this small file counts as large
    code, stdout, err = cli("snapshot", "convert", "--to", "etcd", str(snap), str(out))
    assert (code, stdout) == (0, ""), err
    records = [json.loads(line) for line in err.splitlines()]
    assert records[0]["msg"] == "converting snapshot" and records[-1]["msg"] == "converted snapshot"
    percents = [r["percent"] for r in records if r["msg"] == "converting records"]
    assert percents == sorted(percents) and percents[-1] == 100 and 2 <= len(percents) <= 11
    assert records[-1]["revision"] == rev
    code, stdout, _ = cli("snapshot", "status", str(out), "-w", "json")
    assert code == 0 and json.loads(stdout)["revision"] == rev
    # the output exists now: refused, exit 1, the file left alone
    code, _, err = cli("snapshot", "convert", "--to", "etcd", str(snap), str(out))
    assert (code, err.splitlines()[-1]) == (1, f"Error: output file {out} already exists")
    code, _, err = cli("snapshot", "convert", "--to", "etcd", str(snap))
    assert code == 128 and "requires a snapshot file and an output file" in err
