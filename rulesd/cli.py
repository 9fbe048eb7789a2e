"""The `rulesd` command line: parses arguments, calls one function, maps errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

import orjson

from rulesd import __version__
from rulesd.alerting.payload import AlertSettings
from rulesd.errors import InvalidInputError, Problem
from rulesd.replay import ReplayedAlert, ReplaySummary, replay
from rulesd.rules.loader import check_paths, default_rule_paths, load_ruleset
from rulesd.ruletest import run_test_files
from rulesd.validation import load_schema

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("rulesd")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser = argparse.ArgumentParser(prog="rulesd", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"rulesd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", parents=[common], help="validate rule files and directories")
    check.add_argument("paths", nargs="*", metavar="PATH")
    check.add_argument("--format", choices=["text", "json"], default="text")

    test = sub.add_parser("test", parents=[common], help="run rule unit tests")
    test.add_argument("files", nargs="+", metavar="TESTFILE")

    rep = sub.add_parser("replay", parents=[common], help="evaluate rules over a JSON-lines file")
    rep.add_argument("--rules", action="append", required=True, metavar="PATH")
    rep.add_argument("--time-field", metavar="FIELD")
    rep.add_argument("--format", choices=["text", "json"], default="text")
    rep.add_argument("events", metavar="EVENTS_FILE", help="a JSON-lines file, or - for stdin")

    schema = sub.add_parser("schema", parents=[common], help="print a JSON Schema")
    schema.add_argument("which", nargs="?", choices=["rule", "test"], default="rule")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rulesd` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="rulesd: %(levelname)s: %(message)s"
    )
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": cmd_check,
        "test": cmd_test,
        "replay": cmd_replay,
        "schema": cmd_schema,
    }
    try:
        return commands[args.command](args)
    except InvalidInputError as exc:
        _print_problems(exc.problems, sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK  # `rulesd replay ... | head` is not an error


def _print_problems(problems: Sequence[Problem], stream: object) -> None:
    for problem in problems:
        print(problem, file=stream)  # type: ignore[call-overload]


def cmd_check(args: argparse.Namespace) -> int:
    """`rulesd check`: every problem in GCC style (or JSON), then a summary."""
    paths = args.paths or default_rule_paths()
    result = check_paths(paths)
    if args.format == "json":
        print(json.dumps([p.to_json() for p in result.problems], indent=2))
    else:
        _print_problems(result.problems, sys.stdout)
        errors = len(result.errors)
        warnings = len(result.problems) - errors
        rules = len(result.ruleset.rules) if result.ruleset else 0
        verdict = "OK" if errors == 0 else "FAILED"
        print(
            f"{verdict}: {len(result.files)} file(s), {rules} rule(s), "
            f"{errors} error(s), {warnings} warning(s)"
        )
    return EXIT_OK if not result.errors else EXIT_FAIL


def cmd_test(args: argparse.Namespace) -> int:
    """`rulesd test`: run rule unit tests, report each failure with expected and actual."""
    outcomes, problems = run_test_files(args.files)
    _print_problems(problems, sys.stdout)
    for outcome in outcomes:
        if outcome.passed:
            print(f"PASS {outcome.location}: {outcome.name}")
        else:
            print(f"FAIL {outcome.location}: {outcome.name}")
            print("    " + outcome.report.replace("\n", "\n    "))
    failed = sum(not o.passed for o in outcomes)
    print(f"rule tests: {len(outcomes) - failed} passed, {failed} failed, {len(problems)} invalid")
    return EXIT_OK if not failed and not problems else EXIT_FAIL


def cmd_replay(args: argparse.Namespace) -> int:
    """`rulesd replay`: print every alert that would be sent, then a summary."""
    ruleset = load_ruleset(args.rules)
    as_json = args.format == "json"
    out = sys.stdout

    def on_invalid(line: int, reason: str) -> None:
        log.warning("%s:%d: skipped: %s", args.events, line, reason)

    stream = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    with stream:
        for item in replay(
            ruleset, stream, name=args.events, settings=AlertSettings(),
            time_field=args.time_field, on_invalid=on_invalid,
        ):
            if isinstance(item, ReplayedAlert):
                out.write(orjson.dumps(item.payload).decode() + "\n" if as_json else _alert_line(item))
            elif isinstance(item, ReplaySummary):
                _print_summary(item, sys.stderr if as_json else out)
    return EXIT_OK


def _alert_line(alert: ReplayedAlert) -> str:
    p = alert.payload
    return f"line {alert.line}: {p['priority']} [{', '.join(alert.rules)}] {p['message']}  (alias: {p['alias']})\n"


def _print_summary(summary: ReplaySummary, stream: object) -> None:
    lines = [
        f"events: {summary.events}, invalid lines: {summary.invalid}, alerts: {summary.alerts}",
        *(f"  {name}: {count} firing(s)" for name, count in sorted(summary.firings.items())),
    ]
    print("\n".join(lines), file=stream)  # type: ignore[call-overload]


def cmd_schema(args: argparse.Namespace) -> int:
    """`rulesd schema`: print a bundled JSON Schema."""
    print(json.dumps(load_schema(args.which), indent=2))
    return EXIT_OK
