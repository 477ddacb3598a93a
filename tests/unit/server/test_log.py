"""petcd.server.log: one JSON object per line in etcd's zap shape."""

from __future__ import annotations

import io
import json

import pytest

from petcd.server.log import Logger, humanize_time_ago


def test_zap_shaped_json_lines() -> None:
    out = io.StringIO()
    log = Logger("info", [out], clock=lambda: 1700000000.1234)
    log.info("ready to serve client requests", local_member_id="8e9e05c52164694d")
    log.debug("dropped")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert list(rec) == ["level", "ts", "caller", "msg", "local-member-id"]
    assert rec["level"] == "info"
    assert rec["ts"] == "2023-11-14T22:13:20.123Z"
    assert rec["caller"].startswith("server/test_log.py:")
    assert rec["msg"] == "ready to serve client requests"
    assert rec["local-member-id"] == "8e9e05c52164694d"


def test_level_filter() -> None:
    out = io.StringIO()
    log = Logger("warn", [out], clock=lambda: 0.0)
    log.info("no")
    log.warn("yes")
    log.error("also")
    assert [json.loads(x)["msg"] for x in out.getvalue().splitlines()] == ["yes", "also"]


@pytest.mark.parametrize(
    ("elapsed_s", "text"),
    [
        (0.0, "now"),
        (0.999, "now"),
        (1.0, "1 second ago"),
        (1.9, "1 second ago"),
        (2.0, "2 seconds ago"),
        (59.9, "59 seconds ago"),
        (60, "1 minute ago"),
        (119, "1 minute ago"),
        (120, "2 minutes ago"),
        (3600, "1 hour ago"),
        (7200, "2 hours ago"),
        (86400, "1 day ago"),
        (3 * 86400, "3 days ago"),
        (7 * 86400, "1 week ago"),
        (21 * 86400, "3 weeks ago"),
    ],
)
def test_humanize_time_ago_as_go_humanize_time(elapsed_s: float, text: str) -> None:
    # etcd logs a snapshot send's "took" with go-humanize's Time(start).
    assert humanize_time_ago(elapsed_s) == text
