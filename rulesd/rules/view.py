"""An event's view: the few top-level fields the rule index reads, decoded from a JSON line
without building the rest of the event.

Most events concern no rule, and for them the index reads a handful of fields. Decoding a
whole line into a dict (`orjson.loads`) builds every key and value; msgspec decoding into a
struct of only the fields read skips the others while still checking their syntax, in
about half the time (~0.35 µs against ~0.7 µs for a ~250-byte line). An event that has
candidates is then parsed whole, by the same parser as every other event, for the rules'
predicates and the alert.

A field the line lacks reads as MISSING, as a getter reads it. The fields skipped are
checked as JSON, not as UTF-8: a line that is not ASCII has its UTF-8 checked first (see
`pipeline._evaluate_viewed`), in a sixth of the time of its parse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from rulesd.rules.fields import MISSING


class Layout:
    """The top-level keys read by the code being written, each an attribute of the view."""

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}

    def attribute(self, key: str) -> str:
        """The attribute holding the value of `key` (keys are data: never an identifier)."""
        return self.attributes.setdefault(key, f"f{len(self.attributes)}")

    def viewer(self, evaluate: Callable[[Any, bytes, float], Any], stamp: tuple[str, str] | None = None) -> Viewer:
        """The viewer of the keys asked for so far, whose views `evaluate` reads; `stamp`, a
        key and the text each view holds there whatever the line says (see `Viewer.stamp`)."""
        import msgspec  # here: commands that evaluate no JSON lines do without its ~10 ms import

        view = msgspec.defstruct(
            "EventView",
            [(name, Any, MISSING) for name in self.attributes.values()],
            rename={name: key for key, name in self.attributes.items()},
            gc=False,  # values decoded from JSON hold no cycles
        )
        # Refused: malformed JSON, not an object, a number out of range in a field read, a
        # nesting deeper than the decoder's recursion allows, and text that is not UTF-8.
        refused = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
        stamped = (self.attributes[stamp[0]], stamp[1]) if stamp and stamp[0] in self.attributes else None
        return Viewer(msgspec.json.Decoder(view).decode, evaluate, refused, stamped)


class Viewer(NamedTuple):
    """How an index judges JSON lines from their views.

    `decode(line)` is the line's view, or raises one of `refused`; `evaluate(view, line,
    time)` is what the engine's `evaluate` returns for the parsed line, or INVALID when the
    line had candidates and the full parser refused it (the view checks the skipped fields'
    syntax, not that their numbers fit a double). `stamp`, if not None, is an attribute and
    the text to set it to in every view, as its source sets that field in every event (a
    named source's `source_name`).
    """

    decode: Callable[[bytes], Any]
    evaluate: Callable[[Any, bytes, float], Any]
    refused: tuple[type[Exception], ...]
    stamp: tuple[str, str] | None = None


class _Invalid:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()
