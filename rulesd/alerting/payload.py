"""Firing -> OpsGenie `CreateAlertPayload`, every API limit enforced.

Whoever writes a log line writes part of the payload. Every control character that a
template or the event brings into it (C0, DEL, C1, the Unicode line separators) is written as
the escape JSON uses for it (`\\u0000`, `\\u001b`; in one-line fields `\\n` and `\\t` too):
OpsGenie is not sent a NUL or an escape sequence to store, show and forward to a phone, and a
line break cannot split a message, a tag or an alias. Escaped before cutting to a limit, so
the limits hold of what is sent.

Pure: the same firing and settings always give the same payload, so the
outbox can store it and tests can pin it exactly.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson

from rulesd.alerting import alias
from rulesd.alerting.alias import NAMES_KEPT, alert_alias, rule_names
from rulesd.deferred_regex import when_used
from rulesd.engine import Closing, Firing
from rulesd.interned import Memo
from rulesd.jsontext import indented_json
from rulesd.printable import lines, one_line
from rulesd.rules.fields import Event
from rulesd.rules.model import TRIGGERING_RULES, Responder, Rule
from rulesd.rules.templates import Template

# OpsGenie Alert API v2 limits (characters).
MESSAGE_MAX = 130
DESCRIPTION_MAX = 15_000
DETAILS_TOTAL_MAX = 8_000
TAGS_MAX = 20
TAG_MAX = 50
RESPONDERS_MAX = 50
ENTITY_MAX = 512
SOURCE_MAX = 100
NOTE_MAX = 25_000

CLOSE_NOTE = "resolved: "  # a close's note: this, then the rule names
EVENT_SOURCE = "Event Source"
RESPONDER_KINDS = ("team", "user", "escalation", "schedule")

# The string encoder of Sentry's JSON module (simplejson, ensure_ascii left at its default:
# True), which the Sentry OpsGenie plugin writes "Triggering Rules" with.
_encode_ascii = json.encoder.encode_basestring_ascii


class AlertSettings(msgspec.Struct, frozen=True):
    """The parts of the payload that come from the daemon's configuration."""

    source: str = "rulesd"
    recipients: tuple[Responder, ...] = ()


def parse_recipients(text: str | None) -> tuple[Responder, ...]:
    """`"team:ops, alice@example.com"` -> responders; ValueError names a bad entry."""
    out: list[Responder] = []
    for entry, prefix, name in _recipient_entries(text):
        if prefix in RESPONDER_KINDS:
            kind = prefix
        else:
            kind, name = ("user" if "@" in entry else "team"), entry
        if not name:
            raise ValueError(f"recipient {entry!r} has no name")
        out.append(Responder(kind, "username" if kind == "user" else "name", name))
    return tuple(out)


def recipient_typos(text: str | None) -> list[str]:
    """What `check` warns of in `recipients`: an entry whose prefix before a colon is close to a
    responder kind but is none (`tem:ops`) is taken whole as a team's name, so a typo would page
    a team nobody is in; a plain team name with a colon (`db:primary`) draws nothing."""
    said = []
    for entry, prefix, name in _recipient_entries(text):
        if prefix and "@" not in entry and prefix not in RESPONDER_KINDS:
            import difflib  # (only here: a replay's start-up does not pay for it)

            close = difflib.get_close_matches(prefix, RESPONDER_KINDS, n=1, cutoff=0.6)
            if close:
                said.append(
                    f"{entry!r} is taken as a team named {entry!r}; if {close[0]}:{name} was meant, write {close[0]}:"
                )
    return said


def _recipient_entries(text: str | None) -> Iterator[tuple[str, str, str]]:
    """Each entry of `recipients` (stripped, empty ones skipped), with the part before its first
    colon lowercased and stripped ("" without a colon) and the name after it stripped."""
    for raw in (text or "").split(","):
        entry = raw.strip()
        if entry:
            prefix, sep, name = entry.partition(":")
            yield entry, prefix.strip().lower() if sep else "", name.strip()


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in an ellipsis when cut (before an escape the
    cut would split: see `cut`)."""
    return text if len(text) <= limit else cut(text, limit - 1) + "…"


# An escape as JSON writes it: the control characters' (`\u001b`, `\n`) that `one_line` and
# `lines` write, and in the event's JSON a quote's and a backslash's too (`\"`, `\\`).
_ESCAPE = when_used(r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])')


def cut(text: str, end: int) -> str:
    """`text[:end]`, or shorter: a cut is moved back to before an escape it would split, which
    would leave `\\u00` (or a lone backslash) for OpsGenie to show. Text with a backslash of its
    own before `u` or `n` may lose it too: an escape cannot be told from it."""
    if len(text) <= end:  # most tags: nothing cut
        return text
    while end > 0:
        for at in range(max(0, end - 5), end):  # an escape is at most 6 characters long
            found = _ESCAPE().match(text, at) if text[at] == "\\" else None
            if found is not None and found.end() > end:
                end = at
                break
        else:
            break
    return text[:end]


def build_payload(firing: Firing, settings: AlertSettings, event_source: str = "") -> dict[str, Any]:
    """The JSON body of the OpsGenie create-alert request for `firing`."""
    rules, event = firing.rules, firing.event
    lead = rules[0]  # (once: see `alert_alias`)
    spec, parts = lead.alert, _parts(rules)
    payload: dict[str, Any] = {
        "message": message(lead, event),
        "alias": firing.alias or alert_alias(rules, event),
        "description": truncate(_description(parts, event), DESCRIPTION_MAX),
        "responders": [r.to_json() for r in _responders(rules, settings.recipients)],
        "tags": _tags(parts, event),
        "details": _details(parts, event, event_source),
        "priority": spec.priority,
        "source": _source(settings.source),
    }
    # Left out when they render blank (a missing field), as an unset one is: not sent empty.
    entity = one_line(spec.entity.render(event).strip()) if spec.entity is not None else ""
    if entity:
        payload["entity"] = truncate(entity, ENTITY_MAX)
    note = lines(spec.note.render(event).strip()) if spec.note is not None else ""
    if note:
        payload["note"] = truncate(note, NOTE_MAX)
    return payload


def _source_of(source: str) -> str:
    return truncate(one_line(source), SOURCE_MAX)


# The configured source, escaped and cut once rather than per body (a daemon has one; a memo,
# not a field of `AlertSettings`, so that settings built by hand give the same body).
_source = Memo(_source_of, 16).__getitem__


def message(lead: Rule, event: Event) -> str:
    """The message of an alert `lead` leads: its template rendered with `event`, else the
    event's own `message`, its runs of white space made one space, escaped (`one_line`) and
    cut to MESSAGE_MAX; else `rulesd: <lead's name>`."""
    template = lead.alert.message
    text = template.render(event).strip() if template is not None else ""
    if not text:
        fallback = event.get("message")
        text = fallback.strip() if isinstance(fallback, str) else ""
        if not text:
            return truncate(f"rulesd: {lead.name}", MESSAGE_MAX)
    # OpsGenie rejects multi-line messages poorly; keep the first line readable. The only
    # printable white space is the space: printable text without two together is as the
    # joining and escaping would leave it (most messages, each a list of words saved).
    if "  " in text or not text.isprintable():
        text = one_line(" ".join(text.split()))
    return text if len(text) <= MESSAGE_MAX else truncate(text, MESSAGE_MAX)


class _Parts(msgspec.Struct, frozen=True, eq=False):
    """What an alert's body takes from the rules that fired alone, whatever the event: worked
    out once per tuple of rules, which the engine shares between firings of the same rules
    (dozens of rules alike fire together, alert after alert); the templates are rendered per
    alert."""

    said: tuple[tuple[str, Template | None, str], ...]  # per rule with a description: "name: ", template, text
    head: str | None  # the descriptions' lines (escaped: `lines`) when no template is among them
    tags: tuple[Template, ...]  # each source once (one source renders one text), in the rules' order
    details: tuple[tuple[str, Template], ...]  # each key once (escaped): the first rule's
    triggering: str  # "Triggering Rules"
    budget: int  # what the other details may take


def _parts_of(rules: tuple[Rule, ...]) -> _Parts:
    said: list[tuple[str, Template | None, str]] = []
    tags: dict[str, Template] = {}
    details: dict[str, Template] = {}
    for rule in rules:
        spec = rule.alert
        if spec.description is not None or rule.description.strip():
            said.append((f"{rule.name}: ", spec.description, rule.description.strip()))
        for template in spec.tags:
            tags.setdefault(template.source, template)
        for key, template in spec.details:
            details.setdefault(one_line(key), template)
    details.pop(TRIGGERING_RULES, None)
    head = None if any(template is not None for _, template, _ in said) else lines("\n".join(p + t for p, _, t in said))
    triggering = triggering_rules(list(rule_names(rules)))
    budget = DETAILS_TOTAL_MAX - len(TRIGGERING_RULES) - len(triggering)
    return _Parts(tuple(said), head, tuple(tags.values()), tuple(details.items()), triggering, budget)


# As the names in `rulesd.alerting.alias`: per tuple of rules, all let go when full.
_PARTS: Memo[tuple[Rule, ...], _Parts] = Memo(_parts_of, NAMES_KEPT)
_parts = _PARTS.__getitem__


def forget_rules() -> None:
    """Let go of every tuple of rules the memos hold (here and the alias's names): a daemon's
    reload calls it once its new rule set runs. The tuples of the rules before are never asked
    for again, yet each keeps its rules alive, and with them their predicates, lists and
    Hyperscan databases: up to NAMES_KEPT tuples, a whole rule set per reload where one alert
    came between reloads (a set of 300 rules, 20 of them firing between reloads: +38 MiB after
    55 reloads)."""
    _PARTS.clear()
    _responders.cache_clear()
    alias.forget()


def _description(parts: _Parts, event: Event) -> str:
    # Escaped part by part (`lines` escapes character by character, so the parts escaped are
    # the whole escaped): the rules' text once per combination (`_Parts.head`), the event's JSON
    # only when it may hold what needs it (a search of every character of ~500 took ~2.5 µs a body).
    head = parts.head
    if head is None:
        said: list[str] = []
        for prefix, template, text in parts.said:
            if template is not None:
                text = template.render(event).strip()
            if text:
                said.append(prefix + text)
        head = lines("\n".join(said))
    event_json = event_text(event)
    # JSON escapes C0 in the event's text but leaves DEL, C1 and the line separators as they
    # are: of them, ASCII text (`isascii` is a flag of the string, not a scan) can hold DEL alone.
    if not event_json.isascii() or "\x7f" in event_json:
        event_json = lines(event_json)
    return f"{head}\n\nEvent:\n{event_json}" if head else f"Event:\n{event_json}"


def event_text(event: Any) -> str:
    """The event as indented JSON, as `json.dumps(event, indent=2, ensure_ascii=False,
    default=str)` writes it, but for the exponent of floats under 1e-4 (`1e-7`, not `1e-07`)
    and what no parser makes: enums (orjson writes an enum's value) and orjson fragments.

    orjson writes it, ten times faster than json's indented encoder (written in Python);
    json writes what orjson would write otherwise or not at all: other types than JSON's
    (they go to `_not_json`), integers beyond 64 bits, keys that are not text, nesting
    deeper than 254, and NaN and infinities, which orjson writes as `null`. An event nested
    deeper than json's recursion goes (orjson reads 1,024 levels) is given room to recurse.
    """
    try:
        text = orjson.dumps(event, default=_not_json, option=_AS_JSON_WRITES).decode()
    except orjson.JSONEncodeError:
        return indented_json(event)
    if "null" in text and _non_finite(event):  # most events hold no null: no walk
        return indented_json(event)
    return text


def _non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is in `value`, which orjson has written (so its floats are
    floats, not subclasses, and it is at most 254 levels deep)."""
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)
    if kind is dict:
        return any(map(_non_finite, value.values()))
    if kind is list or kind is tuple:
        return any(map(_non_finite, value))
    return False


# Everything but dict, list, str, int, float, bool and None goes to `default`.
_AS_JSON_WRITES = (
    orjson.OPT_INDENT_2
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _not_json(value: Any) -> Any:
    raise TypeError(type(value).__name__)


@functools.lru_cache(maxsize=NAMES_KEPT)
def _responders(rules: tuple[Rule, ...], recipients: tuple[Responder, ...]) -> tuple[Responder, ...]:
    """The rules' responders and the configured ones, each once, in order (once per tuple of
    rules and the configuration's, as `_parts`)."""
    seen = dict.fromkeys(r for rule in rules for r in rule.alert.responders)
    seen.update(dict.fromkeys(recipients))
    return tuple(seen)[:RESPONDERS_MAX]


def _tags(parts: _Parts, event: Event) -> list[str]:
    tags: dict[str, None] = {}
    for template in parts.tags:
        tag = cut(one_line(template.render(event).replace(",", "").strip()), TAG_MAX).strip()
        if tag:
            tags[tag] = None
    return list(tags)[:TAGS_MAX]


def _details(parts: _Parts, event: Event, event_source: str) -> dict[str, str]:
    # Made as sent, "Triggering Rules" first, and sized as made: no copy of the others and no
    # second pass over them unless they exceed the budget (rare), when the largest are dropped.
    details = {TRIGGERING_RULES: parts.triggering}
    size = 0
    if event_source:
        value = details[EVENT_SOURCE] = one_line(event_source)
        size = len(EVENT_SOURCE) + len(value)
    for key, template in parts.details:
        if key not in details:  # (the rules' "Event Source" gives way to the one said)
            value = details[key] = lines(template.render(event))
            size += len(key) + len(value)
    if size > parts.budget:
        _drop_largest(details, size, parts.budget)
    return details


def triggering_rules(names: list[str], limit: int = DETAILS_TOTAL_MAX - len(TRIGGERING_RULES)) -> str:
    """The names as the Sentry plugin writes them (`["a","b"]`), at most `limit` characters.

    When they do not all fit, the leading names that do are kept and the list ends with
    `"… N more"` (written as Sentry's encoder writes it, `"\\u2026 N more"`).
    """
    parts = list(map(_encode_ascii, names))
    text = "[" + ",".join(parts) + "]"
    if len(text) <= limit:
        return text
    kept, size = 0, 1  # "["
    for count, part in enumerate(parts, 1):
        size += len(part) + (count > 1)
        if size + len(_more(len(parts) - count)) + 2 > limit:  # ",<marker>]"
            break
        kept = count
    marker = _more(len(parts) - kept)
    return "[" + ",".join([*parts[:kept], marker]) + "]"


def _more(count: int) -> str:
    return _encode_ascii(f"… {count} more")


def _drop_largest(details: dict[str, str], size: int, budget: int) -> None:
    """Drop the largest entries (key and value together) but "Triggering Rules" until those
    left, `size` characters in all, fit in `budget`."""
    for key in sorted(details.keys() - {TRIGGERING_RULES}, key=lambda k: (-len(k) - len(details[k]), k)):
        if size <= budget:
            break
        size -= len(key) + len(details.pop(key))


def closed_by(rules: tuple[str, ...], reasons: tuple[str, ...]) -> tuple[str, ...]:
    """The rules that closed an alert, each with why where it was not that its group recovered
    (`heartbeat-missing (rule removed)`): as the close's note and `rulesd replay` name them."""
    if not reasons:
        return rules
    return tuple(f"{name} ({why})" if why else name for name, why in zip(rules, reasons, strict=True))


def close_body(closing: Closing, settings: AlertSettings) -> dict[str, Any]:
    """The JSON body of the request that closes an alert by alias (`POST …/<alias>/close`):
    the note names the rules, each with why it closes the alert when that is not that its
    group recovered (`resolved: heartbeat-missing (rule removed), errors`)."""
    names = closed_by(closing.rules, closing.reasons)
    return {
        "source": _source(settings.source),
        "note": truncate(lines(f"{CLOSE_NOTE}{', '.join(names)}"), NOTE_MAX),
    }
