"""Templates: `{field.path}` is replaced by the event's value; nothing is evaluated."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from msgspec.structs import force_setattr

from rulesd.deferred_regex import when_used
from rulesd.jsontext import compact_json
from rulesd.rules.fields import MISSING, Event, Getter, make_getter, shallow_keys

# Characters that would suggest Python format syntax are refused, so that nobody expects
# `{x!r}`, `{x:>5}` or `{x[0]}` to do anything but fail `rulesd check`.
_FIELD = re.compile(r"[^.{}!:\[\]()\s]+(?:\.[^.{}!:\[\]()\s]+)*\Z")


# `{{host}}`, `{{ .host }}`, `{{ $labels.host }}`: another template language's way to write a
# field, which here is the literal text `{host}` (a doubled brace is a brace). Compiled when first
# used: only a check finds them (a warning), which a rule set checked before skips.
_DOUBLED_FIELD = when_used(r"(?<!\{)\{\{\s*\$?\.?([A-Za-z_][\w.-]*)\s*\}\}(?!\})")


def literal_fields(source: str) -> list[tuple[str, str]]:
    """Each `{{field}}` of `source` (as written, and the field path it names), which renders
    as the literal text `{field}` rather than the field's value."""
    if "{{" not in source:  # (nearly every template)
        return []
    return [(m.group(0), m.group(1)) for m in _DOUBLED_FIELD().finditer(source)]


def not_a_template(value: str, what: str) -> str | None:
    """Why `value`, sent as written (`what`: a responder), is likely a mistake: it names a
    field as a template would (`{team}`), and the alert's other texts are templates. None if
    it names none."""
    try:
        fields = parse_template(value).fields
    except TemplateError:
        return None
    if not fields:
        return None
    return (
        f"{what} is not a template: OpsGenie is asked for the one named {value!r} as written, not for the value of "
        f"{fields[0]}; to page by a field's value, write a rule for each value"
    )


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says where in the string."""


class Template(msgspec.Struct, frozen=True):
    """A parsed template: literal text and field getters, in order."""

    # (a struct rather than a dataclass: making a dataclass's class writes and compiles its
    # methods' source, ~4.7 M instructions of every start)
    source: str
    parts: tuple[str | tuple[str, Getter], ...]
    # `parts` ready to render: the leading literal, then each field with the literal after it
    # (often empty). A top-level field is its key, read with `dict.get` (most templates,
    # `{host} {uri}`: a call less per field of every alert's message); a deeper one its getter.
    # Made from `parts` alone, so they compare and hash as `parts` do.
    _head: str = ""
    _rest: tuple[tuple[str | Getter, str], ...] = ()

    def __post_init__(self) -> None:
        head, rest = "", []
        for part in self.parts:
            if not isinstance(part, str):
                keys = shallow_keys(part[0])
                rest.append((keys[0] if keys is not None and len(keys) == 1 else part[1], ""))
            elif rest:
                rest[-1] = (rest[-1][0], rest[-1][1] + part)
            else:
                head += part
        force_setattr(self, "_head", head)
        force_setattr(self, "_rest", tuple(rest))

    def render(self, event: Event) -> str:
        """The text with every `{field}` replaced by the event's value (missing: empty)."""
        text = self._head
        for get, literal in self._rest:
            value = event.get(get, MISSING) if type(get) is str else get(event)  # type: ignore[operator]
            text += (value if type(value) is str else to_text(value)) + literal
        return text

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths the template refers to."""
        return tuple(p[0] for p in self.parts if not isinstance(p, str))


def to_text(value: Any) -> str:
    """How an event value is written into text: strings as they are, the rest as JSON."""
    if type(value) is str:  # the usual case first
        return value
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return compact_json(value)  # never refused: nesting deeper than json's recursion goes too


# A rule set repeats its templates (`{service}: {message}`, a team's tags): each text is parsed
# once. A Template is immutable, so rules may share one.
@functools.lru_cache(maxsize=4096)
def parse_template(source: str) -> Template:
    """Parse `source`; raise TemplateError naming the offending position."""
    parts: list[str | tuple[str, Getter]] = []
    literal: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "{}" and source.startswith(ch * 2, i):
            literal.append(ch)
            i += 2
        elif ch == "}":
            raise TemplateError(f"unmatched '}}' at position {i + 1} (write '}}}}' for a brace)")
        elif ch == "{":
            end = source.find("}", i + 1)
            if end < 0:
                raise TemplateError(f"unclosed '{{' at position {i + 1} (write '{{{{' for a brace)")
            path = source[i + 1 : end]
            if not _FIELD.match(path):
                raise TemplateError(
                    f"'{{{path}}}' at position {i + 1} is not a field path "
                    "(only {field.path} is allowed: no expressions, indexing or format specs)"
                )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((path, make_getter(path)))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    if literal or not parts:
        parts.append("".join(literal))
    return Template(source, tuple(parts))
