"""Warnings at the configuration's times that are valid but likely not what was meant.

A duration of the configuration is read as a rule's is, and warned about as a rule's is: a
number without a unit is seconds (`claim_idle: 10`, `max_age: 30`), which a user of a tool
counting in minutes may not mean. Beyond that, each setting has a range outside which a value
does harm no one asks for (pages dead-lettered after a network blip, a dead instance's events
waiting an hour), said with why. `timeout_s` names its unit, so only its range is looked at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rulesd.config_paths import source_places
from rulesd.durations import parse_duration, unitless
from rulesd.times import span as written

Keys = tuple[str | int, ...]

# The least (and most) each setting plausibly is, in seconds, and what a value beyond does.
_MAX_AGE_LEAST = 600.0
_CLAIM_IDLE_LEAST, _CLAIM_IDLE_MOST = 1.0, 600.0
_TIMEOUT_LEAST = 1.0


def duration_warnings(raw: dict[str, Any], *, loopback: bool) -> Iterator[tuple[Keys, str]]:
    """Each duration of the (schema-valid) configuration `raw` written without a unit or
    beyond its plausible range, with what to say at it; `loopback`: alerts go to this host."""
    opsgenie = raw.get("opsgenie") or {}
    places: list[tuple[Keys, Any]] = [(("opsgenie", "max_age"), opsgenie.get("max_age"))]
    places += [((*where, "claim_idle"), source.get("claim_idle")) for where, source in source_places(raw)]
    for keys, value in places:
        if value is None:
            continue
        try:
            seconds = parse_duration(value)
        except ValueError:  # (an error, said where the setting is read)
            continue
        said = [m for m in (unitless(value), _implausible(str(keys[-1]), seconds)) if m]
        if said:
            yield keys, "; ".join(said)
    timeout = opsgenie.get("timeout_s")
    if timeout is not None and timeout < _TIMEOUT_LEAST and not loopback:
        yield (
            ("opsgenie", "timeout_s"),
            (
                f"{timeout} seconds is less than a request to OpsGenie over the internet (connecting, TLS, the "
                "answer) often takes: a request cut off is sent again, and one whose answer alone was cut off pages "
                "twice; write at least 1 (the default is 10)"
            ),
        )


def _implausible(key: str, seconds: float) -> str | None:
    """Why `seconds` is not what the setting `key` is likely meant to be, if it is not."""
    if key == "max_age" and not seconds:
        return "every alert is dead-lettered before it is sent: nothing is ever paged (the default is 24h)"
    if key == "max_age" and seconds < _MAX_AGE_LEAST:
        return (
            f"an alert not delivered within {written(seconds)} (an OpsGenie outage, a network blip) is "
            f"dead-lettered, not sent: a max_age under {written(_MAX_AGE_LEAST)} loses pages to a short outage "
            "(the default is 24h)"
        )
    if key == "claim_idle" and seconds < _CLAIM_IDLE_LEAST:
        return (
            "an entry another instance is still working on (a batch may take a second on a loaded host) is "
            "claimed from it, and the instances redo each other's work; the default is 10s"
        )
    if key == "claim_idle" and seconds > _CLAIM_IDLE_MOST:
        return (
            f"the events a stopped instance had read, and the pages they make, wait {written(seconds)} before another "
            "instance takes them; the default is 10s"
        )
    return None
