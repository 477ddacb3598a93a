"""The Snapshot RPC's conversion, run by the member as a child process.

Theory of operation
-------------------
``Maintenance.Snapshot`` sends etcd's snapshot format (a bbolt file, then its SHA-256), so
that the real ``etcdctl snapshot status|restore`` and etcd itself take what petcd sends
(docs/enhancements/0012-snapshot-rpc-bbolt.md). The member copies its LMDB backend into a
temporary file between apply rounds (the consistent point), then runs::

    <python> -m petcd.utl.rpc_snapshot <LMDB copy> <output>

which writes the bbolt bytes, without a trailer, into ``<output>`` (an empty file the member
created and owns) with ``petcd.utl.etcd_export.write_etcd_bolt``. The conversion is CPU-heavy
Python; in a process of its own it never holds the member's GIL, so the member goes on serving
on its own core while it runs. A small copy is converted by ``convert`` in one of the member's
worker threads instead (``petcd.server.member.SNAPSHOT_THREAD_BYTES_MAX``): starting a child
costs more than converting it.

Contract with the member: exit status 0 when ``<output>`` is complete; otherwise status 1 and
the reason on the last line of stderr (the member answers the RPC with it and removes both
files). The child never removes or renames the member's files. If the member dies, the child
notices (its parent changes) at its next progress report and stops with status 1, so an
orphan does not go on burning a core.
"""

from __future__ import annotations

import os
import sys

from petcd.utl.errors import UtlError
from petcd.utl.etcd_export import write_etcd_bolt


class ParentGoneError(Exception):
    def __init__(self) -> None:
        super().__init__("the member that asked for the snapshot is gone")


# What a conversion fails with (a damaged copy, a full disk); anything else is a bug.
CONVERSION_ERRORS = (UtlError, OSError, ParentGoneError)


def convert(src: str, dst: str) -> int:
    """Write the bbolt file of the LMDB file ``src`` into the existing ``dst``; the pages."""
    parent = os.getppid()  # in a worker thread: the member's parent, which does not change

    def progress(done: int, total: int) -> None:
        if os.getppid() != parent:
            raise ParentGoneError()

    with open(dst, "r+b") as f:
        f.truncate(0)
        s = write_etcd_bolt(src, f, progress=progress)
    return s.pages


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m petcd.utl.rpc_snapshot <LMDB file> <output file>\n")
        return 2
    try:
        convert(args[0], args[1])
    except CONVERSION_ERRORS as e:
        sys.stderr.write(f"{e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
