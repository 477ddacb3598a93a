"""The scripts of ``petcdctl completion`` run by real shells against the installed petcdctl.

bash and fish complete in a non-interactive shell with their own machinery (bash: the
function with ``COMP_*`` set as readline sets them; fish: ``complete -C``). zsh's completion
builtins work only inside its line editor, so there ``compadd`` and ``_files`` are replaced by
functions that print what they were given.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.petcd_proc import REPO

BIN = str(REPO / ".venv" / "bin")


def shell(argv: list[str]) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done
    return done.stdout


BASH = """
source <(petcdctl completion bash)
compopt() { echo "compopt $*"; }
COMP_LINE=$1; COMP_POINT=${#COMP_LINE}; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_petcdctl_complete
printf '[%s]\\n' "${COMPREPLY[@]}"
"""


def bash(line: str, *words: str) -> list[str]:
    return shell(["bash", "-c", BASH, "bash", line, *words]).splitlines()


def test_bash() -> None:
    assert bash("petcdctl ge", "petcdctl", "ge") == ["[get]"]
    assert bash("petcdctl member ", "petcdctl", "member", "") == [
        "[add]",
        "[list]",
        "[promote]",
        "[remove]",
        "[update]",
    ]
    assert bash("petcdctl check perf --load ", "petcdctl", "check", "perf", "--load", "") == [
        "[s]",
        "[m]",
        "[l]",
        "[xl]",
    ]
    # readline splits '--write-out=j' into '--write-out', '=', 'j': the reply replaces the 'j'
    assert bash("petcdctl get --write-out=j", "petcdctl", "get", "--write-out", "=", "j") == [
        "[json]"
    ]
    # where etcdctl takes a path, the shell's file names
    assert bash("petcdctl snapshot save /tm", "petcdctl", "snapshot", "save", "/tm") == [
        "compopt -o default",
        "[]",
    ]


def fish(line: str) -> list[str]:
    script = f"petcdctl completion fish | source; complete -C {line!r}"
    return shell(["fish", "--no-config", "-c", script]).splitlines()


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (make test does)")
def test_fish() -> None:
    assert fish("petcdctl ge") == ["get\tGets the key or a range of keys"]
    assert fish("petcdctl get -w ") == ["fields", "json", "protobuf", "simple", "table"]
    assert fish("petcdctl check perf --auto") == [
        "--auto-compact\tCompact storage with last revision after test is finished.",
        "--auto-defrag\tDefragment storage after test is finished.",
    ]
    assert fish("petcdctl snapshot save /tm") == ["/tmp/"]


ZSH = """
compdef() { }
source <(petcdctl completion zsh)
compadd() { print -rl -- "${names[@]}" -- "${descs[@]}"; }
_files() { print FILES; }
words=("$@"); CURRENT=$#
_petcdctl
print "rc=$?"
"""


def zsh(*words: str) -> list[str]:
    return shell(["zsh", "-f", "-c", ZSH, "zsh", *words]).splitlines()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (make test does)")
def test_zsh() -> None:
    assert zsh("petcdctl", "ge") == ["get", "--", "get -- Gets the key or a range of keys", "rc=0"]
    assert zsh("petcdctl", "get", "--write-out=j") == [
        "--write-out=json",
        "--",
        "--write-out=json",
        "rc=0",
    ]
    assert zsh("petcdctl", "snapshot", "save", "/tm") == ["FILES", "rc=0"]
    assert zsh("petcdctl", "get", "--limit", "") == ["rc=1"]  # nothing, and no file names
