"""The engine's state: per rule and group, whatever its kind keeps (window times, throttle
times, distinct values, sequence progress, absences, values seen, open alerts), as plain
JSON-ready values, so that it can be saved with every batch and restored after a restart.

A state value is changed in place by the engine, which marks the (kind, rule, group) it
touched; `delta` then says what to write: the touched rows, or, after a reload or a restore,
everything.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import orjson

from rulesd.engine.values import GroupKey
from rulesd.jsontext import compact_json
from rulesd.rules.fields import group_key, key_parts

# The kinds of per-group state, as saved (the first two names predate the others).
WINDOW = "window"  # threshold: the times of the matching events in the window (one: a bare float)
THROTTLE = "throttle"  # the time the group last fired
DISTINCT = "distinct"  # distinct: value (as key text) -> when last seen (one value: a pair, see `seen_values`)
SEQUENCE = "sequence"  # sequence: progress through the steps
ABSENCE = "absence"  # absence: when last seen, the event, whether its alert is open
NEW_VALUE = "new_value"  # new_value: value (as key text) -> when last seen (one value: a pair)
OPEN = "open"  # resolve: when the group last fired and the aliases of its open alerts
RULE = "rule"  # per rule, not per group (the group is NO_GROUP): e.g. when new_value began learning

KINDS = (WINDOW, THROTTLE, DISTINCT, SEQUENCE, ABSENCE, NEW_VALUE, OPEN, RULE)
# How each kind is named in `to_json` (the old names of the first two are kept).
_JSON_NAMES = {WINDOW: "windows", THROTTLE: "throttles"}

Table = dict[str, dict[GroupKey, Any]]  # rule -> group -> value


class StateDelta(msgspec.Struct, frozen=True):
    """Engine state to save: rows (kind, rule, group as JSON, value as JSON) to write and delete.

    `full`: the rows are the whole state, replacing what was saved.
    """

    full: bool
    fingerprints: dict[str, str]
    upserts: list[tuple[str, str, str, str]]
    deletes: list[tuple[str, str, str]]
    clock: float | None = None  # the engine's clock (event time), for readers of the saved state


def json_name(kind: str) -> str:
    """The name of a kind of state in `EngineState.to_json`."""
    return _JSON_NAMES.get(kind, kind)


def key_json(key: GroupKey) -> str:
    """A group key as it is saved: a JSON list of its parts."""
    return orjson.dumps(key_parts(key)).decode()


def key_from_json(text: str | bytes) -> GroupKey:
    """A group key as saved (`key_json`), as the engine keys groups (one an earlier rulesd
    saved made again as this one makes it: see `rekey`)."""
    from rulesd.engine.rekey import rekeyed_parts  # (it reads this module's kinds)

    return group_key(rekeyed_parts(orjson.loads(text)))


def value_json(kind: str, value: Any) -> str:
    """A state value as it is saved (an event from a rule test may hold YAML dates: as text)."""
    saved = saved_value(kind, value)
    try:
        return orjson.dumps(saved, default=str).decode()
    except orjson.JSONEncodeError:  # an event it keeps (an absence's) nested deeper than 254
        return compact_json(saved)


def saved_value(kind: str, value: Any) -> Any:
    """A state value in its saved form, as it was saved before the engine kept one time or one
    value apart: a window's times always as a list, the values seen always as an object
    (`restored_value` is the inverse)."""
    if kind == WINDOW and type(value) is not list:
        return [value]
    if type(value) is tuple and kind in (DISTINCT, NEW_VALUE):
        return {value[0]: value[1]}
    return value


def seen_values(value: dict[str, float] | tuple[str, float] | None) -> dict[str, float]:
    """The values a distinct or new_value group has seen, each with when it was last seen, whether
    it holds one (a pair: a dict of one costs 128 bytes more) or more (a dict); none for None."""
    if value is None:
        return {}
    return {value[0]: value[1]} if type(value) is tuple else value  # type: ignore[return-value]


def window_times(value: float | list[float]) -> list[float]:
    """A threshold window's times, in order, whether it holds one (a float) or more (a list)."""
    return value if type(value) is list else [value]  # type: ignore[list-item]


class EngineState:
    """Every rule's per-group state, by kind; JSON-serialisable.

    Written out rather than made by `dataclass`, which writes these methods as source and
    compiles them at every start (~4.7 M instructions of a 350 M `replay`'s), and with `slots`
    makes the class twice: the same slots, the same methods."""

    __slots__ = ("clock", "dirty", "fingerprints", "rekeyed", "tables", "touched")

    def __init__(
        self,
        tables: dict[str, Table] | None = None,
        fingerprints: dict[str, str] | None = None,
        clock: float = -math.inf,
        dirty: bool = False,
        touched: set[tuple[str, str, GroupKey]] | None = None,
        rekeyed: bool = False,
    ) -> None:
        self.tables: dict[str, Table] = {} if tables is None else tables
        self.fingerprints: dict[str, str] = {} if fingerprints is None else fingerprints
        # The engine's clock, the latest event time seen (-inf: none yet); saved with the state so
        # that `rulesd state` can show times as the engine sees them.
        self.clock = clock
        # What to save: `dirty` asks for a full rewrite (new state, new rules); `touched` names the
        # groups changed since the last save, so a busy engine with many groups saves only those.
        self.dirty = dirty
        self.touched: set[tuple[str, str, GroupKey]] = set() if touched is None else touched
        # Read from a state an earlier rulesd saved with keys made otherwise (`rekey`): written whole.
        self.rekeyed = rekeyed

    def __eq__(self, other: object) -> bool:
        """Equal states hold the same groups and fingerprints (the clock and what is to save
        aside)."""
        if not isinstance(other, EngineState):
            return NotImplemented
        return (self.tables, self.fingerprints) == (other.tables, other.fingerprints)

    __hash__ = None  # type: ignore[assignment]  # (mutable, compared by contents)

    def __repr__(self) -> str:
        return (
            f"EngineState(tables={self.tables!r}, fingerprints={self.fingerprints!r}, clock={self.clock!r}, "
            f"dirty={self.dirty!r}, touched={self.touched!r}, rekeyed={self.rekeyed!r})"
        )

    def table(self, kind: str) -> Table:
        """The groups of every rule for one kind of state."""
        found = self.tables.get(kind)
        if found is None:
            found = self.tables[kind] = {}
        return found

    @property
    def windows(self) -> Table:
        """Threshold windows: rule -> group -> the times of its matching events."""
        return self.table(WINDOW)

    @property
    def throttles(self) -> Table:
        """Throttles: rule -> group -> when it last fired."""
        return self.table(THROTTLE)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (group keys become lists)."""
        out: dict[str, Any] = {"fingerprints": self.fingerprints}
        for kind in KINDS:
            groups = self.tables.get(kind)
            if groups or kind in (WINDOW, THROTTLE):
                out[json_name(kind)] = {
                    r: [[key_parts(k), saved_value(kind, v)] for k, v in g.items()]
                    for r, g in (groups or {}).items()
                    if g
                }
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineState:
        """The inverse of to_json; a state saved by an earlier rulesd has its keys made again as
        this one makes them (`rekey`), and is then marked to be written whole (`dirty`), so that
        its rows under the old keys go."""
        from rulesd.engine import rekey  # (it reads this module's kinds)

        tables: dict[str, Table] = {}
        rekeyed = False
        for kind in KINDS:
            saved = data.get(json_name(kind), {})
            if saved:
                tables[kind] = by_rule = {}
                for rule, rows in saved.items():
                    by_rule[rule], changed = rekey.restored_groups(kind, rows)
                    rekeyed |= changed
        return cls(tables=tables, fingerprints=dict(data.get("fingerprints", {})), dirty=rekeyed, rekeyed=rekeyed)

    @property
    def changed(self) -> bool:
        """True when there is something to save."""
        return self.dirty or bool(self.touched)

    def touch(self, kind: str, rule: str, group: GroupKey) -> None:
        """Mark a group's state of `kind` as changed (or gone) since the last save."""
        self.touched.add((kind, rule, group))

    def delta(self) -> StateDelta:
        """What changed since the last call, as rows to write; then start afresh."""
        if self.dirty:
            rows = [
                (kind, rule, key_json(key), value_json(kind, value))
                for kind, groups in self.tables.items()
                for rule, table in groups.items()
                for key, value in table.items()
            ]
            result = StateDelta(True, dict(self.fingerprints), rows, [], self._saved_clock())
        else:
            upserts: list[tuple[str, str, str, str]] = []
            deletes: list[tuple[str, str, str]] = []
            for kind, rule, key in self.touched:
                value = self.tables.get(kind, {}).get(rule, {}).get(key)
                if value is None:
                    deletes.append((kind, rule, key_json(key)))
                else:
                    upserts.append((kind, rule, key_json(key), value_json(kind, value)))
            result = StateDelta(False, dict(self.fingerprints), upserts, deletes, self._saved_clock())
        self.dirty = False
        self.touched.clear()
        return result

    def _saved_clock(self) -> float | None:
        return self.clock if math.isfinite(self.clock) else None

    def group_count(self) -> int:
        """How many groups are tracked in all (per-rule entries aside), a measure of memory held."""
        return sum(len(table) for kind, groups in self.tables.items() if kind != RULE for table in groups.values())

    def drop_rule(self, rule: str) -> None:
        """Forget every state of a rule (it was removed or changed)."""
        for groups in self.tables.values():
            groups.pop(rule, None)


def restored_value(kind: str, value: Any) -> Any:
    """A saved value as the engine keeps it (a throttle a float; a window of one time that
    float, of more a list of them)."""
    if kind == THROTTLE:
        return float(value)
    if kind == WINDOW and len(value) == 1:
        return float(value[0])
    if kind in (DISTINCT, NEW_VALUE) and len(value) == 1:
        [(text, seen)] = value.items()
        return (text, float(seen))
    return value
