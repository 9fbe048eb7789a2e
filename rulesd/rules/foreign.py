"""What a rule written in the words of another tool (ElastAlert2, Sigma, fail2ban) means here.

A user moving rules over writes `timeframe:`, `detection:`, `message|contains:` or a regex
with fail2ban's `<HOST>`. The schema alone says "unknown key 'realert'; did you mean 'alert'?"
or nothing at all (a condition takes any field name, so `message|contains` tests a field of
that name, and `<HOST>` is a regex that matches the text `<HOST>`): the rule silently never
fires. Here each such mistake is said at its line with rulesd's way of writing it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from rulesd.deferred_regex import when_used
from rulesd.document import Document, JsonPath
from rulesd.durations import parse_duration
from rulesd.errors import Problem
from rulesd.rules.misplaced import conditions, operators
from rulesd.times import span
from rulesd.validation import format_path

_COUNT = "threshold: {count: 5, window: 5m}"
_GROUP = "the group_by of the rule's kind: threshold: {count: 5, window: 5m, group_by: [source.ip]}"
_WINDOW = "the window of the rule's kind: threshold: {count: 5, window: 5m}"
_CONDITION = "field paths and their values or operators: {event: login_failed, http.status: {gte: 500}}"
_MATCH = f"match, a mapping of {_CONDITION}"
_MESSAGE = "alert.message, a template: alert: {message: 'brute force from {source.ip}'}"
_REGEX = "a regex in match: match: {message: {regex: 'Failed password for .* from \\S+'}}"
# The rulesd key each foreign key stands for (its mapping then misses it only for this
# mistake), and how to write it, by the mapping it is written in: "" for the rule itself.
_KEYS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("", "timeframe"): (None, f"ElastAlert's timeframe is {_WINDOW}"),
    ("", "num_events"): (None, f"ElastAlert's num_events is a threshold's count: {_COUNT}"),
    ("", "query_key"): (None, f"ElastAlert's query_key is {_GROUP}"),
    ("", "filter"): ("match", f"ElastAlert's filter (Elasticsearch's query DSL) is rulesd's {_MATCH}"),
    ("", "realert"): (None, "ElastAlert's realert is rulesd's throttle, a duration: throttle: 10m"),
    ("", "aggregation"): (
        None,
        "rulesd sends each firing when it comes; to hold a group's next alert back for a while, write throttle: 10m",
    ),
    ("", "type"): (
        None,
        "a rule's kind is the key it has, not a type: threshold (ElastAlert's frequency), distinct (cardinality), "
        "absence (flatline), new_value (new_term), sequence, or none to fire on every match (any)",
    ),
    ("", "index"): (
        None,
        "rulesd reads the events of the sources in rulesd.yaml, not an index: leave it out (to take one source's "
        "events, test source_name in match)",
    ),
    ("", "opsgenie_key"): (
        None,
        "the API key is given in rulesd.yaml (opsgenie.api_key_file), never in a rule file: leave it out",
    ),
    ("", "alert_text"): (None, f"ElastAlert's alert_text is {_MESSAGE}"),
    ("", "alert_subject"): (None, f"ElastAlert's alert_subject is {_MESSAGE}"),
    ("", "title"): ("name", "Sigma's title is the rule's name (letters, digits, '.', '_', '-') and its description"),
    ("", "logsource"): (
        None,
        "rulesd matches the events of the sources in rulesd.yaml: Sigma's logsource is a test of their fields in "
        "match (service: sshd, or source_name: auth for a named source)",
    ),
    ("", "detection"): (
        "match",
        "Sigma's detection is rulesd's match: the selection's fields go directly under match, and its condition's "
        "and, or and not are all: [...], any: [...] and not: {...}",
    ),
    ("", "level"): (
        None,
        "Sigma's level is alert.priority (critical P1, high P2, medium P3, low P4, informational P5): "
        "alert: {priority: P2}",
    ),
    ("", "id"): (None, "a rule is known by its name: leave Sigma's id out (or keep it in description)"),
    ("", "status"): (
        None,
        "a rule has no status: leave Sigma's status out, or, for a rule kept but meant never to fire (deprecated, "
        "unsupported), write enabled: false",
    ),
    ("", "falsepositives"): (
        None,
        "Sigma's falsepositives are prose: keep them in description, or leave such events out in match with not: {...}",
    ),
}
for _meta in ("author", "references", "date", "modified", "license", "related"):  # Sigma's metadata
    _KEYS[("", _meta)] = (
        None,
        f"a rule has no {_meta}: keep Sigma's {_meta} in description or in a YAML comment (# {_meta}: ...)",
    )
_KEYS |= {
    ("", "failregex"): ("match", f"fail2ban's failregex is {_REGEX}"),
    ("", "ignoreregex"): (
        None,
        "fail2ban's ignoreregex is a negated test in match: match: {not: {message: {regex: '...'}}}",
    ),
    ("", "maxretry"): (None, f"fail2ban's maxretry is a threshold's count: {_COUNT}"),
    ("", "findtime"): (None, f"fail2ban's findtime is {_WINDOW}"),
    ("", "bantime"): (
        None,
        "rulesd pages, it does not ban: fail2ban's bantime is nearest to throttle (no page again for the group for "
        "that long): throttle: 1h",
    ),
    ("threshold", "timeframe"): ("window", "ElastAlert's timeframe is a threshold's window: window: 5m"),
    ("threshold", "findtime"): ("window", "fail2ban's findtime is a threshold's window: window: 5m"),
    ("threshold", "num_events"): ("count", "ElastAlert's num_events is a threshold's count: count: 5"),
    ("threshold", "maxretry"): ("count", "fail2ban's maxretry is a threshold's count: count: 5"),
    ("distinct", "cardinality_field"): ("field", "ElastAlert's cardinality_field is distinct's field: field: user"),
    ("distinct", "max_cardinality"): (
        "count",
        "distinct fires when count different values are seen (ElastAlert's max_cardinality fires above it): "
        "count: max_cardinality + 1",
    ),
    ("absence", "threshold"): (
        None,
        "an absence fires when no event of a group has come for its window (ElastAlert's flatline threshold of 1): "
        "leave threshold out",
    ),
    ("new_value", "terms_window_size"): (
        None,
        "ElastAlert's terms_window_size is new_value's learn, the time values are only recorded: learn: 7d",
    ),
}
for _kind in ("threshold", "distinct", "absence", "new_value"):
    _KEYS.setdefault((_kind, "timeframe"), ("window", "ElastAlert's timeframe is this kind's window: window: 5m"))
    _KEYS[(_kind, "query_key")] = ("group_by", "ElastAlert's query_key is group_by: group_by: [source.ip]")
# rulesd's own durations, written under the name another kind gives its time
_OWN_TIME = {
    "threshold": ("window", "a threshold counts the events of its window: window: 5m"),
    "distinct": ("window", "distinct counts the values of its window: window: 5m"),
    "absence": ("window", "an absence pages a group silent for its window: window: 5m"),
    "sequence": ("within", "a sequence's steps are bounded by within, from its first counted event: within: 5m"),
    "absent": ("for", "an absent step waits for its for (within does not apply to it): for: 5m"),
    "resolve": (
        "after",
        "resolve's time is after, how long its group must not fire before the alert closes: after: 5m",
    ),
}
_OWN_TIMES = {
    (_kind, _written): (_meant, _advice)
    for _kind, (_meant, _advice) in _OWN_TIME.items()
    for _written in ("window", "within", "for", "after")
    if _written != _meant and (_kind, _written) not in _KEYS
}
_KEYS |= _OWN_TIMES
_KEYS[("sequence", "for")] = (
    None,
    "an absent last step waits for its own for (- absent: {match: {...}, for: ...}); the bound of a sequence's "
    "steps is within: 5m",
)
for _written in ("window", "within", "for"):
    _KEYS[("new_value", _written)] = (
        None,
        "new_value has no window: a value is new when its group has not seen it before, learn only records "
        "values for a while after the start, and forget makes a value unseen for that long new again: forget: 5m",
    )
_ALERT_KEYS = ("message", "description", "priority", "tags", "responders", "alias", "entity", "details", "note")
for _key in _ALERT_KEYS:  # ElastAlert's OpsGenie alerter names them opsgenie_<key>
    _KEYS[("alert", f"opsgenie_{_key}")] = (_key, f"ElastAlert's opsgenie_{_key} is alert.{_key}")
_KEYS[("alert", "alert_text")] = ("message", "ElastAlert's alert_text is alert.message, a template ({field})")
_KEYS[("alert", "alert_subject")] = ("message", "ElastAlert's alert_subject is alert.message, a template ({field})")
_KEYS[("alert", "opsgenie_teams")] = (
    "responders",
    "ElastAlert's opsgenie_teams are responders: responders: [{type: team, name: ops}]",
)
_KEYS[("alert", "opsgenie_recipients")] = (
    "responders",
    "ElastAlert's opsgenie_recipients are responders: responders: [{type: user, username: alice@example.com}]",
)
_DURATION_UNITS = {"weeks": 7 * 86400, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_DURATION_KEYS = frozenset({"window", "within", "for", "learn", "forget", "throttle", "after"})

# Sigma's field modifiers (`field|contains`), and the operator each is here.
_MODIFIERS = {
    "contains": "contains",
    "startswith": "startswith",
    "endswith": "endswith",
    "re": "regex",
    "cidr": "cidr",
    "lt": "lt",
    "lte": "lte",
    "gt": "gt",
    "gte": "gte",
    "exists": "exists",
}
_OTHER_MODIFIERS = frozenset({"all", "base64", "base64offset", "windash", "utf16le", "utf16be", "wide", "i", "m", "s"})
# Elasticsearch's query DSL, which ElastAlert's filter is written in.
_QUERY_DSL = frozenset(
    {"term", "terms", "range", "bool", "match", "match_phrase", "wildcard", "prefix", "query_string", "query"}
)
# The names Sigma's rules give their selections, which its condition combines.
_SIGMA_NAME = when_used(r"(selection|filter|keywords?|sel|main|exclusion)\w*\*?\Z")
# fail2ban's tags in a failregex; here they would be matched as the text they are.
_FAIL2BAN_TAG = when_used(r"<(HOST|ADDR|IP4|IP6|DNS|CIDR|SUBNET|SKIPLINES|F-[A-Z0-9_-]+|/F-[A-Z0-9_-]+)>")
# The control characters YAML makes of a backslash escape in double quotes.
_ESCAPES = {"\x00": "\\0", "\x07": "\\a", "\x08": "\\b", "\x0b": "\\v", "\x0c": "\\f", "\x1b": "\\e"}


def _parent(path: JsonPath) -> str:
    """The name of the mapping at `path` in a rule file: "" for a rule itself."""
    if not path or (len(path) == 2 and path[0] == "rules"):
        return ""
    return str(path[-1])


def reworded(doc: Document, path: JsonPath, problem: Problem) -> Problem | None:
    """`problem` (a schema violation at `path`) in the words of the tool the rule was written
    for, if it is a foreign key or value; None if it only repeats one (the key a foreign key
    stands for, missing)."""
    *parent_path, key = path or ("",)
    parent = _value(doc, tuple(parent_path))
    if isinstance(key, str) and isinstance(parent, dict) and key in parent:  # (a value's fault)
        value = parent[key]
        if key in _DURATION_KEYS and isinstance(value, dict) and value and set(value) <= set(_DURATION_UNITS):
            return Problem(problem.location, f"{format_path(path)}: {_duration(value)}")
        if key in ("alert", "match") and isinstance(value, list):
            return Problem(problem.location, f"{format_path(path)}: {_list_message(key)}")
        if key == "resolve" and _seconds(value) is not None:  # (`resolve: 30m`)
            message = (
                f"resolve is a mapping of when to close the alert: resolve: {{after: {_as_written('duration', value)}}}"
            )
            return Problem(problem.location, f"{format_path(path)}: {message}")
    here = _value(doc, path)
    if not isinstance(here, dict):
        return problem
    for key in here:  # (an unknown key is said at the path of its mapping)
        found = _KEYS.get((_parent(path), key))
        if found is not None and problem.message.startswith(f"{format_path((*path, key))}: "):
            advice = _with_value(found[1], key, here[key])
            if (_parent(path), key) in _OWN_TIMES and found[0] in here:  # (its own time written beside it)
                advice = f"{found[1].split(':')[0]}, written beside it: leave {key} out"
            return Problem(problem.location, f"{format_path((*path, key))}: {advice}")
    missing = re.search(r": missing required key '(\w+)'\Z", problem.message)
    return None if missing and missing[1] in stands_for(here, _parent(path)) else problem


def stands_for(mapping: dict[str, Any], parent: str = "") -> set[str | None]:
    """The keys of rulesd that the foreign keys of `mapping` (written in the mapping named
    `parent`, "" for a rule) stand for: its missing one of them repeats that mistake."""
    return {_KEYS.get((parent, key), (None,))[0] for key in mapping}


# The foreign keys whose value the advice writes in rulesd's way (in place of its example).
_SHAPES = {
    "timeframe": ("duration", "5m"),
    "findtime": ("duration", "5m"),
    "realert": ("duration", "10m"),
    "bantime": ("duration", "1h"),
    "terms_window_size": ("duration", "7d"),
    "num_events": ("count", "5"),
    "maxretry": ("count", "5"),
    "max_cardinality": ("one more", "max_cardinality + 1"),
    "query_key": ("fields", "[source.ip]"),
    "cardinality_field": ("field", "user"),
    "failregex": ("regex", "'Failed password for .* from \\S+'"),
    "ignoreregex": ("regex", "'...'"),
    "level": ("level", "P2"),
    **{key: ("duration", "5m") for key in ("window", "within", "for", "after")},
}
_PRIORITIES = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4", "informational": "P5"}


def _with_value(advice: str, key: str, value: Any) -> str:
    """`advice` for the foreign `key`, its example (the last) replaced by `value` written as
    rulesd takes it, where it can be (`timeframe: {minutes: 10}` is `window: 10m`)."""
    shape, example = _SHAPES.get(key, ("", ""))
    written = _as_written(shape, value)
    if written is None:
        return advice
    spots = list(re.finditer(rf"(?<![\w.]){re.escape(example)}(?!\w)", advice))
    if not spots:
        return advice
    return advice[: spots[-1].start()] + written + advice[spots[-1].end() :]  # (the example is the last)


def _as_written(shape: str, value: Any) -> str | None:
    if shape == "duration":
        seconds = _seconds(value)
        return None if seconds is None else span(seconds)
    if shape in ("count", "one more") and isinstance(value, int) and not isinstance(value, bool):
        return str(value + (shape == "one more"))
    if shape == "field" and isinstance(value, str):
        return value
    if shape == "fields" and isinstance(value, str | list) and all(isinstance(v, str) for v in value):
        return f"[{value}]" if isinstance(value, str) else f"[{', '.join(value)}]"
    if shape == "level" and isinstance(value, str):
        return _PRIORITIES.get(value.lower())
    if shape == "regex" and isinstance(value, str):
        return "'" + _FAIL2BAN_TAG().sub(r"\\S+", value).replace("'", "''") + "'"
    return None


def _seconds(value: Any) -> float | None:
    """The seconds of a duration written in rulesd's way, a number of seconds (fail2ban's), or
    ElastAlert's mapping of units (`{minutes: 1.5}` is 90 seconds, as ElastAlert reads it);
    None for anything else."""
    if isinstance(value, dict) and value and set(value) <= set(_DURATION_UNITS):
        try:
            seconds = sum(float(count) * _DURATION_UNITS[unit] for unit, count in value.items())
        except (TypeError, ValueError):
            return None
        return seconds if 0 <= seconds < math.inf else None  # (not `.inf`, `.nan` or a negative one)
    try:
        return int(parse_duration(value)) if isinstance(value, int | str) else None
    except ValueError:
        return None


def _duration(value: dict[str, Any]) -> str:
    """`{minutes: 5}` (ElastAlert's way) as a duration is written here."""
    seconds = _seconds(value)
    written = "a number and its unit, such as 5m" if seconds is None else span(seconds)
    return f"a duration is written as one string here, not ElastAlert's mapping of units: write {written}"


def _list_message(key: str) -> str:
    if key == "alert":
        return (
            "alert is a mapping (message, priority, tags, responders, ...), not ElastAlert's list of alerters: "
            "rulesd pages through OpsGenie, as rulesd.yaml says"
        )
    return (
        "match is a mapping of field paths to values or operators, all of which must hold; for any one of several "
        "conditions to hold, write match: {any: [{...}, {...}]}"
    )


def _value(doc: Document, path: JsonPath) -> Any:
    from rulesd.key_places import value_at

    return value_at(doc.value, path)


def foreign_conditions(
    doc: Document, rules: Iterator[tuple[dict[str, Any], JsonPath]]
) -> list[tuple[JsonPath, Problem]]:
    """Each test of a condition of `rules` written as another tool writes it, with its
    problem: a Sigma `field|modifier` key, Elasticsearch's query DSL, Sigma's selection and
    condition, a nested mapping of fields, a regex with fail2ban's tags or with a control
    character that YAML made of a backslash escape in double quotes."""
    ops = operators()
    found: list[tuple[JsonPath, Problem]] = []

    def say(where: JsonPath, message: str, *, key: bool = True) -> None:
        found.append((where, Problem(doc.locate(where, key=key), f"{format_path(where)}: {message}")))

    for raw, base in rules:
        for path, condition in conditions(raw, base):
            selections = _sigma_selections(condition)
            for key, value in condition.items():
                where = (*path, key)
                if key in ("all", "any", "not"):
                    continue
                if "|" in key and key.split("|", 1)[1].split("|")[0] in (*_MODIFIERS, *_OTHER_MODIFIERS):
                    say(where, _modifier_message(key, value))
                elif key == "condition" and selections is not None:
                    say(where, _condition_message(selections))
                elif key in (selections or ()):
                    say(where, f"Sigma's selection '{key}': its fields go directly under match ({_fields(value)})")
                elif key in _QUERY_DSL and (isinstance(value, dict) or _lucene(key, value)):
                    say(where, _dsl_message(key, value))
                elif isinstance(value, dict) and value and not any(_near(k, ops) for k in value):
                    first = next(iter(value))
                    say(
                        where,
                        f"'{key}' is tested with operators ({', '.join(sorted(ops)[:4])}, ...), not fields: to test "
                        f"its field {first}, write the path dotted ({key}.{first}: ...)",
                    )
                else:
                    found.extend(_regex_problems(doc, where, value))
    return found


def _near(key: Any, ops: frozenset[str]) -> bool:
    """Whether `key` is an operator, or a misspelling of one (`regx`: the schema says which)."""
    if key in ops:
        return True
    import difflib  # (only for a key that is no operator, which a valid rule file has none of)

    return bool(difflib.get_close_matches(str(key), ops, n=1, cutoff=0.75))


def _lucene(key: str, value: Any) -> bool:
    """Whether `value` of the field `key` reads as a Lucene query (`event:login_failed AND
    user:root`), not as a URL's query (`id=5&sort=name:asc`), which an event may hold."""
    if not isinstance(value, str) or key not in ("query_string", "query"):
        return False
    single = key == "query_string" and re.match(r"\s*[\w.]+:[^=&]*\Z", value) is not None
    return single or re.search(r"\S \b(AND|OR)\b \S|\bNOT \S", value) is not None


# Elasticsearch's leaf queries, and the operator each is here.
_DSL_OPERATORS = {
    "term": "equals",
    "match": "equals",
    "terms": "in",
    "match_phrase": "contains",
    "prefix": "startswith",
}


def _dsl_message(key: str, value: Any) -> str:
    """How Elasticsearch's query `key: value` is written here."""
    head = f"Elasticsearch's query DSL ({key}) is not a condition here"
    inner = next(iter(value.items()), None) if isinstance(value, dict) else None
    if key == "bool":
        return f"{head}: its must (and filter), should and must_not are all: [...], any: [...] and not: {{...}}"
    if inner is not None and key == "range" and isinstance(inner[1], dict):
        return f"{head}: write {inner[0]}: {{{', '.join(f'{k}: {v}' for k, v in inner[1].items())}}}"
    if inner is not None and key in _DSL_OPERATORS and not isinstance(inner[1], dict):
        operator = _DSL_OPERATORS[key]
        test = _show(inner[1]) if operator == "equals" else f"{{{operator}: {_show(inner[1])}}}"
        return f"{head}: write {inner[0]}: {test}"
    return f"{head}: match takes {_CONDITION}"


def _sigma_selections(condition: dict[str, Any]) -> list[str] | None:
    """The keys of `condition` that its Sigma `condition: selection and not filter` names, if
    it has one (None if not): one that names a mapping or list beside it, or reads only as
    Sigma's (`1 of selection*`, `selection and not filter`), not as an event's text."""
    text = condition.get("condition")
    if not isinstance(text, str):
        return None
    words = set(re.findall(r"[A-Za-z_][\w*]*", text)) - {"and", "or", "not", "of", "them", "all"}
    named = [k for k in condition if k in words and isinstance(condition[k], dict | list)]
    sigma = re.search(r"\b(\d+|all) of \w", text) or (words and all(_SIGMA_NAME().match(w) for w in words))
    return named if named or sigma else None


def _condition_message(selections: list[str]) -> str:
    named = f" ({', '.join(selections)})" if selections else ""
    return (
        f"Sigma's condition has no place here: write the fields of its selections{named} directly under match (all "
        "must hold); its and, or and not are all: [...], any: [...] and not: {...}"
    )


def _fields(value: Any) -> str:
    if isinstance(value, dict) and value:
        key, item = next(iter(value.items()))
        return f"{key}: {_show(item)}" if not isinstance(item, dict | list) else f"{key}: ..."
    return "field: value"


def _modifier_message(key: str, value: Any) -> str:
    field, *modifiers = key.split("|")
    op = next((_MODIFIERS[m] for m in modifiers if m in _MODIFIERS), "equals")
    if isinstance(value, list) and value and op != "cidr":
        joined = "all" if "all" in modifiers else "any"
        items = ", ".join(f"{{{field}: {{{op}: {_show(v)}}}}}" for v in value[:2])
        more = ", ..." if len(value) > 2 else ""
        suggestion = f"{joined}: [{items}{more}]"
    else:
        suggestion = f"{field}: {{{op}: {_show(value)}}}"
    return f"Sigma's field|modifier is not rulesd's: as written, it tests a field named {key!r}; write {suggestion}"


def _show(value: Any) -> str:
    """`value` as it is written back in YAML (null and booleans as YAML reads them)."""
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    text = str(value)
    return repr(text) if not re.fullmatch(r"[\w./-]+", text) else text


def _regex_problems(doc: Document, where: JsonPath, value: Any) -> Iterator[tuple[JsonPath, Problem]]:
    """A regex operand at `where` (a field's `{regex: …}`) with fail2ban's tags, or with a
    control character a double-quoted `\\b` or `\\a` became."""
    regex = value.get("regex") if isinstance(value, dict) else None
    if not isinstance(regex, str):
        return
    at = (*where, "regex")
    tag = _FAIL2BAN_TAG().search(regex)
    if tag:
        message = (
            f"fail2ban's {tag[0]} is not a regex here: it matches the text {tag[0]}; write \\S+ in its place (and "
            "name the group in the source's pattern, (?P<host>\\S+), to group by it)"
        )
        yield at, Problem(doc.locate(at), f"{format_path(at)}: {message}")
    control = next((c for c in regex if c in _ESCAPES), None)
    if control is not None:
        escape = _ESCAPES[control]
        message = (
            f"the regex holds the control character U+{ord(control):04X}, which YAML makes of {escape} in double "
            f"quotes: write the regex in single quotes ('...{escape}...'), where a backslash is itself"
        )
        yield at, Problem(doc.locate(at), f"{format_path(at)}: {message}")
