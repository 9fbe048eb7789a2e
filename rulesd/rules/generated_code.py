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
from collections.abc import Iterable
from types import CodeType
from typing import Any

from rulesd.rules.cache import RuleCache, digest

KIND = "code"
_COMPILED_MAX = 1024  # sources remembered in a process (a daemon's reloads write new ones)

_kept: dict[str, CodeType] = {}  # read from the cache for the rule set loaded
_compiled: dict[str, CodeType] = {}  # compiled in this process
_used: dict[str, CodeType] | None = None  # asked for since `load`, to keep with the rule set
_checked = 0  # how many of `_used` a `keep` found kept (it grows only by sources asked anew)


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
    if _used is not None:  # (only a command that loads and keeps code remembers what it used)
        _used[source] = code
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


def load(cache: RuleCache | None, key: str) -> None:
    """Use the code kept under `key` (none on a miss, or anything else than `keep` writes)."""
    global _used, _checked
    _kept.clear()
    _used, _checked = {}, 0
    blob = cache.get(KIND, key) if cache is not None else None
    if blob is None:
        return
    try:
        kept = marshal.loads(blob)
    except (EOFError, ValueError, TypeError):
        return
    if type(kept) is dict and all(type(s) is str and type(c) is CodeType for s, c in kept.items()):
        _kept.update(kept)


def keep(cache: RuleCache | None, key: str) -> None:
    """Keep under `key` the code asked for since `load`, if any of it was compiled anew (not
    among the kept: what a `keep` wrote is kept from then on). `rulesd replay` calls it after
    every block: nothing asked for since the last call is a test of one length, not a walk of
    every source (3 % of the instructions of a replay of the estate benchmark at 100 rules)."""
    global _checked
    if _used is None or len(_used) == _checked:
        return
    if cache is not None and any(source not in _kept for source in _used):
        cache.put(KIND, key, marshal.dumps(_used))
        _kept.update(_used)
    _checked = len(_used)
