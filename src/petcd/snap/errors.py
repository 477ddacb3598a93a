"""The named errors of petcd.snap.

Theory of operation
-------------------
``SnapCorruptError`` names the snapshot file and why it was rejected; ``Snapshotter.load_newest``
reports such files (they are renamed to ``*.broken``) and falls back to the next newest one.
"""

from __future__ import annotations


class SnapError(Exception):
    """Base class of the snapshot store's errors."""


class SnapCorruptError(SnapError):
    """A snapshot file failed its checks (magic, version, lengths, CRC or name)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snap: corrupt snapshot file {path}: {reason}")
        self.path = path
        self.reason = reason


class BoltError(SnapError):
    """A bbolt file (an etcd backend or snapshot) is damaged or is not bbolt at all."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"bbolt: {path}: {reason}")
        self.path = path
        self.reason = reason
