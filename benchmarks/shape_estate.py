"""The "estate" shape: application logs of ~100 services on ~200 hosts, and an operations
team's rules for them, written from the same description as "ops" (not from its code nor the
engine's), with other names, messages, proportions and seed.

Events (~270 bytes of JSON): `ts` (RFC 3339, seconds and microseconds), `service`, `level`,
`host`, a free-text `message`, `http.status`, `http.latency_ms`, `env`, `region`, `trace`.
Services' traffic is uneven (a few carry most of it), each service runs on 2-8 hosts, levels
and statuses drift with short bursts of trouble on one service.

Rules: 45% a `service` equality, a `level` any-of and one more predicate (`http.status` at least
a bound, a `message` regex, a `host` list or a `region` equality); 30% the same with a threshold
grouped by host; 15% `any`/`not`/`all` combinations, half of them with no top-level equality;
10% regex-only rules on `message`. Two in five carry a throttle.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

NAME = "estate"
TIME_FIELD = "ts"
START_TIME = 1_731_000_000.0
SEED_OFFSET = 977  # a seed of its own, even with the default one

_TEAMS = ("atlas", "borealis", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper")
_PARTS = ("ingest", "router", "store", "indexer", "notifier", "billing", "auth", "search", "export", "scheduler")
SERVICES = tuple(f"{t}-{p}" for t in _TEAMS for p in _PARTS)  # 100
HOSTS = tuple(f"r{i // 20:02d}-n{i % 20:02d}.dc{i % 3 + 1}" for i in range(200))
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
ENVS = ("production", "canary", "qa")
REGIONS = ("eu-north", "eu-south", "us-east", "us-central", "us-west", "apac-1", "apac-2", "sa-1")
STATUSES = (200, 202, 204, 206, 304, 400, 403, 404, 410, 422, 429, 499, 500, 502, 503, 504, 507)
STATUS_WEIGHTS = (55, 5, 4, 1, 6, 3, 2, 7, 1, 2, 2, 2, 4, 2, 2, 1.5, 0.5)

NOISE = (
    "handled {method} {path} in {ms} ms ({bytes} bytes)",
    "consumer {part}-{n} committed offset {id} on partition {v}",
    "flushed {n} records to segment {id}",
    "lease renewed for shard {v} by {host}",
    "token refreshed for client c{n}; expires in {ms}s",
    "compaction of level {v} finished: {n} files, {bytes} KiB",
    "query plan cached: {part}_{v} ({ms} us)",
    "webhook delivered to tenant-{n} after {ms} ms",
    "queue depth {n} below watermark",
    "sent {n} notifications via {part}",
)
PROBLEMS = (
    "timed out waiting for {svc} after {ms} ms",
    "dial tcp {host}:{port}: connect: connection refused",
    "write {path}: no space left on device",
    "java.lang.IllegalStateException: {part} pool exhausted ({n} active)",
    "Traceback (most recent call last): KeyError: '{part}_{v}'",
    "TypeError: Cannot read properties of undefined (reading '{part}')",
    "x509: certificate has expired or is not yet valid: {svc}.svc",
    "fatal error: concurrent map writes in {part}",
    "SQLSTATE 40P01 deadlock detected on relation {part}_{v}",
    "rejected: quota exceeded for tenant-{n} ({ms} req/s)",
    "OOMKilled: container {part} exceeded {n}Mi",
    "retry {v}/5 for {svc}: status {status}",
    "checksum mismatch in segment {id} on {host}",
)
_KEYS = ("ts", "service", "level", "host", "message", "http", "env", "region", "trace")
_METHODS = ("GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE")
_PATHS = ("/v1/items", "/v1/items/{id}", "/v2/query", "/healthz", "/v1/tenants/{n}/usage", "/internal/sync")


def _fill(template: str, rng: random.Random, status: int) -> str:
    return template.format(
        method=rng.choice(_METHODS),
        path=rng.choice(_PATHS).format(id=rng.randrange(10**5), n=rng.randrange(500)),
        ms=int(rng.lognormvariate(3.5, 1.4)),
        bytes=rng.randrange(64, 64_000),
        part=rng.choice(_PARTS),
        n=rng.randrange(1, 500),
        id=rng.randrange(10**9),
        v=rng.randrange(0, 16),
        host=rng.choice(HOSTS),
        port=rng.choice((5432, 6379, 8080, 9092, 9200)),
        svc=rng.choice(SERVICES),
        status=status,
    )


def _placement(rng: random.Random) -> dict[str, tuple[str, ...]]:
    return {svc: tuple(rng.sample(HOSTS, rng.randrange(2, 9))) for svc in SERVICES}


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events in time order, about 30 per second of event time."""
    rng = random.Random(seed + SEED_OFFSET)
    hosts = _placement(random.Random(seed))
    traffic = [1 / (i + 1) ** 0.9 for i in range(len(SERVICES))]
    t, trouble, trouble_left = START_TIME, "", 0
    for _ in range(count):
        t += rng.expovariate(30.0)
        if trouble_left == 0 and rng.random() < 0.0005:
            trouble, trouble_left = rng.choice(SERVICES), rng.randrange(50, 400)
        service = rng.choices(SERVICES, traffic)[0]
        burst = trouble_left > 0 and rng.random() < 0.3
        if burst:
            service, trouble_left = trouble, trouble_left - 1
        level = rng.choices(LEVELS, (4, 15, 66, 9, 5, 1) if not burst else (0, 0, 20, 20, 50, 10))[0]
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0] if not burst else rng.choice((500, 502, 503, 504))
        stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        host = rng.choice(hosts[service])
        http = {"status": status, "latency_ms": int(rng.lognormvariate(3.8, 1.3))}
        env, region = rng.choices(ENVS, (80, 12, 8))[0], rng.choice(REGIONS)
        trace = f"{rng.getrandbits(64):016x}"
        problem = level in ("error", "fatal") or rng.random() < 0.004
        message = _fill(rng.choice(PROBLEMS if problem else NOISE), rng, status)
        yield dict(zip(_KEYS, (stamp, service, level, host, message, http, env, region, trace), strict=True))


# ---- rules -------------------------------------------------------------------------------

REGEXES = (
    r"timed out waiting for {svc} after \d{{4,}} ms",
    r"connect: connection refused$",
    r"no space left on device",
    r"(?i)illegalstateexception: {part} pool exhausted",
    r"KeyError: '{part}_\d+'",
    r"Cannot read properties of undefined \(reading '{part}'\)",
    r"(?i)x509: certificate has expired.*{svc}",
    r"^fatal error: concurrent map writes",
    r"SQLSTATE 40P01",
    r"quota exceeded for tenant-{n}\b",
    r"OOMKilled: container {part}",
    r"retry [45]/5 for {svc}: status 5\d\d",
    r"checksum mismatch in segment \d+ on r0[0-4]",
)


def _regex(rng: random.Random) -> str:
    return rng.choice(REGEXES).format(svc=rng.choice(SERVICES), part=rng.choice(_PARTS), n=rng.randrange(1, 500))


def _extra(rng: random.Random, hosts: dict[str, tuple[str, ...]], service: str) -> tuple[str, Any]:
    kind = rng.choices(("status", "regex", "hosts", "region"), (3, 3, 2, 2))[0]
    if kind == "status":
        return "http.status", {"gte": rng.choice((499, 500, 502, 503, 504))}
    if kind == "regex":
        return "message", {"regex": _regex(rng)}
    if kind == "hosts":
        return "host", list(hosts[service][: rng.randrange(1, 4)])
    return "region", rng.choice(REGIONS)


def _combo(rng: random.Random) -> dict[str, Any]:
    svc, other = rng.sample(SERVICES, 2)
    shape = rng.randrange(6)
    if shape == 0:
        return {"any": [{"service": svc, "level": "fatal"}, {"service": other, "http.status": {"gte": 502}}]}
    if shape == 1:
        return {"service": svc, "not": {"message": {"regex": r"^handled GET /healthz"}}, "level": ["warn", "error"]}
    if shape == 2:  # no top-level equality
        return {
            "all": [
                {"http.latency_ms": {"gte": rng.choice((3000, 5000, 10000))}},
                {"not": {"env": "qa"}},
                {"any": [{"level": "error"}, {"http.status": {"gte": 500}}]},
            ]
        }
    if shape == 3:  # no top-level equality
        return {"any": [{"message": {"regex": _regex(rng)}}, {"level": "fatal", "region": rng.choice(REGIONS)}]}
    if shape == 4:  # no top-level equality
        return {
            "not": {"level": ["trace", "debug", "info"]},
            "message": {"contains": rng.choice(("OOMKilled", "x509"))},
        }
    return {"region": rng.choice(REGIONS), "level": "fatal", "not": {"service": rng.sample(SERVICES, 3)}}


def _rule(kind: str, i: int, rng: random.Random, hosts: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": f"estate-{kind}-{i:04d}"}
    if kind in ("base", "threshold"):
        service = rng.choice(SERVICES)
        field, matcher = _extra(rng, hosts, service)
        levels = rng.choice((["error", "fatal"], ["error"], ["fatal"], ["warn", "error", "fatal"]))
        rule["match"] = {"service": service, "level": levels, field: matcher}
        if kind == "threshold":
            count = rng.randrange(2, 20)
            rule["threshold"] = dict(count=count, window=rng.choice(("30s", "2m", "15m")), group_by=["host"])
    elif kind == "combo":
        rule["match"] = _combo(rng)
    else:
        rule["match"] = {"message": {"regex": _regex(rng)}}
    if rng.random() < 0.4:
        rule["throttle"] = rng.choice(("2m", "10m", "30m", "2h"))
    rule["alert"] = {"message": "[{service}] {message}", "priority": rng.choice(("P1", "P2", "P3", "P4", "P5"))}
    return rule


RULE_MIX = (("base", 45), ("threshold", 30), ("combo", 15), ("regex", 10))


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rule mappings in the proportions of RULE_MIX."""
    rng = random.Random((seed + SEED_OFFSET) * 31 + count)
    hosts = _placement(random.Random(seed))
    kinds = [k for k, w in RULE_MIX for _ in range(round(count * w / 100))][:count]
    kinds += ["base"] * (count - len(kinds))
    rng.shuffle(kinds)
    return [_rule(kind, i, rng, hosts) for i, kind in enumerate(kinds)]
