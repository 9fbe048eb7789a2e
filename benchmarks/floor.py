"""The whole-process floor: read an events file in blocks and `orjson.loads` every line.

    python benchmarks/floor.py EVENTS_FILE

No `rulesd replay` or `rulesd run` can take less CPU time than this process over the same
file (an interpreter starting, orjson imported, every line read and parsed), so
`process.py` gives their figures as ratios to it. Prints the number of lines parsed.
"""

from __future__ import annotations

import sys

import orjson

BLOCK_BYTES = 12 * 1024  # as `rulesd replay` reads


def main() -> None:
    loads = orjson.loads
    n = 0
    with open(sys.argv[1], "rb") as f:
        while block := f.readlines(BLOCK_BYTES):
            n += len(list(map(loads, block)))
    print(n)


if __name__ == "__main__":
    main()
