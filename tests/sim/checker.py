"""The safety properties the simulator checks after every step.

Theory of operation
-------------------
``SafetyChecker`` holds the global knowledge no single member has, and every observation the
simulator makes goes through one of its ``on_*`` methods, which raise ``SafetyViolation`` at the
first contradiction. What it keeps:

- ``leaders``: term -> the member that was leader in it. Election safety: at most one per term.
- ``log_shape``: (index, term) -> (type, data, term of the entry before it). Log matching: two
  entries with the same index and term are identical and have the same predecessor term; by
  induction down the log, two logs that share an (index, term) agree on everything before it.
  Every entry a member persists is recorded here, with its predecessor's term from that member's
  log (or from the snapshot that precedes it).
- ``committed``: index -> (term, type, data, commit_term_bound). An entry enters when a member
  persists a commit index that covers it. No member may ever hold a different entry at an index
  within its own commit index (state machine safety), and a committed entry may not disappear
  from the log of a member whose commit index covers it. ``commit_term_bound`` is the term of the
  member that reported the commit: the entry was committed by a leader of that term or earlier.
- Leader completeness: when a member becomes leader of term T, its log holds every entry whose
  ``commit_term_bound`` is below T (it was committed in an earlier term, so it must be there).
- ``digests``: applied index -> the state machine digest after applying it. Every member applies
  the same sequence: the same digest at every index, an applied entry equal to the committed
  entry at that index, and applied indexes that grow by exactly one (no gap, no repeat).
- ``reads``: for every ReadIndex request, the highest commit index any member knew when it was
  issued. A ReadState answering it must carry an index at least that high (linearizable reads).
- Per member, its durable hard state: the term never decreases, a vote cast in a term never
  changes within that term, the commit index never decreases and never passes the log's end.

The checker is pure bookkeeping; it never touches a ``RawNode``. The simulator tells it what it
saw, and the messages of its exceptions say which member, index and term disagreed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from petcd.raft.types import Entry, EntryType, HardState, Index, MemberId, ReadState, Term


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold: a bug in the core (or in the simulator)."""


class CoreCrash(AssertionError):
    """The core raised an unexpected exception: one of its own assertions, or a plain bug."""


class LivenessViolation(AssertionError):
    """After the faults stopped, no leader was elected or no proposal committed in time."""


@dataclass(frozen=True, slots=True)
class CommittedEntry:
    term: Term
    type: EntryType
    data: bytes
    commit_term_bound: Term


class SafetyChecker:
    def __init__(self) -> None:
        self.leaders: dict[Term, MemberId] = {}
        self.log_shape: dict[tuple[Index, Term], tuple[EntryType, bytes, Term]] = {}
        self.committed: dict[Index, CommittedEntry] = {}
        self.committed_data: set[bytes] = set()
        self.commit_max = Index(0)
        self.digests: dict[Index, bytes] = {}
        self.reads: dict[bytes, Index] = {}
        self.read_states_seen = 0
        self.applied_entries = 0

    # -- election safety ------------------------------------------------------------------

    def on_leader(self, member: MemberId, term: Term) -> None:
        other = self.leaders.setdefault(term, member)
        if other != member:
            raise SafetyViolation(
                f"election safety: members {other} and {member} both led term {term}"
            )

    # -- hard state -----------------------------------------------------------------------

    def on_hard_state(
        self, member: MemberId, old: HardState, new: HardState, log_last: Index
    ) -> None:
        if new.term < old.term:
            raise SafetyViolation(f"member {member}: term went back from {old.term} to {new.term}")
        if new.term == old.term and old.vote != 0 and new.vote != old.vote:
            raise SafetyViolation(
                f"member {member}: voted for {old.vote} then for {new.vote} in term {new.term}"
            )
        if new.commit < old.commit:
            raise SafetyViolation(
                f"member {member}: commit index went back from {old.commit} to {new.commit}"
            )
        if new.commit > log_last:
            raise SafetyViolation(
                f"member {member}: commit index {new.commit} beyond its last log index {log_last}"
            )

    # -- log matching ---------------------------------------------------------------------

    def on_log_entries(
        self, member: MemberId, prev_term: Term, entries: Iterable[Entry], commit: Index
    ) -> None:
        """``entries`` (contiguous) were persisted after an entry of term ``prev_term``.

        ``commit`` is the member's commit index before this write: rewriting an entry at or
        below it is allowed only if nothing changes.
        """
        for e in entries:
            if e.term < prev_term:
                raise SafetyViolation(
                    f"member {member}: entry {e.index} has term {e.term} below the term "
                    f"{prev_term} of the entry before it"
                )
            shape = (e.type, e.data, prev_term)
            known = self.log_shape.setdefault((e.index, e.term), shape)
            if known != shape:
                raise SafetyViolation(
                    f"log matching: member {member} holds entry (index {e.index}, term {e.term})"
                    f" = {shape!r}, another member held {known!r}"
                )
            if e.index <= commit:
                c = self.committed.get(e.index)
                if c is not None and (c.term, c.type, c.data) != (e.term, e.type, e.data):
                    raise SafetyViolation(
                        f"member {member} overwrote committed entry {e.index} "
                        f"(term {c.term}) with an entry of term {e.term}"
                    )
            prev_term = e.term

    # -- committed entries ----------------------------------------------------------------

    def on_committed(self, member: MemberId, entry: Entry, member_term: Term) -> None:
        """``entry`` is in ``member``'s log at or below its commit index."""
        c = self.committed.get(entry.index)
        if c is None:
            self.committed[entry.index] = CommittedEntry(
                entry.term, entry.type, entry.data, member_term
            )
            self.committed_data.add(entry.data)
            if entry.index > self.commit_max:
                self.commit_max = entry.index
            return
        if (c.term, c.type, c.data) != (entry.term, entry.type, entry.data):
            raise SafetyViolation(
                f"state machine safety: member {member} committed (index {entry.index}, term "
                f"{entry.term}, data {entry.data!r}); the committed entry there is (term {c.term},"
                f" data {c.data!r})"
            )
        if member_term < c.commit_term_bound:
            self.committed[entry.index] = CommittedEntry(c.term, c.type, c.data, member_term)

    def on_committed_term(self, member: MemberId, index: Index, term: Term) -> None:
        """``member`` holds a snapshot (committed by definition) ending at (index, term)."""
        c = self.committed.get(index)
        if c is not None and c.term != term:
            raise SafetyViolation(
                f"member {member} holds a snapshot at index {index} term {term}; the committed "
                f"entry there has term {c.term}"
            )

    def must_have_before_term(self, term: Term) -> Index:
        """The highest index committed in a term below ``term`` (0 if none)."""
        best = Index(0)
        for index, c in self.committed.items():
            if c.commit_term_bound < term and index > best:
                best = index
        return best

    def on_new_leader_log(
        self, member: MemberId, term: Term, log_last: Index, term_at: dict[Index, Term | None]
    ) -> None:
        """Leader completeness: ``term_at`` maps indexes the caller looked up in the new log."""
        need = self.must_have_before_term(term)
        if need == 0:
            return
        if log_last < need:
            raise SafetyViolation(
                f"leader completeness: member {member} became leader of term {term} with log "
                f"ending at {log_last}, but index {need} was committed in an earlier term"
            )
        have = term_at.get(need)
        want = self.committed[need].term
        if have is not None and have != want:
            raise SafetyViolation(
                f"leader completeness: member {member} became leader of term {term} with entry "
                f"{need} of term {have}; the committed entry has term {want}"
            )

    # -- application ----------------------------------------------------------------------

    def on_apply(self, member: MemberId, entry: Entry, digest: bytes) -> None:
        c = self.committed.get(entry.index)
        if c is None:
            raise SafetyViolation(
                f"member {member} applied entry {entry.index} (term {entry.term}) that no member "
                f"has persisted as committed"
            )
        if (c.term, c.type, c.data) != (entry.term, entry.type, entry.data):
            raise SafetyViolation(
                f"member {member} applied (index {entry.index}, term {entry.term}, data "
                f"{entry.data!r}); the committed entry is (term {c.term}, data {c.data!r})"
            )
        self.on_digest(member, entry.index, digest)
        self.applied_entries += 1

    def on_digest(self, member: MemberId, index: Index, digest: bytes) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise SafetyViolation(
                f"member {member}: state machine after index {index} differs from another "
                f"member's (it applied a different sequence)"
            )

    # -- linearizable reads ---------------------------------------------------------------

    def on_read_issued(self, ctx: bytes, commit_floor: Index) -> None:
        assert ctx not in self.reads
        self.reads[ctx] = commit_floor

    def on_read_state(self, member: MemberId, rs: ReadState) -> None:
        floor = self.reads.get(rs.request_ctx)
        if floor is None:
            raise SafetyViolation(f"member {member}: ReadState for unknown request {rs!r}")
        self.read_states_seen += 1
        if rs.index < floor:
            raise SafetyViolation(
                f"linearizable read: member {member} answered read {rs.request_ctx!r} with index "
                f"{rs.index}, but index {floor} was committed when the read was issued"
            )
