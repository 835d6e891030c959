"""`weak_method`: a callback to a bound method that does not keep its object alive.

The bus owns its parts (the group commit, the dead letters, the
subscriptions and their runs), and a part that calls back into its owner
holds the owner's method. Held as a bound method, that callback closes a
reference cycle (owner, part, method, owner), and reference counting never
frees a cycle: a bus the application has dropped stays in memory, with every
record its `MemoryStore` holds, until the garbage collector's next full
collection walks all of it, at the latest when the interpreter exits. Held
through `weak_method`, the callback leaves the owner to reference counting:
the last reference dropped frees the bus and its store at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["weak_method"]

P = ParamSpec("P")
R = TypeVar("R")


def weak_method(method: Callable[P, R], gone: Callable[P, R] | None = None) -> Callable[P, R]:
    """``method`` (a bound method), called through a weak reference to its object.

    Once the object has been freed, a call runs ``gone`` instead, or raises
    `ReferenceError` naming the method when ``gone`` is None.
    """
    ref = weakref.WeakMethod(method)
    name = getattr(method, "__qualname__", "a method")

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = ref()
        if bound is not None:
            return bound(*args, **kwargs)
        if gone is not None:
            return gone(*args, **kwargs)
        raise ReferenceError(f"{name}() was called after its object was freed")

    return call
