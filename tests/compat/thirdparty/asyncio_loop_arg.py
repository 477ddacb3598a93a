"""Lets code written for Python 3.9 and earlier call asyncio as it did (``make test-long``).

Python 3.10 removed the ``loop`` argument of asyncio's queues, events and locks and of
``sleep``, ``wait``, ``wait_for`` and ``gather``, and 3.11 made ``wait`` refuse coroutines
(it used to wrap each in a task); an old library that does either fails with a TypeError
before it sends anything. Imported at start-up (a ``.pth`` file) in the virtualenv of such a
library's test suite, never in petcd's: the names are replaced by ones that take ``loop`` and
drop it, and ``wait`` wraps coroutines in tasks again. Dropping the loop changes nothing where
the loop given is the running one, which is what those libraries pass.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any


def _class(cls: type[Any]) -> type[Any]:
    class Loopless(cls):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, loop: object = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    Loopless.__name__, Loopless.__qualname__ = cls.__name__, cls.__qualname__
    return Loopless


def _function(fn: Any) -> Any:
    @functools.wraps(fn)
    def loopless(*args: Any, loop: object = None, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return loopless


for _name in ("Queue", "LifoQueue", "PriorityQueue", "Event", "Lock", "Condition", "Semaphore"):
    setattr(asyncio, _name, _class(getattr(asyncio, _name)))


def _wait(fn: Any) -> Any:
    @functools.wraps(fn)
    def wait(fs: Any, *args: Any, loop: object = None, **kwargs: Any) -> Any:
        return fn({asyncio.ensure_future(f) for f in fs}, *args, **kwargs)

    return wait


for _name in ("sleep", "wait_for", "gather"):
    setattr(asyncio, _name, _function(getattr(asyncio, _name)))
asyncio.wait = _wait(asyncio.wait)
