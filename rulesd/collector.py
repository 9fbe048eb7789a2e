"""Python's cyclic garbage collector while rulesd starts and builds rule sets.

Start-up allocates hundreds of thousands of objects that live on: the modules, then the rule
set and its index. Every burst of allocation triggers collections that walk them again,
and after it the first collections walk all of them once more: about 4% of a replay's
start-up at 1,000 rules. So the collector is off from the moment the command starts
(`pause`, by `rulesd.__main__` before anything is imported) until it has built what it
keeps (`resume`), which freezes what is alive then (`gc.freeze`: where no later collection
looks) and turns the collector back on.

Only what lives as long as the process may be frozen: a frozen object that becomes garbage
is freed by its reference count alone, never by the collector. A rule set holds reference
cycles, so the daemon, whose reloads drop rule sets, resumes before it loads one; `replay`
and `check`, which keep theirs to the end, resume after (see `rulesd.cli`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused = False  # by `pause`, not by anyone else: only `resume` turns the collector back on


def pause() -> None:
    """Turn the collector off until `resume` (if it is on: otherwise whoever turned it off
    decides)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Start-up is over: freeze what is alive, and collect again from here. Does nothing
    unless `pause` turned the collector off, so it can be called more than once."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off while a rule set is built (a reload's too). Loading allocates
    hundreds of thousands of objects that all live on (nodes, values, rules), and each
    allocation burst triggers collections that walk them again: about a third of the time of
    reading a large rule file. What loading leaves behind holds no cycles worth collecting
    early; the collector runs again afterwards. (Process-wide: when two threads load at once,
    the collector is back on once both are done, or as soon as the first is; never left off.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
