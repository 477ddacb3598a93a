"""A lazy mount: ``tests/robustness/lazyfs`` (a FUSE daemon) over a backing directory.

Theory of operation
-------------------
``build_lazyfs`` compiles the daemon (a Go module next to this file) into a directory the
caller owns. A :class:`LazyMount` runs it on a mount point: file data written there but not
fsynced lives only in the daemon's memory (see the daemon's package comment for the exact
rules: close and sync_file_range make nothing durable; directory operations are applied at
once). ``power_off()`` makes it drop all of that (SIGUSR1; SIGUSR2 for a torn power loss,
where a random half of it reaches the disk first) and fail everything after (EIO), then the
caller kills the processes using the mount, and ``unmount()`` and ``mount()`` start a fresh
daemon, so that the kernel's page cache of the old mount, which still holds the lost data, is
gone too. Only processes this module started are signalled, by pid.
Whatever happens, ``cleanup()`` leaves no mount behind (a lazy unmount as the last resort).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LAZYFS_SRC = Path(__file__).resolve().parent / "lazyfs"
MOUNT_TIMEOUT_S = 10.0


class LazyFsUnavailable(Exception):
    """FUSE cannot be mounted here (no Go, no /dev/fuse, no privilege): the test is skipped."""


def build_lazyfs(out_dir: Path) -> tuple[Path, float]:
    """``go build`` the daemon into ``out_dir``; returns the binary and the build's seconds."""
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None
    )
    if go is None:
        raise LazyFsUnavailable("no Go toolchain to build tests/robustness/lazyfs")
    if not os.path.exists("/dev/fuse"):
        raise LazyFsUnavailable("no /dev/fuse")
    if os.geteuid() != 0:
        raise LazyFsUnavailable("lazyfs mounts with mount(2) itself, which needs root")
    binary = out_dir / "lazyfs"
    start = time.monotonic()
    done = subprocess.run(
        [go, "build", "-buildvcs=false", "-o", str(binary), "."],
        cwd=LAZYFS_SRC,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:  # a failure, not a skip: the source or its modules are broken
        raise RuntimeError(f"go build of lazyfs failed:\n{done.stderr}")
    return binary, time.monotonic() - start


def is_mounted(mount_point: Path) -> bool:
    target = str(mount_point.resolve())
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


@dataclass
class LazyMount:
    binary: Path
    backing: Path
    mount_point: Path
    log_path: Path
    # The torn power loss's choices: the n-th daemon started gets seed * 1000 + n.
    seed: int = 1
    # How long each fsync takes (a real disk's flush): the window in which a kill finds data
    # written but not yet durable.
    fsync_delay_ms: float = 0.0
    # The names of regular files are durable only after an fsync of their directory (else
    # directory changes are durable at once, as in LazyFS).
    lazy_dirs: bool = False
    proc: subprocess.Popen[bytes] | None = None
    mounts: int = 0
    # What each power loss dropped: the daemon's "power loss: ..." lines.
    drops: list[str] = field(default_factory=list)

    def mount(self) -> None:
        assert self.proc is None, "already mounted"
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount_point.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"-seed={self.seed * 1000 + self.mounts}",
                    f"-fsync-delay={self.fsync_delay_ms}ms",
                    *(["-lazy-dirs"] if self.lazy_dirs else []),
                    str(self.backing),
                    str(self.mount_point),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.mounts += 1
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while time.monotonic() < deadline:
            if b"lazyfs: mounted" in self._log_since(offset):
                assert is_mounted(self.mount_point)
                return
            if self.proc.poll() is not None:
                self.proc = None
                raise LazyFsUnavailable(f"lazyfs did not mount: {self._log_since(offset)!r}")
            time.sleep(0.02)
        self.cleanup()
        raise LazyFsUnavailable(f"lazyfs not mounted after {MOUNT_TIMEOUT_S}s")

    def _log_since(self, offset: int) -> bytes:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()

    def power_off(self, torn: bool = False) -> str:
        """The power loss: everything not fsynced is dropped and from now on every write,
        fsync and directory change on the mount fails (EIO), so an fsync still in flight cannot
        complete. Returns what the daemon says it dropped. Kill the processes that use the
        mount next, then ``unmount()`` and ``mount()`` again (``recycle``).
        ``torn``: a random half of the unsynced 4 KiB chunks is written first (pages the
        kernel wrote back before the power went, in any order)."""
        assert self.proc is not None
        offset = self.log_path.stat().st_size
        os.kill(self.proc.pid, signal.SIGUSR2 if torn else signal.SIGUSR1)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while b"power loss:" not in (said_b := self._log_since(offset)):
            assert time.monotonic() < deadline, f"lazyfs did not cut the power: {said_b!r}"
            assert self.proc.poll() is None, f"lazyfs exited: {said_b!r}"
            time.sleep(0.005)
        said = said_b.decode(errors="replace")
        dropped = next(ln for ln in said.splitlines() if "power loss:" in ln)
        files = [self._name_unsynced(ln) for ln in said.splitlines() if "unsynced ino=" in ln]
        if files:
            dropped += " (" + "; ".join(files) + ")"
        names = [ln.split(": ", 2)[-1] for ln in said.splitlines() if "directory entry lost" in ln]
        if names:
            dropped += f" directory entries undone: {names}"
        self.drops.append(dropped)
        return dropped

    def recycle(self, torn: bool = False) -> str:
        """A power loss, then a fresh daemon on the same backing directory (for a mount that
        no process uses)."""
        dropped = self.power_off(torn)
        self.unmount()
        self.mount()
        return dropped

    def unmount(self) -> None:
        """Unmount. Before a power loss: a clean shutdown (the daemon writes every unsynced
        byte first); after one nothing more reaches the disk."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.cleanup()

    def _name_unsynced(self, line: str) -> str:
        """The daemon's "unsynced ino=N chunks=..." line with the file's path for its inode."""
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        ino = int(fields.pop("ino"))
        names = [
            str(p.relative_to(self.backing))
            for p in self.backing.rglob("*")
            if not p.is_symlink() and p.is_file() and p.stat().st_ino == ino
        ]
        what = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{','.join(names) or f'ino {ino} (unlinked)'}: {what}"

    def cleanup(self) -> None:
        """No daemon and no mount left, whatever state they are in."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if is_mounted(self.mount_point):
            subprocess.run(["umount", "-l", str(self.mount_point)], check=False, timeout=30)
        assert not is_mounted(self.mount_point), f"{self.mount_point} is still mounted"
