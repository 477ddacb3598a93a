"""The cobra/pflag rules petcdctl's command line follows."""

from __future__ import annotations

import pytest

from petcd.ctl.command import (
    Command,
    Flag,
    FlagKind,
    cobra_default_usage,
    parse_go_int,
    resolve,
    usage,
)
from petcd.ctl.errors import FlagError
from petcd.ctl.main import build_root


def _root() -> Command:
    return build_root()


def test_interspersed_flags_and_global_flags_before_the_command() -> None:
    parsed = resolve(_root(), ["--endpoints", "a:1,b:2", "get", "k", "--prefix", "-wjson", "end"])
    assert parsed.command.name == "get"
    assert parsed.args == ["k", "end"]
    assert parsed.values["endpoints"] == ["a:1", "b:2"]
    assert parsed.values["prefix"] is True
    assert parsed.values["write-out"] == "json"
    assert parsed.changed == {"endpoints", "prefix", "write-out"}


def test_flag_spellings() -> None:
    parsed = resolve(_root(), ["get", "-w=fields", "--limit=0x10", "--prefix=false", "--", "-k"])
    assert parsed.values["write-out"] == "fields"
    assert parsed.values["limit"] == 16
    assert parsed.values["prefix"] is False
    assert parsed.args == ["-k"]


def test_string_slices_append_after_the_first_set() -> None:
    parsed = resolve(_root(), ["get", "k", "--endpoints=a", "--endpoints", "b,c"])
    assert parsed.values["endpoints"] == ["a", "b", "c"]


def test_unique_prefixes_select_commands() -> None:
    assert resolve(_root(), ["ge", "k"]).command.name == "get"
    assert resolve(_root(), ["endpoint", "st"]).command.name == "status"
    # a prefix is ambiguous only if two commands start with it: "compa" is compaction alone,
    # "com" also completion (etcdctl 3.4 and 3.6, which have both, refuse it the same way)
    assert resolve(_root(), ["compa", "5"]).command.name == "compaction"
    assert resolve(_root(), ["com", "5"]).unknown_command == "com"


def test_unknown_command_at_the_root() -> None:
    assert resolve(_root(), ["bogus"]).unknown_command == "bogus"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "--bogus"], "unknown flag: --bogus"),
        (["get", "-x"], "unknown shorthand flag: 'x' in -x"),
        (["get", "-hx"], "unknown shorthand flag: 'x' in -x"),
        (["get", "--limit"], "flag needs an argument: --limit"),
        (["get", "-w"], "flag needs an argument: 'w' in -w"),
        (
            ["get", "--limit", "abc"],
            'invalid argument "abc" for "--limit" flag: strconv.ParseInt: parsing "abc": '
            "invalid syntax",
        ),
        (
            ["get", "--limit", "99999999999999999999"],
            'invalid argument "99999999999999999999" for "--limit" flag: strconv.ParseInt: '
            'parsing "99999999999999999999": value out of range',
        ),
        (
            ["get", "--prefix=maybe"],
            'invalid argument "maybe" for "--prefix" flag: strconv.ParseBool: parsing "maybe": '
            "invalid syntax",
        ),
        (
            ["--dial-timeout=xyz", "get"],
            'invalid argument "xyz" for "--dial-timeout" flag: time: invalid duration "xyz"',
        ),
    ],
)
def test_flag_errors_use_pflag_texts(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        resolve(_root(), argv)
    assert info.value.message == message


def test_shorthand_errors_name_both_spellings() -> None:
    root = Command("r", "root", persistent_flags=[Flag("n", FlagKind.INT64, 0, "n", "n")])
    root.add(Command("x", "x", run=lambda inv: None))
    with pytest.raises(FlagError, match='for "-n, --n" flag'):
        resolve(root, ["x", "-n", "q"])


def test_parse_go_int_bases() -> None:
    assert parse_go_int("0x1f") == 31
    assert parse_go_int("017") == 15
    assert parse_go_int("-0b101") == -5
    with pytest.raises(ValueError):
        parse_go_int("")


def test_usage_of_a_leaf_command() -> None:
    root = _root()
    text = usage(resolve(root, ["compaction"]).command, "3.5.17", "3.5")
    assert text.startswith(
        "NAME:\n\tcompaction - Compacts the event history in etcd\n\n"
        "USAGE:\n\tetcdctl compaction [options] <revision> [flags]\n\nOPTIONS:\n"
    )
    assert "  -h, --help[=false]\t\thelp for compaction\n" in text
    assert "      --physical[=false]\t'true' to wait for compaction" in text
    assert '\nGLOBAL OPTIONS:\n      --cacert=""\t\t\t\tverify certificates' in text
    assert '  -w, --write-out="simple"\t\t\tset the output format' in text
    assert "VERSION" not in text and text.endswith("\n\n")


def test_usage_of_the_root_lists_runnable_commands_recursively() -> None:
    text = usage(_root(), "3.5.17", "3.5")
    assert "\nVERSION:\n\t3.5.17\n\nAPI VERSION:\n\t3.5\n\n\nCOMMANDS:\n" in text
    # one tab-aligned column: every name padded to the same tab stop
    lines = [line for line in text.split("\n") if line.startswith("\tendpoint health\t")]
    assert len(lines) == 1 and lines[0].endswith(
        "Checks the healthiness of endpoints specified in `--endpoints` flag"
    )
    stops = {
        len(line.split("\t")[1]) // 8 + line.count("\t") - 1
        for line in text.split("\nCOMMANDS:\n")[1].split("\n\n")[0].split("\n")
    }
    assert len(stops) == 1
    assert "\tendpoint\t" not in text  # not runnable itself


def test_cobra_default_usage_inside_txn() -> None:
    root = Command("", "")
    put = Command("put <key>", "", run=lambda inv: None)
    put.flags.append(Flag("lease", FlagKind.STRING, "0", "lease ID"))
    put.flags.append(Flag("prev-kv", FlagKind.BOOL, False, "return the previous pair"))
    root.add(put)
    assert cobra_default_usage(put) == (
        "Usage:\n   put <key> [flags]\n\nFlags:\n"
        "  -h, --help           help for put\n"
        '      --lease string   lease ID (default "0")\n'
        "      --prev-kv        return the previous pair\n"
    )
