"""Loading a new rule set off the main loop, and the one log line that tells how a reload ended.

Reading, checking and compiling 100,000 rules takes most of a minute. Done on the main loop,
that would stop reading, the watchdog pings and /healthz for as long; so a `RuleLoader` does it
in a thread of its own, and the main loop only swaps the finished rule set in between two
batches (`Engine.replace_rules` with the prepared index), which takes no time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec

from rulesd.engine import PreparedRules
from rulesd.rules import generated_code
from rulesd.rules.cache import RuleCache
from rulesd.rules.loader import CheckResult, check_paths
from rulesd.rules.model import RuleSet

log = logging.getLogger("rulesd")
NAMES_SHOWN = 5  # rule names per kind of change in the reload line; the rest are counted


class LoadOutcome(msgspec.Struct, frozen=True):
    """A finished load: what checking found, the prepared rules (None when there are errors or
    nothing changed), and the seconds it took."""

    result: CheckResult
    prepared: PreparedRules | None
    seconds: float
    crashed: str | None = None  # an unexpected error of the loader itself
    # The generated code the new rule set asked for: kept in the rule cache once it runs.
    code: generated_code.Uses | None = None


class RuleLoader:
    """Loads the rules at `paths` in a background thread, one load at a time.

    `prepare` builds the engine's index for a new rule set (`Engine.prepare_rules`); it is not
    called when the rules on disk are the running ones (`running` gives that set's fingerprint).
    """

    def __init__(
        self,
        paths: Iterable[str],
        cache: RuleCache | None,
        prepare: Callable[[RuleSet], PreparedRules],
        running: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = tuple(paths)
        self._cache = cache
        self._prepare = prepare
        self._running = running
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._outcome: LoadOutcome | None = None
        self.done = threading.Event()  # set when a load has finished and not been taken yet

    @property
    def busy(self) -> bool:
        """A load is under way or finished but not taken."""
        return self._thread is not None

    def start(self) -> None:
        """Begin loading in the background (nothing if a load is already under way)."""
        if self._thread is not None:
            return
        self.done.clear()
        self._thread = threading.Thread(target=self._load, name="rulesd-reload", daemon=True)
        self._thread.start()

    def take(self) -> LoadOutcome | None:
        """The finished load's outcome, once; None while loading or idle."""
        if not self.done.is_set() or self._thread is None:
            return None
        self._thread.join()
        outcome, self._outcome, self._thread = self._outcome, None, None
        self.done.clear()
        return outcome

    def _load(self) -> None:
        started = self._clock()
        code = generated_code.record()  # (this thread's: the running set's is the main loop's)
        try:
            result = check_paths(self.paths, self._cache, daemon=True)
            ruleset = result.ruleset
            changed = ruleset is not None and ruleset.fingerprint != self._running()
            prepared = self._prepare(ruleset) if ruleset is not None and changed else None
            self._outcome = LoadOutcome(result, prepared, self._clock() - started, code=code)
        except Exception as exc:  # the top of the loader thread: the daemon keeps the running rules
            log.exception("reload failed: unexpected error while loading the rules")
            empty = CheckResult(None, (), ())
            self._outcome = LoadOutcome(empty, None, self._clock() - started, f"{type(exc).__name__}: {exc}")
        finally:
            self.done.set()


def describe_change(old: RuleSet, new: RuleSet) -> str:
    """`12 rules, unchanged` or `12 rules; added: 2 (a, b); removed: 1 (c); changed: 1 (d)`, for
    the reload line: each kind of change counted, with at most NAMES_SHOWN names."""
    before, after = old.by_name(), new.by_name()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n].fingerprint != after[n].fingerprint)
    total = f"{len(new.rules)} rule{'' if len(new.rules) == 1 else 's'}"
    if not (added or removed or changed):
        return f"{total}, unchanged"
    parts = [total]
    parts += [
        f"{label}: {len(names)} ({shorten(names)})"
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    return "; ".join(parts)


def shorten(names: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    """`a, b, c` or, past `shown` names, `a, b, c, d, e, … 95 more`."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", … {len(names) - shown} more"
