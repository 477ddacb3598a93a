"""A faster ``__init__`` for the frozen, slotted dataclasses built once per request.

Theory of operation
-------------------
The ``__init__`` that ``dataclasses`` writes for a frozen class stores each field with
``object.__setattr__(self, name, value)`` (the class's own ``__setattr__`` refuses), which
costs a global lookup, an attribute lookup and a generic call per field: a four-field
``Entry`` took about three times as long to build as the same class unfrozen. Values built
for every request (raft entries, key-values, response headers) spend microseconds there.

``fast_init(cls)`` replaces that ``__init__`` with one that stores each field through its
slot's own descriptor (``member_descriptor.__set__``), bound once in a closure. Everything
else stays what ``dataclasses`` made: the signature (same parameters, order and defaults),
frozen-ness (assignment after construction still raises ``FrozenInstanceError``), ``__eq__``,
``__hash__``, ``__repr__``, ``__match_args__``, pickling. Classes with default factories,
keyword-only fields, ``InitVar``s or ``__post_init__`` are refused (they would need what the
generated ``__init__`` does for them), so a class either gets exactly the same behaviour or
an error at import.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type)


def fast_init(cls: _C) -> _C:
    """Give the frozen, slotted dataclass ``cls`` a faster, equivalent ``__init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init needs @dataclass(frozen=True, slots=True)")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not run __post_init__")
    fields = dataclasses.fields(cls)
    generated = list(inspect.signature(cls.__dict__["__init__"]).parameters.values())[1:]
    if [p.name for p in generated] != [f.name for f in fields] or any(
        p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in generated
    ):
        raise TypeError(f"{cls.__name__}: fast_init supports plain fields only (no InitVar)")
    env: dict[str, Any] = {}
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(fields):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: fast_init supports plain fields only")
        env[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            env[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        body.append(f"        _set{i}(self, {f.name})")
    source = (
        f"def _make({', '.join(env)}):\n"
        f"    def __init__(self, {', '.join(args)}):\n"
        + ("\n".join(body) if body else "        pass")
        + "\n    return __init__\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)  # built from the field names only, as dataclasses does
    init = namespace["_make"](**env)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__dict__["__init__"].__annotations__)
    cls.__init__ = init  # type: ignore[misc]
    return cls
