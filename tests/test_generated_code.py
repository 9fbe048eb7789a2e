"""The generated functions' code kept in the rule cache: a warm `replay` compiles none of it,
anything kept that is not what was written is compiled afresh, and the alerts are the same."""

from __future__ import annotations

import marshal
import subprocess
import sys
from pathlib import Path
from types import CodeType

import pytest

from rulesd.rules import generated_code
from rulesd.rules.cache import RuleCache
from tests.run_cli import clean_env

RULES = """
rules:
  - {name: api-timeout, match: {service: api, message: {regex: "timeout after \\\\d+ms"}}}
  - {name: panic, match: {message: {contains: panic}, host: {endswith: ".example.com"}}}
  - {name: slow, match: {service: {in: [db, cache]}, latency_ms: {gt: 900}}}
"""

EVENTS = (
    '{"service": "api", "message": "timeout after 250ms"}\n'
    '{"service": "db", "latency_ms": 1200, "message": "slow"}\n'
    '{"service": "web", "host": "w1.example.com", "message": "kernel panic"}\n'
)

# `rulesd ARGS` run by `runpy`, then how many sources of generated code it compiled.
_COUNTED = """
import builtins, runpy, sys
compiled = []
original = builtins.compile
def counting(source, filename, *args, **kwargs):
    if filename == "<rulesd>":
        compiled.append(source)
    return original(source, filename, *args, **kwargs)
builtins.compile = counting
sys.argv = ["rulesd", *sys.argv[1:]]
try:
    runpy.run_module("rulesd", run_name="__main__")
except SystemExit:
    pass
print(len(compiled), file=sys.stderr)
"""


def _replay(tmp_path: Path, rules: str = RULES) -> tuple[int, str]:
    """How many generated sources a `rulesd replay` of EVENTS compiled, and its output."""
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS)
    done = subprocess.run(
        [sys.executable, "-c", _COUNTED, "replay", "--rules", str(path), str(events)],
        capture_output=True,
        text=True,
        env=clean_env({"RULESD_CACHE_DIR": str(tmp_path / "cache")}),
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    return int(done.stderr.strip().splitlines()[-1]), done.stdout


def test_a_warm_replay_compiles_no_generated_code(tmp_path: Path) -> None:
    """The first replay compiles the predicates' and the index's code and keeps it with the
    rule set; the next one reads it back, and finds the same alerts."""
    first, first_out = _replay(tmp_path)
    second, second_out = _replay(tmp_path)
    assert first > 0
    assert 0 == second
    assert "alerts: 3" in second_out
    assert first_out == second_out


def test_kept_code_not_as_written_is_compiled_afresh(tmp_path: Path) -> None:
    """An entry that is not a mapping of source texts to code (from another version, say) is a
    miss: everything is compiled again, and kept anew for the next start."""
    first, first_out = _replay(tmp_path)
    (entry,) = (tmp_path / "cache").glob("code-*.bin")
    key = entry.name.removeprefix("code-").removesuffix(".bin")
    cache = RuleCache(tmp_path / "cache")
    for wrong in ([1, 2], {"def run(e):\n    return 1\n": "not code"}, {1: compile("1", "<x>", "eval")}):
        cache.put("code", key, marshal.dumps(wrong))
        again, out = _replay(tmp_path)
        assert (first, first_out) == (again, out)
        assert (0, first_out) == _replay(tmp_path)


def test_an_edited_rule_set_alerts_as_edited(tmp_path: Path) -> None:
    """Rules of the same shape with other values are written as the same sources (the values
    are the functions' globals, never in their text): the code kept before the edit serves
    after it, and the edited rule set alerts as its rules say."""
    _replay(tmp_path)
    edited = RULES.replace("service: api", "service: web").replace("gt: 900", "gt: 2000")
    compiled, out = _replay(tmp_path, edited)
    assert 0 == compiled
    assert "alerts: 1" in out and "panic" in out and "api-timeout" not in out and "slow" not in out
    assert (0, out) == _replay(tmp_path, edited)


def test_a_cache_directory_that_is_not_private_keeps_no_code(tmp_path: Path) -> None:
    """Code read back must be this user's alone: in a directory others may write, nothing is
    kept or read, and everything is compiled at each start."""
    (tmp_path / "cache").mkdir(mode=0o777)
    (tmp_path / "cache").chmod(0o777)
    first, first_out = _replay(tmp_path)
    assert [] == list((tmp_path / "cache").glob("code-*.bin"))
    assert (first, first_out) == _replay(tmp_path)


def test_a_keep_with_nothing_asked_anew_reads_no_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`replay` keeps after every block: once what was used is kept, a keep with nothing asked
    for since costs one test, not a look at every source (it is on the replay's every block)."""
    looked: list[str] = []

    class Counting(dict[str, CodeType]):
        def __contains__(self, source: object) -> bool:
            looked.append(str(source))
            return super().__contains__(source)

    monkeypatch.setattr(generated_code, "_kept", Counting())
    for name in ("_used", "_checked"):  # (set back after the test, for other tests in process)
        monkeypatch.setattr(generated_code, name, getattr(generated_code, name))
    cache = RuleCache(tmp_path / "cache")
    generated_code.load(cache, "key")
    sources = [f"def run(e):\n    return e + {n}\n" for n in range(3)]
    for source in sources:
        generated_code.code_for(source)
    generated_code.keep(cache, "key")
    assert looked  # the first keep looks, and writes what was compiled
    assert cache.get("code", "key") is not None
    looked.clear()
    for source in sources:  # asked again: nothing new
        generated_code.code_for(source)
    for _ in range(3):
        generated_code.keep(cache, "key")
    assert [] == looked
    generated_code.code_for("def run(e):\n    return e * 2\n")  # a source asked anew is kept
    generated_code.keep(cache, "key")
    assert 4 == len(marshal.loads(cache.get("code", "key") or b""))
