"""The daemon configuration (`rulesd.yaml`): validated, then frozen.

Relative paths resolve against the config file's folder. Every error names the
key and `path:line:col`; `load_config` reports all of them at once.
"""

from __future__ import annotations

import functools
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from rulesd.alerting.api import alert_url_warnings, api_key_problem, is_loopback, validate_alert_url
from rulesd.alerting.payload import parse_recipients, recipient_typos
from rulesd.config_durations import duration_warnings
from rulesd.config_paths import path_findings, source_places
from rulesd.config_secrets import blanked, restored, secrets
from rulesd.document import Document
from rulesd.durations import parse_duration
from rulesd.engine.core import MAX_GROUPS, MAX_GROUPS_PER_RULE, MAX_VALUES_PER_GROUP, Limits
from rulesd.errors import ConfigError, InvalidInputError, Problem, SourceLocation
from rulesd.events import Reading
from rulesd.eventtime import AUTO, EventTime, check_time_format
from rulesd.rules.cache import RuleCache
from rulesd.rules.model import Responder
from rulesd.rules.patterns import compile_source_pattern, matches_every_text
from rulesd.rules.templates import not_a_template
from rulesd.sources.tail import file_kind
from rulesd.validation import format_path, validate_document

DEFAULT_ALERT_URL = "https://api.opsgenie.com/v2/alerts"
DEFAULT_STATE_DIR = "/var/lib/rulesd"
DEFAULT_STREAM = "rulesd:events"
API_KEY_ENV = "RULESD_OPSGENIE_API_KEY"
CREDENTIAL_NAME = "opsgenie-api-key"
Report = Callable[[tuple[str | int, ...], str], None]
# An environment variable as a shell writes it: $NAME or ${NAME}.
_VARIABLE = re.compile(r"\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


class SourceConfig(msgspec.Struct, frozen=True):
    """Where events come from (`type` and the keys of that type), and how its lines become
    events (`reading`: the part `rulesd replay --config` shares)."""

    type: str = "stdin"
    paths: tuple[str, ...] = ()
    reading: Reading = msgspec.field(default_factory=Reading)
    start_at: str = "end"
    max_line_bytes: int = 1_048_576
    units: tuple[str, ...] = ()
    matches: tuple[tuple[str, tuple[str, ...]], ...] = ()
    url: str | None = None  # redis_stream: the Redis holding the stream
    stream: str = DEFAULT_STREAM
    group: str = "rulesd"
    claim_idle: float = 10.0

    @property
    def name(self) -> str | None:
        """The source's name; None for a single `source:` without one."""
        return self.reading.source_name

    @property
    def label(self) -> str:
        """How logs and metrics name the source: its name, else its type."""
        return self.reading.source_name or self.type


class StateConfig(msgspec.Struct, frozen=True):
    """Where the durable state lives: `sqlite` in state_dir, or `redis` at `url`, shared by
    instances, this one's source positions kept under `instance`."""

    backend: str = "sqlite"
    url: str | None = None
    instance: str | None = None  # None: the host name and the state directory
    prefix: str = "rulesd:"


class ForwardConfig(msgspec.Struct, frozen=True):
    """`rulesd forward`: the Redis stream the sources' lines are appended to."""

    url: str
    stream: str = DEFAULT_STREAM
    batch_lines: int = 1000


@dataclass(frozen=True, slots=True)
class OpsgenieConfig:
    """How alerts reach OpsGenie. The inline key is kept out of repr()."""

    alert_url: str = DEFAULT_ALERT_URL
    api_key_file: str | None = None
    api_key: str | None = field(default=None, repr=False)
    recipients: tuple[Responder, ...] = ()
    source: str = "rulesd"
    timeout_s: float = 10.0
    max_age: float = 86400.0
    heartbeat: str | None = None


class Config(msgspec.Struct, frozen=True):
    """The whole daemon configuration."""

    path: str | None = None
    rules: tuple[str, ...] = ("rules",)
    sources: tuple[SourceConfig, ...] = (SourceConfig(),)
    time_field: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    opsgenie: OpsgenieConfig = OpsgenieConfig()
    metrics_listen: str | None = None
    limits: Limits = msgspec.field(default_factory=Limits)
    state: StateConfig = StateConfig()
    forward: ForwardConfig | None = None
    warnings: tuple[Problem, ...] = ()
    """What `rulesd check --config` prints as warnings and `rulesd run` logs at start."""
    locations: dict[str, SourceLocation] = msgspec.field(default_factory=dict)
    """Where settings that can fail only at start are written (`metrics.listen`, `state_dir`),
    so that the error points at the line."""

    def location(self, setting: str) -> SourceLocation:
        """Where `setting` is written; the config file itself if it is not."""
        return self.locations.get(setting) or SourceLocation(self.path or "config")

    @property
    def source(self) -> SourceConfig:
        """The first (usually the only) source."""
        return self.sources[0]

    @property
    def stream_source(self) -> SourceConfig | None:
        """The redis_stream source, in stream mode."""
        return next((s for s in self.sources if s.type == "redis_stream"), None)


def load_config(
    path: str, environ: Mapping[str, str] = os.environ, *, look: bool = False, cache: RuleCache | None = None
) -> Config:
    """Read, validate and resolve `path`; ConfigError lists every problem. With `look` (the
    commands that use the paths: check, run, forward), also what they name on disk now; with
    `cache`, its parsed document is kept there (see `_document`)."""
    try:
        doc = _document(path, cache)
    except InvalidInputError as exc:
        raise ConfigError([_variable_in_braces(p) or p for p in exc.problems]) from None
    if doc.value is None:
        doc.value = {}
    if not isinstance(doc.value, dict):
        raise ConfigError([*doc.problems, Problem(doc.locate(()), "the configuration must be a mapping of keys")])
    problems = sorted({*doc.problems, *validate_document(doc, "config")})
    if problems:
        raise ConfigError(problems, _rule_paths(_base(doc), doc.value))
    return _resolve(doc, doc.value, environ, look)


def _document(path: str, cache: RuleCache | None) -> Document:
    """The config's parsed document (its line marks too), read from `cache` by its bytes when
    they were parsed before without a problem: the daemon's warm start then imports no PyYAML
    (~13 ms, a third of it compiling a pattern the C parser never uses). Everything after the
    parse (the schema, the checks, the paths on disk) is done again from it, as from YAML. A
    document holding a secret is kept without it (`rulesd.config_secrets`)."""
    from rulesd.document import read_file

    # PyYAML is imported only where YAML is read.
    if cache is None:
        from rulesd.yamldoc import read_yaml

        return read_yaml(path, keep_going=True)
    from rulesd.rules.loader import cache_document, cached_document, document_key

    data = read_file(path)  # once: the keys and the document are of the same bytes
    key = document_key(data, CONFIG_DOCUMENT)
    doc = cached_document(cache, key, path, data, CONFIG_DOCUMENT)
    if doc is not None:
        return doc
    blanked_key = document_key(data, CONFIG_BLANKED)
    kept = cached_document(cache, blanked_key, path, data, CONFIG_BLANKED)
    doc = restored(kept, data) if kept is not None else None
    if doc is None:
        from rulesd.yamldoc import parse_yaml_bytes

        doc = parse_yaml_bytes(data, path, keep_going=True)
        # A problem is said from the YAML each time.
        if not doc.problems:
            if next(secrets(doc.value), None) is None:
                cache_document(cache, key, doc, CONFIG_DOCUMENT)
            elif (without := blanked(doc, data)) is not None:
                cache_document(cache, blanked_key, without, CONFIG_BLANKED)
    return doc


# The cache's kind for a parsed config: never taken for a rule file of the same bytes, whose
# cached document is known to be free of schema violations.
CONFIG_DOCUMENT = "config"
# ... and for one kept without its secrets (`rulesd.config_secrets`): the version says what its
# places mean, and changes with it, so that no other version reads them.
CONFIG_BLANKED = "config-blanked-1"


def _written(raw: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether the setting at `keys` is written in the config (a mapping's key, with a value)."""
    value: Any = raw
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return False
        value = value[key]
    return True


def _variable_in_braces(problem: Problem) -> Problem | None:
    """The syntax error a `${VAR}` makes in a flow mapping or list (`{path: ${LOG_DIR}/a.log}`:
    its brace ends the plain value), said as what it is, at the `$`: the variable check that
    explains it elsewhere never sees the file parsed. None for any other problem."""
    where = problem.location
    if not problem.message.startswith("YAML syntax error") or where.line < 1 or where.col < 2:
        return None
    try:
        with open(where.path, encoding="utf-8-sig") as fh:
            line = fh.read().splitlines()[where.line - 1]
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    found = _VARIABLE.match(line, where.col - 2)
    if found is None or not found[0].startswith("${"):
        return None
    message = (
        f"{found[0]}: environment variables are not expanded, and within {{...}} or [...] its brace is a "
        "YAML syntax error; write the path out"
    )
    return Problem(SourceLocation(where.path, where.line, where.col - 1), message)


def _base(doc: Document) -> str:
    """The directory relative paths in the config are taken from."""
    return os.path.dirname(os.path.abspath(doc.path))


def _rule_paths(base: str, raw: dict[str, Any]) -> tuple[str, ...] | None:
    """The rule paths `raw` names, made absolute; None if `rules` is malformed."""
    rules = raw.get("rules", ["rules"])
    rules = [rules] if isinstance(rules, str) else rules
    if not isinstance(rules, list) or not all(isinstance(p, str) and p for p in rules):
        return None
    return tuple(_absolute(base, p) for p in rules)


def _resolve(doc: Document, raw: dict[str, Any], environ: Mapping[str, str], look: bool) -> Config:
    base = _base(doc)
    problems: list[Problem] = []
    noted: list[Problem] = []  # warnings

    def report(keys: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(doc.locate(keys), f"{format_path(keys)}: {message}"))

    def warn(keys: tuple[str | int, ...], message: str) -> None:
        noted.append(Problem(doc.locate(keys), f"{format_path(keys)}: {message}", "warning"))

    rule_paths = _rule_paths(base, raw)
    assert rule_paths is not None  # the schema has checked `rules`
    _nul_in_paths(doc, raw, rule_paths)
    written_with_variables = _check_variables(raw, report)
    refused: set[str] = set()  # rule paths said to be missing or too large here: not looked at again
    if look:  # (a path written with a variable is said once)
        for keys, severity, message in path_findings(raw, functools.partial(_absolute, base), rule_paths):
            if keys not in written_with_variables:
                (report if severity == "error" else warn)(keys, message)
            if keys[0] == "rules" and severity == "error":
                refused.add(rule_paths[int(keys[1]) if len(keys) > 1 else 0])
    sources = _sources(raw, base, report)
    opsgenie = _opsgenie(raw.get("opsgenie") or {}, base, report)
    state_dir = raw.get("state_dir") or environ.get("STATE_DIRECTORY", "").split(":")[0]
    metrics = raw.get("metrics") or {}
    _check_listen(metrics.get("listen"), report)
    limits = raw.get("limits") or {}
    state = _state(raw.get("state") or {}, sources, report)
    forward = raw.get("forward")
    if forward:
        _check_redis_url(forward["url"], ("forward", "url"), report)
    if problems:  # the rules that are there are checked still; a missing one is said here once
        raise ConfigError(problems, tuple(p for p in rule_paths if p not in refused))
    for key, message in alert_url_warnings(opsgenie.alert_url, opsgenie.heartbeat):
        warn(("opsgenie", key), message)
    for keys, message in duration_warnings(raw, loopback=is_loopback(urlsplit(opsgenie.alert_url).hostname or "")):
        warn(keys, message)
    _opsgenie_warnings(opsgenie, warn)
    for message in recipient_typos((raw.get("opsgenie") or {}).get("recipients")):
        warn(("opsgenie", "recipients"), message)
    warnings = (*noted, *key_file_warnings(opsgenie.api_key_file))
    return Config(
        path=os.path.abspath(doc.path),
        rules=rule_paths,
        sources=sources,
        time_field=raw.get("time_field"),
        state_dir=_absolute(base, state_dir or DEFAULT_STATE_DIR),
        opsgenie=opsgenie,
        metrics_listen=metrics.get("listen"),
        locations={
            ".".join(map(str, keys)): doc.locate(keys)
            for keys in (("metrics", "listen"), ("state_dir",))
            if _written(raw, keys)
        },
        # int(): the schema lets an integer be written as 2000.0, which the engine would take
        # as a count to slice by, and fail on once a limit is reached (batch_lines: rulesd
        # forward's range() at its first batch).
        limits=Limits(
            int(limits.get("groups_per_rule", MAX_GROUPS_PER_RULE)),
            int(limits.get("groups", MAX_GROUPS)),
            int(limits.get("values_per_group", MAX_VALUES_PER_GROUP)),
        ),
        state=state,
        forward=ForwardConfig(
            forward["url"], forward.get("stream", DEFAULT_STREAM), int(forward.get("batch_lines", 1000))
        )
        if forward
        else None,
        warnings=warnings,
    )


def _check_listen(listen: str | None, report: Report) -> None:
    """The schema checks HOST:PORT's shape; the port must also be one a socket can bind."""
    if listen is not None and int(listen.rpartition(":")[2]) > 65535:
        report(("metrics", "listen"), f"{listen!r}: the port must be 0 to 65535")


def _absolute(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _check_variables(raw: dict[str, Any], report: Report) -> set[tuple[str | int, ...]]:
    """Report a path written with an environment variable (`${LOG_DIR}/app.log`): nothing in
    the configuration is expanded, so it would name a file or directory called `${LOG_DIR}`
    beside the config (waited for, or made, for good). The keys of those reported."""
    found_at: set[tuple[str | int, ...]] = set()
    for where, text in _path_places(raw):
        found = _VARIABLE.search(text)
        if found is None:
            continue
        hint = " (leave state_dir out to use $STATE_DIRECTORY, as systemd sets it)" if where == ("state_dir",) else ""
        report(where, f"{text!r}: environment variables such as {found[0]} are not expanded; write the path out{hint}")
        found_at.add(where)
    return found_at


def _path_places(raw: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each path the configuration names (rules, state_dir, api_key_file, file sources' paths),
    with its keys."""
    places: list[tuple[tuple[str | int, ...], Any]] = [
        (("rules",), raw.get("rules")),
        (("state_dir",), raw.get("state_dir")),
    ]
    places.append((("opsgenie", "api_key_file"), (raw.get("opsgenie") or {}).get("api_key_file")))
    places += [((*where, "path"), source.get("path")) for where, source in source_places(raw)]
    for keys, value in places:
        items = [(keys, value)] if not isinstance(value, list) else [((*keys, i), v) for i, v in enumerate(value)]
        yield from ((where, text) for where, text in items if isinstance(text, str))


def _nul_in_paths(doc: Document, raw: dict[str, Any], rule_paths: tuple[str, ...]) -> None:
    """ConfigError at each path holding a NUL character (`"/var/log/a\\0.log"`), which no file
    system's path can: every use of it (a stat, an open) would fail with a traceback. Said at
    once, before anything looks at the paths; the rule paths without one are checked still."""
    found = [(keys, text) for keys, text in _path_places(raw) if "\0" in text]
    if found:
        raise ConfigError(
            [Problem(doc.locate(k), f"{format_path(k)}: {t!r}: a path cannot hold a NUL character") for k, t in found],
            tuple(p for p in rule_paths if "\0" not in p),
        )


def _sources(raw: dict[str, Any], base: str, report: Report) -> tuple[SourceConfig, ...]:
    """`sources`, or the one `source` (default: stdin), each checked where it is written."""
    time_field = raw.get("time_field")
    if "sources" not in raw:
        return (_source(raw.get("source") or {"type": "stdin"}, ("source",), base, report, time_field),)
    if "source" in raw:
        report(("sources",), "give either source or sources, not both (sources replaces source)")
    sources = tuple(_source(item, ("sources", i), base, report, time_field) for i, item in enumerate(raw["sources"]))
    first: dict[str | None, int] = {}
    for i, source in enumerate(sources):
        if source.name in first:
            j = first[source.name]
            report(("sources", i, "name"), f"duplicate source name {source.name!r} (sources[{j}] has it too)")
        first.setdefault(source.name, i)
    stdin = [i for i, source in enumerate(sources) if source.type == "stdin"]
    for i in stdin[1:]:
        report(("sources", i, "type"), f"only one source can read stdin (sources[{stdin[0]}] does)")
    return sources


def _source(
    raw: dict[str, Any], where: tuple[str | int, ...], base: str, report: Report, time_field: str | None
) -> SourceConfig:
    kind = raw["type"]
    paths = raw.get("path", [])
    paths = [paths] if isinstance(paths, str) else paths
    if kind == "file" and not paths:
        report(where, "missing required key 'path' (the file or glob to tail)")
    if kind != "file" and paths:
        report((*where, "path"), f"a {kind} source takes no path")
    for key in ("units", "matches"):
        if kind != "journald" and key in raw:
            report((*where, key), f"'{key}' is only used with type: journald")
    for key in ("url", "stream", "group", "claim_idle"):
        if kind != "redis_stream" and key in raw:
            report((*where, key), f"'{key}' is only used with type: redis_stream")
    if kind == "redis_stream" and raw.get("url"):
        _check_redis_url(raw["url"], (*where, "url"), report)
    if kind == "redis_stream" and raw.get("format", "json") != "json":
        report((*where, "format"), "a redis_stream source holds JSON events (format: json)")
    return SourceConfig(
        type=kind,
        paths=tuple(_absolute(base, p) for p in paths),
        reading=_reading(raw, where, report, time_field),
        start_at=raw.get("start_at", "end"),
        max_line_bytes=int(raw.get("max_line_bytes", 1_048_576)),  # (written 1048576.0 too)
        units=tuple(raw.get("units", ())),
        matches=tuple((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in raw.get("matches", {}).items()),
        url=raw.get("url"),
        stream=raw.get("stream", DEFAULT_STREAM),
        group=raw.get("group", "rulesd"),
        claim_idle=_duration(raw, "claim_idle", "10s", where, report),
    )


def _duration(raw: dict[str, Any], key: str, default: str, where: tuple[str | int, ...], report: Report) -> float:
    """The duration at `key`: the schema lets by one too long to be a time (too many digits)."""
    try:
        return parse_duration(raw.get(key, default))
    except ValueError as exc:
        report((*where, key), str(exc))
        return parse_duration(default)


def _reading(raw: dict[str, Any], where: tuple[str | int, ...], report: Report, time_field: str | None) -> Reading:
    """How the source's lines become events: format, patterns, field types, time."""
    fmt, name = raw.get("format", "json"), raw.get("name")
    patterns = _pattern_list(raw, "pattern", where, report)
    ignores = _pattern_list(raw, "ignore_pattern", where, report)  # reported if one does not compile
    for i, text in enumerate(_texts(raw.get("ignore_pattern"))):
        if i in ignores and matches_every_text(text):  # (`.*`, `(debug)?`: lines drop before any rule)
            keys = (
                (*where, "ignore_pattern") if isinstance(raw["ignore_pattern"], str) else (*where, "ignore_pattern", i)
            )
            report(keys, f"{text!r} is found in every line (it matches an empty text): every line would be dropped")
    fields: dict[str, str] = raw.get("fields") or {}
    if fmt == "regex" and not raw.get("pattern"):
        report(where, "format: regex needs a 'pattern' with named groups")
    if fmt != "regex" and raw.get("pattern"):
        report((*where, "pattern"), "a pattern is only used with format: regex")
    if fmt == "json":
        for key in ("ignore_pattern", "fields"):
            if raw.get(key):
                report((*where, key), f"'{key}' is used with format text or regex (a JSON line is parsed whole)")
    groups = {group for pattern in patterns.values() for group in pattern.groupindex}
    for i, pattern in patterns.items():
        keys = (*where, "pattern") if isinstance(raw.get("pattern"), str) else (*where, "pattern", i)
        if fmt == "regex" and not pattern.groupindex:
            report(keys, "the pattern has no named groups (?P<name>...)")
        if name is not None and "source_name" in pattern.groupindex:
            report(keys, "the group name source_name is taken: it holds the source's name")
    available = groups | {"message"} if fmt == "regex" else {"message"}
    if fmt != "json":
        for field in fields:
            if field not in available:
                what = "no pattern has a group named" if fmt == "regex" else "format: text has only message, not"
                report((*where, "fields", field), f"{what} {field!r}")
    return Reading(
        format=fmt,
        patterns=_texts(raw.get("pattern")),
        ignore=_texts(raw.get("ignore_pattern")),
        fields=tuple(fields.items()),
        source_name=name,
        time=_event_time(raw, where, report, time_field),
    )


def _event_time(
    raw: dict[str, Any], where: tuple[str | int, ...], report: Report, default_field: str | None
) -> EventTime | None:
    field, fmt = raw.get("time_field") or default_field, raw.get("time_format", AUTO)
    problem = check_time_format(fmt)
    if problem is not None:
        report((*where, "time_format"), problem)
    elif field is None and "time_format" in raw:
        report((*where, "time_format"), "a time_format needs a time_field (of the source, or at the top level)")
    return EventTime(field, fmt) if field is not None else None


def _texts(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _pattern_list(raw: dict[str, Any], key: str, where: tuple[str | int, ...], report: Report) -> dict[int, Any]:
    """The patterns under `key` that compile, by their index; a report for each that does not."""
    value = raw.get(key)
    compiled: dict[int, Any] = {}
    for i, text in enumerate(_texts(value)):
        try:
            compiled[i] = compile_source_pattern(text)
        except ValueError as exc:
            report((*where, key) if isinstance(value, str) else (*where, key, i), str(exc))
    return compiled


def _state(raw: dict[str, Any], sources: tuple[SourceConfig, ...], report: Report) -> StateConfig:
    """`state`: SQLite, or Redis (which a redis_stream source needs, in the same Redis)."""
    backend = raw.get("backend", "sqlite")
    url = raw.get("url")
    streams = [(i, s) for i, s in enumerate(sources) if s.type == "redis_stream"]
    if streams:
        i, stream = streams[0]
        where: tuple[str | int, ...] = ("sources", i) if len(sources) > 1 else ("source",)
        if len(sources) > 1:
            report(where, "a redis_stream source is the only source of an instance (forward other sources into it)")
        if backend != "redis":
            report(where, "a redis_stream source needs state: {backend: redis} (in the same Redis)")
        elif url and stream.url and url != stream.url:
            report(
                ("state", "url"),
                "the stream and the state must be in the same Redis: state.url differs from the source's url",
            )
        url = url or stream.url
    if backend == "redis" and not url:
        report(("state",), "state: {backend: redis} needs a url (e.g. redis://state:6379/0)")
    if raw.get("url"):
        _check_redis_url(raw["url"], ("state", "url"), report)
    for key in ("url", "instance", "prefix"):
        if backend != "redis" and key in raw:
            report(("state", key), f"'{key}' is only used with backend: redis")
    return StateConfig(backend, url, raw.get("instance"), raw.get("prefix", "rulesd:"))


def _check_redis_url(url: str, keys: tuple[str | int, ...], report: Report) -> None:
    """What the Redis client would not parse, or would read otherwise than written (a database
    that is not a number is taken as 0): reported at the key, never with the URL (a password)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            report(keys, "a unix:// URL needs the socket's path (unix:///run/redis/redis.sock)")
        return
    try:
        _ = parts.port  # raises for what is not a port number
    except ValueError:
        report(keys, "the port is not a number from 0 to 65535 (redis://HOST:PORT/DB)")
    if not parts.hostname:
        report(keys, "the URL names no host (redis://HOST:PORT/DB)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        report(keys, "the database is not a number (redis://HOST:PORT/DB, DB from 0)")


def _opsgenie(raw: dict[str, Any], base: str, report: Report) -> OpsgenieConfig:
    url = raw.get("alert_url", DEFAULT_ALERT_URL)
    try:
        url = validate_alert_url(url)
    except ValueError as exc:
        report(("opsgenie", "alert_url"), str(exc))
    recipients: tuple[Responder, ...] = ()
    try:
        recipients = parse_recipients(raw.get("recipients"))
    except ValueError as exc:
        report(("opsgenie", "recipients"), str(exc))
    key_file = raw.get("api_key_file")
    if raw.get("heartbeat") is not None and not raw["heartbeat"].strip():  # it would ping /v2/heartbeats//ping
        report(("opsgenie", "heartbeat"), "a heartbeat name cannot be empty (null: no heartbeat)")
    if math.isnan(raw.get("timeout_s", 10)):  # (NaN is within the schema's bounds: it compares false with both)
        report(
            ("opsgenie", "timeout_s"),
            "expected a number of seconds, got .nan: a socket takes no such timeout, so every request would fail "
            "and no alert be delivered (the default is 10)",
        )
    return OpsgenieConfig(
        alert_url=url,
        api_key_file=_absolute(base, key_file) if key_file else None,
        api_key=raw.get("api_key"),
        recipients=recipients,
        source=raw.get("source", "rulesd"),
        timeout_s=float(raw.get("timeout_s", 10)),
        max_age=_duration(raw, "max_age", "24h", ("opsgenie",), report),
        heartbeat=raw.get("heartbeat"),
    )


def _opsgenie_warnings(cfg: OpsgenieConfig, warn: Report) -> None:
    """What is valid but likely not meant: an inline key `rulesd run` would refuse (never its
    value: a secret) or would never use."""
    problem = api_key_problem(cfg.api_key.strip()) if cfg.api_key is not None else None
    if problem is not None:
        warn(
            ("opsgenie", "api_key"),
            f"it {problem}: rulesd run will not use it; a key is one line of printable characters",
        )
    if cfg.api_key_file and cfg.api_key is not None:
        warn(("opsgenie", "api_key"), "not used: opsgenie.api_key_file is given, and the key is read from it first")
    for recipient in cfg.recipients:  # (as a rule's responders: see `not_a_template`)
        message = not_a_template(recipient.value, "a recipient")
        if message is not None:
            warn(("opsgenie", "recipients"), message)


def key_file_warnings(path: str | None) -> tuple[Problem, ...]:
    """Warnings naming the key file: group or others may read it (the key pages people), or
    `rulesd run` could not use it (missing, a directory, empty, not one line of printable
    characters). Warnings, so that a check where the key is not installed (CI) still passes."""
    if path is None:
        return ()
    try:
        _read_key_file(path, "opsgenie.api_key_file")  # missing, a directory, empty…: it says which
    except ConfigError as exc:
        if os.path.exists(path) and not os.access(path, os.R_OK):
            return ()  # another user than the daemon's may not read it: said when the daemon reads it
        end = "; rulesd run will not start (but with --dry-run)"
        return tuple(Problem(p.location, f"{p.message}{end}", "warning") for p in exc.problems)
    mode = os.stat(path).st_mode & 0o777
    if not mode & 0o044:
        return ()
    message = f"the API key file is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
    return (Problem(SourceLocation(path), message, "warning"),)


def resolve_api_key(cfg: OpsgenieConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The API key from, in order: api_key_file, $RULESD_OPSGENIE_API_KEY, the systemd
    credential `opsgenie-api-key`, the inline api_key. Whitespace is stripped."""
    if cfg.api_key_file:
        return _read_key_file(cfg.api_key_file, "opsgenie.api_key_file")
    if environ.get(API_KEY_ENV, "").strip():
        return _usable_key(environ[API_KEY_ENV].strip(), "opsgenie", f"${API_KEY_ENV}")
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if creds and os.path.exists(os.path.join(creds, CREDENTIAL_NAME)):
        return _read_key_file(os.path.join(creds, CREDENTIAL_NAME), f"the systemd credential {CREDENTIAL_NAME}")
    if cfg.api_key and cfg.api_key.strip():
        return _usable_key(cfg.api_key.strip(), "opsgenie", "opsgenie.api_key")
    raise ConfigError(
        [
            Problem(
                SourceLocation("opsgenie"),
                (
                    "no API key: set opsgenie.api_key_file, $RULESD_OPSGENIE_API_KEY, the systemd credential "
                    f"'{CREDENTIAL_NAME}' or opsgenie.api_key (or run with --dry-run)"
                ),
            )
        ]
    )


def _read_key_file(path: str, what: str) -> str:
    """The stripped key in `path`; a ConfigError names the file and `what` it is, never its contents."""
    try:
        # Non-blocking, then looked at: a FIFO (or a device) would wait for a writer, for good.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, encoding="utf-8") as fh:
            mode = os.fstat(fd).st_mode
            key = fh.read().strip() if stat.S_ISREG(mode) else ""
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    else:
        if key:
            return _usable_key(key, path, what)
        reason = "the file is empty" if stat.S_ISREG(mode) else f"it is {file_kind(mode)}, not a file"
    raise ConfigError([Problem(SourceLocation(path), f"cannot read the API key ({what}): {reason}")])


def _usable_key(key: str, where: str, what: str) -> str:
    """`key`, if it can be sent; else a ConfigError at `where` naming `what` it came from (a key
    the sender would refuse must stop the start, not pause the first page)."""
    problem = api_key_problem(key)
    if problem is None:
        return key
    message = f"cannot use the API key ({what}): it {problem}; a key is one line of printable characters"
    raise ConfigError([Problem(SourceLocation(where), message)])
