"""GitHub Actions annotations for `rulesd check --format github`.

A workflow command `::error file=F,line=L,col=C::message` printed by a step puts the message on
that line of the pull request's diff. GitHub reads `%`, CR and LF escaped as `%25`, `%0D` and
`%0A` in the message, and additionally `:` and `,` as `%3A` and `%2C` in a property's value.
"""

from __future__ import annotations

import os

from rulesd.errors import Problem

_DATA_ESCAPES = (("%", "%25"), ("\r", "%0D"), ("\n", "%0A"))  # "%" first: the others add one
_PROPERTY_ESCAPES = (*_DATA_ESCAPES, (":", "%3A"), (",", "%2C"))


def escape_data(text: str) -> str:
    """`text` as the message of a workflow command."""
    for raw, escaped in _DATA_ESCAPES:
        text = text.replace(raw, escaped)
    return text


def escape_property(text: str) -> str:
    """`text` as the value of a workflow command's property (`file=…`)."""
    for raw, escaped in _PROPERTY_ESCAPES:
        text = text.replace(raw, escaped)
    return text


def github_annotation(problem: Problem, workdir: str) -> str:
    """`::error …::message` (or `::warning`) for `problem`; a path under `workdir` is made relative to
    it, because GitHub places an annotation only by the file's path from the repository's root."""
    command = "warning" if problem.severity == "warning" else "error"
    where = problem.location
    path = where.path
    if os.path.isabs(path) and os.path.commonpath([path, workdir]) == workdir:
        path = os.path.relpath(path, workdir)
    properties = [f"file={escape_property(path)}"]
    if where.line > 0:
        properties.append(f"line={where.line}")
        if where.col > 0:
            properties.append(f"col={where.col}")
    return f"::{command} {','.join(properties)}::{escape_data(problem.message)}"
