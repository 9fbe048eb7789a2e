"""The "heldout" shape: web server access logs and the rules a security and SRE team would
write for them. Written last, after all tuning of the engine, and measured once, as a check
that the figures hold on a rule set nothing was tuned for.

Events (nginx JSON access logs): `time_iso8601`, `remote_addr`, `host` (virtual host),
`method`, `uri`, `args`, `status`, `body_bytes_sent`, `request_time`, `http_user_agent`,
`http_referer`, `upstream` (the backend pool).

Rules: attack signatures as case-insensitive regexes on `uri` and `args` (SQL injection,
path traversal, script tags, shell injection); scanners by `http_user_agent` substring;
5xx bursts per virtual host and upstream (thresholds with throttles); slow requests by
`request_time`; admin paths from outside the private ranges (`startswith` under `not`);
write methods on read-only hosts; `any` of several suspicious file extensions (`endswith`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

NAME = "heldout"
TIME_FIELD = "time_iso8601"
START_TIME = 1_718_200_000.0

VHOSTS = tuple(f"{name}.example.org" for name in ("www", "api", "shop", "blog", "static", "auth", "cdn", "admin"))
UPSTREAMS = tuple(f"pool-{i}" for i in range(24))
PATHS = (
    "/",
    "/index.html",
    "/api/v2/products",
    "/api/v2/cart",
    "/login",
    "/static/app.js",
    "/img/logo.png",
    "/search",
    "/blog/post",
    "/admin/dashboard",
    "/wp-login.php",
    "/.env",
    "/api/v2/orders",
)
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    "curl/8.5.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "python-requests/2.31.0",
    "sqlmap/1.8#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.5.0)",
)
AGENT_WEIGHTS = (50, 30, 6, 8, 5, 0.3, 0.3)
ATTACKS = (
    "id=1' OR '1'='1",
    "q=<script>alert(1)</script>",
    "file=../../../../etc/passwd",
    "cmd=;cat /etc/shadow",
    "id=1 UNION SELECT password FROM users--",
    "url=http://169.254.169.254/latest/meta-data/",
)


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _address(rng: random.Random) -> str:
    first = rng.choice((10, 10, 81, 93, 185, 203))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events in time order, about 20 per second of event time."""
    rng = random.Random(seed)
    t = START_TIME
    for _ in range(count):
        t += rng.expovariate(20.0)
        attack = rng.random() < 0.004
        status = rng.choices(
            (200, 204, 301, 304, 400, 401, 403, 404, 499, 500, 502, 503), (70, 3, 2, 8, 2, 2, 1, 6, 1, 2, 2, 1)
        )[0]
        yield {
            "time_iso8601": _timestamp(t),
            "remote_addr": _address(rng),
            "host": rng.choice(VHOSTS),
            "method": rng.choices(("GET", "POST", "PUT", "DELETE", "HEAD"), (80, 14, 3, 1, 2))[0],
            "uri": rng.choice(PATHS) + (f"/{rng.randrange(10_000)}" if rng.random() < 0.3 else ""),
            "args": rng.choice(ATTACKS)
            if attack
            else (f"page={rng.randrange(50)}&sort=asc" if rng.random() < 0.4 else ""),
            "status": status,
            "body_bytes_sent": rng.randrange(0, 120_000),
            "request_time": round(rng.lognormvariate(-2.5, 1.2), 3),
            "http_user_agent": rng.choices(AGENTS, AGENT_WEIGHTS)[0],
            "http_referer": rng.choice(("-", "https://www.example.org/", "https://www.google.com/")),
            "upstream": rng.choice(UPSTREAMS),
        }


SIGNATURES = (
    r"(?i)(\bunion\b.{0,20}\bselect\b|'\s*or\s*'?\d*'?\s*=\s*'?\d)",
    r"(?i)<\s*script\b",
    r"\.\./\.\./",
    r"(?i)(;|\|\||&&)\s*(cat|wget|curl|bash|sh)\b",
    r"169\.254\.169\.254",
    r"(?i)/etc/(passwd|shadow)",
)


def _rule(i: int, rng: random.Random) -> dict[str, Any]:
    kind = rng.choices(
        ("signature", "scanner", "errors", "slow", "admin", "writes", "files"), (25, 10, 25, 15, 10, 10, 5)
    )[0]
    match: dict[str, Any]
    rule: dict[str, Any] = {"name": f"web-{kind}-{i:04d}"}
    if kind == "signature":
        field = rng.choice(("uri", "args"))
        match = {field: {"regex": rng.choice(SIGNATURES)}}
        if rng.random() < 0.5:
            match["host"] = rng.choice(VHOSTS)
        rule["throttle"] = "10m"
    elif kind == "scanner":
        match = {"http_user_agent": {"contains": rng.choice(("sqlmap", "Nikto", "masscan", "zgrab", "nuclei"))}}
        rule["threshold"] = {"count": 3, "window": "5m", "group_by": ["remote_addr"]}
    elif kind == "errors":
        match = {
            "host": rng.choice(VHOSTS),
            "upstream": rng.choice(UPSTREAMS),
            "status": {"gte": rng.choice((500, 502))},
        }
        rule["threshold"] = {"count": rng.randrange(3, 8), "window": "2m"}
        rule["throttle"] = "15m"
    elif kind == "slow":
        match = {"request_time": {"gt": rng.choice((2.0, 5.0))}, "method": ["POST", "PUT"]}
        rule["threshold"] = {"count": 5, "window": "1m", "group_by": ["upstream"]}
    elif kind == "admin":
        match = {
            "uri": {"startswith": rng.choice(("/admin", "/wp-login", "/.env"))},
            "not": {"remote_addr": {"startswith": "10."}},
        }
    elif kind == "writes":
        match = {
            "host": rng.choice(("static.example.org", "cdn.example.org")),
            "method": {"in": ["PUT", "DELETE", "POST"]},
        }
    else:
        exts = rng.sample((".php", ".asp", ".env", ".git", ".bak", ".sql"), 3)
        match = {"any": [{"uri": {"endswith": ext}} for ext in exts], "status": {"lt": 400}}
    rule["match"] = match
    rule["alert"] = {"message": "{host} {uri}", "priority": rng.choice(("P2", "P3"))}
    return rule


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rules of the kinds above."""
    rng = random.Random(seed * 7883 + count)
    return [_rule(i, rng) for i in range(count)]
