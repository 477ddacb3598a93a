"""What ``petcdctl __complete`` answers: subcommands, flags and flag values from the command
tree, and when the shell should fall back to file names."""

from __future__ import annotations

import io

import pytest

from petcd.ctl import completion
from petcd.ctl.main import build_root, run


def names(*words: str) -> tuple[list[str], int]:
    candidates, bits = completion.complete(build_root(), words[:-1], words[-1])
    return [name for name, _ in candidates], bits


def test_subcommands_at_each_level() -> None:
    assert names("ge") == (["get"], completion.NO_FILES)
    assert names("m") == (["make-mirror", "member", "move-leader"], completion.NO_FILES)
    assert names("member", "") == (
        ["add", "list", "promote", "remove", "update"],
        completion.NO_FILES,
    )
    assert names("check", "") == (["datascale", "perf"], completion.NO_FILES)
    assert names("completion", "") == (["bash", "fish", "zsh"], completion.NO_FILES)
    assert names("help", "lea") == (["lease"], completion.NO_FILES)
    # flags before the subcommand, with their values, are skipped on the way
    assert names("--endpoints", "h:1", "-w", "json", "--hex", "mem") == (
        ["member"],
        completion.NO_FILES,
    )


def test_flags_of_the_command_and_its_ancestors() -> None:
    found, bits = names("get", "--")
    assert bits == completion.NO_FILES
    assert {"--prefix", "--rev", "--write-out", "--endpoints", "--help"} <= set(found)
    assert "--load" not in found and "--lease" not in found
    assert names("check", "perf", "--auto") == (
        ["--auto-compact", "--auto-defrag"],
        completion.NO_FILES,
    )
    short = names("-")[0]
    assert {"-w", "-h", "-d", "--write-out"} <= set(short)
    assert "-w" not in names("--")[0]


def test_values_of_closed_set_flags() -> None:
    assert names("get", "-w", "") == (
        ["simple", "json", "fields", "protobuf", "table"],
        completion.NO_FILES,
    )
    assert names("get", "--write-out", "j") == (["json"], completion.NO_FILES)
    assert names("get", "--write-out=j") == (["--write-out=json"], completion.NO_FILES)
    assert names("get", "--order", "") == (["ASCEND", "DESCEND"], completion.NO_FILES)
    assert names("check", "datascale", "--load", "") == (
        ["s", "m", "l", "xl"],
        completion.NO_FILES,
    )
    assert names("get", "--keys-only=") == (
        ["--keys-only=true", "--keys-only=false"],
        completion.NO_FILES,
    )
    # a bool flag takes no separate value: the next word is an argument
    assert names("get", "--prefix", "") == ([], 0)
    # free-form values (keys, counts, ids) complete to nothing, not to file names
    assert names("get", "--limit", "") == ([], completion.NO_FILES)
    assert names("get", "--nosuchflag=") == ([], completion.NO_FILES)


def test_file_names_where_etcdctl_takes_paths() -> None:
    assert names("--cacert", "") == ([], 0)
    assert names("snapshot", "save", "") == ([], 0)
    assert names("defrag", "--data-dir", "/tm") == ([], 0)
    assert names("get", "--", "-w") == ([], 0)  # after --, everything is an argument


def complete_output(*argv: str) -> str:
    out, err = io.BytesIO(), io.BytesIO()
    code = run(list(argv), stdin=io.BytesIO(), stdout=out, stderr=err, environ={})
    assert (code, err.getvalue()) == (0, b"")
    return out.getvalue().decode()


def test_the_helper_prints_candidates_then_the_bits() -> None:
    assert complete_output("__complete", "ge") == "get\tGets the key or a range of keys\n:2\n"
    assert complete_output("__completeNoDesc", "ge") == "get\n:2\n"
    assert complete_output("__complete", "snapshot", "save", "") == ":0\n"
    assert complete_output("__complete") == complete_output("__complete", "")


def test_a_failure_is_reported_to_the_shell_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(completion, "complete", broken)
    assert complete_output("__complete", "ge") == ":4\n# RuntimeError: boom\n"


def test_completion_prints_each_script() -> None:
    for shell in ("bash", "zsh", "fish"):
        text = complete_output("completion", shell)
        assert text == completion.script(shell)
        assert "petcdctl" in text and "__complete" in text and "PROGRAM" not in text
        plain = complete_output("completion", shell, "--no-descriptions")
        assert "__completeNoDesc" in plain
