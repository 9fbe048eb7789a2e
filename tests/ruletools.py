"""Small helpers shared by the rule-language tests: rules from YAML text, events in time."""

from __future__ import annotations

import os
import tempfile

from rulesd.rules.loader import load_ruleset
from rulesd.rules.model import Rule, RuleSet


def ruleset_from_yaml(text: str, filename: str = "rules.yaml") -> RuleSet:
    """Load `text` as one rule file, exactly as `rulesd check` and the daemon would."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, filename)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return load_ruleset([path])


def rules_from_yaml(text: str) -> dict[str, Rule]:
    """The rules of `text`, by name."""
    return ruleset_from_yaml(text).by_name()
