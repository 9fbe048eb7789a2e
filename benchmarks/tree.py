"""Which `rulesd` the benchmarks run: the first on PYTHONPATH (a tree to compare), else this
checkout, in their child processes and in their own.

Imported before `rulesd`, it puts this checkout last on PYTHONPATH (for the children), and in
this process's sys.path at the same place, before site-packages (as a child has it), with
PYTHONPATH's entries made absolute (a child may run elsewhere). The children run `python -P`:
`python -m rulesd` and `python -c` put the working directory first on sys.path, so a script
started from inside a checkout ran that checkout's `rulesd` whatever PYTHONPATH said. `ran()`
says which one they run, for each script's header.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parent.parent)
_named = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ["PYTHONPATH"] = os.pathsep.join([*_named, CHECKOUT])
if CHECKOUT not in sys.path:
    _site = [i for i, p in enumerate(sys.path) if os.path.basename(p) in ("site-packages", "dist-packages")]
    sys.path.insert(_site[0] if _site else len(sys.path), CHECKOUT)

PYTHON = [sys.executable, "-P"]
RULESD = [*PYTHON, "-m", "rulesd"]


def ran() -> str:
    """Where the children import `rulesd` from (its `__init__.py`)."""
    command = [*PYTHON, "-c", "import rulesd; print(rulesd.__file__)"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
