"""The "kinds" shape: the ops shape's events and rules, but its threshold rules (20% of the
set) made into the other kinds of rule in turn: distinct users per host, a sequence (two
matches then an error of the same service on the host), an absence per host, and a new user
per host. The same conditions and groups, so that `--shape ops,kinds` compares, in one run,
a rule set of thresholds with one of the same count where those rules keep richer state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import shape_ops

NAME = "kinds"
TIME_FIELD = shape_ops.TIME_FIELD
START_TIME = shape_ops.START_TIME
KINDS = ("distinct", "sequence", "absence", "new_value")


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """The ops shape's events."""
    return shape_ops.generate_events(count, seed)


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """The ops shape's rules, each threshold rule made into the next kind of KINDS."""
    rules = shape_ops.generate_rules(count, seed)
    rng = random.Random(seed * 31 + count)
    turn = 0
    for rule in rules:
        threshold = rule.pop("threshold", None)
        if threshold is None:
            continue
        kind = KINDS[turn % len(KINDS)]
        turn += 1
        rule["name"] = rule["name"].replace("threshold", kind)
        window = threshold["window"]
        if kind == "distinct":
            rule["distinct"] = {"field": "user_id", "count": threshold["count"], "window": window, "group_by": ["host"]}
        elif kind == "sequence":
            service = rule["match"]["service"]
            rule["sequence"] = {
                "group_by": ["host"],
                "within": window,
                "steps": [
                    {"match": rule.pop("match"), "count": rng.randrange(2, 4)},
                    {"match": {"service": service, "level": "error"}},
                ],
            }
        elif kind == "absence":
            rule["absence"] = {"window": window, "group_by": ["host"]}
        else:
            rule["new_value"] = {"fields": ["user_id"], "group_by": ["host"], "learn": "10m"}
    return rules
