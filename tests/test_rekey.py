"""A state an earlier rulesd saved, whose group keys wrote a whole float as JSON does (`1.0`), read
with its keys made as this one makes them (`1`): groups that become one merged, an alert open
under an old alias folded into and closed by it; through the real daemon on SQLite and an
instance on a real redis-server."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from rulesd.alerting.alias import bounded
from rulesd.engine import StateDelta
from rulesd.engine.rekey import merged_state, rekeyed_alias, rekeyed_text, restored_groups
from rulesd.engine.state import ABSENCE, DISTINCT, NEW_VALUE, OPEN, SEQUENCE, THROTTLE, WINDOW, EngineState
from rulesd.state.redis import RedisState
from rulesd.state.sqlite import SqliteState
from tests.daemon_process import Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie
from tests.redis_server import RedisServer
from tests.ruletools import ruleset_from_yaml
from tests.test_e2e_redis import Fleet

UPGRADED = """
rules:
  - name: errors
    match: {event: error}
    threshold: {count: 3, window: 1h, group_by: [host]}
  - name: heartbeat-missing
    match: {event: heartbeat}
    absence: {window: 1h, group_by: [host]}
  - name: failing
    match: {event: failing}
    threshold: {count: 1, window: 1h, group_by: [host]}
    resolve: {after: 1h}
"""


def saved_by_an_earlier_rulesd(now: float) -> StateDelta:
    """The state an earlier rulesd saved for UPGRADED, whose keys wrote a whole float as JSON
    does (`["1.0"]`): host 1 and host 1.0 each one error, host 1.0 silent and paged, host 1 seen
    since, host 1.0 failing with its alert open (rows as it wrote them, to be written through the
    store it wrote them with)."""
    fingerprints = {r.name: r.fingerprint for r in ruleset_from_yaml(UPGRADED).rules}
    silent = {"last": now - 7200, "event": {"event": "heartbeat", "host": 1.0}, "origin": None, "open": True}
    seen = {"last": now - 60, "event": {"event": "heartbeat", "host": 1}, "origin": None, "open": False}
    rows = [
        ("window", "errors", '["1.0"]', json.dumps([now - 120])),
        ("window", "errors", '["1"]', json.dumps([now - 60])),
        ("absence", "heartbeat-missing", '["1.0"]', json.dumps({**silent, "aliases": [OLD_ALIAS]})),
        ("absence", "heartbeat-missing", '["1"]', json.dumps({**seen, "aliases": []})),
        ("open", "failing", '["1.0"]', json.dumps({"last": now - 60, "aliases": [OLD_OPEN]})),
    ]
    return StateDelta(True, fingerprints, rows, [], now - 30)


OLD_ALIAS = 'rulesd: heartbeat-missing: {"host":1.0}'
OLD_OPEN = 'rulesd: failing: {"host":1.0}'


def pages_and_closes(server: FakeOpsGenie) -> tuple[list[str], list[str]]:
    """The aliases of the alerts `server` received, and of the closes, in order."""
    creates = [r.json()["alias"] for r in server.requests if r.path.endswith("/alerts")]
    return creates, [unquote(r.path.split("/")[-2]) for r in server.requests if "/close?" in r.path]


def saved_groups(ws: Workspace) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{ws.root / 'state' / 'state.sqlite'}?mode=ro", uri=True)) as db:
        return sorted(db.execute("SELECT kind, grp FROM engine_groups"))


def test_a_state_saved_with_the_old_keys_is_restored_under_the_new(tmp_path: Path, server: FakeOpsGenie) -> None:
    """An upgrade onto the state above: host 1's next error is its group's third (both old
    groups' errors count, one page), its next heartbeat ends the silence paged as host 1.0 (the
    alert is closed by the alias it went out with), its failing goes out under the alias of the
    alert open as host 1.0 (folded into it, not paged again), and the rows are written again
    under the new keys alone."""
    ws = Workspace(tmp_path, server.url, time_field="t")
    (ws.rules / "rules.yaml").write_text(UPGRADED)
    now = time.time()
    (ws.root / "state").mkdir()
    store = SqliteState(str(ws.root / "state" / "state.sqlite"))
    store.commit(positions={}, payloads=[], now=now, engine=saved_by_an_earlier_rulesd(now))
    daemon = ws.start()
    ws.append(*({"event": e, "host": 1, "t": now} for e in ("error", "heartbeat", "failing")))
    assert server.wait_for(lambda got: len(got) == 3, timeout=20), daemon.output()
    assert (['rulesd: errors: {"host":1}', OLD_OPEN], [OLD_ALIAS]) == pages_and_closes(server)
    assert 0 == daemon.terminate()
    assert [("absence", '["1"]'), ("open", '["1"]')] == saved_groups(ws)  # (the window fired: it starts anew)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def test_a_shared_state_saved_with_the_old_keys_is_restored_under_the_new(
    tmp_path: Path, redis_server: RedisServer, server: FakeOpsGenie
) -> None:
    """The same upgrade with the state in Redis (an instance in fleet mode, a real
    redis-server): the same page and close, and the shared groups written again under the new
    keys alone."""
    now = time.time()
    old = RedisState(redis_server.client(), instance="old")
    old.publish_rules(ruleset_from_yaml(UPGRADED).fingerprint)
    old.commit(positions={}, payloads=[], now=now, engine=saved_by_an_earlier_rulesd(now))
    fleet = Fleet(tmp_path / "fleet", redis_server.url, server.url, rules=UPGRADED)
    events = tmp_path / "fleet" / "a.jsonl"
    kinds = ("error", "heartbeat", "failing")
    events.write_text("".join(json.dumps({"event": e, "host": 1, "ts": now}) + "\n" for e in kinds))
    instance = fleet.start_on_file("a", events)
    assert server.wait_for(lambda got: len(got) == 3, timeout=30), fleet.output()
    assert (['rulesd: errors: {"host":1}', OLD_OPEN], [OLD_ALIAS]) == pages_and_closes(server)
    fields = lambda: sorted(f.decode() for f in redis_server.client().hkeys("rulesd:groups"))  # noqa: E731
    new_keys = ['absence\theartbeat-missing\t["1"]', 'open\tfailing\t["1"]']
    assert wait_until(lambda: fields() == new_keys, 10), fields()
    assert 0 == instance.terminate()


@pytest.mark.parametrize(
    ("saved", "now"),
    [
        ('"1.0"', '"1.0"'),
        ("1.0", "1"),
        ("-0.0", "0"),
        ("1e+20", "100000000000000000000"),
        ("100000000000000000001", "100000000000000000001"),  # (an integer beyond 64 bits stays exact)
        ("0.5", "0.5"),
        ("true", "true"),
        ('[1.0,{"a":2.0}]', '[1,{"a":2}]'),
        ("\x00missing", "\x00missing"),
    ],
)
def test_a_key_text_an_earlier_rulesd_saved_is_written_as_key_text_writes_its_value(saved: str, now: str) -> None:
    assert now == rekeyed_text(saved)


def test_groups_an_earlier_rulesd_kept_apart_are_merged_keeping_what_both_held() -> None:
    """Each kind's two groups made one: the events of both count, the later page throttles,
    the values both saw are known (at the later time), an open alert's aliases are all kept,
    a silence that paged is kept (the next event closes it), a sequence the further on."""
    assert 9.0 == merged_state(THROTTLE, 9.0, 4.0)
    assert [1.0, 2.0, 3.0] == merged_state(WINDOW, [1.0, 3.0], [2.0])
    assert {"1": 5.0, "2": 1.0} == merged_state(DISTINCT, {"1": 5.0}, {"1": 3.0, "2": 1.0})
    opened = merged_state(OPEN, {"last": 1.0, "aliases": ["a"]}, {"last": 2.0, "aliases": ["b"]})
    assert {"last": 2.0, "aliases": ["b", "a"]} == opened
    silent = {"last": 1.0, "open": True, "aliases": ["old"], "released": {"old": [["r", ""]]}}
    seen = {"last": 5.0, "open": False, "aliases": []}
    assert {**silent, "aliases": ["old"]} == merged_state(ABSENCE, seen, silent)
    assert seen == merged_state(ABSENCE, seen, {**seen, "last": 2.0})
    ahead = {"step": 1, "count": 0, "start": 1.0, "firsts": []}
    assert ahead == merged_state(SEQUENCE, {"step": 0, "count": 0, "start": 3.0, "firsts": [3.0]}, ahead)


def test_a_state_read_with_keys_made_again_is_written_whole() -> None:
    """Rows under old keys go at the next save (a full one); a state saved by this rulesd is
    not rewritten for it."""
    old = EngineState.from_json({"windows": {"r": [[["1.0"], [1.0]], [["1"], [2.0]]]}})
    assert ({"r": {"1": [1.0, 2.0]}}, True) == (old.tables[WINDOW], old.delta().full)
    new = EngineState.from_json({"windows": {"r": [[["1"], [1.0]]]}, "new_value": {"r": [[["1"], {"2": 1.0}]]}})
    assert (False, False) == (new.dirty, new.rekeyed)
    values = EngineState.from_json({"new_value": {"r": [[["1"], {"2.0": 1.0, "2": 3.0}]]}})
    assert ({"r": {"1": ("2", 3.0)}}, True) == (values.tables[NEW_VALUE], values.dirty)


@pytest.mark.parametrize(
    ("earlier", "now"),
    [
        ('rulesd: a, b: {"host":1.0,"dc":"x: {1.0}"}', 'rulesd: a, b: {"host":1,"dc":"x: {1.0}"}'),
        ('rulesd: a: {"n":[-0.0]}', 'rulesd: a: {"n":[0]}'),
        ("rulesd: a", "rulesd: a"),
        ("rulesd-sha256: 0a1b", "rulesd-sha256: 0a1b"),
        ("host 1.0 down", "host 1.0 down"),  # (an `alert.alias` is the template's text)
        ('rulesd: a: {"host":1.0', 'rulesd: a: {"host":1.0'),
        # characters the alias escapes, escaped again; grown beyond ALIAS_MAX, hashed
        ('rulesd: a: {"host":1.0,"d":"x\\u2028y\\u007f"}', 'rulesd: a: {"host":1,"d":"x\\u2028y\\u007f"}'),
        (
            'rulesd: a: {"host":1e+20,"d":"' + "d" * 470 + '"}',
            bounded('rulesd: a: {"host":100000000000000000000,"d":"' + "d" * 470 + '"}'),
        ),
    ],
)
def test_a_default_alias_an_earlier_rulesd_made_is_read_as_this_one_makes_it(earlier: str, now: str) -> None:
    assert now == rekeyed_alias(earlier)


def test_the_one_search_for_old_keys_finds_exactly_the_keys_made_again() -> None:
    """A state is read as fast as before unless a search finds a key (or a value text) that
    may be written otherwise: on random keys of texts, integers, floats, lists and objects,
    a state is said to be made again exactly when one of its texts is."""
    rng = random.Random(3)
    texts = ['"a"', '"1.0"', "1", "-12", "0.5", "1.0", "-0.0", "1e+20", "[1,2]", "[1.0]", '{"a":1}', "true"]
    texts.append("\x00missing")
    for _ in range(300):
        rows = [[rng.sample(texts, rng.randint(1, 2)), {rng.choice(texts): 1.0}] for _ in range(rng.randint(1, 4))]
        unique = {tuple(parts): value for parts, value in rows}
        expected = any(rekeyed_text(t) != t for parts, value in unique.items() for t in [*parts, *value])
        _, changed = restored_groups(NEW_VALUE, [[list(p), v] for p, v in unique.items()])
        assert expected == changed, unique


def test_an_alert_open_under_a_hashed_alias_an_earlier_rulesd_made_is_fired_into_it() -> None:
    """A default alias beyond ALIAS_MAX characters went out as its hash, which cannot be read
    back: a group whose event writes its values as the one that opened the alert did (`1.0`) is
    fired into it, not paged again under the hash of the alias written now (`1`); one whose
    alert is closed is paged under the new alias."""
    import hashlib

    from rulesd.engine import Engine

    ruleset = ruleset_from_yaml("""
rules:
  - name: failing
    match: {event: failing}
    threshold: {count: 1, window: 1h, group_by: [host, detail]}
    resolve: {after: 1h}
""")
    detail = "d" * 600
    written = 'rulesd: failing: {"host":1.0,"detail":"' + detail + '"}'
    earlier = "rulesd-sha256: " + hashlib.sha256(written.encode()).hexdigest()
    fingerprints = {r.name: r.fingerprint for r in ruleset.rules}
    key = ["1.0", json.dumps(detail)]
    saved = {"fingerprints": fingerprints, "open": {"failing": [[key, {"last": 1000.0, "aliases": [earlier]}]]}}
    engine = Engine(ruleset, EngineState.from_json(saved))
    firing = engine.evaluate({"event": "failing", "host": 1.0, "detail": detail}, 1100.0)
    assert firing is not None and earlier == firing.alias
    assert [earlier] == engine.state.tables[OPEN]["failing"][f"1\x1f{json.dumps(detail)}"]["aliases"]
    other = engine.evaluate({"event": "failing", "host": 2.0, "detail": detail}, 1100.0)
    assert other is not None and other.alias is None
