"""The alert host's lookup under the request's deadline: cut by it and by a stop, one lookup at a
time behind a resolver that does not answer, its failure naming the host."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rulesd.alerting.api import RetryableAlertError, StopCut
from rulesd.alerting.opsgenie import OpsGenieClient
from rulesd.deadline import Deadlines
from rulesd.lookup import REUSE_FOR, LookupTimeout, Resolver
from tests.daemon_process import wait_until
from tests.fake_clock import FakeClock

HOST = "api.opsgenie.example"
ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]


class HeldResolver:
    """socket.getaddrinfo as a resolver that answers each name only once `answer` is set (or
    fails when `error` is), counting the lookups and the threads they ran on."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.error: OSError | None = None
        self.names: list[str] = []
        self.threads: list[str] = []

    def __call__(self, name: str, *_args: Any, **_kwargs: Any) -> Any:
        self.names.append(name)
        self.threads.append(threading.current_thread().name)
        self.answer.wait(30)
        if self.error is not None:
            raise self.error
        return ANSWER


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldResolver]:
    held = HeldResolver()
    monkeypatch.setattr(socket, "getaddrinfo", held)
    yield held
    held.answer.set()  # no lookup thread outlives the test


def test_a_lookup_with_no_answer_ends_at_the_deadline_naming_the_host_and_the_wait(resolver: HeldResolver) -> None:
    deadlines = Deadlines()
    started = time.monotonic()
    with deadlines.within(0.3) as deadline, pytest.raises(LookupTimeout) as raised:
        Resolver(HOST, 443).addresses(deadline, 30.0)
    assert time.monotonic() - started < 3
    assert str(raised.value).startswith(f"the lookup of {HOST}'s address had no answer within 0.")


def test_a_stop_cuts_a_lookup_under_way(resolver: HeldResolver) -> None:
    deadlines = Deadlines()
    threading.Timer(0.2, deadlines.abort).start()
    with deadlines.within(60.0) as deadline, pytest.raises(LookupTimeout):
        Resolver(HOST, 443).addresses(deadline, 60.0)
    assert deadline.expired


def test_attempts_behind_a_resolver_that_does_not_answer_await_the_one_lookup_under_way(
    resolver: HeldResolver,
) -> None:
    """Attempt after attempt while the resolver holds its answer: one lookup, one thread (a thread
    each would pile up behind a dead resolver). Its answer, come after they gave up, serves the
    requests of the next second; then the host is looked up again."""
    clock = FakeClock(100.0)
    lookups, deadlines = Resolver(HOST, 443, clock), Deadlines()
    for _ in range(5):
        with deadlines.within(0.05) as deadline, pytest.raises(LookupTimeout):
            lookups.addresses(deadline, 30.0)
    assert [HOST] == resolver.names
    resolver.answer.set()
    assert wait_until(lambda: lookups._under_way is None)
    clock.advance(REUSE_FOR - 0.01)
    with deadlines.within(5.0) as deadline:
        assert ANSWER == lookups.addresses(deadline, 5.0)
    assert [HOST] == resolver.names
    clock.advance(0.01)
    with deadlines.within(5.0) as deadline:
        assert ANSWER == lookups.addresses(deadline, 5.0)
    assert [HOST, HOST] == resolver.names
    assert ["rulesd-lookup", "rulesd-lookup"] == resolver.threads


def test_an_answer_that_comes_in_time_is_used(resolver: HeldResolver) -> None:
    threading.Timer(0.1, resolver.answer.set).start()
    with Deadlines().within(10.0) as deadline:
        assert ANSWER == Resolver(HOST, 443).addresses(deadline, 10.0)


def test_the_resolvers_failure_names_the_host(resolver: HeldResolver) -> None:
    resolver.error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolver.answer.set()
    with Deadlines().within(10.0) as deadline, pytest.raises(socket.gaierror) as raised:
        Resolver(HOST, 443).addresses(deadline, 10.0)
    assert f"cannot look up {HOST}: Name or service not known" == raised.value.strerror
    client = OpsGenieClient(f"https://{HOST}/v2/alerts", lambda: "a-key-0123456789", 10.0)
    with pytest.raises(RetryableAlertError) as retried:
        client.create_alert({"message": "m"})
    assert f"connection error: gaierror: [Errno -2] cannot look up {HOST}: Name or service not known" == str(
        retried.value
    )


def test_an_address_is_no_lookup(resolver: HeldResolver) -> None:
    """A literal address is resolved at once, in the request's own thread: nothing can block."""
    resolver.answer.set()
    with Deadlines().within(10.0) as deadline:
        Resolver("127.0.0.1", 443).addresses(deadline, 10.0)
    assert [threading.current_thread().name] == resolver.threads


def test_an_address_is_resolved_once_for_every_connection(resolver: HeldResolver) -> None:
    """Where the server closes each connection, every alert connects anew: an address's answer,
    which cannot change, is kept rather than asked for again; a failure is not kept."""
    resolver.answer.set()
    resolver.error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    literal = Resolver("fe80::1%eth9", 443)
    with Deadlines().within(10.0) as deadline, pytest.raises(OSError):
        literal.addresses(deadline, 10.0)
    resolver.error = None
    for _ in range(3):
        with Deadlines().within(10.0) as deadline:
            assert ANSWER == list(literal.addresses(deadline, 10.0))
    assert ["fe80::1%eth9"] * 2 == resolver.names


def test_the_clients_error_for_a_lookup_with_no_answer_and_for_one_cut_by_the_stop(resolver: HeldResolver) -> None:
    """An attempt whose lookup had no answer within timeout_s is a retryable timeout naming the
    host; one cut by the stop is the stop's cut (its alert left untouched)."""
    client = OpsGenieClient(f"https://{HOST}/v2/alerts", lambda: "key", 0.3)
    with pytest.raises(RetryableAlertError) as raised:
        client.create_alert({"message": "m"})
    assert not isinstance(raised.value, StopCut)
    assert str(raised.value).startswith(f"timeout: the lookup of {HOST}'s address had no answer within 0.")
    assert str(raised.value).endswith("s (opsgenie.timeout_s)")
    client = OpsGenieClient(f"https://{HOST}/v2/alerts", lambda: "key", 60.0)
    threading.Timer(0.2, client.abort).start()
    with pytest.raises(StopCut):
        client.create_alert({"message": "m"})
