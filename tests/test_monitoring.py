"""Monitoring rulesd itself: packaging/prometheus/rulesd-alerts.yml (checked and unit-tested with
the real promtool), packaging/grafana/rulesd.json, and the metrics both use, scraped from a live
daemon's /metrics; the README names every metric rulesd exports."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_process import Workspace, wait_until
from tests.fake_opsgenie import FakeOpsGenie, Reply

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "packaging" / "prometheus" / "rulesd-alerts.yml"
ALERT_TESTS = ROOT / "packaging" / "prometheus" / "rulesd-alerts.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "rulesd.json"
FROM_PROMETHEUS = {"up"}  # written by Prometheus for every scrape target, not by rulesd
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"inf", "nan"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".+"}


def promtool() -> str:
    """The promtool binary; a missing one fails the test (Debian's `prometheus` package has it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (.ci/run does)")
    return path


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping label lists, function calls and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {w for w in words if w.lower() not in KEYWORDS}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="rulesd"} == 0', {"up"}),
        ("sum by (job, instance) (rate(a_total[10m])) / on (instance) group_left (x) b > 0.05", {"a_total", "b"}),
        ('rate(a{x=~"by(c)"}[5m] offset 1h) > 1e6 and deriv(b[15m]) > 0', {"a", "b"}),
        ("topk(10, sum without (rule) (increase(m_total[$__rate_interval])))", {"m_total"}),
        ("c unless on (job, instance) d or e", {"c", "d", "e"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    """The helper the checks below rely on finds exactly the selected metrics."""
    assert names == metric_names(expr)


def alert_expressions() -> list[str]:
    """Every `expr` of the alerting rules."""
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard's panels and variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs + [re.sub(r"^label_values\((\w+),.*\)$", r"\1", q) for q in variables]


def test_alerting_rules_pass_promtool_check_and_their_unit_tests() -> None:
    """`promtool check rules` accepts the file; `promtool test rules` shows every alert firing when
    it should and staying quiet when it should not."""
    check = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert 0 == check.returncode, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    tested = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name], capture_output=True, text=True, cwd=ALERTS.parent, check=False
    )
    assert 0 == tested.returncode, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    unit_tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert alerts == unit_tested


def test_alerts_cover_what_an_operator_must_hear_about() -> None:
    """Outbox growing, oldest alert too old, sending paused, a proxy answering for OpsGenie, reload
    failed, source lag growing, invalid events rising and no events at all each have an alert on
    the metric that says so."""
    exprs = " ".join(alert_expressions())
    for metric in (
        "rulesd_outbox_depth",
        "rulesd_outbox_oldest_age_seconds",
        "rulesd_sending_paused",
        "rulesd_answers_not_from_api_total",
        "rulesd_last_reload_successful",
        "rulesd_source_lag_bytes",
        "rulesd_events_invalid_total",
        "rulesd_events_read_total",
    ):
        assert metric in metric_names(exprs), metric


def test_dashboard_is_well_formed_and_its_queries_are_valid_promql(tmp_path: Path) -> None:
    """Unique panel ids, panels inside the 24-column grid, every query on the `datasource` variable,
    and every query (Grafana's variables filled in) accepted by promtool's PromQL parser."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    for p in panels:
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert {"${datasource}"} == {p["datasource"]["uid"], *(t["datasource"]["uid"] for t in p["targets"])}
    queries = []
    for expr in dashboard_expressions():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        queries.append(expr)
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert 0 == check.returncode, check.stdout + check.stderr


def scrape(url: str) -> str:
    """The body of a GET."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition, `name{labels}` (labels sorted) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def exported_names(text: str) -> set[str]:
    """The metric names of an exposition's samples (counters with their `_total`)."""
    return {re.sub(r"\{.*", "", key) for key in samples(text)}


@pytest.fixture
def live_metrics(tmp_path: Path, server: FakeOpsGenie) -> tuple[Workspace, str]:
    """A running daemon with `metrics.listen: 127.0.0.1:0`, which has read events (one firing a
    rule, one invalid line) and delivered an alert; the URL of its /metrics. Beside the JSON
    events it follows a regex source with a typed field and a time field, so that every
    per-source counter is exported."""
    sources = [
        {"name": "app", "type": "file", "path": "events.jsonl", "start_at": "beginning"},
        {
            "name": "web",
            "type": "file",
            "path": "web.log",
            "format": "regex",
            "pattern": r"(?P<status>\d+)",
            "fields": {"status": "int"},
            "time_field": "ts",
        },
    ]
    ws = Workspace(tmp_path, server.url, metrics={"listen": "127.0.0.1:0"}, source=None, sources=sources)
    daemon = ws.start()
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", daemon.stderr())
    assert found is not None, daemon.stderr()
    ws.append({"kind": "page", "id": 1}, {"kind": "noise"}, b"not json\n")
    assert server.wait_for(lambda r: len(r) >= 1)
    url = found.group(1)
    assert wait_until(lambda: samples(scrape(url)).get("rulesd_alerts_sent_total") == 1)
    return ws, url


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(live_metrics: tuple[Workspace, str]) -> None:
    """Each metric name the alerting rules and the dashboard query is on a live rulesd's /metrics."""
    exported = exported_names(scrape(live_metrics[1]))
    used = {name for expr in alert_expressions() + dashboard_expressions() for name in metric_names(expr)}
    assert set() == used - exported - FROM_PROMETHEUS
    assert {"rulesd_sending_paused", "rulesd_last_reload_successful", "process_cpu_seconds_total"} <= used


def test_readme_lists_every_exported_metric_by_its_full_name(live_metrics: tuple[Workspace, str]) -> None:
    """Every rulesd_* metric a live daemon exports is named in full in the README's metrics list,
    which names no metric that does not exist and uses no `{a,b}` shorthand."""
    exported = {n for n in exported_names(scrape(live_metrics[1])) if n.startswith("rulesd_")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(rulesd_[a-z0-9_]+)", readme))
    assert set() == exported - listed
    assert set() == {n for n in listed if not n.endswith("_")} - exported
    assert [] == re.findall(r"rulesd_[a-z0-9_]*\{[a-z0-9_]+,", readme)


def test_paused_sending_and_a_failed_reload_show_on_the_gauges(tmp_path: Path, server: FakeOpsGenie) -> None:
    """rulesd_sending_paused is 1 while OpsGenie refuses the key and 0 after a delivery;
    rulesd_last_reload_successful is 0 after a reload that failed and 1 after one that worked."""
    server.responder = lambda r: Reply(401, body=b'{"message":"Key is invalid"}')
    ws = Workspace(tmp_path, server.url, metrics={"listen": "127.0.0.1:0"})
    daemon = ws.start()
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", daemon.stderr())
    assert found is not None
    url = found.group(1)
    assert {"rulesd_sending_paused": 0, "rulesd_last_reload_successful": 1} == {
        k: v for k, v in samples(scrape(url)).items() if k in ("rulesd_sending_paused", "rulesd_last_reload_successful")
    }
    started = samples(scrape(url))["rulesd_last_reload_success_timestamp_seconds"]
    assert abs(time.time() - started) < 60  # the rules loaded at start count as a success
    ws.append({"kind": "page", "id": 1})
    assert wait_until(lambda: samples(scrape(url))["rulesd_sending_paused"] == 1)
    (ws.rules / "rules.yaml").write_text("rules:\n  - name: x\n    match: {kind: [}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: samples(scrape(url))["rulesd_last_reload_successful"] == 0)
    assert 1 == samples(scrape(url))['rulesd_reloads_total{result="failed"}']
    assert started == samples(scrape(url))["rulesd_last_reload_success_timestamp_seconds"]
    server.responder = lambda r: Reply()
    (ws.rules / "rules.yaml").write_text("name: page-on-demand\nmatch: {kind: page}\n")
    daemon.proc.send_signal(signal.SIGHUP)  # a reload also retries the paused alert at once
    assert wait_until(lambda: samples(scrape(url))["rulesd_last_reload_successful"] == 1)
    assert started < samples(scrape(url))["rulesd_last_reload_success_timestamp_seconds"]
    assert wait_until(lambda: samples(scrape(url))["rulesd_sending_paused"] == 0)
    assert 0 == daemon.terminate()
