"""At start, an instance claims its name in Redis before it reads its positions there (see
`rulesd.state.claim`): held by a live process, it refuses to start; by one known gone (same
host, its pid ended), it takes it at once; by one it cannot tell of, it waits the lease out,
saying so, and refuses if the holder renews it meanwhile (it is live); stopped meanwhile
(SIGTERM, SIGINT), it ends at once, having claimed and read nothing."""

from __future__ import annotations

import logging
import math
import time

from rulesd.daemon.stop_signals import StopSignals
from rulesd.notify import Notifier
from rulesd.state import StateUnavailable
from rulesd.state.claim import RENEW_EVERY, NameTaken, StoppedWaiting, decode, describe, gone
from rulesd.state.redis import RedisState

log = logging.getLogger("rulesd")
LOOK_EVERY = 0.5  # seconds between looks at a lease waited out
# Seconds: a lease that ends this much later than when first seen was renewed (more than an
# answer's delay could make it look: its end is reckoned from when the question was sent).
RENEWED_BY = 1.0


def claim_name(store: RedisState, notifier: Notifier, stop: StopSignals) -> None:
    """Hold the instance's name for this process, or raise NameTaken (StateUnavailable: Redis;
    StoppedWaiting: `stop` came while a lease was waited out, or cut the wait for Redis)."""
    waited: tuple[bytes, float] | None = None  # the holder whose lease is waited out, and its end (monotonic)
    while True:
        asked = time.monotonic()
        try:
            found = store.claim()
        except StateUnavailable as exc:
            if stop.heard:  # the stop cut the wait (for the host's lookup): a stop, not a failed start
                raise StoppedWaiting(store.instance, None, stop.heard, str(exc)) from None
            raise
        if found is None:
            break
        raw, left = found
        holder, ends = decode(raw), asked + left / 1000
        if waited is not None and waited[0] == raw:
            if ends > waited[1] + RENEWED_BY:  # (a live holder renews it with every commit too)
                raise NameTaken(store.instance, holder, store.config)
        else:
            ended = gone(holder)
            if ended is False:
                raise NameTaken(store.instance, holder, store.config)
            if ended:
                if store.claim(replace=raw) is None:
                    log.info("instance %r taken over from %s, which ended uncleanly", store.instance, describe(holder))
                    return
                continue  # another process took it meanwhile: judged in turn
            message = (
                f"instance {store.instance!r} is held by {describe(holder)}, which this host cannot tell ended:"
                f" waiting up to {math.ceil(left / 1000)} s for its lease to run out (a live holder renews it, and then"
                " this one refuses to start)"
            )
            log.warning("%s", message)
            notifier.status(message)
            waited = (raw, ends)
        if stop.wait(LOOK_EVERY):
            raise StoppedWaiting(store.instance, holder, stop.heard)
    if waited is not None:
        log.info("instance %r claimed: the lease of its last holder ran out", store.instance)


class NameRenewal:
    """Renews the lease on a claimed name every RENEW_EVERY seconds, when called; found held by
    another process (this one was paused past its lease, or Redis lost the name and another took
    it), it raises NameTaken: this process must write nothing more under the name."""

    def __init__(self, store: RedisState) -> None:
        self.store = store
        self.due = time.monotonic() + RENEW_EVERY  # claimed just now (`claim_name`)

    def __call__(self, now: bool = False) -> None:
        """Renew if due (`now`: at once, e.g. after Redis lost its data, and at every call until
        Redis answers: before a commit, which would claim it unsaid)."""
        if now:
            self.due = 0.0
        at = time.monotonic()
        if at < self.due:
            return
        found = self.store.claim()
        self.due = at + RENEW_EVERY
        if found is not None:
            raise NameTaken(self.store.instance, decode(found[0]), self.store.config, running=True)
