"""An acknowledged put survives SIGKILL right after its answer (one client, one member).

Sequential puts from one client take the member's lone-proposal path (the WAL write issued,
the entry applied while it reaches the disk, the fdatasync, then the answer). The test kills
the server with SIGKILL the moment an answer arrives, restarts it on the same data dir and
checks that every acknowledged value is there with the revision its answer named.
"""

from __future__ import annotations

from pathlib import Path

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import PetcdProcess, assert_acknowledged, kv_stub

ROUNDS = 2
PUTS_PER_ROUND = 40


def test_acknowledged_sequential_puts_survive_sigkill_right_after_the_answer(
    tmp_path: Path,
) -> None:
    p = PetcdProcess(tmp_path / "data")
    acked: dict[bytes, tuple[bytes, int]] = {}
    try:
        for r in range(ROUNDS):
            p.start()
            with p.channel() as ch:
                assert_acknowledged(ch, acked, r)
                kv = kv_stub(ch)
                for i in range(PUTS_PER_ROUND):
                    key = b"k%02d" % (i % 7)
                    value = b"r%d-%d" % (r, i)
                    resp = kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
                    acked[key] = (value, resp.header.revision)
            p.kill()  # at once after the last answer: nothing else gets flushed
        p.start()
        with p.channel() as ch:
            assert_acknowledged(ch, acked)
    finally:
        p.stop()
