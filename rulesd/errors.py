"""The exception hierarchy and source locations that every error carries."""

from __future__ import annotations

import msgspec


class SourceLocation(msgspec.Struct, frozen=True, order=True):
    """A place in a file: 1-based line and column, as editors count them."""

    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.col}"


def listed_again(what: str) -> str:
    """Why an item of a list holds the same place as one before it: YAML's alias (`- *a`) is,
    once composed, the very node of its anchor, so only the anchor's place is known. `what`:
    "rule", "test"."""
    return (
        f"the {what} written here is listed again by a YAML alias of it (`- *NAME`); to copy it, merge it "
        "and rename the copy (`- <<: *NAME` then `name: ...`)"
    )


class Problem(msgspec.Struct, frozen=True, order=True):
    """One finding of a check: where, how bad, and what."""

    location: SourceLocation
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"

    def to_json(self) -> dict[str, object]:
        """The JSON form used by `rulesd check --format json`."""
        return {
            "path": self.location.path,
            "line": self.location.line,
            "col": self.location.col,
            "severity": self.severity,
            "message": self.message,
        }


class RulesdError(Exception):
    """Root of every error rulesd raises on purpose."""


class InvalidInputError(RulesdError):
    """One or more problems in a user's file (rules, config, tests); carries them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RuleError(InvalidInputError):
    """Rule files that cannot be loaded."""


class ConfigError(InvalidInputError):
    """A daemon configuration that cannot be used; `rules`, the rule paths it names when
    those could be read, so that `rulesd check --config` still checks them."""

    def __init__(self, problems: list[Problem], rules: tuple[str, ...] | None = None) -> None:
        super().__init__(problems)
        self.rules = rules
