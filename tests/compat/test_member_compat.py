"""Differential tests of ``member list|add|update|promote|remove``.

A learner is added (a learner does not count towards quorum, so the
single-member cluster keeps working), looked at, updated, refused promotion
(it never started, so it is not in sync) and removed again. Member ids are
chosen by each server; the harness prints them as ``<M>``.
"""

from __future__ import annotations

import re

from petcd.api.etcdserverpb import rpc_pb2
from tests.compat.harness import Differ


def _alias_self(differ: Differ) -> None:
    """Name each server's own member id ``<SELF>`` (every test needs it, in any order)."""
    ref, tgt = differ.run_both("member", "list")
    assert ref.code == tgt.code == 0
    ids = [int(r.stdout.split(b",")[0], 16) for r in (ref, tgt)]
    differ.alias("SELF", ids[0], ids[1])


def test_member_list_every_format(differ: Differ) -> None:
    _alias_self(differ)
    names = ((rb"127\.0\.0\.1:\d{4,5}", b"ADDR"),)
    differ.check("member", "list", subs=names)
    differ.check("member", "list", "-w", "json", subs=names)
    differ.check("member", "list", "-w", "fields", subs=names)
    # ids may have 15 or 16 hex digits: compare the table without its padding
    padding = ((rb" *\| *", b"|"), (rb"-+", b"-"))
    differ.check("member", "list", "-w", "table", subs=(*names, *padding))
    ref, tgt = differ.run_both("member", "list", "-w", "protobuf")
    decoded = [rpc_pb2.MemberListResponse.FromString(r.stdout) for r in (ref, tgt)]
    assert [[m.name for m in d.members] for d in decoded] == [["compat"], ["compat"]]
    assert decoded[1].members[0].clientURLs == [differ.target.client_url]


def test_member_list_hex_json_follows_etcdctl_3_5(differ: Differ) -> None:
    _, tgt = differ.run_both("member", "list", "-w", "json", "--hex")
    header = rb'\{"header":\{"cluster_id":"[0-9a-f]+","member_id":"[0-9a-f]+","raft_term":\d+\},'
    member = rb'"members":\[\{"ID":"[0-9a-f]+","name":"compat","peerURLs":\["http://[^"]+"\],'
    assert re.fullmatch(header + member + rb'"clientURLS":\["http://[^"]+"\]\}\]\}\n', tgt.stdout)


def test_learner_lifecycle(differ: Differ) -> None:
    _alias_self(differ)
    ref, tgt = differ.run_both(
        "member", "add", "newbie", "--peer-urls=http://127.0.0.1:1", "--learner"
    )
    assert ref.code == tgt.code == 0, (ref, tgt)
    ids = [int(re.match(rb"Member +([0-9a-f]+) added", r.stdout).group(1), 16) for r in (ref, tgt)]  # type: ignore[union-attr]
    differ.alias("M", ids[0], ids[1])
    subs = (
        (rb"cluster +[0-9a-f]+", b"cluster C"),
        (rb"127\.0\.0\.1:\d{4,5}", b"ADDR"),
        # "Member %16x": an id of 15 hex digits is padded with a space
        (rb"Member +", b"Member "),
    )
    # members are listed by id, and ids are random: put the learner last
    differ.check("member", "list", subs=(*subs, (rb"^(<M>.*)\n(.*started.*)$", rb"\2\n\1")))
    differ.check("member", "promote", "{M}")
    differ.check("member", "update", "{M}", "--peer-urls=http://127.0.0.1:2", subs=subs)
    differ.check("member", "update", "{M}", "--peer-urls=http://127.0.0.1:3", "-w", "fields")
    differ.check("member", "remove", "{M}", subs=subs)
    differ.check("member", "remove", "{M}")
    differ.check("member", "list", subs=subs)


def test_member_argument_errors(differ: Differ) -> None:
    differ.check("member", "add")
    differ.check("member", "add", "x")
    differ.check("member", "add", "x", "http://a", "https://b")
    differ.check("member", "remove")
    differ.check("member", "remove", "zz")
    differ.check("member", "update", "1")
    differ.check("member", "promote", "g")
    differ.check("member", "list", "--help")
