"""Differential tests of ``check perf`` and ``check datascale`` (their refusals and the
shape of a datascale run) and of ``completion`` beside them (etcdctl on etcd, petcdctl on the
target)."""

from __future__ import annotations

import re

from tests.compat.harness import Differ


def test_check_refuses_bad_loads_and_used_prefixes(differ: Differ) -> None:
    differ.check("check")
    differ.check("check", "perf", "--load", "huge")
    differ.check("check", "datascale", "--load=tiny")
    differ.check("put", "/check-used/k", "v")
    # etcdctl 3.5 quotes the command in this message ('etcdctl del --prefix P'), 3.4 not.
    differ.check("check", "perf", "--prefix", "/check-used/", subs=((rb"'", b""),))
    differ.check("check", "datascale", "--prefix", "/check-used/", "--load", "small")
    differ.check("del", "/check-used/k")


def test_check_datascale_runs_and_cleans_up(differ: Differ) -> None:
    ref, tgt = differ.run_both("check", "datascale", "--auto-compact")
    shapes = []
    for result in (ref, tgt):
        assert (result.code, result.stderr) == (0, b""), result
        text = result.stdout.decode()
        head, _, rest = text.partition("\n")
        tail = rest.split("\r")[-1].split("\n")[1:]
        assert rest.startswith("\r 0 / 10000    0.00%\r "), text
        assert "\r 10000 / 10000  100.00% " in rest, text
        revision = int(tail[0].rsplit(" ", 1)[1])
        memory = re.fullmatch(r"PASS: Approximate system memory used : -?\d+\.\d\d MB\.", tail[2])
        assert memory is not None, text
        shapes.append((head, tail[:2], tail[3:], revision))
    assert shapes[0][:3] == (
        "Start data scale check for work load "
        "[10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].",
        [f"Compacting with revision {shapes[0][3]}", f"Compacted with revision {shapes[0][3]}"],
        [""],
    )
    assert shapes[1][:3] == shapes[0][:3]
    assert shapes[0][3] == shapes[1][3]  # the same 10,000 puts and one delete on both
    differ.check("get", "--prefix", "/etcdctl-check-datascale/", "--keys-only")


def test_completion_and_compaction_share_a_prefix(differ: Differ) -> None:
    differ.check("com", "5")  # unknown command "com", did you mean compaction or completion
