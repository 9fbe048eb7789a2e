"""The daemon configuration (`rulesd.yaml`): validated, then frozen.

Relative paths resolve against the config file's folder. Every error names the
key and `path:line:col`; `load_config` reports all of them at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rulesd.alerting.opsgenie import alert_url_warnings, validate_alert_url
from rulesd.alerting.payload import parse_recipients
from rulesd.durations import parse_duration
from rulesd.errors import ConfigError, InvalidInputError, Problem, SourceLocation
from rulesd.rules.model import Responder
from rulesd.rules.patterns import compile_source_pattern
from rulesd.validation import format_path, validate_document
from rulesd.yamldoc import Document, read_yaml

DEFAULT_ALERT_URL = "https://api.opsgenie.com/v2/alerts"
DEFAULT_STATE_DIR = "/var/lib/rulesd"
API_KEY_ENV = "RULESD_OPSGENIE_API_KEY"
CREDENTIAL_NAME = "opsgenie-api-key"


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where events come from and how lines become events."""

    type: str = "stdin"
    paths: tuple[str, ...] = ()
    format: str = "json"
    pattern: str | None = None
    start_at: str = "end"
    max_line_bytes: int = 1_048_576
    units: tuple[str, ...] = ()
    matches: tuple[tuple[str, tuple[str, ...]], ...] = ()


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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    path: str | None = None
    rules: tuple[str, ...] = ("rules",)
    source: SourceConfig = SourceConfig()
    time_field: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    opsgenie: OpsgenieConfig = OpsgenieConfig()
    metrics_listen: str | None = None
    warnings: tuple[Problem, ...] = ()
    """What `rulesd check --config` prints as warnings and `rulesd run` logs at start."""


def load_config(path: str, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and resolve `path`; ConfigError lists every problem."""
    try:
        doc = read_yaml(path, keep_going=True)
    except InvalidInputError as exc:
        raise ConfigError(list(exc.problems)) from None
    if doc.value is None:
        doc.value = {}
    if not isinstance(doc.value, dict):
        raise ConfigError([*doc.problems, Problem(doc.locate(()), "the configuration must be a mapping of keys")])
    problems = sorted({*doc.problems, *validate_document(doc, "config")})
    if problems:
        raise ConfigError(problems, _rule_paths(_base(doc), doc.value))
    return _resolve(doc, doc.value, environ)


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


def _resolve(doc: Document, raw: dict[str, Any], environ: Mapping[str, str]) -> Config:
    base = _base(doc)
    problems: list[Problem] = []

    def report(keys: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(doc.locate(keys), f"{format_path(keys)}: {message}"))

    rule_paths = _rule_paths(base, raw)
    assert rule_paths is not None  # the schema has checked `rules`
    source = _source(raw.get("source", {"type": "stdin"}), base, report)
    opsgenie = _opsgenie(raw.get("opsgenie") or {}, base, report)
    state_dir = raw.get("state_dir") or environ.get("STATE_DIRECTORY", "").split(":")[0]
    metrics = raw.get("metrics") or {}
    if problems:
        raise ConfigError(problems, rule_paths)
    warnings = tuple(
        Problem(doc.locate(("opsgenie", key)), f"opsgenie.{key}: {message}", "warning")
        for key, message in alert_url_warnings(opsgenie.alert_url, opsgenie.heartbeat)
    )
    return Config(
        path=os.path.abspath(doc.path),
        rules=rule_paths,
        source=source,
        time_field=raw.get("time_field"),
        state_dir=_absolute(base, state_dir or DEFAULT_STATE_DIR),
        opsgenie=opsgenie,
        metrics_listen=metrics.get("listen"),
        warnings=warnings,
    )


def _absolute(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _source(raw: dict[str, Any], base: str, report: Any) -> SourceConfig:
    kind, fmt, pattern = raw["type"], raw.get("format", "json"), raw.get("pattern")
    paths = raw.get("path", [])
    paths = [paths] if isinstance(paths, str) else paths
    if kind == "file" and not paths:
        report(("source",), "missing required key 'path' (the file or glob to tail)")
    if kind != "file" and paths:
        report(("source", "path"), f"a {kind} source takes no path")
    for key in ("units", "matches"):
        if kind != "journald" and key in raw:
            report(("source", key), f"'{key}' is only used with type: journald")
    if fmt == "regex":
        if not pattern:
            report(("source",), "format: regex needs a 'pattern' with named groups")
        else:
            try:
                if not compile_source_pattern(pattern).groupindex:
                    report(("source", "pattern"), "the pattern has no named groups (?P<name>...)")
            except ValueError as exc:
                report(("source", "pattern"), str(exc))
    elif pattern:
        report(("source", "pattern"), "a pattern is only used with format: regex")
    return SourceConfig(
        type=kind,
        paths=tuple(_absolute(base, p) for p in paths),
        format=fmt,
        pattern=pattern,
        start_at=raw.get("start_at", "end"),
        max_line_bytes=raw.get("max_line_bytes", 1_048_576),
        units=tuple(raw.get("units", ())),
        matches=tuple((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in raw.get("matches", {}).items()),
    )


def _opsgenie(raw: dict[str, Any], base: str, report: Any) -> OpsgenieConfig:
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
    return OpsgenieConfig(
        alert_url=url,
        api_key_file=_absolute(base, key_file) if key_file else None,
        api_key=raw.get("api_key"),
        recipients=recipients,
        source=raw.get("source", "rulesd"),
        timeout_s=float(raw.get("timeout_s", 10)),
        max_age=parse_duration(raw.get("max_age", "24h")),
        heartbeat=raw.get("heartbeat"),
    )


def resolve_api_key(cfg: OpsgenieConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The API key from, in order: api_key_file, $RULESD_OPSGENIE_API_KEY, the systemd
    credential `opsgenie-api-key`, the inline api_key. Whitespace is stripped."""
    if cfg.api_key_file:
        return _read_key_file(cfg.api_key_file, "opsgenie.api_key_file")
    if environ.get(API_KEY_ENV, "").strip():
        return environ[API_KEY_ENV].strip()
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if creds and os.path.exists(os.path.join(creds, CREDENTIAL_NAME)):
        return _read_key_file(os.path.join(creds, CREDENTIAL_NAME), f"the systemd credential {CREDENTIAL_NAME}")
    if cfg.api_key and cfg.api_key.strip():
        return cfg.api_key.strip()
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
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    else:
        if key:
            return key
        reason = "the file is empty"
    raise ConfigError([Problem(SourceLocation(path), f"cannot read the API key ({what}): {reason}")])
