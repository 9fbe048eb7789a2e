"""An event's view: the few top-level fields the rule index reads, decoded from a JSON line
without building the rest of the event.

Most events concern no rule, and for them the index reads a handful of fields. Decoding a
whole line into a dict (`orjson.loads`) builds every key and value; msgspec decoding into a
struct of only the fields read skips the others while still checking their syntax, in
about half the time (~0.35 µs against ~0.7 µs for a ~250-byte line). An event that has
candidates is then parsed whole, by the same parser as every other event, for the rules'
predicates and the alert.

A field the line lacks reads as MISSING, as a getter reads it. Where the view and orjson
could answer differently, the line is parsed whole instead:
- the fields skipped are checked as JSON, not as UTF-8: a line that is not ASCII has its
  UTF-8 checked first (see `pipeline._views`), in a sixth of the time of its parse;
- an integer beyond 64 bits, which msgspec keeps exact and orjson reads as a rounded float
  (or refuses), where the index compares it as a number (`WholeLine`); elsewhere in the line,
  an integer beyond a double makes it no event to orjson, and to the view one that matched
  nothing (the one difference, documented);
- nesting deeper than orjson allows, where msgspec's limit (the interpreter's) is higher
  (`Viewer.deep`);
- a top-level key msgspec cannot name a field (a backslash, a quote, a control character): no
  view; such an inner key: its object is decoded whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import msgspec

from rulesd.rules.fields import MISSING

# The integers orjson reads as integers; beyond them it reads a rounded float, or refuses.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
# orjson's nesting limit: a line holding fewer brackets cannot nest deeper.
MAX_DEPTH = 1024


class Layout:
    """The top-level keys read by the code being written, each an attribute of the view.

    A key read only as `key.inner` (`http.status`) is decoded as a struct of the inner keys
    read, when its value is an object, rather than a dict of all of them (ops lines: ~0.13 →
    ~0.115 s of decoding per 200,000). Its other values (text, numbers, lists, null) are kept.
    """

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}
        self.members: dict[str, dict[str, str]] = {}  # key -> inner key -> the attribute holding its value
        self.whole: set[str] = set()  # the keys whose whole value is read
        # (globals, name, key): a name in generated code that `viewer` binds to the struct class
        # of the key's objects, which reading an inner key tests for (see `struct_name`).
        self.struct_names: list[tuple[dict[str, Any], str, str]] = []

    def attribute(self, key: str) -> str:
        """The attribute holding the value of `key` (keys are data: never an identifier)."""
        self.whole.add(key)
        return self.attributes.setdefault(key, f"f{len(self.attributes)}")

    def member(self, key: str, inner: str) -> tuple[str, str]:
        """The attribute holding the value of `key`, and the one holding `inner` in it where
        that value is an object decoded as a struct. (A key whose whole value is read too, or
        with an inner key msgspec cannot name, is decoded whole: the code reading `inner` takes
        a dict or a struct.)"""
        members = self.members.setdefault(key, {})
        outer = self.attributes.setdefault(key, f"f{len(self.attributes)}")
        return outer, members.setdefault(inner, f"g{len(members)}")

    def struct_name(self, names: dict[str, Any], name: str, key: str) -> None:
        """Have `viewer` bind `names[name]` to the class of the struct the objects of `key` are
        decoded as, once every key is known (for a key decoded whole, NoStruct stays): a type
        test and an attribute read cost less than `getattr` with a default, which every line
        reading `http.status` would pay."""
        self.struct_names.append((names, name, key))

    def viewer(
        self,
        evaluate: Callable[[Any, bytes, float], Any] | None,
        evaluate_block: EvaluateBlock | None,
        whole: Callable[[bytes, float], Any],
        stamp: tuple[str, str] | None = None,
        keys: KeyOrder | None = None,
    ) -> Viewer | None:
        """The viewer of the keys asked for so far, whose views `evaluate` or `evaluate_block`
        reads (and `whole`: see `Viewer`); `stamp`, a key and the text each view holds there
        whatever the line says (see `Viewer.stamp`); `keys`, the order the lines hold their
        keys in (see `key_order`). None if a key cannot be a field's name in msgspec."""
        if not all(map(_nameable, self.attributes)):
            return None
        keys = keys or {}

        def struct(name: str, fields: dict[str, str], types: dict[str, Any], order: Sequence[str]) -> Any:
            return msgspec.defstruct(
                name,
                [(attribute, types.get(key, Any), MISSING) for key, attribute in _ordered(fields, order)],
                rename={attribute: key for key, attribute in fields.items()},
                gc=False,  # values decoded from JSON hold no cycles
            )

        # Any JSON value but an object is kept as is; an object becomes the struct (a dict where
        # the whole value is read too, or an inner key cannot be a field's name).
        structs = {
            key: struct("Members", inner, {}, keys.get(key, ()))
            for key, inner in self.members.items()
            if key not in self.whole and all(map(_nameable, inner))
        }
        members = {key: Union[cls, None, bool, int, float, str, list] for key, cls in structs.items()}  # noqa: UP007
        for names, name, key in self.struct_names:
            names[name] = structs.get(key, NoStruct)
        view = struct("EventView", self.attributes, members, tuple(keys))
        # Refused: malformed JSON, not an object, a number out of range in a field read, a
        # nesting deeper than the decoder's recursion allows, and text that is not UTF-8.
        refused = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
        stamped = (self.attributes[stamp[0]], stamp[1]) if stamp and stamp[0] in self.attributes else None
        decoder = msgspec.json.Decoder(view)
        deep = _deeper_than_orjson(decoder.decode, refused, self.attributes)
        return Viewer(decoder.decode, evaluate, evaluate_block, whole, refused, stamped, deep)


# The keys of a line in their order, each with its object's keys in theirs (none if its value is
# not an object): see `key_order`.
KeyOrder = dict[str, tuple[str, ...]]


def key_order(event: Any) -> KeyOrder | None:
    """The order of `event`'s keys (a line parsed whole), and of its objects' keys; None if it
    is not an object.

    A view's struct lists its fields in the order the lines hold them: msgspec looks a key up
    among the struct's fields from the one after the field it last found, so that keys in the
    struct's order are each found at the first comparison, where keys in another order were
    compared with up to every field (ops lines, 7 fields: ~230 instructions a line fewer). Lines
    written by one program keep one order; a line in another is decoded as well, only slower.
    """
    if type(event) is not dict:
        return None
    # (At most KEYS_KEPT keys of each object: the engine keeps the order for its life, and a
    # first line of 100,000 keys held ~9 MB of it; the keys after them are decoded as well.)
    keys = itertools.islice(event.items(), KEYS_KEPT)
    return {key: tuple(itertools.islice(value, KEYS_KEPT)) if type(value) is dict else () for key, value in keys}


KEYS_KEPT = 256  # keys of an object whose order `key_order` keeps


def _ordered(fields: dict[str, str], order: Sequence[str]) -> list[tuple[str, str]]:
    """`fields` (key -> attribute) in the order of `order`, the keys it lacks after them as
    they were."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(fields.items(), key=lambda item: rank.get(item[0], len(rank)))


EvaluateBlock = Callable[[list[Any], Sequence[bytes], int, float, list[int], list[tuple[int, Any, bool]]], None]


# How an index judges JSON lines from their views.
#
# `decode(line)` is the line's view, or raises one of `refused`; `evaluate(view, line,
# time)` is what the engine's `evaluate` returns for the parsed line, or INVALID when the
# line had candidates and the full parser refused it (the view checks the skipped fields'
# syntax, not that their numbers fit a double). `whole(line, time)` is the same for a line
# judged from its whole parse: one without a view, or one whose view cannot judge it (see
# `WholeLine`), for which `evaluate` calls it. A viewer for a rule set without timers has
# `evaluate_block(views, lines, start, time, invalid, firings)` instead, which judges a
# block of lines (a view None: judged by `whole`) and appends the index of each invalid
# one (counted from `start`) to `invalid` and `(index, firing, False)` to `firings`.
# `stamp`, if not None, is an attribute and the text to set it to in every view, as its
# source sets that field in every event (a named source's `source_name`). `deep`: the
# decoder takes nesting deeper than orjson allows, so a line holding more than MAX_DEPTH
# brackets is parsed whole.
#
# (`NamedTuple`'s functional form, the types given as objects: the class form's annotations
# are text here, and typing compiles each into a ForwardRef at every start.)
Viewer = NamedTuple(  # noqa: UP014
    "Viewer",
    [
        ("decode", Callable[[bytes], Any]),
        ("evaluate", Callable[[Any, bytes, float], Any] | None),
        ("evaluate_block", EvaluateBlock | None),
        ("whole", Callable[[bytes, float], Any]),
        ("refused", tuple[type[Exception], ...]),
        ("stamp", tuple[str, str] | None),
        ("deep", bool),
    ],
)


class NoStruct:
    """The class of no value: what a key decoded whole is tested against (see `struct_name`)."""


class WholeLine(Exception):
    """Raised by the code reading a view when the line must be parsed whole (an integer
    beyond INT_MIN..INT_MAX where the index compares numbers)."""


# Characters msgspec refuses in a field's name.
_UNNAMEABLE = frozenset('\\"' + "".join(map(chr, range(32))))


def _nameable(key: str) -> bool:
    """Whether msgspec takes `key` as a field's name: none of _UNNAMEABLE, and valid UTF-8 (no
    lone surrogate, which no rule file holds but a rule built in code may)."""
    if _UNNAMEABLE.intersection(key):
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def _deeper_than_orjson(decode: Callable[[bytes], Any], refused: tuple[type[Exception], ...], keys: Any) -> bool:
    """Whether `decode` takes a line nested deeper than orjson does (msgspec's limit is the
    interpreter's recursion limit: below orjson's on Python 3.11, above it since 3.12). Asked
    once, when the viewer is built: rulesd never changes the recursion limit."""
    key = next(" " * n for n in itertools.count() if " " * n not in keys)  # a key no view reads
    depth = MAX_DEPTH + 1
    line = b'{"' + key.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"
    try:
        decode(line)
    except refused:
        return False
    return True


class _Invalid:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()
