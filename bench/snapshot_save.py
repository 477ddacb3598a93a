"""Wall time of a real ``etcdctl snapshot save`` from etcd and from petcd holding N keys.

    PYTHONPATH=$PWD/src .venv/bin/python bench/snapshot_save.py [--keys 1000000]
        [--targets etcd,petcd] [--rounds 2] [--etcdctl /usr/bin/etcdctl]

Each target is started fresh (``tests.compat.servers.ServerProcess``: ``/usr/bin/etcd``,
``.venv/bin/petcd``; petcd runs the code of ``PYTHONPATH``, which must be absolute), filled
with N keys (``key/%08d``, small values) by 8 threads writing 128-put txns, then saved
``--rounds`` times with the real etcdctl; printed: the seconds of each save and the file's size.
The conversion's CPU cost alone is ``bench/snapshot_convert.py``'s figure. Timings are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.servers import ServerProcess

TXN_PUTS = 128
FILL_THREADS = 8


def fill(endpoint: str, keys: int) -> None:
    def part(lo: int, hi: int) -> None:
        with grpc.insecure_channel(endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            for start in range(lo, hi, TXN_PUTS):
                ops = [
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=b"key/%08d" % i, value=b"v%d" % i)
                    )
                    for i in range(start, min(start + TXN_PUTS, hi))
                ]
                kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60)

    threads = [
        threading.Thread(
            target=part, args=(i * keys // FILL_THREADS, (i + 1) * keys // FILL_THREADS)
        )
        for i in range(FILL_THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--targets", default="etcd,petcd")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--etcdctl", default="/usr/bin/etcdctl")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="petcd-bench-save-") as tmp:
        for target in args.targets.split(","):
            base = Path(tmp) / target
            server = ServerProcess(target, base / "data", name="bench")
            server.start()
            try:
                started = time.monotonic()
                fill(server.endpoint, args.keys)
                filled_s = time.monotonic() - started
                for r in range(args.rounds):
                    out = base / f"snap-{r}.db"
                    started = time.monotonic()
                    save = ["snapshot", "save", str(out)]
                    subprocess.run(
                        [args.etcdctl, f"--endpoints={server.endpoint}", *save],
                        check=True,
                        capture_output=True,
                        env={**os.environ, "ETCDCTL_API": "3"},
                    )
                    save_s = time.monotonic() - started
                    print(
                        json.dumps(
                            {
                                "target": target,
                                "keys": args.keys,
                                "fill_s": round(filled_s, 1),
                                "round": r + 1,
                                "save_s": round(save_s, 2),
                                "size_bytes": out.stat().st_size,
                            }
                        ),
                        flush=True,
                    )
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
