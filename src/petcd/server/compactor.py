"""Auto-compaction policy (``--auto-compaction-mode`` / ``--auto-compaction-retention``).

Theory of operation
-------------------
Only the leader compacts, by proposing a ``CompactionRequest`` through raft like a client would,
so every member compacts at the same revision. This module decides *when* and *at which
revision*; the member calls ``observe(now_s, current_revision)`` from a timer every
``interval_s`` seconds and proposes the revision it returns (None: nothing to do). Time is given
by the caller (seconds on any monotonic clock), so the policy is tested with a fake clock.

- periodic (etcd 3.5's periodic compactor): with retention R, sample the current revision every
  ``min(R, 1h)``; once a sample is at least R old, compact at the newest revision sampled R ago
  or earlier. Revisions written in the last R stay readable.
- revision (etcd's revision compactor): every 5 minutes, compact at ``current - R`` if that is
  positive and not already compacted: the last R revisions stay readable.

A retention of 0 disables auto compaction (``enabled`` is False).
"""

from __future__ import annotations

from collections import deque

from petcd.server.config import CompactionMode, Config

REVISION_MODE_INTERVAL_S = 300.0
_HOUR_S = 3600.0


class Compactor:
    def __init__(
        self,
        mode: CompactionMode,
        retention: float,
        revision_interval_s: float = REVISION_MODE_INTERVAL_S,
    ) -> None:
        assert retention >= 0
        self.mode = mode
        self.retention = retention
        self._revision_interval_s = revision_interval_s
        self._samples: deque[tuple[float, int]] = deque()
        self._last_compacted = 0

    @classmethod
    def from_config(cls, cfg: Config) -> Compactor:
        if cfg.auto_compaction_mode is CompactionMode.PERIODIC:
            return cls(cfg.auto_compaction_mode, cfg.auto_compaction_retention_seconds)
        return cls(cfg.auto_compaction_mode, float(cfg.auto_compaction_retention_revisions))

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    @property
    def interval_s(self) -> float:
        """How often the member should call ``observe``."""
        if self.mode is CompactionMode.PERIODIC:
            return min(self.retention, _HOUR_S)
        return self._revision_interval_s

    def reset(self) -> None:
        """Forget samples (this member lost leadership; a new term starts afresh)."""
        self._samples.clear()

    def observe(self, now_s: float, current_revision: int) -> int | None:
        """The revision to compact at now, or None."""
        if not self.enabled:
            return None
        if self.mode is CompactionMode.REVISION:
            rev = current_revision - int(self.retention)
            if rev <= 0 or rev <= self._last_compacted:
                return None
            self._last_compacted = rev
            return rev
        self._samples.append((now_s, current_revision))
        chosen: int | None = None
        while self._samples and now_s - self._samples[0][0] >= self.retention:
            chosen = self._samples.popleft()[1]
        if chosen is None or chosen <= self._last_compacted:
            return None
        self._last_compacted = chosen
        return chosen

    def compacted(self, revision: int) -> None:
        """Someone (a client, another leader) compacted at ``revision``."""
        self._last_compacted = max(self._last_compacted, revision)
