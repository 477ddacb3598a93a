"""The Raft core's configuration: one validated, immutable value per member.

Theory of operation
-------------------
``Config`` gathers every knob of ``petcd.raft.node.RawNode`` so that nothing in the core reads a
module global. It is validated once, in ``__post_init__``; an invalid value raises
``petcd.raft.errors.ConfigError`` and no node is built from it.

Time in the core is counted in ticks (the caller calls ``RawNode.tick()`` at a fixed interval), so
every duration here is a number of ticks. ``rand`` is the only source of randomness the core ever
uses (for randomized election timeouts); a seeded ``random.Random`` makes a run reproducible.
"""

from __future__ import annotations

import random
from dataclasses import KW_ONLY, dataclass

from petcd.raft.errors import ConfigError
from petcd.raft.types import Index, MemberId


@dataclass(frozen=True, slots=True)
class Config:
    """How one member's Raft core behaves.

    - ``election_ticks``: a follower that hears nothing from a leader for a randomized timeout in
      ``[election_ticks, 2 * election_ticks)`` ticks starts an election; a leader with
      ``check_quorum`` steps down when it has not heard from a quorum for ``election_ticks``.
    - ``heartbeat_ticks``: a leader sends heartbeats every ``heartbeat_ticks`` ticks.
    - ``applied``: the last index the caller has applied to its state machine (on restart);
      committed entries after it are handed out again.
    - ``max_size_per_msg_bytes``: the payload bytes of one append message (at least one entry).
    - ``max_inflight_msgs``: append messages in flight to one follower in replicate state.
    - ``max_uncommitted_entries_bytes``: payload bytes a leader accepts before they commit;
      0 means unlimited.
    - ``max_committed_size_per_ready_bytes``: payload bytes of committed entries handed out in
      one Ready (at least one entry); 0 means unlimited. Bounds the work of one apply pass,
      say when a restarted member replays a long log.
    - ``check_quorum``: a leader steps down when it cannot reach a quorum; followers keep a lease.
    - ``pre_vote``: a pre-election round (without raising terms) precedes every election.
    - ``disable_proposal_forwarding``: followers drop proposals instead of forwarding them.
    """

    id: MemberId
    _: KW_ONLY
    rand: random.Random
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    applied: Index = Index(0)  # noqa: RUF009 - NewType, not a call with state
    max_size_per_msg_bytes: int = 1024 * 1024
    max_inflight_msgs: int = 256
    max_uncommitted_entries_bytes: int = 0
    max_committed_size_per_ready_bytes: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    disable_proposal_forwarding: bool = False

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ConfigError("id must be a positive member id")
        if self.heartbeat_ticks <= 0:
            raise ConfigError("heartbeat_ticks must be greater than 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be greater than heartbeat_ticks")
        if self.applied < 0:
            raise ConfigError("applied must not be negative")
        if self.max_size_per_msg_bytes <= 0:
            raise ConfigError("max_size_per_msg_bytes must be greater than 0")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be greater than 0")
        if self.max_uncommitted_entries_bytes < 0:
            raise ConfigError("max_uncommitted_entries_bytes must not be negative")
        if self.max_committed_size_per_ready_bytes < 0:
            raise ConfigError("max_committed_size_per_ready_bytes must not be negative")
        if not isinstance(self.rand, random.Random):
            raise ConfigError("rand must be a random.Random")
