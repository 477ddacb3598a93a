"""``AsyncFdatasync``: an fdatasync the kernel runs (Linux AIO), completion on an eventfd."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.wal.fileutil import AsyncFdatasync


@pytest.fixture
def aio() -> Iterator[AsyncFdatasync]:
    a = AsyncFdatasync.open()
    if a is None:
        pytest.skip("Linux AIO is not available here")
    try:
        yield a
    finally:
        a.close()


def _wait(a: AsyncFdatasync) -> list[int]:
    assert select.select([a.fileno()], [], [], 10)[0], "no completion within 10 s"
    return a.reap()


def test_an_fdatasync_completes_on_the_eventfd(aio: AsyncFdatasync, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert aio.reap() == []  # nothing submitted: nothing to reap, and no blocking
        os.pwrite(fd, b"x" * 4096, 0)
        aio.submit(fd)
        assert aio.in_flight == 1
        results = _wait(aio)
        assert results == [0]
        assert aio.in_flight == 0
        assert not select.select([aio.fileno()], [], [], 0)[0], "the eventfd was reset"
        for _ in range(3):  # several in flight, reaped together or one by one
            aio.submit(fd)
        got: list[int] = []
        while len(got) < 3:
            got += _wait(aio)
        assert got == [0, 0, 0]
    finally:
        os.close(fd)


def test_a_submission_the_kernel_refuses_raises_and_leaves_nothing_in_flight(
    aio: AsyncFdatasync,
) -> None:
    r, w = os.pipe()  # a pipe cannot be fdatasynced
    os.close(w)
    os.close(r)
    with pytest.raises(OSError) as e:
        aio.submit(r)  # closed: EBADF
    assert e.value.errno is not None
    assert aio.in_flight == 0


def test_close_waits_for_what_is_in_flight(tmp_path: Path) -> None:
    a = AsyncFdatasync.open()
    if a is None:
        pytest.skip("Linux AIO is not available here")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"y" * 65536, 0)
        a.submit(fd)
        a.close()  # io_destroy returns once the fdatasync is done
        a.close()  # idempotent
    finally:
        os.close(fd)
