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

from typing import TypeVar

T_co = TypeVar("T_co", covariant=True)


class Interned(tuple[T_co, ...]):
    """A tuple hashed by its identity (see the module)."""

    __slots__ = ()
    __hash__ = object.__hash__
