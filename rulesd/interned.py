"""A tuple made once and then handed out again and again, hashed by its identity.

The engine makes one tuple per combination of rules that fire together (dozens of rules alike
fire on one event, alert after alert), and the alerts' memos are keyed by it: the names, the
default alias, a body's parts. A tuple's own hash hashes every item each time (41 rules an
alert at 1,000 held-out rules: a call of msgspec's `Struct_hash` for each rule, per memo); this
one is its address, as `object`'s.

Equality stays the tuple's, so a lookup stays exact: a plain tuple of the same items (a
timer's firing) is equal to it but hashes elsewhere, and misses, to be worked out again; of
an `Interned` freed and another made at its address, the second finds the first's answer only
if it holds the same items, whose answer it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T_co = TypeVar("T_co", covariant=True)
K = TypeVar("K")
V = TypeVar("V")


class Interned(tuple[T_co, ...]):
    """A tuple hashed by its identity (see the module)."""

    __slots__ = ()
    __hash__ = object.__hash__


class Memo(dict[K, V]):
    """`answer(key)` remembered by its key, at most `kept` answers, all let go when full (as the
    engine's order of what fired is): the alerts' memos keyed by such tuples. Asked as
    `memo[key]` (or through `memo.__getitem__`), a hit is one dict lookup; `functools.lru_cache`
    also packs the argument into a tuple, hashes and compares that, and moves the entry to the
    front of its list: ~1,300 instructions more per alert of a replay (its names, its default
    alias and its text line's joined names: three hits)."""

    __slots__ = ("_answer", "_kept")

    def __init__(self, answer: Callable[[K], V], kept: int) -> None:
        super().__init__()
        self._answer, self._kept = answer, kept

    def __missing__(self, key: K) -> V:
        if len(self) >= self._kept:
            self.clear()
        value = self[key] = self._answer(key)
        return value
