"""petcd.server.log: one JSON object per line in etcd's zap shape."""

from __future__ import annotations

import io
import json

from petcd.server.log import Logger


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
