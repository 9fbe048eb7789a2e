"""Rules that the state limits cannot hold, said before they run. Pure: the rules and the
limits in, warnings out (the daemon logs them at start and reload, `rulesd check --config`
prints them).
"""

from __future__ import annotations

from rulesd.engine.core import Limits
from rulesd.errors import Problem
from rulesd.rules.model import Absence, RuleSet


def limit_warnings(ruleset: RuleSet, limits: Limits) -> list[Problem]:
    """An absence expecting more groups than `limits.per_rule`: expected groups are never
    forgotten, so the rule stays over its limit for good and each other group it makes is
    forgotten at once (the engine's eviction warning alone does not say why)."""
    out = []
    for rule in ruleset.rules:
        if rule.enabled and isinstance(rule.kind, Absence) and len(expected := set(rule.kind.expect)) > limits.per_rule:
            message = (
                f"rule {rule.name!r} expects {len(expected)} groups, more than limits.groups_per_rule "
                f"({limits.per_rule}): expected groups are never forgotten, so the rule stays over its "
                "limit and every other group it sees is forgotten at once; raise limits.groups_per_rule "
                "or expect fewer groups"
            )
            out.append(Problem(rule.location, message, severity="warning"))
    return out
