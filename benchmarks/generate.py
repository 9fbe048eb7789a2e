"""Generate reproducible benchmark inputs: a JSON-lines event file and rule sets.

    python benchmarks/generate.py [--shape classic|ops|sigma|heldout|kinds|fleet|estate] [--events N] [--seed S]
                                  [--out DIR]

Writes `events-<N>-s<S>.jsonl` and `rules-<R>-s<S>.yaml` for R in 10, 100 and 1000 (other
shapes than `classic` put their name first: `events-ops-<N>-s<S>.jsonl`). The same seed
always gives the same files. Each shape is a module (`shape_ops.py`, ...) with the same four
names: `TIME_FIELD`, `START_TIME`, `generate_events` and `generate_rules`; this module is
the `classic` shape. Its events are a mix of HTTP access logs,
application logs, authentication events and payment events; most of them are
noise that no rule matches, a small fraction matches and some of those fire.
The rule sets mix equality and any-of rules, thresholds with group_by,
throttles, numeric comparisons, `all`/`any`/`not`, and regex-only rules on
`message` that no equality index can narrow down.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import yaml

RULE_COUNTS = (10, 100, 1000)
DEFAULT_EVENTS = 200_000
DEFAULT_SEED = 20240611
DATA_DIR = Path(__file__).resolve().parent / "data"
START_TIME = 1_700_000_000.0
TIME_FIELD = "ts"
SHAPES = ("classic", "ops", "sigma", "heldout", "kinds", "fleet", "estate")

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
    "recommend",
    "pricing",
    "orders",
    "notify",
    "media",
    "gateway",
    "session",
    "ledger",
    "fraud",
    "export",
    "import",
    "reports",
    "mailer",
)
_KINDS = ("api", "worker", "web", "db", "cache")
SERVICES = tuple(f"{a}-{k}" for a in _AREAS for k in _KINDS)  # 120 services
HOSTS = tuple(f"ip-10-0-{i // 16}-{i % 16 * 7 + 3}" for i in range(64))
LEVELS = ("debug", "info", "warning", "error", "critical")
LEVEL_WEIGHTS = (20, 70, 6, 3.5, 0.5)
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
PATHS = (
    "/",
    "/api/v1/items",
    "/api/v1/items/{id}",
    "/api/v1/cart",
    "/api/v2/search",
    "/health",
    "/api/v1/orders/{id}",
    "/static/app.js",
    "/login",
    "/api/v1/users/{id}/profile",
)
AUTH_EVENTS = ("login_succeeded", "login_failed", "logout", "token_refreshed", "mfa_challenge")
AUTH_WEIGHTS = (40, 4, 25, 30, 1)
PAY_EVENTS = ("charge", "refund", "capture", "authorize", "chargeback")
PAY_STATUS = ("ok", "declined", "error")
PROVIDERS = ("stripe", "adyen", "paypal", "braintree")
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
USERS = tuple(f"user{i:05d}" for i in range(5000))

# Application log messages: the usual noise, then rarer problems that some rule looks for.
NOISE_MESSAGES = (
    "request completed in {n}ms",
    "cache miss for key item:{n}",
    "cache hit for key session:{n}",
    "processed batch of {n} records",
    "scheduled job reconcile-{n} started",
    "scheduled job reconcile-{n} finished",
    "user {user} viewed item {n}",
    "opened connection pool with {n} connections",
    "config reloaded from /etc/app/config-{n}.yaml",
    "health check ok ({n} checks)",
    "flushed {n} metrics to collector",
    "GC pause of {n}ms in young generation",
)
PROBLEMS = (
    "upstream timeout after {n}ms calling {service}",
    "connection refused by {service} at {host}:8443",
    "java.lang.OutOfMemoryError: Java heap space in worker-{k}",
    "disk quota exceeded on /data/vol{k}",
    "deadlock detected on table orders_{k}",
    "certificate for {service}.internal expires in {k} days",
    "panic: runtime error: index out of range [{k}]",
    "FATAL: too many connections for role app_{k}",
    "ERR-{code} while processing order {n}",
    "replication lag {n}s on replica db-{k}",
    "circuit breaker open for {service}",
    "rate limit exceeded for tenant t{k}",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        n=rng.randrange(1, 5000),
        k=rng.randrange(0, 40),
        code=f"{rng.randrange(1000, 1400):04d}",
        user=rng.choice(USERS),
        service=rng.choice(SERVICES),
        host=rng.choice(HOSTS),
    )


def _http(rng: random.Random) -> dict[str, Any]:
    status = rng.choices(
        (200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504),
        (70, 5, 3, 1, 6, 2, 2, 1, 5, 1, 1.5, 1, 1, 0.5),
    )[0]
    return {
        "type": "http_access",
        "service": rng.choice(SERVICES),
        "host": rng.choice(HOSTS),
        "http": {
            "method": rng.choice(METHODS),
            "path": rng.choice(PATHS).replace("{id}", str(rng.randrange(1, 100000))),
            "status": status,
            "bytes": rng.randrange(0, 200_000),
        },
        "latency_ms": round(rng.lognormvariate(3.5, 1.0), 2),
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    }


def _app(rng: random.Random) -> dict[str, Any]:
    level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
    serious = level in ("error", "critical")
    template = rng.choice(PROBLEMS) if serious or rng.random() < 0.01 else rng.choice(NOISE_MESSAGES)
    return {
        "type": "app",
        "service": rng.choice(SERVICES),
        "host": rng.choice(HOSTS),
        "level": level,
        "logger": f"{rng.choice(_AREAS)}.{rng.choice(('handler', 'client', 'db', 'jobs'))}",
        "message": _fill(template, rng),
        "pid": rng.randrange(100, 40000),
    }


def _ip(rng: random.Random) -> str:
    first = rng.choice((10, 10, 10, 172, 81))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(4)}.{rng.randrange(256)}"


def _auth(rng: random.Random) -> dict[str, Any]:
    return {
        "type": "auth",
        "service": "auth",
        "host": rng.choice(HOSTS[:8]),
        "event": rng.choices(AUTH_EVENTS, AUTH_WEIGHTS)[0],
        "user": rng.choice(USERS[:500]) if rng.random() < 0.3 else rng.choice(USERS),
        "role": "admin" if rng.random() < 0.02 else "member",
        "source": {"ip": _ip(rng)},
    }


def _payment(rng: random.Random) -> dict[str, Any]:
    return {
        "type": "payment",
        "service": "payments",
        "host": rng.choice(HOSTS[8:16]),
        "event": rng.choice(PAY_EVENTS),
        "status": rng.choices(PAY_STATUS, (94, 5, 1))[0],
        "provider": rng.choice(PROVIDERS),
        "amount": round(rng.lognormvariate(3.5, 1.2), 2),
        "currency": rng.choice(CURRENCIES),
        "order_id": rng.randrange(1, 10_000_000),
    }


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events in time order, about 20 per second of event time."""
    rng = random.Random(seed)
    makers = (_http, _app, _auth, _payment)
    t = START_TIME
    for _ in range(count):
        t += rng.expovariate(20.0)
        event = rng.choices(makers, (45, 40, 8, 7))[0](rng)
        event["ts"] = round(t, 3)
        yield event


# ---- rules -------------------------------------------------------------------------------

REGEX_PATTERNS = (
    r"upstream timeout after \d{{4,}}ms calling {service}",
    r"connection refused by {service}",
    r"OutOfMemoryError.*worker-{k}\b",
    r"disk quota exceeded on /data/vol{k}$",
    r"deadlock detected on table orders_{k}\b",
    r"(?i)certificate for {service}\.internal expires in [0-{d}] days",
    r"^panic: .*\[{k}\]",
    r"FATAL: too many connections for role app_{k}$",
    r"ERR-{code}\b",
    r"replication lag \d{{3,}}s on replica db-{k}$",
    r"circuit breaker open for ({service}|{service2})",
    r"rate limit exceeded for tenant t{k}$",
)


def _alert(rng: random.Random, message: str, **extra: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "message": message,
        "priority": rng.choice(("P1", "P2", "P3", "P3", "P4")),
        "tags": ["generated", "service:{service}"],
        "responders": [{"type": "team", "name": f"team-{rng.randrange(20)}"}],
    }
    alert.update(extra)
    return alert


def _regex_pattern(rng: random.Random) -> str:
    return rng.choice(REGEX_PATTERNS).format(
        service=rng.choice(SERVICES),
        service2=rng.choice(SERVICES),
        k=rng.randrange(0, 40),
        d=rng.randrange(1, 9),
        code=f"{rng.randrange(1000, 1400):04d}",
    )


def _rule(kind: str, i: int, rng: random.Random) -> dict[str, Any]:
    svc = rng.choice(SERVICES)
    name = f"{kind}-{i:04d}"
    if kind == "svc-errors":
        return {
            "name": name,
            "match": {"service": svc, "level": ["error", "critical"]},
            "throttle": "10m",
            "alert": _alert(rng, "Errors in {service} on {host}"),
        }
    if kind == "svc-errors-regex":
        return {
            "name": name,
            "match": {"service": svc, "level": "error", "message": {"regex": _regex_pattern(rng)}},
            "threshold": {"count": 3, "window": "5m", "group_by": ["host"]},
            "alert": _alert(rng, "{message}"),
        }
    if kind == "http-5xx":
        return {
            "name": name,
            "match": {"type": "http_access", "service": svc, "http.status": {"gte": 500, "lt": 600}},
            "threshold": {"count": rng.choice((3, 5, 10)), "window": "2m", "group_by": ["host"]},
            "throttle": "15m",
            "alert": _alert(rng, "5xx on {service}/{host}"),
        }
    if kind == "http-slow":
        return {
            "name": name,
            "match": {
                "type": "http_access",
                "service": svc,
                "latency_ms": {"gt": rng.choice((500, 1000, 2000))},
                "http.method": ["POST", "PUT"],
            },
            "threshold": {"count": 5, "window": "1m"},
            "alert": _alert(rng, "slow {service}"),
        }
    if kind == "auth":
        if rng.random() < 0.5:
            return {
                "name": name,
                "match": {"service": "auth", "event": "login_failed", "user": {"exists": True}},
                "threshold": {
                    "count": rng.choice((5, 10, 20)),
                    "window": "5m",
                    "group_by": rng.choice((["user"], ["source.ip"], ["user", "source.ip"])),
                },
                "throttle": "1h",
                "alert": _alert(rng, "brute force on {user}"),
            }
        prefix = rng.choice(("10.", "172.", "192.168."))
        return {
            "name": name,
            "match": {
                "event": ["login_succeeded", "mfa_challenge"],
                "role": "admin",
                "not": {"source.ip": {"startswith": prefix}},
            },
            "alert": _alert(rng, "admin {user} from {source.ip}"),
        }
    if kind == "payments":
        return {
            "name": name,
            "match": {
                "service": "payments",
                "event": rng.choice(PAY_EVENTS),
                "provider": rng.choice(PROVIDERS),
                "status": {"in": ["declined", "error"]},
                "amount": {"gte": rng.choice((100, 500, 1000))},
            },
            "threshold": {"count": 3, "window": "10m", "group_by": ["provider"]},
            "throttle": "30m",
            "alert": _alert(rng, "payments {provider} failing"),
        }
    if kind == "combo":
        return {
            "name": name,
            "match": {
                "all": [
                    {"service": [svc, rng.choice(SERVICES)]},
                    {"any": [{"level": "critical"}, {"http.status": {"gte": 502}}]},
                    {"not": {"host": {"endswith": f"-{rng.randrange(100)}"}}},
                ]
            },
            "throttle": "5m",
            "alert": _alert(rng, "trouble on {service}"),
        }
    if kind == "regex-only":
        match: dict[str, Any] = {"message": {"regex": _regex_pattern(rng)}}
        if rng.random() < 0.3:
            match["not"] = {"level": "debug"}
        return {"name": name, "match": match, "throttle": "10m", "alert": _alert(rng, "{message}")}
    if kind == "numeric":
        return {
            "name": name,
            "match": {"latency_ms": {"gt": rng.choice((5000, 8000, 20000))}, "http.path": {"startswith": "/api/"}},
            "threshold": {"count": 10, "window": "1m", "group_by": ["service"]},
            "alert": _alert(rng, "very slow API on {service}"),
        }
    if kind == "any-level":
        return {
            "name": name,
            "match": {
                "any": [
                    {"level": "critical", "service": svc},
                    {"message": {"contains": f"vol{rng.randrange(40)}"}, "level": "error"},
                ]
            },
            "alert": _alert(rng, "{message}"),
        }
    raise AssertionError(kind)


# Share of each kind of rule; regex-only rules are ~12% of every set.
RULE_MIX = (
    ("svc-errors", 22),
    ("svc-errors-regex", 15),
    ("http-5xx", 14),
    ("http-slow", 6),
    ("auth", 6),
    ("payments", 8),
    ("combo", 8),
    ("regex-only", 12),
    ("numeric", 3),
    ("any-level", 6),
)


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rule mappings in the proportions of RULE_MIX; about 2% are disabled."""
    rng = random.Random(seed * 7919 + count)
    total = sum(w for _, w in RULE_MIX)
    kinds = [k for k, w in RULE_MIX for _ in range(max(1, round(count * w / total)))]
    kinds = (kinds * 2)[:count]
    rng.shuffle(kinds)
    rules = [_rule(kind, i, rng) for i, kind in enumerate(kinds)]
    for rule in rules:
        if rng.random() < 0.02:
            rule["enabled"] = False
    return rules


def shape_module(shape: str) -> ModuleType:
    """The module that generates `shape`'s events and rules."""
    if shape == "classic":
        return sys.modules[__name__]
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return importlib.import_module(f"shape_{shape}")


def _prefix(shape: str) -> str:
    return "" if shape == "classic" else f"{shape}-"


def events_path(out: Path, events: int, seed: int, shape: str = "classic") -> Path:
    """Where the event file of `events` events lives."""
    return out / f"events-{_prefix(shape)}{events}-s{seed}.jsonl"


def rules_path(out: Path, rules: int, seed: int, shape: str = "classic") -> Path:
    """Where the rule file of `rules` rules lives."""
    return out / f"rules-{_prefix(shape)}{rules}-s{seed}.yaml"


def write_events(target: Path, events: Iterator[dict[str, Any]]) -> None:
    """Write `events` as JSON lines, atomically."""
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for event in events:
            f.write(orjson.dumps(event) + b"\n")
    tmp.replace(target)


def write_rules(path: Path, rules: list[dict[str, Any]], seed: int) -> None:
    """Write a rule file holding `rules`."""
    text = yaml.safe_dump({"rules": rules}, sort_keys=False, width=120)
    path.write_text(f"# generated by benchmarks/generate.py (seed {seed})\n{text}")


def write_all(out: Path, events: int, seed: int, shape: str = "classic", counts: tuple[int, ...] = RULE_COUNTS) -> None:
    """Write the event file and every rule file of `shape`, unless they are already there."""
    module = shape_module(shape)
    out.mkdir(parents=True, exist_ok=True)
    target = events_path(out, events, seed, shape)
    if not target.exists():
        write_events(target, module.generate_events(events, seed))
    for count in counts:
        path = rules_path(out, count, seed, shape)
        if not path.exists():
            write_rules(path, module.generate_rules(count, seed), seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="classic")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    write_all(args.out, args.events, args.seed, args.shape)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
