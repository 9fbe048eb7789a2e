"""The `rulesd` command line: parses arguments, calls one function, maps errors to exit codes."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast

import msgspec
import orjson

from rulesd import __version__, collector, loggers, output, printable
from rulesd.alerting.alias import joined_names
from rulesd.alerting.payload import AlertSettings, closed_by
from rulesd.deferred_regex import when_used
from rulesd.engine.core import Limits
from rulesd.errors import ConfigError, InvalidInputError, Problem, RuleError, RulesdError
from rulesd.events import JSON_PARSER, InvalidEvent, Parser, parse_json, parse_mended
from rulesd.eventtime import AUTO, EventTime
from rulesd.replay import ReplayedAlert, ReplaySummary, replay, summary_text
from rulesd.rules import generated_code
from rulesd.rules.cache import RuleCache
from rulesd.rules.loader import (
    TEST_SUFFIXES,
    check_paths,
    default_rule_paths,
    discover_test_files,
    rule_sources,
)
from rulesd.rules.model import RuleSet, rule_hint
from rulesd.sources.lines import MAX_LINE_BYTES
from rulesd.validation import load_schema

# What only some commands use is imported by them (explain, test, state, outbox, a --config
# source's parser): `check` and `replay` start sooner without it.
if TYPE_CHECKING:
    import logging

    from rulesd.config import Config, SourceConfig
    from rulesd.daemon import Daemon
    from rulesd.explain import Explainer
    from rulesd.state import Outbox
    from rulesd.state_view import WrittenStep

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _log() -> logging.Logger:
    return loggers.logger("rulesd")


def load_config(path: str, *, look: bool = False, cache: RuleCache | None = None) -> Config:
    """The daemon config, imported when a command needs one: it brings in the HTTP client,
    which `check`, `replay` and `test` without `--config` do without (shorter start-up).
    `look`: also what its paths name on disk (for the commands that use them); `cache`: where
    its parsed document is kept."""
    from rulesd.config import load_config as load

    return load(path, look=look, cache=cache)


def _config_cache(dry_run: bool, environ: Mapping[str, str]) -> RuleCache | None:
    """Where `rulesd run` keeps its parsed config. The config names the state directory, so
    the daemon cannot look there first: it uses systemd's `$STATE_DIRECTORY` (its own, private
    directory: `StateDirectory=`), else `$RULESD_CACHE_DIR` if set, else none; a dry run the
    user's cache, as for its rules."""
    if dry_run:
        return RuleCache.for_user(environ)
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if os.path.isabs(state):
        return RuleCache.in_state_dir(state)
    return RuleCache.for_user(environ) if "RULESD_CACHE_DIR" in environ else None


DEFAULT_CONFIG = "/etc/rulesd/rulesd.yaml"
SCHEMAS = ("rule", "config", "test")
LOG_LEVEL_HELP = "the least severe log records to write (default info)"
LOG_FORMAT_HELP = "log records as text lines or JSON objects (default text)"
DESCRIPTION = """\
rulesd follows a log or event stream, evaluates YAML trigger rules against every event and
pages through OpsGenie (or Jira Service Management) when rules fire, naming the rules that
fired. Check rules before deploying them with `rulesd check`, test them with `rulesd test`,
try them on recorded events with `rulesd replay`, and run the daemon with `rulesd run`."""
EPILOG = "Run `rulesd COMMAND --help` for the options of a command."


@functools.cache
def _help_width() -> int:
    """What argparse's formatter would work out (`shutil.get_terminal_size`, less 2): $COLUMNS,
    else the terminal's width, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized once per process: argparse makes one for every option it is
    given (to check its help), and each would import shutil and ask the terminal again."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)


class _RawDescriptionFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help keeps its description's line breaks."""


class _ArgumentParser(argparse.ArgumentParser):
    """An argument parser (and its subcommands' parsers) with the sized formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


class _Deferred:
    """A subcommand's parser, made (with its options) only when argparse hands it the command
    line: a command runs one subcommand, and making the other nine, with their options, was
    ~2.5 ms of every start. Whatever argparse asks of it is asked of the parser it makes."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._options: Callable[[argparse.ArgumentParser], None] | None = None
        self._made: argparse.ArgumentParser | None = None

    def __getattr__(self, name: str) -> Any:  # (only for what __init__ did not set)
        if name in ("_kwargs", "_options", "_made"):  # (a copy made without __init__: no recursion)
            raise AttributeError(name)
        if self._made is None:
            self._made = _ArgumentParser(**self._kwargs)
            if self._options is not None:
                self._options(self._made)
        return getattr(self._made, name)


def _parser(*, deferred: bool = False) -> argparse.ArgumentParser:
    """The command line; `deferred`: each subcommand's parser made only when it is used (see
    `_Deferred`), for parsing alone (completion and the man page read every option)."""
    # Subcommands accept the logging options too; SUPPRESS keeps their defaults from
    # overwriting a value given before the subcommand.
    common = _ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"], help=LOG_LEVEL_HELP
    )
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["text", "json"], help=LOG_FORMAT_HELP)
    parser = _ArgumentParser(
        prog="rulesd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_RawDescriptionFormatter,
    )
    # Separate actions from `common`'s: argparse shares parent actions, defaults included.
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help=LOG_LEVEL_HELP
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help=LOG_FORMAT_HELP)
    parser.add_argument("--version", action="version", version=f"rulesd {__version__}")
    # (a _Deferred stands in for an ArgumentParser: it is one once argparse asks anything of it)
    made_by = cast("type[argparse.ArgumentParser]", _Deferred) if deferred else _ArgumentParser
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=made_by)
    for name, help_text, options in _COMMANDS:
        made = sub.add_parser(name, parents=[common], help=help_text)
        if isinstance(made, _Deferred):
            made._options = functools.partial(options, common=common)
        else:
            options(made, common=common)
    return parser


def _run_options(run: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"the configuration (default {DEFAULT_CONFIG})"
    )
    run.add_argument("--dry-run", action="store_true", help="print alert payloads instead of sending them")


def _check_options(check: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    check.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="rule files and directories (default: the config's rules, else ./rules)",
    )
    check.add_argument("--config", metavar="FILE", help="also validate this daemon configuration")
    check.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (path:line:col: error: message), a JSON array, or GitHub Actions annotations",
    )


def _forward_options(forward: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    forward.add_argument("--config", metavar="FILE", required=True, help="the configuration (its sources and forward:)")


def _outbox_actions(outbox: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    _outbox_options(outbox, defaults=True)
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    # The options may follow the action too (`rulesd outbox list --config F --format json`).
    after = _ArgumentParser(add_help=False)
    _outbox_options(after, defaults=False)
    actions.add_parser("list", parents=[common, after], help="pending, paused and dead-lettered alerts")
    show = actions.add_parser("show", parents=[common, after], help="one alert's payload and attempts")
    show.add_argument("id", type=int, metavar="ID", help="the id `rulesd outbox list` shows")
    actions.add_parser("retry-dead", parents=[common, after], help="requeue the dead-lettered alerts")


def _test_options(test: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    test.add_argument(
        "files", nargs="+", metavar="TESTFILE", help="rule test files (*.test.yaml), or directories to search for them"
    )
    test.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")


# A field path, as the configuration's time_field takes one (its schema's pattern): compiled for a
# `--time-field` given.
_FIELD_PATH = when_used(r"[^.{}]+(?:\.[^.{}]+)*")


def _field_path(text: str) -> str:
    """`--time-field`'s value, refused as the configuration's time_field is: `a..b` or an empty
    text named no field, and every event was evaluated as untimed, said only in the summary."""
    if _FIELD_PATH().fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a field path is one or more non-empty names joined by dots (e.g. ts or meta.time)"
        )
    return text


def _replay_options(rep: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    rep.add_argument("--rules", action="append", metavar="PATH", help="rule files or directories (repeatable)")
    rep.add_argument(
        "--config",
        metavar="FILE",
        help="take rules, recipients and how the source reads lines (format, patterns, field types, time) from it",
    )
    rep.add_argument(
        "--source", metavar="NAME", help="with --config: the source to read the lines as (needed with several)"
    )
    rep.add_argument(
        "--time-field", type=_field_path, metavar="FIELD", help="the event field that holds the event's time"
    )
    rep.add_argument("--format", choices=["text", "json"], default="text", help="readable lines, or payloads as JSON")
    rep.add_argument(
        "events", metavar="EVENTS_FILE", help="lines as the source reads them (default: JSON lines), or - for stdin"
    )


def _explain_options(explain: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    explain.add_argument(
        "event", nargs="?", metavar="EVENT_JSON", help="the event, a JSON object; - reads it from standard input"
    )
    explain.add_argument(
        "--rules",
        action="append",
        metavar="PATH",
        help="rule files or directories (repeatable; default: the config's rules, else ./rules)",
    )
    explain.add_argument(
        "--config", metavar="FILE", help="take the rules, and with --events how the source reads lines, from it"
    )
    explain.add_argument("--rule", metavar="NAME", help="explain this rule only")
    explain.add_argument(
        "--events", metavar="FILE", help="explain a line of this file, with the state that the lines before it build"
    )
    explain.add_argument("--line", type=int, metavar="N", help="with --events: the line to explain (1 is the first)")
    explain.add_argument(
        "--source", metavar="NAME", help="with --config and --events: the source to read the lines as (with several)"
    )
    explain.add_argument(
        "--time-field",
        type=_field_path,
        metavar="FIELD",
        help="with --events: the event field that holds the event's time",
    )


def _state_options(state: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    state.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the daemon configuration, whose state_dir holds the state (default {DEFAULT_CONFIG})",
    )
    state.add_argument("--rule", metavar="NAME", help="this rule only")
    state.add_argument("--format", choices=["text", "json"], default="text", help="readable lines, or one JSON object")


def _schema_options(schema: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    schema.add_argument("which", nargs="?", choices=SCHEMAS, help="rule (the default when printing), config or test")
    schema.add_argument(
        "--write", metavar="DIR", help="write rulesd-{rule,config,test}.schema.json (or only WHICH) into DIR"
    )


def _completion_options(completion: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    from rulesd.completion import SHELLS

    completion.add_argument("shell", choices=SHELLS, help="the shell to complete for")


# Each subcommand, in the order `rulesd --help` lists them: its name, its help, and what adds its options.
_COMMANDS: tuple[tuple[str, str, Callable[..., None]], ...] = (
    ("run", "run the daemon (in the foreground)", _run_options),
    ("check", "validate rule files and directories", _check_options),
    ("forward", "tail the configured sources into a Redis stream", _forward_options),
    ("outbox", "show or requeue queued alerts", _outbox_actions),
    ("test", "run rule unit tests", _test_options),
    ("replay", "evaluate rules over a file of events, offline", _replay_options),
    ("explain", "why an event does or does not match each rule, and whether it fires", _explain_options),
    ("state", "live per-group state of the rules, from the state database", _state_options),
    ("schema", "print a JSON Schema, or write them as files", _schema_options),
    ("completion", "print a shell completion script", _completion_options),
)


def build_parser() -> argparse.ArgumentParser:
    """The `rulesd` command line; shell completion and the man page are generated from it."""
    parser = _parser()
    from rulesd.completion import enable_rule_name_completion

    enable_rule_name_completion(parser, DEFAULT_CONFIG)
    return parser


def _outbox_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--config and --format for `rulesd outbox`; after the action without defaults, so that an
    option given before the action is not overwritten."""
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG if defaults else argparse.SUPPRESS,
        metavar="FILE",
        help=f"the daemon configuration, whose state_dir holds the outbox (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--format",
        choices=["text", "json"],
        default="text" if defaults else argparse.SUPPRESS,
        help="readable lines, or JSON (list: an array of objects; show: one object)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rulesd` command; returns the exit status."""
    if "_ARGCOMPLETE" in os.environ:  # a TAB from the completion script (only then is argcomplete needed)
        import argcomplete

        parser = build_parser()

        # Answers the TAB, then exits; options are offered once `-` is typed.
        argcomplete.autocomplete(parser, always_complete_options=False)
    args = _parser(deferred=True).parse_args(argv)
    # Set up when first used by `replay` and `check`, whose modules log only through `loggers`
    # (with --config, the config's modules and libraries are imported: set up at once).
    loggers.configure(args.log_level, args.log_format, deferred=args.command in ("replay", "check") and not args.config)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "forward": cmd_forward,
        "outbox": cmd_outbox,
        "check": cmd_check,
        "test": cmd_test,
        "replay": cmd_replay,
        "explain": cmd_explain,
        "state": cmd_state,
        "schema": cmd_schema,
        "completion": cmd_completion,
    }
    if args.command not in ("replay", "check", "run"):  # these resume once they have built what they keep
        collector.resume()
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        _print_problems(exc.problems, sys.stderr)
        return EXIT_USAGE
    except InvalidInputError as exc:
        _print_problems(exc.problems, sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        output.discard(sys.stdout)
        return EXIT_OK  # `rulesd replay ... | head` is not an error
    except output.OutputError as exc:
        _log().error("%s", exc)
        return EXIT_FAIL
    except OSError as exc:  # what no command said itself (`rulesd check > file` on a full disk)
        _log().debug("where it was raised", exc_info=True)
        _log().error("%s", exc)
        output.flush_or_discard(sys.stdout)
        return EXIT_FAIL
    finally:
        generated_code.release()  # (an in-process caller's thread records nothing for the set gone)
        loggers.drop_deferred()


def _print_problems(problems: Sequence[Problem], stream: TextIO) -> None:
    for problem in problems:
        print(problem, file=stream)


def _load_rules(paths: Sequence[str], cache: RuleCache | None) -> RuleSet:
    """The rule set of `paths`, its warnings said as `rulesd check` says them (on standard
    error: standard output is the command's); RuleError with every problem if it has errors."""
    # (not a `daemon`: a database of joined texts not in the cache is compiled when a replay has
    # scanned enough blocks to gain from it; a short one never pays for it)
    result = check_paths(paths, cache)
    if result.ruleset is None:
        raise RuleError(list(dict.fromkeys(result.problems)))
    _print_warnings(result.problems)
    return result.ruleset


def _print_warnings(problems: Sequence[Problem]) -> None:
    """The warnings among `problems`, each once, on standard error."""
    _print_problems(list(dict.fromkeys(p for p in problems if p.severity == "warning")), sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    """`rulesd check`: every problem in GCC style (or JSON), then a summary."""
    config_problems: list[Problem] = []
    limits = None  # the configuration's state limits, when it loaded
    paths: list[str] = args.paths or default_rule_paths()
    if args.config:
        try:
            config = load_config(args.config, look=True)
            config_problems, limits = list(config.warnings), config.limits
            paths = args.paths or list(config.rules)
        except ConfigError as exc:  # still check the rules it names, if those could be read
            config_problems = list(exc.problems)
            paths = args.paths or list(exc.rules or ())
    # A rule test file named on the command line is checked as a test file, not as rules.
    tests = [p for p in paths if p.endswith(TEST_SUFFIXES) and os.path.isfile(p)]
    rule_paths = [p for p in paths if p not in tests]
    cache = RuleCache.for_user(os.environ)
    code_key = generated_code.code_key(rule_paths)
    generated_code.load(cache, code_key)  # (the code the last load of these rule files compiled)
    result = check_paths(rule_paths, cache)
    if result.ruleset is not None:  # (a set with errors would put part of its code in the whole set's place)
        generated_code.keep(cache, code_key)
    if limits is not None and result.ruleset is not None:
        from rulesd.engine.limit_checks import limit_warnings

        config_problems += limit_warnings(result.ruleset, limits)
    test_problems = []
    if tests:
        from rulesd.ruletest import CheckedRules, check_test_file

        checked = CheckedRules(cache)  # (test files naming the same rule files check them once)
        test_problems = [problem for path in tests for problem in check_test_file(path, checked)]
    problems = sorted([*config_problems, *result.problems, *test_problems])
    errors = [p for p in problems if p.severity == "error"]
    if args.format == "json":
        print(json.dumps([p.to_json() for p in problems], indent=2))
    else:
        if args.format == "github":
            from rulesd.annotations import github_annotation

            workdir = os.getcwd()
            print("\n".join(github_annotation(p, workdir) for p in problems), end="\n" if problems else "")
        else:
            _print_problems(problems, sys.stdout)
        rules = len(result.ruleset.rules) if result.ruleset else 0
        verdict = "OK" if not errors else "FAILED"
        config_note = f"config {args.config}, " if args.config else ""
        tests_note = f"{len(tests)} rule test file(s) (run them with rulesd test), " if tests else ""
        print(
            f"{verdict}: {config_note}{len(result.files)} file(s), {rules} rule(s), {tests_note}"
            f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)"
        )
    return EXIT_OK if not errors else EXIT_FAIL


def cmd_test(args: argparse.Namespace) -> int:
    """`rulesd test`: run rule unit tests, report each failure with expected and actual."""
    from rulesd.atomic_file import write_atomically
    from rulesd.junit import RuleTestFile, junit_xml
    from rulesd.ruletest import CheckedRules, WrittenRules, run_test_files

    files, found = discover_test_files(args.files)  # (a directory without tests: an error of its own)
    warnings = [p for p in found if p.severity != "error"]
    results = [RuleTestFile(p.location.path, (), (p,)) for p in found if p.severity == "error"]
    cache = RuleCache.for_user(os.environ)  # (test files naming one rule set load it from there)
    written = WrittenRules(cache)  # the rule files as written, read once for all the test files
    checked = CheckedRules(cache)  # and checked, once for the test files that share them
    for path in files:  # one at a time, so that JUnit can say which file each problem stopped
        file_outcomes, file_problems = run_test_files([path], written, checked)
        warnings += [p for p in file_problems if p.severity != "error"]  # said, but they fail nothing
        errors = tuple(p for p in file_problems if p.severity == "error")
        results.append(RuleTestFile(path, tuple(file_outcomes), errors))
    outcomes = [o for r in results for o in r.outcomes]
    problems = [p for r in results for p in r.problems]
    # Test files that share rule files share their warnings: each is said once.
    warnings = list(dict.fromkeys(warnings))
    _print_problems([*warnings, *problems], sys.stdout)
    for outcome in outcomes:
        if outcome.passed:
            print(f"PASS {outcome.location}: {outcome.name}")
        else:
            print(f"FAIL {outcome.location}: {outcome.name}")
            print("    " + outcome.report.replace("\n", "\n    "))
    failed = sum(not o.passed for o in outcomes)
    said = f", {len(warnings)} warning(s)" if warnings else ""
    print(f"rule tests: {len(outcomes) - failed} passed, {failed} failed, {len(problems)} invalid{said}")
    if args.junit:
        try:
            # Whole or not at all: a run killed mid-write (a CI timeout) or a full disk leaves the
            # report before it, never a truncated XML that CI fails to parse.
            write_atomically(args.junit, junit_xml(results))
        except OSError as exc:
            print(f"{args.junit}: error: cannot write the JUnit report: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK if not failed and not problems else EXIT_FAIL


def cmd_replay(args: argparse.Namespace) -> int:
    """`rulesd replay`: print every alert that would be sent, then a summary."""
    settings, rule_paths, reading, parser = AlertSettings(), args.rules, None, JSON_PARSER
    max_line_bytes = MAX_LINE_BYTES  # the sources' default: a line of any length is never read whole
    limits = Limits()
    if args.source and not args.config:
        print("rulesd replay: --source needs --config", file=sys.stderr)
        return EXIT_USAGE
    if args.config:
        config = load_config(args.config)
        settings = AlertSettings(config.opsgenie.source, config.opsgenie.recipients)
        rule_paths = rule_paths or list(config.rules)
        limits = config.limits  # the daemon's: the groups it forgets, and the alerts that closes
        source = _replayed_source(config, args.source, args.time_field, "replay")
        if source is None:
            return EXIT_USAGE
        from rulesd.sources.parsers import source_parser

        reading, parser, max_line_bytes = source.reading, source_parser(source), source.max_line_bytes
    if not rule_paths:
        print("rulesd replay: give --rules PATH or --config FILE", file=sys.stderr)
        return EXIT_USAGE
    cache = RuleCache.for_user(os.environ)
    code_key = generated_code.code_key(rule_paths)
    generated_code.load(cache, code_key)  # (the code the last replay of these rule files compiled)
    ruleset = _load_rules(rule_paths, cache)
    as_json = args.format == "json"
    out = sys.stdout
    per_line = reading is None or reading.format == "json"  # else the summary shows samples

    def on_invalid(line: int, reason: str) -> None:
        if per_line:
            _log().warning("%s:%d: skipped: %s", args.events, line, reason)

    # A block's alerts are written at once: with unbuffered output (`python -u`,
    # PYTHONUNBUFFERED, as many containers set) each write is a system call.
    pending: list[str] = []

    def write_pending() -> None:
        if pending:
            output.write(out, "".join(pending))
            pending.clear()

    def block_done() -> None:
        collector.resume()  # the first block judged: the rule set and its engine are built
        generated_code.keep(cache, code_key)  # (and their code written: kept if compiled anew)
        write_pending()

    stream = _open_events(args.events)
    if stream is None:
        return EXIT_USAGE
    with stream:
        try:
            for item in replay(
                ruleset,
                stream,
                name=printable.path_text(args.events),
                settings=settings,
                parser=parser,
                time_field=None if args.config else args.time_field,
                max_line_bytes=max_line_bytes,
                limits=limits,
                on_invalid=on_invalid,
                block_done=block_done,
            ):
                if isinstance(item, ReplayedAlert):
                    pending.append(_alert_json(item) if as_json else _alert_line(item))
                elif isinstance(item, ReplaySummary):
                    if as_json:
                        print(summary_text(item, reading), file=sys.stderr)
                    else:
                        output.write(out, summary_text(item, reading) + "\n")
        except KeyboardInterrupt:
            write_pending()  # what was found before Ctrl-C is shown, as when alerts were written one by one
            raise
    generated_code.keep(cache, code_key)  # (no block judged: the engine's code alone)
    return EXIT_OK


def _replayed_source(config: Config, name: str | None, time_field: str | None, command: str) -> SourceConfig | None:
    """The source of `config` whose reading `rulesd COMMAND` uses: the one named, or the only
    one; with `time_field`, that field read in the source's time format. None (said why): none."""
    names = ", ".join(s.label for s in config.sources)
    if name is None:
        if len(config.sources) == 1:
            return _with_time_field(config.sources[0], time_field)
        count = len(config.sources)
        print(
            f"rulesd {command}: the configuration has {count} sources; pick one with --source ({names})",
            file=sys.stderr,
        )
        return None
    found = next((s for s in config.sources if s.name == name), None)
    if found is None:
        print(f"rulesd {command}: no source named {name!r} in {config.path} (sources: {names})", file=sys.stderr)
        return None
    return _with_time_field(found, time_field)


def _with_time_field(source: SourceConfig, time_field: str | None) -> SourceConfig:
    if not time_field:
        return source
    time = EventTime(time_field, source.reading.time.format if source.reading.time else AUTO)
    return msgspec.structs.replace(source, reading=msgspec.structs.replace(source.reading, time=time))


def _alert_json(alert: ReplayedAlert) -> str:
    if alert.close is not None:
        # Why each rule let go, as the text line and the close's note say, one per rule.
        reasons = [why or RECOVERED for why in alert.alert.reasons] or [RECOVERED] * len(alert.rules)
        line = {"close": alert.close, "rules": list(alert.rules), "reasons": reasons}
        return orjson.dumps(line).decode() + "\n"
    return orjson.dumps(alert.payload).decode() + "\n"


RECOVERED = "recovered"  # a close's reason in replay's JSON where its group recovered (the note says nothing)


def _alert_line(alert: ReplayedAlert) -> str:
    where = f"line {alert.line}" if alert.line else "expected group"
    found = alert.alert
    if found.close is not None:
        closed = ", ".join(closed_by(found.rules, found.reasons))  # why, as the close's note says
        return f"{where}: close [{closed}] (alias: {printable.one_line(found.close)})\n"
    # Printed as they are: the payload's message and alias hold no control character, each
    # made by `one_line` or taken because `isprintable()` found none (`payload.message`,
    # `alias.bounded`), and a rule's name is letters, digits and `_.-` alone.
    priority, message, alias = found.headline()
    # The names joined once per combination of rules (~40 names an alert at 1,000 held-out rules).
    return f"{where}: {priority} [{joined_names(found.fired)}] {message}  (alias: {alias})\n"


def cmd_explain(args: argparse.Namespace) -> int:
    """`rulesd explain`: whether an event matches each rule, the first failing condition where
    it does not and, for a line of an events file, whether it fires."""
    from rulesd.explain import Explainer, explanation_lines, select

    problem = _explain_usage(args)
    if problem is not None:
        print(f"rulesd explain: {problem}", file=sys.stderr)
        return EXIT_USAGE
    rule_paths, parser, max_line_bytes, limits = args.rules, JSON_PARSER, MAX_LINE_BYTES, Limits()
    if args.config:
        config = load_config(args.config)
        rule_paths = rule_paths or list(config.rules)
        limits = config.limits  # as replay --config: the groups the daemon forgets
        if args.events:
            source = _replayed_source(config, args.source, args.time_field, "explain")
            if source is None:
                return EXIT_USAGE
            from rulesd.sources.parsers import source_parser

            parser, max_line_bytes = source_parser(source), source.max_line_bytes
    cache = RuleCache.for_user(os.environ)
    rule_paths = rule_paths or default_rule_paths()
    code_key = generated_code.code_key(rule_paths)
    generated_code.load(cache, code_key)  # (as replay: the code the last load of these rule files compiled)
    ruleset = _load_rules(rule_paths, cache)
    rules = select(ruleset.rules, args.rule)
    if not rules:
        print(f"rulesd explain: {unknown_rule(args.rule, [r.name for r in ruleset.rules])}", file=sys.stderr)
        return EXIT_USAGE
    explainer = Explainer(rules, rule_sources(rules, cache))
    if args.events:
        status = _explain_line(args, ruleset, explainer, parser, max_line_bytes, limits)
        generated_code.keep(cache, code_key)  # (with the engine's, which judged the line)
        return status
    generated_code.keep(cache, code_key)
    if args.event == "-" and sys.stdin is None:  # started with `<&-`
        print("-: error: cannot read the event: standard input is closed", file=sys.stderr)
        return EXIT_USAGE
    # The argument's own bytes (os.fsencode: not UTF-8 ones too), read as a line of events is.
    line = sys.stdin.buffer.read() if args.event == "-" else os.fsencode(args.event)
    try:
        event = parse_json(line)
    except InvalidEvent as exc:
        event = parse_mended(parse_json, line)  # a lone surrogate's escape, as replay reads it
        if event is None:
            print(f"rulesd explain: the event is {exc}", file=sys.stderr)
            return EXIT_USAGE
    for explanation in explainer.explain(event):
        print(printable.lines("\n".join(explanation_lines(explanation))))
    return EXIT_OK


def _explain_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with how explain's arguments go together, if anything."""
    if args.events is not None and args.event is not None:
        return "give either EVENT_JSON or --events FILE --line N, not both"
    if args.events is None and args.event is None:
        return "give the event (EVENT_JSON, or - for standard input) or --events FILE --line N"
    if (args.events is None) != (args.line is None):
        return "--events FILE and --line N go together"
    if args.line is not None and args.line < 1:
        return f"--line {args.line}: lines are numbered from 1"
    if args.events is None and (args.source or args.time_field):
        return "--source and --time-field are for --events"
    if args.source and not args.config:
        return "--source needs --config"
    return None


def _open_events(path: str) -> BinaryIO | None:
    """The events file (`-`: standard input), or None when it cannot be read (said why)."""
    if path == "-" and sys.stdin is None:  # started with `<&-`
        print("-: error: cannot read events: standard input is closed", file=sys.stderr)
        return None
    try:
        return sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        print(f"{path}: error: cannot read events: {exc.strerror}", file=sys.stderr)
        return None


def _explain_line(
    args: argparse.Namespace,
    ruleset: RuleSet,
    explainer: Explainer,
    parser: Parser,
    max_line_bytes: int,
    limits: Limits,
) -> int:
    from rulesd.explain_line import LineError, explain_line, explained_line_text

    stream = _open_events(args.events)
    if stream is None:
        return EXIT_USAGE
    with stream:
        try:
            explained = explain_line(
                ruleset,
                explainer,
                stream,
                args.line,
                name=printable.path_text(args.events),
                parser=parser,
                time_field=None if args.config else args.time_field,
                max_line_bytes=max_line_bytes,
                limits=limits,
            )
        except LineError as exc:
            print(f"rulesd explain: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(printable.lines("\n".join(explained_line_text(explained, printable.path_text(args.events)))))
    return EXIT_OK


def unknown_rule(name: str, names: Sequence[str]) -> str:
    """`no rule named 'x'; did you mean 'y'?`."""
    return f"no rule named {name!r}{rule_hint(name, names)}"


def cmd_state(args: argparse.Namespace) -> int:
    """`rulesd state`: the engine's saved per-group state, read beside a running daemon."""
    import sqlite3

    from rulesd.daemon import STATE_FILE
    from rulesd.daemon.build import state_reader
    from rulesd.jsontext import indented_json
    from rulesd.state_view import state_view, view_json, view_text

    config = load_config(args.config)
    result = check_paths(config.rules, RuleCache.for_user(os.environ))
    _print_warnings(result.problems)
    if result.ruleset is None:
        _log().warning(
            "the rule files have %d error(s) (rulesd check): the state is shown as saved", len(result.errors)
        )
    if config.state.backend == "redis":  # (not its URL: it may hold a password)
        where = f"the shared state in Redis (prefix {config.state.prefix})"
    else:
        where = os.path.join(config.state_dir, STATE_FILE)
    now = time.time()
    try:
        store = state_reader(config)
        saved = store.load_engine_state() if store is not None else None
    except (sqlite3.Error, RulesdError) as exc:
        text = str(exc)
        said = text.removeprefix(f"{where}: ") if text.startswith(where) else f"cannot read the state: {text}"
        print(f"{where}: error: {said}", file=sys.stderr)  # (a StateError names the database itself)
        return EXIT_FAIL
    names = {r.name for r in result.ruleset.rules} if result.ruleset else set()
    saved_names = {n for value in (saved or {}).values() if isinstance(value, dict) for n in value}
    if args.rule is not None and args.rule not in names | saved_names:
        print(f"rulesd state: {unknown_rule(args.rule, sorted(names))}", file=sys.stderr)
        return EXIT_USAGE
    limit = config.limits.values_per_group
    view = state_view(saved, result.ruleset, now, args.rule, _written_steps(result.ruleset), limit)
    if args.format == "json":
        print(indented_json(view_json(view)))
    else:
        if saved is None:
            print(f"no engine state saved in {where} yet")
        print(printable.lines(view_text(view, now)))
    return EXIT_OK


def _written_steps(ruleset: RuleSet | None) -> dict[str, tuple[WrittenStep, ...]]:
    """Each sequence rule's steps as written, for `rulesd state` to say what a group waits for;
    none when a rule file changed since it was loaded (its text may no longer be the rule's)."""
    from rulesd.explain import step_conditions
    from rulesd.rules.model import Sequence as SequenceKind
    from rulesd.state_view import WrittenStep

    rules = [rule for rule in ruleset.rules if isinstance(rule.kind, SequenceKind)] if ruleset is not None else []
    try:
        sources = rule_sources(rules, RuleCache.for_user(os.environ)) if rules else {}
    except RulesdError:
        return {}
    return {
        name: tuple(
            WrittenStep(condition, str(source.doc.locate((*source.base, *where))))
            for condition, where in step_conditions(source)
        )
        for name, source in sources.items()
    }


def cmd_run(args: argparse.Namespace) -> int:
    """`rulesd run`: load config and rules (exit 2 if either is invalid), then run the daemon."""
    # Imported here: the authoring commands need none of it.
    import signal

    from rulesd.notify import Notifier
    from rulesd.reload import files_fingerprint

    config = load_config(args.config, look=True, cache=_config_cache(args.dry_run, os.environ))
    if args.dry_run and sys.stdout is None:  # started with `>&-`: nowhere to print the alerts
        _log().error("cannot start a dry run: %s", output.CLOSED)
        return EXIT_USAGE
    if sys.stdin is None and any(source.type == "stdin" for source in config.sources):  # `<&-`
        _log().error("cannot start: the source is standard input, which is closed")
        return EXIT_USAGE
    # SIGHUP's default action ends the process, which systemd counts as a clean exit (and so
    # does not restart): one that comes while the rules load is kept, and reloads once running.
    hup = threading.Event()
    signal.signal(signal.SIGHUP, lambda _s, _f: hup.set())
    # So is a rule file saved while they load: the file watch compares with the files as they
    # are once it is built, and would never load a change made before.
    read = files_fingerprint(config.rules)
    # Loading a huge rule set (or state) may take longer than systemd's start timeout.
    stop_extending = Notifier(os.environ).keep_extending()
    try:
        daemon = _start_daemon(args, config)
    finally:
        stop_extending()  # before the daemon's READY=1
    if isinstance(daemon, int):
        return daemon
    watcher = daemon.parts.watcher
    signal.signal(signal.SIGHUP, lambda _s, _f: watcher.request())  # first: then no SIGHUP is missed
    if hup.is_set() or files_fingerprint(config.rules) != read:
        watcher.request()
    return daemon.run()


def _start_daemon(args: argparse.Namespace, config: Config) -> Daemon | int:
    """The daemon `rulesd run` runs, its rules loaded and its parts built; or the exit status
    that says why there is none."""
    import sqlite3

    from rulesd.daemon import Daemon, build_parts
    from rulesd.engine.limit_checks import limit_warnings
    from rulesd.state import StateAuthFailed, StateError
    from rulesd.state.claim import NameTaken, StoppedWaiting
    from rulesd.state.lock import StateDirectoryBusy

    # A dry run leaves the state directory alone; its cache is the user's.
    cache = RuleCache.for_user(os.environ) if args.dry_run else RuleCache.in_state_dir(config.state_dir)
    # The config, the daemon's modules and the libraries it imports live as long as the process:
    # frozen, no collection walks them again (16 collections did before the first event). The
    # rule set is loaded after, collectable: a reload drops it.
    collector.resume()
    # The generated code kept by the last start or reload, kept anew by the daemon's loop.
    generated_code.load(cache, generated_code.code_key(config.rules))
    result = check_paths(config.rules, cache, daemon=True)
    if result.ruleset is None:
        _print_problems(result.errors, sys.stderr)
        return EXIT_USAGE
    # Warnings (no rule file found, an expect list the limits cannot hold): the start goes on, said why.
    for problem in [*result.problems, *limit_warnings(result.ruleset, config.limits)]:
        _log().warning("%s: %s", problem.location, problem.message)
    try:
        stdin_fd = sys.stdin.fileno() if sys.stdin is not None else -1  # (-1: closed, and no source reads it)
        parts = build_parts(config, result.ruleset, dry_run=args.dry_run, stdin_fd=stdin_fd, rule_cache=cache)
    except ConfigError:
        raise  # a missing API key: a configuration error, exit 2
    except (StateDirectoryBusy, NameTaken) as exc:  # a second daemon: a restart cannot help either
        _log().error("cannot start: %s", exc)
        return EXIT_USAGE
    except StoppedWaiting as exc:  # systemctl stop while another host's lease was waited out
        _log().info("%s", exc)
        return EXIT_OK
    except StateAuthFailed as exc:  # wrong credentials: a configuration error, a restart cannot help
        _log().error("cannot start: %s: fix the user or password in %s", exc, redis_settings(config))
        return EXIT_USAGE
    except (OSError, sqlite3.Error, RulesdError) as exc:
        # The shared state's errors name Redis, not the setting to look at (nor its URL, which
        # may hold a password).
        shared = config.state.backend == "redis" and isinstance(exc, StateError)
        _log().error("cannot start: %s%s", exc, " (state.url)" if shared else "")
        return EXIT_FAIL
    if config.state.backend == "redis" and not args.dry_run:  # only this mode needs the Redis client
        from rulesd.daemon.build import stream_reader
        from rulesd.daemon.shared import SharedDaemon
        from rulesd.state.redis import RedisState

        assert isinstance(parts.store, RedisState)
        return SharedDaemon(parts, parts.store, stream_reader(config, parts.store))
    return Daemon(parts)


def redis_settings(config: Config) -> str:
    """The settings that give the shared state's Redis URL (named, never printed: it may hold
    a password)."""
    return "state.url (and the redis_stream source's url)" if config.stream_source is not None else "state.url"


def cmd_forward(args: argparse.Namespace) -> int:
    """`rulesd forward`: append the configured sources' lines to the `forward:` stream."""
    import sqlite3

    from rulesd.forward import Forwarder
    from rulesd.state import StateAuthFailed, StateError
    from rulesd.state.claim import NameTaken, StoppedWaiting
    from rulesd.state.lock import StateDirectoryBusy

    config = load_config(args.config, look=True)
    if config.forward is None:
        print(f"rulesd forward: {config.path} has no forward: {{url: redis://…, stream: …}}", file=sys.stderr)
        return EXIT_USAGE
    if any(source.type in ("stdin", "redis_stream") for source in config.sources):
        print("rulesd forward: the sources to forward are file or journald sources", file=sys.stderr)
        return EXIT_USAGE
    try:
        return Forwarder(config).run()
    except (StateDirectoryBusy, NameTaken) as exc:  # another process on its state_dir, or name: as for run
        _log().error("cannot start: %s", exc)
        return EXIT_USAGE
    except StoppedWaiting as exc:  # systemctl stop while another host's lease was waited out
        _log().info("%s", exc)
        return EXIT_OK
    except StateAuthFailed as exc:  # at start (later, it is retried): wrong credentials
        _log().error("cannot forward: %s: fix the user or password in forward.url", exc)
        return EXIT_USAGE
    except (OSError, sqlite3.Error, StateError) as exc:
        _log().error("cannot forward: %s", exc)
        return EXIT_FAIL


def cmd_outbox(args: argparse.Namespace) -> int:
    """`rulesd outbox`: list or show queued and dead-lettered alerts, or requeue the dead ones."""
    import sqlite3

    from rulesd.daemon import STATE_FILE
    from rulesd.daemon.build import open_redis_state, state_reader
    from rulesd.state import SqliteState

    config = load_config(args.config)
    action = args.action or "list"
    path = os.path.join(config.state_dir, STATE_FILE)
    # Where the outbox is, for its errors (not the Redis URL: it may hold a password).
    where = f"the shared outbox in Redis (prefix {config.state.prefix})" if config.state.backend == "redis" else path
    try:
        if config.state.backend == "redis":  # the outbox every instance shares
            return _outbox(open_redis_state(config), action, args)
        # list and show only read: the database is opened read-only, and one the daemon has not
        # made yet (missing, empty while it starts) is neither created nor given tables.
        reader = state_reader(config)
        if reader is None:
            if action == "show":
                print(f"rulesd outbox show: no alert {args.id}: no state database at {path}", file=sys.stderr)
                return EXIT_FAIL
            if action == "retry-dead":
                _print_requeued(0, args.format)
            else:
                print("[]" if args.format == "json" else f"no state database at {path}: nothing queued")
            return EXIT_OK
        if action == "retry-dead":  # it writes, through the daemon's lock-safe transaction
            reader.close()
            return _outbox(SqliteState(path), action, args)
        return _outbox(reader, action, args)
    except (sqlite3.Error, RulesdError) as exc:  # damaged, unwritable, Redis unavailable
        text = str(exc)
        print(f"rulesd outbox: error: {text if text.startswith(where) else f'{where}: {text}'}", file=sys.stderr)
        return EXIT_FAIL


def _outbox(store: Outbox, action: str, args: argparse.Namespace) -> int:
    """`rulesd outbox ACTION` on `store` (the local SQLite outbox, or the one in Redis)."""
    from rulesd.outbox_view import outbox_row, row_text
    from rulesd.outbox_view import summary as outbox_summary

    if action == "retry-dead":
        _print_requeued(store.retry_dead(time.time()), args.format)
        return EXIT_OK
    paused = store.paused() is not None
    if action == "show":
        return _outbox_show(store, args.id, paused, as_json=args.format == "json")
    rows = [outbox_row(alert, paused) for alert in store.alerts()]
    if args.format == "json":
        print(json.dumps([row.to_json() for row in rows], indent=2, ensure_ascii=False))
        return EXIT_OK
    for row in rows:
        print(row_text(row))
    print(outbox_summary(rows))
    return EXIT_OK


def _print_requeued(count: int, output_format: str) -> None:
    """What `retry-dead` did: a line, or with `--format json` an object a script can read."""
    print(json.dumps({"requeued": count}) if output_format == "json" else f"requeued {count} dead-lettered alert(s)")


def _outbox_show(store: Outbox, alert_id: int, paused: bool, *, as_json: bool) -> int:
    from rulesd.outbox_view import attempt_json, attempts_text, outbox_row

    alert = store.alert(alert_id)
    if alert is None:
        print(f"rulesd outbox show: no alert {alert_id} in the outbox (delivered alerts leave it)", file=sys.stderr)
        return EXIT_FAIL
    row, attempts = outbox_row(alert, paused), store.attempts(alert_id)
    if as_json:
        print(json.dumps({**row.to_json(), "failed_attempts": [attempt_json(a) for a in attempts]}, indent=2))
    else:
        print(printable.lines(json.dumps(alert.payload, indent=2, ensure_ascii=False)))
        print(attempts_text(row, attempts, alert.next_attempt))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """`rulesd schema`: print a bundled JSON Schema, or write them (or one) as files into a directory."""
    if not args.write:
        print(json.dumps(load_schema(args.which or "rule"), indent=2))
        return EXIT_OK
    from pathlib import Path  # (a write only: a warm start imports no pathlib)

    from rulesd.atomic_file import write_atomically

    directory = Path(args.write)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in [args.which] if args.which else SCHEMAS:
            target = directory / f"rulesd-{name}.schema.json"
            # Whole or not at all: an editor never reads half a file, nor one writer the other's.
            write_atomically(target, (json.dumps(load_schema(name), indent=2) + "\n").encode())
            print(target)
    except OSError as exc:
        print(f"{args.write}: error: cannot write the schemas: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    """`rulesd completion SHELL`: print the shell's completion script."""
    from rulesd.completion import shell_script

    print(shell_script(args.shell), end="")
    return EXIT_OK
