"""The "ops" shape: application logs of ~100 services on ~200 hosts, and the rules an
operations team writes for them.

Events (~257 bytes of JSON): `timestamp` (RFC 3339), `service`, `level`, `host`, a varied
free-text `message`, `http.status`, `http.latency_ms`, `env`, `region`, `user_id`,
`request_id`, in that key order (the SEC twins in `sec.py` rely on it).

Rules: 60% a `service` equality, a `level` any-of and one more predicate (`http.status` at
least a bound, a `message` regex, a `host` list or a `region` equality); 20% the same with a
threshold grouped by host; 10% `any`/`not`/`all` combinations, some without any top-level
equality; 10% regex-only rules on `message` that nothing else narrows down. A third carry a
throttle. Built from this description alone, not tuned to the engine.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

NAME = "ops"
TIME_FIELD = "timestamp"
START_TIME = 1_718_100_000.0

_AREAS = (
    "checkout",
    "payments",
    "search",
    "catalog",
    "cart",
    "inventory",
    "shipping",
    "billing",
    "accounts",
    "profile",
    "reviews",
    "pricing",
    "orders",
    "notify",
    "media",
    "gateway",
    "session",
    "ledger",
    "fraud",
    "export",
    "reports",
    "mailer",
    "auth",
    "tax",
    "ads",
)
SERVICES = tuple(f"{a}-{k}" for a in _AREAS for k in ("api", "worker", "web", "cron"))  # 100
_ROLES = ("web", "app", "db", "cache", "batch")
HOSTS = tuple(f"{_ROLES[i % 5]}-{i:03d}" for i in range(200))
LEVELS = ("debug", "info", "warning", "error", "critical")
LEVEL_WEIGHTS = (14, 70, 12, 3.5, 0.5)
ENVS = ("prod", "staging", "dev")
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "ap-northeast-1")
STATUSES = (200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504)
STATUS_WEIGHTS = (62, 4, 3, 1, 1, 5, 3, 2, 1, 6, 1, 1, 4, 2, 2, 2)

_VERBS = ("fetched", "stored", "updated", "deleted", "validated", "rendered", "queued", "sent", "loaded", "merged")
_OBJECTS = ("order", "invoice", "cart", "profile", "session", "item", "report", "token", "payment", "shipment")
_QUALIFIERS = ("from cache", "from primary", "via replica", "in batch", "after retry", "on schedule", "for tenant")
NOISE = (
    "{verb} {obj} {id} {qual} in {ms}ms",
    "GET /api/v{v}/{obj}s/{id} {status} {ms}ms",
    "POST /api/v{v}/{obj}s {status} {ms}ms bytes={bytes}",
    "user {user} {verb} {obj} {id}",
    "cache {hitmiss} for key {obj}:{id}",
    "job {obj}-sync finished: {n} {obj}s {verb} {qual}",
    "opened {n} connections to {svc} pool",
    "config reloaded from /etc/{svc}/app.yaml ({n} keys)",
    "health check ok: {n} checks passed in {ms}ms",
    "GC pause {ms}ms, heap {n}MB of {bytes}MB",
    "scheduled {obj} reconciliation {id} {qual}",
    "feature flag {obj}-v{v} evaluated to {bool} for {user}",
)
PROBLEMS = (
    "upstream timeout after {ms}ms calling {svc}",
    "connection refused by {svc} at {host}:8443",
    "connection reset by peer while {verb} {obj} {id}",
    "OutOfMemoryError: Java heap space in {obj} worker {n}",
    "disk full on /var/lib/{svc} ({n}% used)",
    "deadlock detected on table {obj}s_{v}",
    "certificate for {svc}.internal expired {n} days ago",
    "panic: runtime error: index out of range [{n}]",
    "too many connections for role {obj}_{v}",
    "ERR-{code} while processing {obj} {id}",
    "replication lag {n}s on replica db-{v}",
    "circuit breaker open for {svc}",
    "rate limit exceeded for tenant t{n}",
    "retrying {obj} {id}: attempt {v} of 5 failed with status {status}",
    "payment declined by provider: code {code}",
    "user {user} locked out after {v} failed logins",
    "Segmentation fault in {obj} handler (core dumped)",
    "slow query ({ms}ms): SELECT * FROM {obj}s WHERE id = {id}",
)


def _fill(template: str, rng: random.Random, event: dict[str, Any]) -> str:
    return template.format(
        verb=rng.choice(_VERBS),
        obj=rng.choice(_OBJECTS),
        qual=rng.choice(_QUALIFIERS),
        id=rng.randrange(1, 10**6),
        ms=int(rng.lognormvariate(4, 1.2)),
        v=rng.randrange(1, 9),
        n=rng.randrange(1, 100),
        bytes=rng.randrange(100, 9000),
        status=event["http"]["status"],
        user=f"u{rng.randrange(50_000):06d}",
        hitmiss=rng.choice(("hit", "miss")),
        bool=rng.choice(("true", "false")),
        svc=rng.choice(SERVICES),
        host=rng.choice(HOSTS),
        code=f"{rng.randrange(1000, 1400)}",
    )


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events in time order, about 20 per second of event time."""
    rng = random.Random(seed)
    t = START_TIME
    for _ in range(count):
        t += rng.expovariate(20.0)
        level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        event: dict[str, Any] = {
            "timestamp": _timestamp(t),
            "service": rng.choice(SERVICES),
            "level": level,
            "host": rng.choice(HOSTS),
            "message": "",
            "http": {"status": status, "latency_ms": round(rng.lognormvariate(4, 1.1), 1)},
            "env": rng.choices(ENVS, (70, 20, 10))[0],
            "region": rng.choice(REGIONS),
            "user_id": f"u{rng.randrange(50_000):06d}",
            "request_id": f"{rng.getrandbits(48):012x}",
        }
        problem = level in ("error", "critical") or rng.random() < 0.01
        event["message"] = _fill(rng.choice(PROBLEMS if problem else NOISE), rng, event)
        yield event


# ---- rules -------------------------------------------------------------------------------

# Regexes on `message`: {svc}, {obj}, {n}, {code} are filled per rule. Rules with nothing
# else to narrow them use the specific ones (a service, a number, a table), as such rules do.
SPECIFIC_REGEXES = (
    r"upstream timeout after \d{{3,}}ms calling {svc}",
    r"connection refused by {svc}",
    r"disk full on /var/lib/{svc}",
    r"deadlock detected on table {obj}s_\d",
    r"^panic: .*\[{n}\]",
    r"ERR-{code}\b",
    r"(?i)certificate for {svc}\.internal expired",
    r"circuit breaker open for {svc}$",
    r"rate limit exceeded for tenant t{n}\b",
    r"(?i)segmentation fault in {obj} handler",
)
REGEXES = (
    *SPECIFIC_REGEXES,
    r"upstream timeout after \d{{3,}}ms calling {svc}",
    r"connection (refused|reset) by",
    r"connection refused by {svc}",
    r"(?i)outofmemoryerror",
    r"disk full on /var/lib/{svc}",
    r"deadlock detected on table {obj}s_\d",
    r"certificate for [a-z-]+\.internal expired \d+ days ago",
    r"^panic: .*\[\d+\]",
    r"too many connections for role {obj}_[1-4]$",
    r"ERR-{code}\b",
    r"ERR-1[0-3]\d\d while processing {obj}",
    r"replication lag \d{{2,}}s on replica db-\d",
    r"circuit breaker open for {svc}$",
    r"rate limit exceeded for tenant t{n}\b",
    r"attempt [3-5] of 5 failed with status 5\d\d",
    r"payment declined by provider: code 1[12]\d\d",
    r"locked out after [5-8] failed logins",
    r"(?i)segmentation fault",
    r"slow query \(\d{{4,}}ms\)",
    r"\b(timeout|timed out|deadline exceeded)\b",
)


def _regex(rng: random.Random, choices: tuple[str, ...] = REGEXES) -> str:
    return rng.choice(choices).format(
        svc=rng.choice(SERVICES), obj=rng.choice(_OBJECTS), n=rng.randrange(1, 100), code=rng.randrange(1000, 1400)
    )


def _levels(rng: random.Random) -> list[str]:
    return rng.choice((["error", "critical"], ["error"], ["critical"], ["warning", "error"], ["error", "critical"]))


def _extra(rng: random.Random) -> tuple[str, Any]:
    kind = rng.choice(("status", "regex", "hosts", "region"))
    if kind == "status":
        return "http.status", {"gte": rng.choice((500, 502, 503))}
    if kind == "regex":
        return "message", {"regex": _regex(rng)}
    if kind == "hosts":
        return "host", rng.sample(HOSTS, rng.randrange(3, 9))
    return "region", rng.choice(REGIONS)


def _alert(rng: random.Random, message: str) -> dict[str, Any]:
    return {
        "message": message,
        "priority": rng.choice(("P1", "P2", "P3", "P3", "P4")),
        "tags": ["ops", "service:{service}"],
        "responders": [{"type": "team", "name": f"team-{rng.randrange(15)}"}],
    }


def _combo(rng: random.Random) -> dict[str, Any]:
    svc, other, other_host = rng.choice(SERVICES), rng.choice(SERVICES), rng.choice(HOSTS)
    shape = rng.randrange(6)
    if shape == 0:
        return {
            "any": [
                {"service": svc, "level": "critical"},
                {"http.status": {"gte": 503}, "env": "prod", "service": other},
            ]
        }
    if shape == 1:  # no top-level equality: a region inside `all`, a `not`, an `any`
        return {
            "all": [
                {"region": rng.choice(REGIONS)},
                {"not": {"env": "prod"}},
                {"any": [{"level": "critical"}, {"http.latency_ms": {"gt": rng.choice((5000, 8000))}}]},
            ]
        }
    if shape == 2:  # no top-level equality: a `not` and an `any` of a regex and a bound
        return {
            "not": {"level": ["debug", "info"]},
            "any": [
                {"message": {"regex": _regex(rng, SPECIFIC_REGEXES)}},
                {"http.status": {"gte": 504}, "host": other_host},
            ],
        }
    if shape == 3:
        return {"service": [svc, other], "level": "error", "not": {"host": rng.sample(HOSTS, 4)}}
    if shape == 4:
        return {
            "any": [
                {"message": {"contains": rng.choice(("panic", "fatal", "corrupt"))}, "env": "prod"},
                {"level": "critical", "service": svc},
            ]
        }
    return {"http.latency_ms": {"gt": rng.choice((8000, 12000))}, "not": {"env": "dev"}, "level": ["warning", "error"]}


def _rule(kind: str, i: int, rng: random.Random) -> dict[str, Any]:
    name = f"ops-{kind}-{i:04d}"
    rule: dict[str, Any] = {"name": name}
    if kind in ("base", "threshold"):
        field, matcher = _extra(rng)
        rule["match"] = {"service": rng.choice(SERVICES), "level": _levels(rng), field: matcher}
        if kind == "threshold":
            rule["threshold"] = {
                "count": rng.randrange(3, 11),
                "window": rng.choice(("1m", "5m", "10m")),
                "group_by": ["host"],
            }
    elif kind == "combo":
        rule["match"] = _combo(rng)
    else:
        rule["match"] = {"message": {"regex": _regex(rng, SPECIFIC_REGEXES)}}
    if rng.random() < 1 / 3:
        rule["throttle"] = rng.choice(("5m", "15m", "1h"))
    rule["alert"] = _alert(rng, "{service}: {message}")
    return rule


RULE_MIX = (("base", 60), ("threshold", 20), ("combo", 10), ("regex", 10))


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rule mappings in the proportions of RULE_MIX."""
    rng = random.Random(seed * 7907 + count)
    kinds = [k for k, w in RULE_MIX for _ in range(max(1, round(count * w / 100)))][:count]
    kinds += ["base"] * (count - len(kinds))
    rng.shuffle(kinds)
    return [_rule(kind, i, rng) for i, kind in enumerate(kinds)]
