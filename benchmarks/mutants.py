"""Syntax errors at the line that is wrong: one-line mutants of rule files, checked in process.

    python benchmarks/mutants.py [FILE ...] [--show wrong|silent|all] [--quick]

Every non-blank, non-comment line of each rule file (by default the example rule files
`rules/*.yaml`, their `.test.yaml` files apart) is changed one way at a time: indented 2 and
1 columns less and more (less only where the line is indented that much), its first `:`
removed, its `- ` made spaces (only on a list item). Each mutant is checked with
`rulesd.rules.loader.check_text`, as `rulesd check` checks one file. A mutant is "silent" when
the check finds no error (it may still mean a valid rule), "wrong" when it has errors and every
one of them is at another line than the one changed. The table counts them by mutation;
`--show wrong` lists each wrong mutant: file, line, mutation, and the lines its errors went to.
The mutations and the files are fixed, so every run counts the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rulesd.rules.loader import check_text

ROOT = Path(__file__).resolve().parent.parent


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _shift(by: int) -> Callable[[str], str | None]:
    def mutate(line: str) -> str | None:
        if by < 0:
            return line[-by:] if _indent(line) >= -by else None
        return " " * by + line

    return mutate


def _no_colon(line: str) -> str | None:
    return line.replace(":", "", 1) if ":" in line else None


def _no_dash(line: str) -> str | None:
    at = _indent(line)
    return line[:at] + "  " + line[at + 2 :] if line[at:].startswith("- ") else None


MUTATIONS: dict[str, Callable[[str], str | None]] = {
    "indented 2 less": _shift(-2),
    "indented 1 less": _shift(-1),
    "indented 1 more": _shift(1),
    "indented 2 more": _shift(2),
    "`:` removed": _no_colon,
    "`- ` removed": _no_dash,
}


class Mutant:
    """One changed line of one file, and the lines the check's errors were at."""

    def __init__(self, path: str, line: int, mutation: str, text: str, error_lines: list[int]) -> None:
        self.path = path
        self.line = line
        self.mutation = mutation
        self.text = text
        self.error_lines = error_lines

    @property
    def silent(self) -> bool:
        return not self.error_lines

    @property
    def wrong(self) -> bool:
        return bool(self.error_lines) and self.line not in self.error_lines


def mutants(path: Path, name: str) -> Iterator[Mutant]:
    """Every mutant of the file at `path`, checked; `name` is how problems name the file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for mutation, mutate in MUTATIONS.items():
            changed = mutate(line)
            if changed is None:
                continue
            text = "".join([*lines[:index], changed, *lines[index + 1 :]])
            result = check_text(text, name)
            error_lines = sorted({p.location.line for p in result.errors})
            yield Mutant(name, index + 1, mutation, changed.rstrip("\n"), error_lines)


def table(found: list[Mutant]) -> list[str]:
    """The counts by mutation, as benchmarks/README.md records them."""
    out = ["| mutation | mutants | silent | wrong |", "|---|---:|---:|---:|"]
    for mutation in [*MUTATIONS, "all"]:
        rows = [m for m in found if mutation in ("all", m.mutation)]
        silent = sum(m.silent for m in rows)
        wrong = sum(m.wrong for m in rows)
        out.append(f"| {mutation} | {len(rows)} | {silent} | {wrong} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="rule files (default: rules/*.yaml but the tests)")
    parser.add_argument("--show", choices=("wrong", "silent", "all"), help="list these mutants one a line")
    parser.add_argument("--quick", action="store_true", help="only the first two files (CI smoke)")
    args = parser.parse_args(argv)
    examples = (p for p in (ROOT / "rules").glob("*.yaml") if not p.name.endswith(".test.yaml"))
    files: list[Path] = args.files or sorted(examples)
    if args.quick:
        files = files[:2]
    found: list[Mutant] = []
    for path in files:
        name = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
        found.extend(mutants(path, name))
    if args.show:
        for m in found:
            if args.show == "all" or (m.wrong if args.show == "wrong" else m.silent):
                where = ", ".join(map(str, m.error_lines)) or "no error"
                print(f"{m.path}:{m.line}: {m.mutation}: {m.text.strip()!r} -> errors at {where}")
    print("\n".join(table(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
