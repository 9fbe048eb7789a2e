"""Templates: `{field.path}` is replaced by the event's value; nothing is evaluated."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rulesd.rules.fields import MISSING, Event, Getter, make_getter

# Characters that would suggest Python format syntax are refused, so that nobody expects
# `{x!r}`, `{x:>5}` or `{x[0]}` to do anything but fail `rulesd check`.
_FIELD = re.compile(r"[^.{}!:\[\]()\s]+(?:\.[^.{}!:\[\]()\s]+)*\Z")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says where in the string."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and field getters, in order."""

    source: str
    parts: tuple[str | tuple[str, Getter], ...]

    def render(self, event: Event) -> str:
        """The text with every `{field}` replaced by the event's value (missing: empty)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else to_text(part[1](event)))
        return "".join(out)

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths the template refers to."""
        return tuple(p[0] for p in self.parts if not isinstance(p, str))


def to_text(value: Any) -> str:
    """How an event value is written into text: strings as they are, the rest as JSON."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


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
