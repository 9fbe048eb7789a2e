"""Shell completion (bash, zsh, fish) through argcomplete.

The script `rulesd completion SHELL` prints only hands the command line back to `rulesd` itself
at every TAB, so commands, options and choices come from the real parser of the installed
version, and rule names from the rule files the command line (or its config) names.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from typing import Any

from rulesd.errors import ConfigError, RulesdError
from rulesd.rules.loader import check_paths, default_rule_paths

SHELLS = ("bash", "zsh", "fish")
RULE_OPTION = "--rule"  # every option of this name takes a rule name


def shell_script(shell: str, prog: str = "rulesd") -> str:
    """The completion script for `shell` that completes the command `prog`."""
    from argcomplete.shell_integration import shellcode  # (not imported by the other commands)

    return shellcode([prog], shell=shell)


def enable_rule_name_completion(parser: argparse.ArgumentParser, default_config: str) -> None:
    """Give every `--rule` option, in any subcommand, rule-name completion."""
    for action in _all_actions(parser):
        if RULE_OPTION in action.option_strings:
            action.completer = _rule_name_completer(default_config)  # type: ignore[attr-defined]


def _all_actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)


def _rule_name_completer(default_config: str) -> Callable[..., list[str]]:
    def complete(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        names = rule_names(rule_paths_of(parsed_args, default_config))
        return [n for n in names if n.startswith(prefix)]

    return complete


def rule_paths_of(args: argparse.Namespace, default_config: str) -> list[str]:
    """The rule files a command line names: `--rules`, else its config's `rules` (the default
    config only if it exists), else `./rules`."""
    rules = getattr(args, "rules", None)
    if rules:
        return [rules] if isinstance(rules, str) else list(rules)
    config = getattr(args, "config", None) or default_config
    if os.path.exists(config):
        try:
            from rulesd.config import load_config  # only when completing: it imports the HTTP client

            return list(load_config(config).rules)
        except ConfigError as exc:
            return list(exc.rules or ())
    return default_rule_paths()


def rule_names(paths: list[str]) -> list[str]:
    """The names of the rules in `paths`, sorted; none if they do not load."""
    try:
        result = check_paths(paths)
    except (OSError, RulesdError):
        return []
    return sorted(rule.name for rule in result.ruleset.rules) if result.ruleset else []
