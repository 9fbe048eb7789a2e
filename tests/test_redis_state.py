"""Tests for rulesd.state.redis: the state shared by instances in a real redis-server."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from rulesd.alerting.api import PausingAlertError, RetryableAlertError
from rulesd.daemon.shared import SharedEngine
from rulesd.engine import Engine, StateDelta
from rulesd.events import make_parser
from rulesd.pipeline import advance, evaluate_lines, pending
from rulesd.sender import Sender
from rulesd.state import CLOSE, Request, StateUnavailable
from rulesd.state.redis import LAST_WAIT, Conflict, Made, RedisState, StreamBatch, connect
from tests.daemon_process import wait_until
from tests.outbox_checks import check_a_close_of_a_dead_create_is_kept_with_it
from tests.redis_server import RedisServer
from tests.ruletools import ruleset_from_yaml
from tests.test_sender import FakeTransport
from tests.test_state import DEEP_ABSENCE, DEEP_HEARTBEAT, HELD_AND_ORDERED, check_held_and_ordered, held_and_ordered


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path_factory.mktemp("redis"))
    yield s
    s.stop()


@pytest.fixture
def client(server: RedisServer) -> redis.Redis:
    c = server.client()
    c.flushall()
    return c


def store(client: redis.Redis, instance: str = "a", **kwargs: float) -> RedisState:
    s = RedisState(client, instance=instance, **kwargs)  # type: ignore[arg-type]
    s.publish_rules("R")
    return s


def delta(*upserts: tuple[str, str, str, str], full: bool = False) -> StateDelta:
    return StateDelta(full, {"r": "f1"}, list(upserts), [])


def test_commit_writes_everything_and_another_instance_reads_it(client: redis.Redis) -> None:
    """Positions (per instance), engine state, clock and alerts in order, in one commit."""
    a = store(client)
    a.load_engine_state()
    a.commit(
        positions={"/x": {"offset": 10}},
        payloads=[{"message": "1"}, {"message": "2"}],
        now=100.0,
        engine=delta(("window", "r", '["\\"h\\""]', "[5.0]"), full=True),
        clock=5.0,
    )
    b = RedisState(client, instance="b")
    snap = b.snapshot()
    assert 1 == snap.version and "R" == snap.rules and (5.0, 100.0) == snap.clock
    assert {"fingerprints": {"r": "f1"}, "windows": {"r": [[['"h"'], [5.0]]]}} == snap.state
    assert {} == b.load_positions()
    assert {"/x": {"offset": 10}} == RedisState(client, instance="a").load_positions()
    assert ["1", "2"] == [alert.payload["message"] for alert in b.alerts()]
    assert (2, 100.0) == b.depth()


def test_a_commit_on_a_stale_version_writes_nothing(client: redis.Redis) -> None:
    """Optimistic concurrency: the second of two instances synced to one version is refused."""
    a, b = store(client, "a"), store(client, "b")
    a.load_engine_state(), b.load_engine_state()
    a.commit(positions={"/x": {"o": 1}}, payloads=[{"n": 1}], now=1.0)
    with pytest.raises(Conflict) as refused:
        b.commit(positions={"/y": {"o": 1}}, payloads=[{"n": 2}], now=1.0, engine=delta(("window", "r", "[]", "[1]")))
    assert ("version", "1") == (refused.value.why, refused.value.detail)
    assert [{"n": 1}] == [alert.payload for alert in b.alerts()]
    assert {} == b.load_positions() and b.snapshot().state is None


def test_a_rule_set_other_than_the_published_one_commits_nothing(client: redis.Redis) -> None:
    """The refusal names the published hash; after the same rules are published it commits."""
    a = store(client)
    a.load_engine_state()
    other = RedisState(client, instance="b")
    other.publish_rules("S")
    with pytest.raises(Conflict) as refused:
        a.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    assert ("rules", "S") == (refused.value.why, refused.value.detail)
    assert [] == a.alerts()
    a.publish_rules("S")
    a.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    assert 1 == len(a.alerts())


def test_catch_up_returns_the_groups_others_changed_or_asks_for_everything(client: redis.Redis) -> None:
    """Change records name the touched groups; when they are trimmed away, a full load is asked for."""
    a, b = store(client, "a"), store(client, "b")
    a.load_engine_state(), b.load_engine_state()
    a.commit(positions={}, payloads=[], now=1.0, engine=delta(("window", "r", '["x"]', "[1.0]")), clock=1.0)
    a.commit(positions={}, payloads=[], now=2.0, engine=StateDelta(False, {}, [], [("window", "r", '["x"]')]))
    a.commit(positions={}, payloads=[], now=3.0, engine=delta(("throttle", "r", '["y"]', "3.0")), clock=3.0)
    changes = b.catch_up()
    assert (3, False, (3.0, 3.0)) == (changes.version, changes.full, changes.clock)
    assert {("window", "r", "x"): None, ("throttle", "r", "y"): 3.0} == changes.groups
    client.xtrim("rulesd:changes", minid="2-0", approximate=False)
    assert b.catch_up().full


def stream_batch(client: redis.Redis, *ids: str, claimed: bool = False) -> StreamBatch:
    return StreamBatch("events", "g", list(ids), claimed)


def test_stream_batches_commit_in_order_and_once(client: redis.Redis) -> None:
    """A batch waits for earlier entries (turn), one committed by another is refused (taken),
    a claimed batch with another's entries inside is refused (gap); committed entries are
    acknowledged and the cursor moves."""
    ids = [client.xadd("events", {"event": b"{}"}).decode() for _ in range(4)]
    client.xgroup_create("events", "g", id="0")
    client.xreadgroup("g", "a", {"events": ">"}, count=4)
    a = store(client)
    a.load_engine_state()
    with pytest.raises(Conflict) as refused:
        a.commit(positions={}, payloads=[], now=1.0, stream=stream_batch(client, ids[1], ids[2]))
    assert "turn" == refused.value.why
    with pytest.raises(Conflict) as refused:
        a.commit(positions={}, payloads=[], now=1.0, stream=StreamBatch("events", "g", [ids[0], ids[2]], True))
    assert "gap" == refused.value.why
    a.commit(positions={}, payloads=[], now=1.0, stream=stream_batch(client, ids[0], ids[1]))
    assert ids[1] == a.cursor()
    with pytest.raises(Conflict) as refused:
        a.commit(positions={}, payloads=[], now=1.0, stream=stream_batch(client, ids[1], ids[2]))
    assert ("taken", ids[1]) == (refused.value.why, refused.value.detail)
    assert 2 == client.xpending("events", "g")["pending"]


def test_a_create_is_sent_as_the_json_bytes_the_stream_holds(client: redis.Redis) -> None:
    """The sender hands the transport a create's JSON exactly as the outbox stream keeps it
    (the bytes Redis gives back, no parse and dump), a close's body as a dict, in order."""
    given: list[Any] = []

    class Recording(FakeTransport):
        def create_alert(self, payload: dict[str, Any] | bytes) -> None:
            given.append(payload)
            super().create_alert(payload)

        def close_alert(self, alias: str, body: dict[str, Any]) -> None:
            given.append((alias, body))

    a = store(client)
    a.load_engine_state()
    created = {"message": "é \u2028 x", "details": {"n": "1"}, "priority": "P2", "count": 1.5}
    a.commit(positions={}, payloads=[created, Request({"note": "n"}, CLOSE, "al"), {"message": "b"}], now=time.time())
    queued = [fields[b"payload"] for _, fields in client.xrange(a.k.outbox)]
    Sender(a, Recording(), clock=time.time).step()
    assert [queued[0], ("al", {"note": "n"}), queued[2]] == given
    assert created == orjson.loads(queued[0]) and all(type(body) is bytes for body in (given[0], given[2]))


def test_one_sender_at_a_time_and_a_paused_one_rechecks(client: redis.Redis) -> None:
    """The lease: only its holder sees the head; when it lapses another takes over, and the
    first, back from a pause, no longer owns the alert."""
    a, b = store(client, "a", lease=0.3), store(client, "b", lease=0.3)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"n": 1}, {"n": 2}], now=1.0)
    head = a.head()
    assert head is not None and {"n": 1} == head.payload
    assert b.head() is None
    time.sleep(0.4)  # a is paused past its lease
    taken = b.head()
    assert taken is not None and taken.id == head.id
    assert not a.owns(head.id) and b.owns(head.id)
    b.mark_sent(head.id)
    b.close()  # a clean stop gives the lease up at once
    assert a.head() is not None and not a.owns(head.id)


def test_a_close_gives_up_only_its_own_sender_lease(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """a's lease lapses and b takes the outbox over just as a stops, between the two steps a
    read and a delete would make: a's close must leave b's lease alone (it deleted b's, and a
    third instance could take the outbox over while b still sent)."""
    a, b = store(client, "a", lease=0.3), store(client, "b", lease=0.3)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"n": 1}], now=1.0)
    assert a.head() is not None and b.head() is None
    command = a.client.execute_command
    taken: list[bool] = []

    def then_taken(*args: Any, **options: Any) -> Any:
        answer = command(*args, **options)
        if not taken:  # the lease lapses right after the close's first command, and b takes it
            taken.append(True)
            client.delete(a.k.sender)
            assert b.head() is not None
        return answer

    monkeypatch.setattr(a.client, "execute_command", then_taken)
    a.close()
    assert store(client, "c", lease=0.3).head() is None
    head = b.head()
    assert head is not None and b.owns(head.id)


def test_a_sender_paused_for_its_key_lets_another_instance_deliver(client: redis.Redis) -> None:
    """Instance a's key is refused (a key file not yet rolled out to its host): its sender pauses,
    holding the lease, so instance b, whose key works, never got the outbox; every alert waited
    for a's key, until max_age dead-lettered them. A paused sender no longer keeps the lease
    while it waits: b takes the outbox over once it lapses and delivers, in order."""
    a, b = store(client, "a", lease=0.3), store(client, "b", lease=0.3)
    a.load_engine_state()
    working = FakeTransport()
    other = Sender(b, working, clock=time.time, auth_retry=0.5)
    a.commit(positions={}, payloads=[{"message": "0"}], now=time.time())
    other.step()  # b delivers first, then lets its lease lapse (paused itself, say)
    time.sleep(0.4)
    a.commit(positions={}, payloads=[{"message": "1"}, {"message": "2"}], now=time.time())
    refused = PausingAlertError("HTTP 401: OpsGenie rejected the API key", 401)
    paused = Sender(a, FakeTransport(*[refused] * 100), clock=time.time, auth_retry=0.5)
    paused.step()
    assert paused.paused_reason is not None and b.paused() is not None
    deadline = time.monotonic() + 10
    while working.sent != ["0", "1", "2"] and time.monotonic() < deadline:
        paused.step()
        other.step()
        time.sleep(0.05)
    assert ["0", "1", "2"] == working.sent
    assert (0, None) == b.depth()
    # Delivering, b says sending is not paused: `rulesd outbox list` showed its alerts paused.
    assert b.paused() is None


def test_an_instance_taking_over_from_a_paused_sender_tries_at_once_and_waits_out_its_own_backoff(
    client: redis.Redis,
) -> None:
    """a's key is refused: a, paused, tries nothing more until its pause (60 s) ends, and gives
    the sender's lease up. b takes the outbox over at its next look and tries the alert at once
    (it waited for a's lease to lapse, then out a's 60 s); that try failing (a 503), b waits out
    its own backoff, as for any failed attempt."""
    a, b = store(client, "a", lease=0.3), store(client, "b", lease=0.3)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"message": "0"}], now=time.time())
    refused = FakeTransport(*[PausingAlertError("HTTP 401: OpsGenie rejected the API key", 401)] * 10)
    paused = Sender(a, refused, clock=time.time, auth_retry=60.0)
    paused.step()
    paused.step()
    assert ["0"] == refused.attempts  # the refused key is not tried again meanwhile
    assert client.get("rulesd:sender") is None  # a gave the lease up as it paused: none to wait out
    working = FakeTransport(RetryableAlertError("HTTP 503: unavailable", 503))
    other = Sender(b, working, clock=time.time, auth_retry=60.0, initial_backoff=30.0, random=lambda: 0.5)
    other.step()
    assert ["0"] == working.attempts  # at once, not 60 s after a's refusal
    other.step()
    paused.step()
    assert (["0"], ["0"], []) == (working.attempts, refused.attempts, working.sent)


REFUSED = "HTTP 401: OpsGenie rejected the API key"


def test_a_pause_whose_record_fails_leaves_the_sender_paused(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause is recorded in Redis but its answer is lost (StateUnavailable: the connection
    dropped, Redis restarting): the sender is paused all the same, and its next step does not
    try the refused key again. It was left unpaused, and at once tried the alert again (whose
    last error was the pause recorded, as if another instance had paused): a second request
    OpsGenie refused."""
    a = store(client)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"message": "0"}], now=time.time())
    refused = FakeTransport(*[PausingAlertError(REFUSED, 401)] * 10)
    paused = Sender(a, refused, clock=time.time, auth_retry=60.0)
    record = a.set_paused

    def answer_lost(reason: str | None) -> None:
        record(reason)
        raise StateUnavailable("Redis unavailable: Connection closed by server.")

    monkeypatch.setattr(a, "set_paused", answer_lost)
    with pytest.raises(StateUnavailable):
        paused.step()
    monkeypatch.undo()
    paused.step()
    assert (["0"], REFUSED, REFUSED) == (refused.attempts, paused.paused_reason, a.paused())


def test_a_pause_is_recorded_with_the_lease_given_up_or_not_at_all(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away during the pause's record: it is never left recorded with the sender's
    lease still held (the pause's reason said, and the outbox not given up for another instance
    to take over at once); the record and the release were two commands."""
    a = store(client)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"message": "0"}], now=time.time())
    a.set_paused(REFUSED)  # the scripts loaded: each call below is one command
    a.set_paused(None)
    assert a.head() is not None and a.token.encode() == client.get(a.k.sender)
    command = a.client.execute_command
    calls: list[object] = []

    def then_gone(*args: Any, **options: Any) -> Any:
        calls.append(args[0])
        if len(calls) > 1:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return command(*args, **options)

    monkeypatch.setattr(a.client, "execute_command", then_gone)
    with contextlib.suppress(StateUnavailable):
        a.set_paused(REFUSED)
    monkeypatch.undo()
    recorded, held = client.get(a.k.paused), client.get(a.k.sender) == a.token.encode()
    assert (REFUSED.encode(), False) == (recorded, held) or (None, True) == (recorded, held)


def test_a_close_of_a_dead_lettered_alert_is_kept_to_be_requeued_with_it(client: redis.Redis) -> None:
    """As in SQLite: retry-dead sends the dead-lettered create, then the close delivered after it."""
    a = store(client)
    a.load_engine_state()
    check_a_close_of_a_dead_create_is_kept_with_it(a)


def test_outbox_retries_dead_letters_and_attempts(client: redis.Redis) -> None:
    """Reschedule counts attempts, dead letters leave the queue until requeued at its end."""
    a = store(client)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"n": 1}, {"n": 2}], now=5.0)
    first = a.head()
    assert first is not None
    a.reschedule(first.id, 50.0, "HTTP 503", at=6.0)
    again = a.head()
    assert again is not None and (1, 50.0, "HTTP 503") == (again.attempts, again.next_attempt, again.last_error)
    assert ["HTTP 503"] == [attempt.error for attempt in a.attempts(first.id)]
    a.dead_letter(first.id, "HTTP 422", '{"message": "bad"}', at=7.0)
    assert [{"n": 2}] == [alert.payload for alert in a.alerts("pending")]
    assert [("HTTP 422", 2)] == [(alert.last_error, alert.attempts) for alert in a.alerts("dead")]
    assert 1 == a.retry_dead(now=99.0)
    assert [{"n": 2}, {"n": 1}] == [alert.payload for alert in a.alerts("pending")]


def test_an_unreachable_redis_is_state_unavailable() -> None:
    """No server: the backend says the state is unavailable, not a bug."""
    from tests.redis_server import free_port

    s = RedisState(redis.Redis(port=free_port(), socket_connect_timeout=1), instance="a")
    with pytest.raises(StateUnavailable):
        s.snapshot()


def test_a_store_bound_by_a_deadline_waits_for_a_redis_that_never_answers_until_then() -> None:
    """A Redis that takes the connection and never answers: once bound by a deadline (a stop),
    a command waits until it (at least LAST_WAIT), not the 10 s it waits otherwise, and so
    does giving the lease up."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; no one ever answers
        s = RedisState(connect(f"redis://127.0.0.1:{silent.getsockname()[1]}/0"), instance="a")
        began = time.monotonic()
        s.bound(began + 2)
        with pytest.raises(StateUnavailable, match="Timeout"):
            s.snapshot()
        assert 1.8 < time.monotonic() - began < 4
        began = time.monotonic()  # past the deadline
        with pytest.raises(StateUnavailable, match="Timeout"):
            s.published_rules()
        s.close()
        assert time.monotonic() - began < 2 * LAST_WAIT + 1.5


def test_a_bound_store_makes_its_connection_again_only_when_its_wait_shortens(server: RedisServer) -> None:
    """At a stop, each command's wait is bounded by the deadline; commands past it keep the
    connection they have (each of them made one before: a TLS handshake with rediss://)."""
    s = RedisState(connect(server.url), instance="a")
    admin = server.client()
    s.bound(time.monotonic() - 1)  # past the deadline: every command waits LAST_WAIT
    s.snapshot()
    made = int(admin.info("stats")["total_connections_received"])
    for _ in range(5):
        s.published_rules()
    assert made == int(admin.info("stats")["total_connections_received"])


def test_a_busy_redis_is_state_unavailable(server: RedisServer, client: redis.Redis) -> None:
    """A script running past busy-reply-threshold makes Redis answer BUSY: unavailable for now
    (the daemon waits, the forwarder retries), not an error that stops them."""
    s = store(client)
    thread = server.busy(2)
    try:
        with pytest.raises(StateUnavailable, match="BUSY"):
            s.published_rules()
    finally:
        thread.join()
    assert "R" == s.published_rules()


ABSENCE = """
rules:
  - name: quiet
    match: {kind: beat}
    absence: {window: 60, group_by: [host]}
"""


def test_two_instances_fire_a_due_timer_once(client: redis.Redis) -> None:
    """Both engines see the absence come due; the one that commits second is refused, catches
    up (the silence already fired) and applies again: one alert in all."""
    ruleset = ruleset_from_yaml(ABSENCE)
    engines, shared = [], []
    for name in ("a", "b"):
        engine = Engine(ruleset, time_field="t")
        s = RedisState(client, instance=name)
        s.publish_rules(ruleset.fingerprint)
        shared.append(SharedEngine(engine, s))
        engines.append(engine)
    first, second = shared
    first.load_all()
    first.engine.evaluate({"kind": "beat", "host": "h", "t": 100.0}, 0.0)
    delta_ = first.engine.state.delta()
    first.store.commit(positions={}, payloads=[], now=0.0, engine=delta_, clock=first.engine.now)
    second.sync()
    firings, counts = [], second.engine.counts()
    for one in (first, second):  # both synced to the same version, both find the timer due
        firings.append(advance(one.engine, 200.0).firings)
    assert [1, 1] == [len(f) for f in firings]
    first.store.commit(positions={}, payloads=[], now=0.0, engine=first.engine.state.delta(), clock=200.0)
    delta_ = second.engine.state.delta()
    with pytest.raises(Conflict):
        second.store.commit(positions={}, payloads=[], now=0.0, engine=delta_, clock=200.0)
    second.undo(delta_, 100.0, counts)
    second.sync()
    assert [] == advance(second.engine, 200.0).firings  # applied again: the silence already fired
    assert [] == advance(second.engine, 300.0).firings


def test_a_silence_an_edit_brought_forward_is_dated_at_the_edit_after_a_refused_commit(client: redis.Redis) -> None:
    """The window is shortened (600 -> 60 s) at 400, a silence since 100 then due at once: it
    fires dated 400, the edit, as one process dates it. The commit is refused (another instance
    committed first) and the batch applied again: still 400. The retry armed the group's timer
    again without the edit's floor, and paged the silence dated 160, before the edit, its
    throttle running from then."""
    edited = ruleset_from_yaml(ABSENCE)
    ruleset = ruleset_from_yaml(ABSENCE.replace("window: 60", "window: 600"))
    shared = []
    for name in ("a", "b"):
        s = RedisState(client, instance=name)
        s.publish_rules(ruleset.fingerprint)
        shared.append(SharedEngine(Engine(ruleset, time_field="t"), s))
    first, second = shared
    first.load_all()
    first.engine.evaluate({"kind": "beat", "host": "h", "t": 100.0}, 0.0)
    first.store.commit(positions={}, payloads=[], now=0.0, engine=first.engine.state.delta(), clock=400.0)
    second.sync()
    second.engine.advance(400.0)
    second.engine.replace_rules(edited)  # (committed: the clock did not move on)
    second.store.commit(positions={}, payloads=[], now=0.0, engine=second.engine.state.delta(), clock=400.0)
    counts = second.engine.counts()
    fired = [f.time for _, f, _ in advance(second.engine, 401.0).firings]
    first.sync()
    first.store.commit(positions={"/x": {"offset": 1}}, payloads=[], now=0.0, clock=401.0)
    delta_ = second.engine.state.delta()
    with pytest.raises(Conflict):
        second.store.commit(positions={}, payloads=[], now=0.0, engine=delta_, clock=401.0)
    second.undo(delta_, 400.0, counts)
    second.sync()
    fired += [f.time for _, f, _ in advance(second.engine, 402.0).firings]
    assert [400.0, 400.0] == fired


def test_an_edit_keeps_a_throttle_for_every_instance_of_the_shared_state(client: redis.Redis) -> None:
    """One instance pages (throttled) and commits; the rule is edited (its message) and the
    instance reloads it and commits the state it keeps: another instance, started under the
    edited rule, and then under a further edit, finds the group still throttled."""
    text = "name: t\nmatch: {level: error}\nthrottle: 600\n"
    first = SharedEngine(Engine(ruleset_from_yaml(text)), store(client, "a"))
    first.load_all()
    assert first.engine.evaluate({"level": "error"}, 1_700_000_000.0) is not None
    first.store.commit(positions={}, payloads=[{"message": "t"}], now=0.0, engine=first.engine.state.delta())
    edited = ruleset_from_yaml(text + "alert: {message: again}\n")
    first.engine.replace_rules(edited)
    first.load_all()
    first.store.commit(positions={}, payloads=[], now=0.0, engine=first.engine.state.delta())
    second = SharedEngine(Engine(ruleset_from_yaml(text + "alert: {message: once more}\n")), store(client, "b"))
    second.load_all()
    assert second.engine.evaluate({"level": "error"}, 1_700_000_060.0) is None  # still throttled
    assert second.engine.evaluate({"level": "error"}, 1_700_000_600.0) is not None


def test_instances_restoring_a_state_their_new_rules_leave_open_queue_its_close_once(client: redis.Redis) -> None:
    """Both instances reload rules without the absence whose alert is open and restore the
    shared state: both find the alert to close, the first commits the close with the state
    that no longer holds it, and the second, refused, restores that state: nothing to close."""
    old, new = ruleset_from_yaml(ABSENCE), ruleset_from_yaml("name: other\nmatch: {kind: other}\n")
    first, second = (SharedEngine(Engine(old, time_field="t"), RedisState(client, instance=n)) for n in "ab")
    for one in (first, second):
        one.store.publish_rules(old.fingerprint)
    first.load_all()
    first.engine.evaluate({"kind": "beat", "host": "h", "t": 100.0}, 0.0)
    assert 1 == len(advance(first.engine, 200.0).firings)
    first.store.commit(
        positions={}, payloads=[{"message": "silent"}], now=0.0, engine=first.engine.state.delta(), clock=200.0
    )
    deltas = []
    for one in (first, second):
        one.engine.replace_rules(new)
        one.store.publish_rules(new.fingerprint)
        one.load_all()
        closes = [c.aliases for _, c, _ in pending(one.engine).firings]
        assert [('rulesd: quiet: {"host":"h"}',)] == closes
        deltas.append(one.engine.state.delta())
    first.store.commit(positions={}, payloads=[{"close": 1}], now=0.0, engine=deltas[0])
    with pytest.raises(Conflict):
        second.store.commit(positions={}, payloads=[{"close": 2}], now=0.0, engine=deltas[1])
    second.undo(deltas[1], 200.0, second.engine.counts())  # nothing counted
    assert [] == pending(second.engine).firings
    assert [{"message": "silent"}, {"close": 1}] == [a.payload for a in first.store.alerts()]


def test_a_batch_committed_again_after_a_lost_answer_is_refused(client: redis.Redis) -> None:
    """The same batch token twice (the first answer lost with the connection): nothing counts twice,
    and the refusal says what the commit made queued that is still queued."""
    a = store(client)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"n": 0}], now=1.0)
    close = Request({"note": "x"}, CLOSE, "x")
    a.commit(positions={"/x": {"o": 1}}, payloads=[{"n": 1}, close], now=1.0, token="t1", note=b'{"as": "committed"}')
    a.load_engine_state()  # as after a reconnect: synced again
    with pytest.raises(Conflict) as refused:
        a.commit(positions={"/x": {"o": 1}}, payloads=[{"n": 1}], now=1.0, token="t1", note=b"applied again")
    made = Made(b'{"as": "committed"}', {2: {"n": 1}, 3: close})
    assert ("taken", "", made) == (refused.value.why, refused.value.detail, refused.value.made)
    assert 3 == len(a.alerts())


def test_a_stream_of_large_entries_is_read_a_few_megabytes_at_a_time(client: redis.Redis) -> None:
    """A worker's memory must not follow the entries' size: entries of 256 KB each are read a
    few at a time, not MAX_ENTRIES (256 MB) at once; every one is read."""
    from rulesd.daemon.run import BATCH_LINES
    from rulesd.sources.redis_stream import READ_BYTES, StreamReader

    event = b'{"message": "' + b"x" * (256 * 1024) + b'"}'
    for _ in range(300):
        client.xadd("events", {"event": event})
    reader = StreamReader(store(client), "events", "g", "a", claim_idle=60.0)
    read, largest = 0, 0
    while (batch := reader.read(reader.batch_entries(BATCH_LINES), block_ms=10)) is not None:
        read += len(batch.ids)
        largest = max(largest, sum(map(len, batch.lines)))
    assert read == 300
    assert largest <= READ_BYTES + len(event)


def test_why_a_stream_line_was_skipped_follows_it_into_part_of_its_batch(client: redis.Redis) -> None:
    """A batch refused in part (`after`: another instance committed its start) or split (`singles`:
    a gap) keeps, for each line, why it was skipped: the warning names the entry it came from."""
    from rulesd.sources.redis_stream import StreamReader

    first = client.xadd("events", {"events": b"{}\n{}"}).decode()
    client.xadd("events", {"other": b"1"})
    client.xadd("events", {"events": b"{}\n" + b"x" * 65})
    reader = StreamReader(store(client), "events", "g", "a", claim_idle=60.0, max_line_bytes=64)
    batch = reader.read(10, block_ms=10)
    assert batch is not None and [0, 2, 3] == batch.starts
    assert {2: "the entry has no field 'event' or 'events' (its fields: 'other')"} == {
        i: why for i, why in batch.skipped.items() if i not in batch.too_long
    }
    assert {4} == set(batch.too_long) and batch.skipped[4].startswith("longer than max_line_bytes (64 bytes)")
    rest = batch.after(first)
    assert rest is not None and [b"", b"{}", b""] == rest.lines
    assert ({0, 2}, {2}) == (set(rest.skipped), set(rest.too_long))
    assert [({0}, set()), ({1}, {1})] == [(set(b.skipped), set(b.too_long)) for b in rest.singles()]


def test_a_forwarded_batch_sent_again_is_appended_once(client: redis.Redis) -> None:
    """`rulesd forward` sends a batch again when the answer to its append was lost (a timeout,
    a reset connection) though the script ran: the batch's positions are stored already, so
    its entries are not added twice. A later batch (positions moved on) is appended."""
    from rulesd.forward import fields_count
    from rulesd.state import scripts

    append = client.register_script(scripts.FORWARD)

    def send(offset: int, *entries: bytes) -> None:
        fields = ["host-a\x00events.jsonl", b'{"offset": %d}' % offset]
        append(keys=["events", "positions"], args=[*fields_count(fields), len(entries), *entries])

    send(100, b'{"n": 1}\n{"n": 2}', b'{"n": 3}')
    send(100, b'{"n": 1}\n{"n": 2}', b'{"n": 3}')  # the same batch, its answer lost the first time
    assert 2 == client.xlen("events")
    send(180, b'{"n": 4}')
    assert 3 == client.xlen("events")


def test_a_forwarder_whose_name_another_process_took_appends_nothing(client: redis.Redis) -> None:
    """A forwarder paused past its name's lease (another forwarder took the name and went on
    from the positions) resumes inside an append: the script refuses it, naming the holder, and
    neither the stream nor the positions change (it appended its lines again and set the positions
    back, so the other's restart sent lines twice)."""
    from rulesd.forward import fields_count
    from rulesd.state import scripts
    from rulesd.state.claim import NameTaken

    paused, other = (RedisState(client, instance="a", role="forward:") for _ in range(2))
    assert paused.claim() is None
    client.delete(paused.name_key)  # its lease ran out while it was paused
    assert other.claim() is None
    append = client.register_script(scripts.FORWARD)
    fields = ["a\x00events.jsonl", b'{"offset": 100}']
    args = [*fields_count(fields), 1, b'{"n": 1}', paused.held_name(), paused.name_lease_ms]
    with pytest.raises(NameTaken, match="instance 'a' is now held by another rulesd process"):
        paused.call(lambda: append(keys=["events", "positions", paused.name_key], args=args))
    assert 0 == client.xlen("events") and {} == client.hgetall("positions")
    args[-2] = other.held_name()
    assert 1 == other.call(lambda: append(keys=["events", "positions", other.name_key], args=args))
    assert 1 == client.xlen("events")


def test_the_alert_in_flight_when_redis_lost_the_outbox_leaves_no_other_alert_that_got_its_id(
    client: redis.Redis,
) -> None:
    """The sender holds alert 1 when Redis loses its data; the outbox's ids start again and
    another alert gets id 1. Recording the first's delivery (or a failed attempt, or giving up
    on it) leaves the new alert 1 queued as it is (it removed it: a page lost without a word)."""
    a = store(client)
    a.load_engine_state()
    a.commit(positions={}, payloads=[{"n": "old"}], now=1.0)
    head = a.head()
    assert head is not None and 1 == head.id
    client.flushall()  # a restart without its data
    b = store(client, "b")
    b.load_engine_state()
    b.commit(positions={}, payloads=[{"n": "new"}], now=2.0)
    a.reschedule(head.id, 50.0, "HTTP 503", at=3.0)
    a.dead_letter(head.id, "HTTP 422", at=3.0)
    a.mark_sent(head.id)
    queued = b.alerts()
    assert [(1, {"n": "new"}, 0, "pending")] == [(q.id, q.payload, q.attempts, q.status) for q in queued]
    head = a.head()
    assert head is not None and {"n": "new"} == head.payload
    a.mark_sent(head.id)  # the alert it read is removed
    assert [] == b.alerts()


def test_alerts_redis_lost_are_queued_again_even_if_others_delivered_as_many_since(client: redis.Redis) -> None:
    """Redis loses its data; before instance a catches up, b queues and delivers three alerts
    (the outbox's ids start again): a still queues its two lost alerts again (it took b's
    delivered ids for its own and forgot them)."""
    lost: list[str] = []
    a = SharedEngine(Engine(ruleset_from_yaml(ABSENCE), time_field="t"), store(client), lost.append)
    a.load_all()
    a.store.commit(positions={}, payloads=[{"n": 1}, {"n": 2}], now=1.0)
    a.committed(dict(zip(a.store.queued_ids, [{"n": 1}, {"n": 2}], strict=True)), positions=False)
    client.flushall()
    b = store(client, "b")
    b.load_engine_state()
    b.commit(positions={}, payloads=[{"n": 3}, {"n": 4}, {"n": 5}], now=2.0)
    while (head := b.head()) is not None:
        b.mark_sent(head.id)
    a.sync()
    assert 1 == len(lost) and "the 2 alert(s) this instance queued" in lost[0], lost
    assert [{"n": 1}, {"n": 2}] == a.requeue


def test_an_alert_in_doubt_through_two_losses_of_redis_data_is_queued_again_once(client: redis.Redis) -> None:
    """A commit's answer is lost and Redis loses its data: its alert is queued again with the
    retry; that retry's answer is lost too, with the same alert in doubt, and Redis loses its
    data again: the alert is to be queued once, not once per loss."""
    lost: list[str] = []
    a = SharedEngine(Engine(ruleset_from_yaml(ABSENCE), time_field="t"), store(client), lost.append)
    a.load_all()
    page = {"message": "h1 silent", "alias": "absent-h1"}
    for loss, other in enumerate("bc", 1):
        a.doubt(f"a:{loss}", [page])  # (the retry queued it, and no new alert)
        client.flushall()
        b = store(client, other)
        b.load_engine_state()
        b.commit(positions={}, payloads=[{"n": loss}], now=float(loss))
        a.sync()
        assert loss == len(lost), lost
        assert [page] == a.first([])


def test_a_connection_closed_under_a_command_is_made_again_not_said_unavailable(
    server: RedisServer, client: redis.Redis
) -> None:
    """Redis closes the connection while a command waits for its answer (CLIENT KILL, its
    `timeout`, a proxy restarting): the command is sent again at once on a new connection and
    answered, instead of Redis being said unavailable (reading paused, an error logged)."""
    s = RedisState(connect(server.url), instance="a")
    admin = server.client()
    connections = int(admin.info("stats")["total_connections_received"])

    def kill_when_blocked() -> None:
        assert wait_until(lambda: any(c["cmd"] == "blpop" for c in admin.client_list()), 10)
        admin.client_kill_filter(_type="normal", skipme=True)

    killer = threading.Thread(target=kill_when_blocked)
    killer.start()
    try:
        assert s.call(lambda: s.client.blpop(["nothing"], timeout=1)) is None
    finally:
        killer.join()
    assert int(admin.info("stats")["total_connections_received"]) >= connections + 2  # its first, and a new one


def test_an_absence_that_keeps_an_event_nested_as_deep_as_events_go_is_read_by_every_instance(
    client: redis.Redis,
) -> None:
    """a commits an absence group that keeps a heartbeat nested 1,024 levels deep (an event,
    as the parser reads it; one level further down in the group's value): b, which catches up
    on it, and c, which loads the whole state, read it, and their absence fires for the host.
    orjson refused the value: an instance stopped as it caught up, and at every start."""
    ruleset = ruleset_from_yaml(DEEP_ABSENCE)
    a, b, c = (SharedEngine(Engine(ruleset), store(client, name)) for name in "abc")
    for one in (a, b, c):
        one.store.publish_rules(ruleset.fingerprint)
    a.load_all(), b.load_all()
    assert [] == evaluate_lines([DEEP_HEARTBEAT], make_parser().fast, a.engine, 1e9).invalid
    a.store.commit(positions={}, payloads=[], now=1e9, engine=a.engine.state.delta(), clock=a.engine.now)
    b.sync()
    c.load_all()
    fired = [[(f.lead.name, f.event["host"]) for _, f, _ in advance(one.engine, 1e9 + 61).firings] for one in (b, c)]
    assert [[("hb", "h")]] * 2 == fired


def test_new_values_as_last_seen_and_a_held_absent_step_are_read_by_every_instance(client: redis.Redis) -> None:
    """a commits a new_value group that saw a value again and a sequence's wait its throttle
    holds back: b, which catches up on them, and c, which loads the whole state, read the values
    in the order last seen, and the wait fires at the throttle's end."""
    ruleset = ruleset_from_yaml(HELD_AND_ORDERED)
    a, b, c = (SharedEngine(Engine(ruleset), store(client, name)) for name in "abc")
    for one in (a, b, c):
        one.store.publish_rules(ruleset.fingerprint)
    a.load_all(), b.load_all()
    held_and_ordered(a.engine)
    a.store.commit(positions={}, payloads=[], now=1e9, engine=a.engine.state.delta(), clock=a.engine.now)
    b.sync()
    c.load_all()
    for one in (b, c):
        check_held_and_ordered(one.engine)


def test_forward_asks_how_full_redis_is_once_a_second_while_there_is_room(
    server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """`rulesd forward` sent INFO memory before every append: a round trip more per batch.
    While Redis has room it asks at most once a second, or sooner when what it appends could
    take a good part of the room left; while held back, at every retry."""
    from rulesd.config import load_config
    from rulesd.forward import Forwarder

    config = tmp_path / "forward.yaml"
    source = {"type": "file", "path": str(tmp_path / "app.jsonl")}
    config.write_text(orjson.dumps({"source": source, "state_dir": "state", "forward": {"url": server.url}}).decode())
    forwarder = Forwarder(load_config(str(config)))
    now = [1000.0]
    forwarder.clock = lambda: now[0]

    def info_calls() -> int:  # INFO sent to the server since the last look (the look itself not counted)
        stats = client.info("commandstats").get("cmdstat_info", {"calls": 0})
        client.config_resetstat()
        return int(stats["calls"])

    info_calls()
    for n in range(20):
        forwarder._append([b'{"n": %d}' % n], {})
    assert (20, 1) == (client.xlen(forwarder.forward.stream), info_calls())
    now[0] += 1.0
    forwarder._append([b'{"n": 20}'], {})
    forwarder._append([b'{"n": 21}'], {})
    assert 1 == info_calls()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", 10 * used)  # room: a few bytes are not asked about, a GB is
    info_calls()
    now[0] += 1.0
    assert (None, None, None) == (forwarder._full(10), forwarder._full(10), forwarder._full(10**9))
    assert 2 == info_calls()
    client.config_set("maxmemory", 1)  # past 80% of it: held back, seen at the next look, a second on
    try:
        assert None is forwarder._full(10)
        now[0] += 1.0
        assert all(forwarder._full(10) for _ in range(3))
        assert 3 == info_calls()
    finally:
        client.config_set("maxmemory", 0)
    assert (None, None) == (forwarder._full(10), forwarder._full(10))
    assert 1 == info_calls()


def test_a_process_whose_instance_name_another_took_commits_and_fences_nothing(client: redis.Redis) -> None:
    """Paused past its lease while another process took its name: its commit writes nothing
    (its positions would overwrite the other's), nor does asking about a lost commit fence the
    other's record; a name that is free (the lease ran out, Redis emptied) is held again."""
    from rulesd.state.claim import NameTaken

    paused, other = store(client), store(client)
    assert paused.claim() is None
    paused.load_engine_state()
    paused.commit(positions={"/x": {"o": 1}}, payloads=[], now=1.0, token="p1")
    client.delete(paused.name_key)  # the lease ran out
    assert other.claim() is None
    other.load_engine_state()
    other.commit(positions={"/x": {"o": 2}}, payloads=[{"n": 1}], now=2.0, token="o1")
    paused.load_engine_state()
    for attempt in (
        lambda: paused.commit(positions={"/x": {"o": 9}}, payloads=[{"n": 2}], now=3.0, token="p2"),
        lambda: paused.resolve("p1"),
    ):
        with pytest.raises(NameTaken) as refused:
            attempt()
        assert f"instance 'a' is now held by another rulesd process (pid {os.getpid()} on host " in str(refused.value)
    assert {"/x": {"o": 2}} == other.load_positions() and 1 == len(other.alerts())
    assert other.resolve("o1") is not None  # its record is its own still
    assert isinstance(paused.claim(), tuple)  # and renewing says who holds it
    client.delete(paused.name_key)  # Redis lost it: the next commit holds it again
    other.commit(positions={"/x": {"o": 3}}, payloads=[], now=4.0, token="o2")
    assert 0 < client.pttl(other.name_key) <= 30_000 and client.get(other.name_key) == other.holder


def test_a_name_no_process_holds_is_claimed_again_and_said_before_a_commit(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis lost the name (or its lease ran out while the process was paused) and no other process
    took it: the next commit claims it again and says so, then commits (a commit held it again
    without a word, so whether the loss was said depended on which came first: the renewal or a
    commit)."""
    holder = store(client)
    assert holder.claim() is None
    holder.load_engine_state()
    client.delete(holder.name_key)
    with caplog.at_level(logging.WARNING, logger="rulesd"):
        holder.commit(positions={"/x": {"o": 1}}, payloads=[{"n": 1}], now=1.0, token="t1")
    assert "instance 'a' was no longer held by this process in Redis" in caplog.text
    assert client.get(holder.name_key) == holder.holder and {"/x": {"o": 1}} == holder.load_positions()
    assert 1 == len(holder.alerts())
