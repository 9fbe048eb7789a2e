"""Small helpers shared by the rule-language tests: rules from YAML text, memory per group."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from rulesd.rules.loader import load_ruleset_text
from rulesd.rules.model import Rule, RuleSet


def ruleset_from_yaml(text: str, filename: str = "rules.yaml") -> RuleSet:
    """Load `text` as one rule file, exactly as `rulesd check` and the daemon would."""
    return load_ruleset_text(text, filename)


def rules_from_yaml(text: str) -> dict[str, Rule]:
    """The rules of `text`, by name."""
    return ruleset_from_yaml(text).by_name()


def bytes_per_call(step: Callable[[int], object], count: int) -> float:
    """The memory `step(i)` leaves allocated, on average over `count` calls (tracemalloc):
    what each new group of an engine costs."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        step(i)
    gc.collect()
    per_call = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    return per_call
