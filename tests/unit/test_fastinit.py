"""petcd.fastinit: a faster __init__ that behaves exactly as the one dataclasses generates."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field

import pytest

from petcd.fastinit import fast_init


@dataclass(frozen=True, slots=True)
class Slow:
    a: int
    b: bytes = b"x"
    c: tuple[int, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: bytes = b"x"
    c: tuple[int, ...] = ()


def _same(fast: Fast, slow: Slow) -> None:
    assert (fast.a, fast.b, fast.c) == (slow.a, slow.b, slow.c)
    assert repr(fast).replace("Fast", "Slow") == repr(slow)


def test_same_signature_defaults_and_values() -> None:
    assert str(inspect.signature(Fast)) == str(inspect.signature(Slow))
    _same(Fast(1), Slow(1))
    _same(Fast(1, b"y"), Slow(1, b"y"))
    _same(Fast(1, b"y", (2,)), Slow(1, b"y", (2,)))
    _same(Fast(c=(3,), a=2), Slow(c=(3,), a=2))


def test_same_errors_for_bad_calls() -> None:
    for args, kwargs in [((), {}), ((1, 2, 3, 4), {}), ((1,), {"a": 2}), ((1,), {"d": 2})]:
        with pytest.raises(TypeError) as slow_err:
            Slow(*args, **kwargs)
        with pytest.raises(TypeError) as fast_err:
            Fast(*args, **kwargs)
        assert str(fast_err.value).replace("Fast", "Slow") == str(slow_err.value)


def test_still_frozen_hashable_comparable_and_copyable() -> None:
    f = Fast(1, b"y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = 2  # type: ignore[misc]
    assert f == Fast(1, b"y") and f != Fast(2, b"y")
    assert hash(f) == hash(Fast(1, b"y"))
    assert dataclasses.replace(f, a=5) == Fast(5, b"y")
    assert pickle.loads(pickle.dumps(f)) == f
    assert copy.deepcopy(f) == f
    assert not hasattr(f, "__dict__")


def test_refuses_what_it_cannot_do_the_same() -> None:
    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: dataclasses.InitVar[int] = 0

    for cls in (NotFrozen, NoSlots, Factory, KwOnly, PostInit, WithInitVar):
        with pytest.raises(TypeError):
            fast_init(cls)
