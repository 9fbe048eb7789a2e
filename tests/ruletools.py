"""Small helpers shared by the rule-language tests: rules from YAML text."""

from __future__ import annotations

from rulesd.rules.loader import load_ruleset_text
from rulesd.rules.model import Rule, RuleSet


def ruleset_from_yaml(text: str, filename: str = "rules.yaml") -> RuleSet:
    """Load `text` as one rule file, exactly as `rulesd check` and the daemon would."""
    return load_ruleset_text(text, filename)


def rules_from_yaml(text: str) -> dict[str, Rule]:
    """The rules of `text`, by name."""
    return ruleset_from_yaml(text).by_name()
