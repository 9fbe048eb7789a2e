"""The code of generated functions, compiled once per source and kept in the rule cache.

The index and the conditions write Python source (see `conditions.generated_function`), the
same sources for the same rule files at every start: Python's `compile` of them was 7-13% of
the instructions of a warm `rulesd replay` at a thousand rules (~150 functions of the index
for the ops rules). `rulesd replay` asks `load` for the code kept for its rule files' paths
before loading them, and `keep`s it once its engine is built if any was compiled anew.

What is read back is code that this process runs. It comes from the rule cache alone, whose
files are this user's and nobody else's to write (0600 in a 0700 directory, the owner checked
at each read) and whose content must match the SHA-256 stored with it (see `RuleCache`): the
documents and Hyperscan databases read from there already decide every page, and a Hyperscan
database is itself compiled code its library runs. Python's own `__pycache__` is trusted with
less. A code object is used only for the source text it was compiled from, by the same Python
(its version is in the key): what `compile` gives for that text, without compiling it.
"""

from __future__ import annotations

import marshal
import os
import sys
import threading
from collections.abc import Iterable
from types import CodeType
from typing import Any

from rulesd.rules.cache import RuleCache, digest

KIND = "code"
_COMPILED_MAX = 1024  # sources remembered in a process (a daemon's reloads write new ones)


class Uses:
    """The code one rule set asked for, by source: what `keep` writes for it."""

    def __init__(self) -> None:
        self.code: dict[str, CodeType] = {}
        self.checked = 0  # how many of `code` a `keep` found written (it grows only by sources asked anew)


# What `code_for` serves without compiling: read from the cache by `load`, then the running
# rule set's code (`adopt`), so that it holds one rule set's, not every one a daemon loaded.
_kept: dict[str, CodeType] = {}
_written: set[str] = set()  # the sources the cache holds under the key: what `keep` need not write
_compiled: dict[str, CodeType] = {}  # compiled in this process
# Per thread, the `Uses` of the rule set it builds: a daemon's reload builds the next set in a
# thread of its own while the main loop writes the running set's functions; neither's is the
# other's, and a reload's is kept only once it runs (`adopt`). None: nothing is recorded.
_building = threading.local()


def code_for(source: str) -> CodeType:
    """The code of the function `run` that `source` defines."""
    code = _kept.get(source)
    if code is None:
        code = _compiled.get(source)
        if code is None:
            code = _compile(source)
            if len(_compiled) >= _COMPILED_MAX:
                _compiled.clear()
            _compiled[source] = code
    uses: Uses | None = getattr(_building, "uses", None)
    if uses is not None:  # (only a command that loads and keeps code remembers what it used)
        uses.code[source] = code
    return code


def _compile(source: str) -> CodeType:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<rulesd>", "exec"), namespace)
    code: CodeType = namespace["run"].__code__
    return code


def code_key(rule_paths: Iterable[str]) -> str:
    """The cache key of the code of the rule set at `rule_paths`, for this Python's bytecode. The
    paths, not their rules: an edited rule mostly changes values, which are the functions'
    globals and not in their text, so the code kept before the edit serves after it."""
    return digest(KIND, sys.version, *(os.path.abspath(path) for path in rule_paths))


def load(cache: RuleCache | None, key: str) -> Uses:
    """Use the code kept under `key` (none on a miss, or anything else than `keep` writes), and
    record in this thread what the rule set loaded next asks for (in the `Uses` returned)."""
    global _kept, _written
    _kept, _written = {}, set()
    uses = record()
    blob = cache.get(KIND, key) if cache is not None else None
    if blob is None:
        return uses
    try:
        kept = marshal.loads(blob)
    except (EOFError, ValueError, TypeError):
        return uses
    if type(kept) is dict and all(type(s) is str and type(c) is CodeType for s, c in kept.items()):
        _kept, _written = kept, set(kept)
    return uses


def record(uses: Uses | None = None) -> Uses:
    """Record from now on, in this thread, what a rule set being built asks for (a daemon's
    reload, in its loader thread: see `adopt`); `uses`: what one loaded before asked for, which
    runs again (`rulesd test`'s next file over the same rule files)."""
    uses = _building.uses = uses if uses is not None else Uses()
    return uses


def release() -> None:
    """The rule set this thread recorded for is done with (its command returned): record nothing
    more in this thread. Left on, the record took every source that any rule set built later in
    the thread asked for, and never let go (a program that ran `rulesd.cli.main`, then checked
    or built rule sets of its own: one more code object for each shape of rule it met)."""
    _building.uses = None


def adopt(uses: Uses) -> None:
    """The rule set whose code `uses` holds now runs (a reload that succeeded): this thread
    records for it from now on, the next `keep` writes its code if any was compiled anew, and
    it alone is served without compiling. So a daemon reloaded for months holds one rule set's
    code here, whatever every set before it asked for; a reload that failed, or whose set never
    ran, is never adopted and keeps nothing."""
    global _kept
    _building.uses = uses
    uses.checked = 0
    _kept = dict(uses.code)


def keep(cache: RuleCache | None, key: str) -> None:
    """Keep under `key` the code this thread's rule set asked for, if any of it was compiled
    anew (not among what the cache holds). `rulesd replay` calls it after every block and the
    daemon at every turn of its loop: nothing asked for since the last call is a test of one
    length, not a walk of every source (3 % of the instructions of a replay of the estate
    benchmark at 100 rules)."""
    global _written
    uses: Uses | None = getattr(_building, "uses", None)
    if uses is None or len(uses.code) == uses.checked:
        return
    if cache is not None and any(source not in _written for source in uses.code):
        cache.put(KIND, key, marshal.dumps(uses.code))
        _written = set(uses.code)
    uses.checked = len(uses.code)
