"""The "fleet" shape: application logs of a fleet of services and the paging rules an
operations team keeps for them. Written from a description of the rules and the events
only (not from the engine, nor from the other shapes' generators), after all tuning of the
engine, to see whether its speed holds on rules it was not tuned for.

Events (~257 bytes): `timestamp` (RFC 3339, UTC, `Z`), `service` (100 names),
`level`, `host` (200 names, each service deployed on a few), `message` (free text: requests,
errors with stack-like fragments, timeouts, database messages, user actions, with numbers
and ids), `http.status` and `http.latency_ms` (a nested `http` object), `env`, `region`,
`user_id`, `request_id`. Now and then a service on one host has an incident (a burst of
errors of one kind for a minute or two), which is what threshold rules are for.

Rules: 60% `service` equality + `level` any-of + one more predicate (`http.status` at least
a bound, a `message` regex, a `host` list or a `region` equality); 20% the same with a
threshold (N matches within a window) grouped by host; 10% `any` / `not` / `all`
combinations, some with no top-level equality; 10% regex-only rules on `message`. A third of
all rules carry a throttle.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

NAME = "fleet"
TIME_FIELD = "timestamp"
START_TIME = 1_719_500_000.0

_DOMAINS = (
    "payments",
    "checkout",
    "cart",
    "catalog",
    "search",
    "auth",
    "accounts",
    "inventory",
    "shipping",
    "billing",
    "notify",
    "orders",
    "pricing",
    "reviews",
    "media",
    "ledger",
    "fraud",
    "profile",
    "session",
    "reports",
)
_ROLES = ("api", "worker", "gateway", "sync", "cron")
SERVICES = tuple(f"{domain}-{role}" for domain in _DOMAINS for role in _ROLES)  # 100
# Traffic falls off with rank (Zipf-like), in an order that mixes domains and roles.
_SERVICE_ORDER = random.Random(7).sample(SERVICES, len(SERVICES))
SERVICE_WEIGHTS = tuple(1.0 / (rank + 1) ** 0.6 for rank in range(len(SERVICES)))

REGIONS = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
)
REGION_WEIGHTS = (30, 18, 20, 12, 6, 7, 3, 4)
HOSTS = tuple(f"{kind}-{i:03d}" for i, kind in enumerate(("web", "app", "job", "edge", "db") * 40))  # 200
HOST_REGION = {h: REGIONS[i % len(REGIONS)] for i, h in enumerate(HOSTS)}
LEVELS = ("debug", "info", "warn", "error", "critical")
LEVEL_WEIGHTS = (15, 72, 11, 1.8, 0.2)
ENVS = ("prod", "staging", "dev")
ENV_WEIGHTS = (75, 18, 7)


def _placement() -> dict[str, tuple[str, ...]]:
    """Each service runs on 2 to 6 hosts (its events come from those), every host runs some."""
    rng = random.Random(11)
    ring = rng.sample(HOSTS, len(HOSTS))
    placement, at = {}, 0
    for service in SERVICES:
        size = rng.randint(2, 6)
        placement[service] = tuple(ring[(at + k) % len(ring)] for k in range(size))
        at += size
    return placement


SERVICE_HOSTS = _placement()

_PATHS = (
    "/api/v1/orders/{n}",
    "/api/v1/cart/{n}/items",
    "/api/v2/products/{n}",
    "/api/v2/search",
    "/api/v1/users/{n}/profile",
    "/login",
    "/oauth/token",
    "/api/v1/payments/{n}/capture",
    "/healthz",
    "/api/v1/invoices/{n}.pdf",
)
_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
_TABLES = ("orders", "payments", "users", "sessions", "carts", "invoices", "shipments", "ledger_entries")
_JAVA = ("com.acme.orders.OrderService", "com.acme.pay.CaptureHandler", "com.acme.core.RetryTemplate")
_PY = ("app/views.py", "workers/tasks.py", "lib/client.py", "models/cart.py")
_JS = ("routes/cart.js", "lib/session.js", "handlers/search.js")
_EXC = ("NullPointerException", "IllegalStateException", "KeyError", "TypeError", "ValueError", "IOException")
_ACTIONS = ("logged in", "logged out", "updated profile", "added item to cart", "changed password", "exported data")


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _request_message(rng: random.Random, status: int, latency: int) -> str:
    path = rng.choice(_PATHS).format(n=rng.randrange(1, 99999))
    return f"{rng.choice(_METHODS)} {path} {status} in {latency}ms"


def _error_message(rng: random.Random, service: str, kind: str) -> str:
    """An error of `kind`: stack-ish, timeout or database."""
    if kind == "stack":
        k = rng.randrange(3)
        if k == 0:
            cls = rng.choice(_JAVA)
            exc, line = rng.choice(_EXC[:2]), rng.randrange(40, 900)
            return f"java.lang.{exc} at {cls}.process({cls.rsplit('.', 1)[1]}.java:{line})"
        if k == 1:
            return f"Traceback: {rng.choice(_EXC[2:5])}: 'id' in {rng.choice(_PY)} line {rng.randrange(10, 700)}"
        where = f"{rng.choice(_JS)}:{rng.randrange(10, 300)}:{rng.randrange(2, 40)}"
        return f"TypeError: cannot read properties of undefined at {where}"
    if kind == "timeout":
        other = rng.choice(SERVICES)
        k = rng.randrange(3)
        if k == 0:
            return f"upstream timeout after {rng.choice((1000, 5000, 10000, 30000))}ms calling {other}"
        if k == 1:
            return f"context deadline exceeded: POST http://{other}:8080/v1/rpc"
        return f"connection {rng.choice(('refused', 'reset by peer'))} to {other} after {rng.randrange(1, 6)} retries"
    # database
    table = rng.choice(_TABLES)
    k = rng.randrange(4)
    if k == 0:
        return f"deadlock detected on relation {table} (pid {rng.randrange(1000, 65000)})"
    if k == 1:
        return f"connection pool exhausted (max={rng.choice((20, 50, 100))}, waiting={rng.randrange(1, 300)})"
    if k == 2:
        return f"ERROR 1213 (40001): lock wait timeout on {table} id={rng.randrange(1, 10**7)}"
    return f'duplicate key value violates unique constraint "{table}_pkey"'


def _quiet_message(rng: random.Random, service: str, level: str) -> str:
    """What a service says when nothing is wrong (or nearly)."""
    r = rng.random()
    if level == "debug":
        if r < 0.5:
            return f"cache {rng.choice(('hit', 'miss'))} for key session:{_hex(rng, 12)}"
        return f"span {_hex(rng, 8)} finished in {rng.randrange(1, 90)}ms"
    if level == "warn":
        if r < 0.3:
            return f"slow query took {rng.randrange(500, 3000)}ms: SELECT * FROM {rng.choice(_TABLES)} WHERE id = $1"
        if r < 0.55:
            return f"retrying request to {rng.choice(SERVICES)} (attempt {rng.randrange(2, 4)}/3)"
        if r < 0.75:
            return f"disk usage at {rng.randrange(70, 94)}% on /var/lib/{service.split('-')[0]}"
        return f"rate limit near for client {_hex(rng, 6)}: {rng.randrange(80, 99)}% of quota"
    if r < 0.35:
        return f"user u-{rng.randrange(10**5, 10**6)} {rng.choice(_ACTIONS)}"
    if r < 0.45:
        job = f"{rng.choice(('reindex', 'rollup', 'cleanup', 'sync'))}-{rng.randrange(100, 999)}"
        return f"job {job} done, {rng.randrange(0, 50000)} rows"
    if r < 0.5:
        return "health check ok"
    return ""  # the caller writes a request line


def _rare_message(rng: random.Random, service: str) -> str:
    """The things regex-only rules look for; each seldom seen."""
    r = rng.randrange(8)
    if r == 0:
        return f"OOMKilled: container {service} exceeded memory limit {rng.choice((512, 1024, 2048))}Mi"
    if r == 1:
        return f"panic: runtime error: index out of range [{rng.randrange(1, 9)}] with length {rng.randrange(0, 2)}"
    if r == 2:
        return f"TLS handshake failed: certificate has expired for {rng.choice(SERVICES)}.internal"
    if r == 3:
        return f"disk usage at {rng.randrange(95, 101)}% on /var/lib/{service.split('-')[0]}, writes failing"
    if r == 4:
        return f"user u-{rng.randrange(10**5, 10**6)} account locked after {rng.randrange(5, 12)} failed logins"
    if r == 5:
        return f"segfault at {_hex(rng, 12)} ip {_hex(rng, 12)} in libssl.so.3"
    if r == 6:
        return f"Replication lag {rng.randrange(30, 900)}s on replica {rng.choice(_TABLES)}-ro-{rng.randrange(1, 4)}"
    user = f"{rng.choice(('svc', 'admin', 'report'))}_{service.split('-')[0]}"
    return f'FATAL: password authentication failed for user "{user}"'


def _timeout_latency(rng: random.Random) -> int:
    """A call that ran into its timeout took about that long."""
    return rng.choice((1000, 2000, 5000, 10000, 30000)) + rng.randrange(0, 80)


def _timestamp(t: float) -> str:
    return f"{datetime.fromtimestamp(int(t), UTC):%Y-%m-%dT%H:%M:%S}Z"


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events, about 60 a second of event time."""
    rng = random.Random(seed * 7919 + 3)
    t = START_TIME
    incidents: list[tuple[float, str, str, str]] = []  # (until, service, host, kind)
    for _ in range(count):
        t += rng.expovariate(60.0)
        if rng.random() < 1 / 30000:
            service = rng.choices(_SERVICE_ORDER, SERVICE_WEIGHTS)[0]
            incidents.append(
                (
                    t + rng.uniform(45, 180),
                    service,
                    rng.choice(SERVICE_HOSTS[service]),
                    rng.choice(("stack", "timeout", "db")),
                )
            )
        if incidents:
            incidents = [i for i in incidents if i[0] > t]
        status = 200
        latency = int(rng.lognormvariate(3.3, 0.8))
        if incidents and rng.random() < 0.01:
            _, service, host, kind = rng.choice(incidents)
            level = "critical" if rng.random() < 0.1 else "error"
            message = _error_message(rng, service, kind)
            status = rng.choice((500, 502, 503, 504)) if rng.random() < 0.8 else 200
            latency = _timeout_latency(rng) if kind == "timeout" else latency
        else:
            service = rng.choices(_SERVICE_ORDER, SERVICE_WEIGHTS)[0]
            host = rng.choice(SERVICE_HOSTS[service])
            level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
            if rng.random() < 0.0006:
                message = _rare_message(rng, service)
                level = rng.choice(("error", "critical", "warn"))
            elif level in ("error", "critical"):
                kind = rng.choice(("stack", "timeout", "db", "request"))
                if kind == "request":
                    status = rng.choice((500, 500, 502, 503, 504))
                    message = _request_message(rng, status, latency)
                else:
                    message = _error_message(rng, service, kind)
                    status = rng.choice((500, 503)) if rng.random() < 0.5 else 200
                    if kind == "timeout":
                        latency = _timeout_latency(rng)
            else:
                message = _quiet_message(rng, service, level)
                if level == "warn" and rng.random() < 0.4:
                    status = rng.choice((404, 409, 429, 499))
                elif rng.random() < 0.08:
                    status = rng.choice((201, 204, 301, 304, 400, 401, 403, 404))
                if not message:
                    message = _request_message(rng, status, latency)
        yield {
            "timestamp": _timestamp(t),
            "service": service,
            "level": level,
            "host": host,
            "message": message,
            "http": {"status": status, "latency_ms": latency},
            "env": rng.choices(ENVS, ENV_WEIGHTS)[0],
            "region": HOST_REGION[host],
            "user_id": f"u-{rng.randrange(10**5, 10**6)}",
            "request_id": _hex(rng, 8),
        }


# Regexes as operators write them, each a function of the rng so that a large rule set
# does not repeat a few patterns. The first kind finds errors every service has (written
# beside a service and a level); the second, things seldom seen anywhere (written alone).
def _error_regex(rng: random.Random) -> str:
    service = rng.choice(SERVICES)
    table = rng.choice(_TABLES)
    forms = (
        lambda: f"(?i)timeout .*calling {service}",
        lambda: r"context deadline exceeded|connection (refused|reset by peer)",
        lambda: f"deadlock detected on relation {table}",
        lambda: r"(?i)connection pool exhausted \(max=\d+",
        lambda: r"^java\.lang\.(NullPointerException|IllegalStateException) at com\.acme\.",
        lambda: f"(?i)^traceback: .*{rng.choice(_PY)}",
        lambda: r"lock wait timeout on \w+ id=\d{5,}",
        lambda: f"upstream timeout after [0-9]{{{rng.choice((4, 5))}}}ms",
        lambda: r"(?i)\b(POST|PUT|DELETE) /api/v1/payments/\d+/capture 50[234]\b",
        lambda: f'duplicate key .*"{table}_pkey"',
        lambda: r"[Cc]annot read properties of (undefined|null)",
    )
    return rng.choice(forms)()


def _rare_regex(rng: random.Random) -> str:
    domain = rng.choice(_DOMAINS)
    forms = (
        lambda: rf"(?i)OOMKilled: container {domain}-\w+|out of memory",
        lambda: r"^panic: runtime error",
        lambda: rf"(?i)certificate (has )?expired for {domain}-",
        lambda: rf"disk usage at (9[5-9]|100)% on /var/lib/{domain}",
        lambda: r"account locked after \d+ failed logins",
        lambda: r"segfault at [0-9a-f]+ ip [0-9a-f]+ in lib\w+\.so",
        lambda: rf"(?i)replication lag [0-9]{{3,}}s on replica {rng.choice(_TABLES)}-ro",
        lambda: rf"FATAL: password authentication failed for user \"\w+_{domain}\"",
    )
    return rng.choice(forms)()


def _levels(rng: random.Random, counted: bool) -> list[str]:
    """The levels a rule pages on; warnings only when counted (a threshold)."""
    if counted and rng.random() < 0.3:
        return ["warn", "error", "critical"]
    return rng.choices((["error", "critical"], ["critical"], ["error"]), (50, 25, 25))[0]


def _predicate(rng: random.Random, service: str) -> dict[str, Any]:
    """The one more predicate beside service and level."""
    k = rng.randrange(4)
    if k == 0:
        return {"http.status": {"gte": rng.choice((500, 500, 502, 503, 504, 429))}}
    if k == 1:
        return {"message": {"regex": _error_regex(rng)}}
    if k == 2:
        hosts = SERVICE_HOSTS[service]
        return {"host": rng.sample(hosts, rng.randint(1, len(hosts)))}
    if rng.random() < 0.75:  # mostly a region the service runs in
        return {"region": HOST_REGION[rng.choice(SERVICE_HOSTS[service])]}
    return {"region": rng.choice(REGIONS)}


def _duration(rng: random.Random, choices: tuple[str, ...]) -> str:
    return rng.choice(choices)


def _combination(rng: random.Random) -> dict[str, Any]:
    a, b = rng.sample(SERVICES, 2)
    k = rng.randrange(5)
    if k == 0:  # either of two services in trouble
        return {
            "any": [
                {"service": a, "level": "critical"},
                {"service": b, "level": ["error", "critical"], "http.status": {"gte": 500}},
            ]
        }
    if k == 1:  # a service's errors, but not the noise it is known for
        return {
            "service": a,
            "level": ["error", "critical"],
            "not": {"message": {"regex": rng.choice(("(?i)health|readiness", "retrying", r"^GET /healthz"))}},
        }
    if k == 2:  # no top-level equality: slow failures in production
        return {
            "all": [
                {"http.status": {"gte": 500}},
                {"http.latency_ms": {"gt": rng.choice((20000, 25000, 29000))}},
                {"not": {"env": ["dev", "staging"]}},
            ]
        }
    if k == 3:  # no top-level equality: a regex or a critical error in one region
        return {
            "any": [
                {"message": {"regex": _rare_regex(rng)}},
                {"level": "critical", "region": rng.choice(REGIONS), "env": "prod"},
            ]
        }
    return {  # critical anywhere but in the services paged elsewhere
        "level": "critical",
        "region": rng.choice(REGIONS),
        "not": {"service": {"in": rng.sample(SERVICES, 5)}},
    }


def _rule(i: int, kind: str, throttled: bool, rng: random.Random) -> dict[str, Any]:
    service = rng.choice(SERVICES)
    rule: dict[str, Any] = {"name": f"{kind}-{service}-{i:04d}"}
    if kind in ("simple", "threshold"):
        rule["match"] = {"service": service, "level": _levels(rng, kind == "threshold"), **_predicate(rng, service)}
    elif kind == "combo":
        rule["name"] = f"combo-{i:04d}"
        rule["match"] = _combination(rng)
    else:
        rule["name"] = f"pattern-{i:04d}"
        rule["match"] = {"message": {"regex": _rare_regex(rng)}}
    if kind == "threshold":
        rule["threshold"] = {
            "count": rng.choice((3, 5, 5, 10, 20)),
            "window": _duration(rng, ("1m", "2m", "5m", "10m")),
            "group_by": ["host"],
        }
    if throttled:
        rule["throttle"] = _duration(rng, ("5m", "10m", "15m", "30m", "1h"))
    rule["alert"] = {
        "message": f"{rule['name']} on {{host}}: {{message}}",
        "priority": rng.choice(("P1", "P2", "P3", "P3")),
        "tags": [kind, "service:{service}"],
    }
    return rule


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rules: 60% simple, 20% threshold, 10% combination, 10% regex-only; a third
    throttled."""
    rng = random.Random(seed * 104729 + count)
    n_threshold, n_combo, n_pattern = count * 2 // 10, count // 10, count // 10
    kinds = ["threshold"] * n_threshold + ["combo"] * n_combo + ["pattern"] * n_pattern
    kinds += ["simple"] * (count - len(kinds))
    rng.shuffle(kinds)
    throttled = set(rng.sample(range(count), count // 3))
    return [_rule(i, kind, i in throttled, rng) for i, kind in enumerate(kinds)]
