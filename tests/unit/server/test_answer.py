"""``Answer``: a future whose done callbacks run as it is resolved, not a loop turn later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from petcd.server.answer import Answer


def test_callbacks_run_inside_set_result_in_the_order_added() -> None:
    async def main() -> None:
        a = Answer(asyncio.get_running_loop())
        seen: list[tuple[str, Any]] = []
        a.add_done_callback(lambda f: seen.append(("first", f.result())))
        a.add_done_callback(lambda f: seen.append(("second", f.done())))
        assert not a.done() and not seen
        a.set_result(7)
        assert seen == [("first", 7), ("second", True)]  # before anything else ran
        a.add_done_callback(lambda f: seen.append(("late", f.result())))
        assert seen[-1] == ("late", 7)  # added once done: runs at once
        assert a.exception() is None
        with pytest.raises(asyncio.InvalidStateError):
            a.set_result(8)
        with pytest.raises(asyncio.InvalidStateError):
            a.set_exception(ValueError())
        assert not a.cancel()
        assert await a == 7

    asyncio.run(main())


def test_an_exception_and_a_cancel_reach_callbacks_and_awaiters() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failed = Answer(loop)
        with pytest.raises(asyncio.InvalidStateError):
            failed.result()
        with pytest.raises(asyncio.InvalidStateError):
            failed.exception()
        waiter = asyncio.ensure_future(_wait(failed))
        await asyncio.sleep(0)
        got: list[BaseException | None] = []
        failed.add_done_callback(lambda f: got.append(f.exception()))
        failed.set_exception(KeyError("k"))
        assert isinstance(got[0], KeyError)
        with pytest.raises(KeyError):
            failed.result()
        with pytest.raises(KeyError):
            await waiter

        cancelled = Answer(loop)
        called: list[bool] = []
        cancelled.add_done_callback(lambda f: called.append(f.cancelled()))
        assert cancelled.cancel()
        assert called == [True]
        assert not cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            cancelled.result()
        with pytest.raises(asyncio.CancelledError):
            cancelled.exception()

    asyncio.run(main())


async def _wait(a: Answer) -> Any:
    return await a


def test_a_failing_callback_goes_to_the_loop_s_handler_and_the_others_still_run() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, ctx: reported.append(ctx))
        a = Answer(loop)
        ran: list[int] = []

        def boom(_: Answer) -> None:
            raise RuntimeError("boom")

        a.add_done_callback(boom)
        a.add_done_callback(lambda _: ran.append(1))
        a.set_result(None)
        assert ran == [1]
        assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)

    asyncio.run(main())
