"""Structured JSON logging in the shape of etcd's zap logger.

Theory of operation
-------------------
etcd 3.5 logs one JSON object per line::

    {"level":"info","ts":"2024-05-01T10:00:00.123Z","caller":"etcdmain/etcd.go:73",
     "msg":"Running: ","args":["etcd"]}

``Logger`` writes the same shape: ``level``, ``ts`` (ISO 8601 UTC, milliseconds), ``caller``
(``<package>/<file>.py:<line>`` of the code that logged), ``msg``, then the structured fields
in the order given (a keyword ``local_member_id``
becomes etcd's key ``local-member-id``). Operators grep for etcd's messages ("ready to serve
client requests"), so the member logs its lifecycle events with etcd's exact texts.

The logger takes a clock (``() -> float`` seconds since the epoch) and the output streams, so
tests can capture lines without touching the wall clock. Levels below the configured one are
dropped. Writes are line-atomic from one thread; the member logs from its event loop only.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

LEVELS = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")
_RANK = {name: i for i, name in enumerate(LEVELS)}


def _format_ts(seconds: float) -> str:
    dt = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _caller(depth: int) -> str:
    frame = sys._getframe(depth)
    path = frame.f_code.co_filename.replace("\\", "/")
    parts = path.rsplit("/", 2)
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{short}:{frame.f_lineno}"


class Logger:
    """A zap-style JSON line logger. ``log.info("msg", key=value, ...)``."""

    def __init__(
        self,
        level: str = "info",
        outputs: Sequence[IO[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert level in _RANK, level
        self._min_rank = _RANK[level]
        self._outputs: Sequence[IO[str]] = outputs if outputs is not None else (sys.stderr,)
        self._clock = clock

    def enabled(self, level: str) -> bool:
        return _RANK[level] >= self._min_rank

    def log(self, level: str, msg: str, _depth: int = 2, /, **fields: Any) -> None:
        if _RANK[level] < self._min_rank:
            return
        record: dict[str, Any] = {
            "level": level,
            "ts": _format_ts(self._clock()),
            "caller": _caller(_depth + 1),
            "msg": msg,
        }
        for key, value in fields.items():
            record[key.replace("_", "-")] = value
        line = json.dumps(record, separators=(",", ":"), default=str, ensure_ascii=False)
        for out in self._outputs:
            out.write(line + "\n")
            out.flush()

    def debug(self, msg: str, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log("warn", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)

    def fatal(self, msg: str, **fields: Any) -> None:
        """Log at level fatal; the caller then exits (etcd's zap Fatal exits with 1)."""
        self.log("fatal", msg, **fields)


def open_outputs(targets: Sequence[str]) -> list[IO[str]]:
    """etcd's --log-outputs: ``default``/``stderr`` -> stderr, ``stdout``, or a file path."""
    outs: list[IO[str]] = []
    for target in targets:
        if target in ("default", "stderr"):
            outs.append(sys.stderr)
        elif target == "stdout":
            outs.append(sys.stdout)
        else:
            outs.append(open(target, "a", encoding="utf-8"))  # noqa: SIM115 - lives with the process
    return outs


# go-humanize, for the fields etcd logs with it (sizes, "took" of a snapshot send).


def humanize_bytes(size: int) -> str:
    """go-humanize's ``Bytes``: SI units, e.g. ``25 kB``, ``12 MB``."""
    if size < 10:
        return f"{size} B"
    suffixes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exp = math.floor(math.log(size) / math.log(1000))
    value = math.floor(size / 1000**exp * 10 + 0.5) / 10
    if value < 10:
        return f"{value:.1f} {suffixes[exp]}"
    return f"{value:.0f} {suffixes[exp]}"


_MINUTE_S, _HOUR_S, _DAY_S = 60, 3600, 86400
# go-humanize's defaultMagnitudes up to a month: (below this many seconds, text, divisor).
_REL_TIME = (
    (1, "now", 0),
    (2, "1 second ago", 0),
    (_MINUTE_S, "{} seconds ago", 1),
    (2 * _MINUTE_S, "1 minute ago", 0),
    (_HOUR_S, "{} minutes ago", _MINUTE_S),
    (2 * _HOUR_S, "1 hour ago", 0),
    (_DAY_S, "{} hours ago", _HOUR_S),
    (2 * _DAY_S, "1 day ago", 0),
    (7 * _DAY_S, "{} days ago", _DAY_S),
    (14 * _DAY_S, "1 week ago", 0),
    (30 * _DAY_S, "{} weeks ago", 7 * _DAY_S),
)


def humanize_time_ago(elapsed_s: float) -> str:
    """go-humanize's ``Time(start)`` for a start ``elapsed_s`` seconds ago ("3 seconds ago")."""
    for below_s, text, divisor_s in _REL_TIME:
        if elapsed_s < below_s:
            return text.format(int(elapsed_s // divisor_s)) if divisor_s else text
    return f"{int(elapsed_s // (30 * _DAY_S))} months ago"
