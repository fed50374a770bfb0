"""Fixtures for the operations files: deploy/prometheus (alert rules and their unit tests),
deploy/grafana (dashboards) and docs/runbook.md.

The Prometheus tools come from the Debian package ``prometheus`` (``make tools`` installs it).
Where they are missing a test skips, except under CI (``CI`` or ``FRAUDSTREAM_REQUIRE_TOOLS``
set, as ``.ci/run`` does), where it fails: the rules must not go untested there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudstream.broker import free_port
from fraudstream.flows.scoring import Topics
from fraudstream.kafka import KafkaSettings, create_topics
from tests.flows.conftest import (
    registry,  # noqa: F401  (the small trained champion)
    sidecar_argv,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULES_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RUNBOOK = REPO / "docs" / "runbook.md"

_REQUIRE_ENV = ("CI", "FRAUDSTREAM_REQUIRE_TOOLS")


def tools_required() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
        for name in _REQUIRE_ENV
    )


def tool(name: str) -> str:
    """The path of ``name``; skip without it, or fail where the tools are required."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed: `make tools` installs it (Debian package prometheus)"
    if tools_required():
        pytest.fail(f"{reason}; required here ({' or '.join(_REQUIRE_ENV)} is set)")
    pytest.skip(reason)


def wait_until(
    what: str,
    check: Callable[[], Any],
    done: Callable[[Any], Any] = bool,
    timeout_s: float = 60,
) -> Any:
    """Poll ``check`` until ``done`` holds for what it returns, and return that; at the
    deadline, fail naming ``what`` and the last value seen. Polling, never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {what}; last seen: {value!r}")
        time.sleep(0.2)  # between two polls of the condition


def http_get(url: str, timeout_s: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


# --------------------------------------------------------------------------- rule files


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule of a rule file, each with its group's name under ``group``."""
    doc = yaml.safe_load(path.read_text())
    return [{**rule, "group": g["name"]} for g in doc["groups"] for rule in g["rules"]]


def shortened_rules(path: Path = RULES, hold: str = "1s") -> dict[str, Any]:
    """The rule file with every ``for:`` set to ``hold`` and no ``keep_firing_for``: the same
    expressions, reacting within seconds on a server that scrapes and evaluates every second."""
    doc = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
            rule.pop("keep_firing_for", None)
    return doc


# --------------------------------------------------------------------------- PromQL names

_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed): every bare
    identifier that is not a function, an aggregation, a keyword, a label or a string."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"`[^`]*`", "``", s)
    s = re.sub(r"\{[^{}]*\}", "", s)  # label matchers (and Grafana's ${var})
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = _LABEL_LISTS.sub("", s)
    s = re.sub(r"\boffset\s+-?[\w$]+", "", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def exposition_names(text: str) -> tuple[set[str], set[str]]:
    """From a /metrics page: (every sample name a query may use, the names with samples).

    ``# TYPE`` lines declare families even when they have no sample yet (a labelled counter
    before its first increment); a histogram ``h`` is queried as ``h_bucket``, ``h_count`` and
    ``h_sum``, a counter under its ``_total`` name.
    """
    declared: set[str] = set()
    sampled: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind in ("histogram", "gaugehistogram"):
                declared |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            elif kind == "summary":
                declared |= {name, f"{name}_count", f"{name}_sum"}
            else:
                declared.add(name)
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return declared, sampled


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """(panel title, expression) of every Prometheus target and query variable of a dashboard."""
    doc = json.loads(path.read_text())
    out = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(doc.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((panel.get("title", "?"), target["expr"]))
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            if m:
                out.append((f"variable {var['name']}", m.group(1)))
    return out


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Prometheus would receive it from Grafana (variables filled)."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    expr = expr.replace("$__range", "1h")
    return re.sub(r"\$\{?(job|instance)(?::\w+)?\}?", ".+", expr)


# --------------------------------------------------------------------------- live parts


@dataclass
class Sidecar:
    """A running ``fraudstream run`` with its metrics port and topics."""

    process: subprocess.Popen[bytes]
    port: int
    topics: Topics
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> str:
        status, body = http_get(f"http://{self.target}/metrics")
        assert status == 200, (status, body[:500])
        return body

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def ops_topics(settings: KafkaSettings, base: str, *, with_transactions: bool = True) -> Topics:
    t = Topics(
        transactions=f"{base}.tx",
        labels=f"{base}.labels",
        decisions=f"{base}.decisions",
        transactions_dlq=f"{base}.tx.dlq",
        labels_dlq=f"{base}.labels.dlq",
        alerts=f"{base}.alerts",
    )
    topics = {t.labels: 1, t.decisions: 1, t.transactions_dlq: 1, t.labels_dlq: 1, t.alerts: 1}
    if with_transactions:
        topics[t.transactions] = 2
    create_topics(settings, topics)
    return t


def start_sidecar(settings: KafkaSettings, registry_dir: Path, workdir: Path, t: Topics) -> Sidecar:
    """``fraudstream run`` as a subprocess, returned once its /healthz answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port("127.0.0.1")
    log = workdir / "sidecar.log"
    argv = sidecar_argv(
        settings.bootstrap_servers,
        registry_dir,
        workdir,
        t,
        "--epoch-interval",
        "0.5",
        "--metrics-port",
        str(port),
        partitions=2,
    )
    with log.open("wb") as err:
        process = subprocess.Popen(argv, stderr=err, stdout=subprocess.DEVNULL)
    sidecar = Sidecar(process, port, t, log)

    def serving() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the sidecar exited with {process.returncode}:\n{sidecar.tail()}")
        return http_get(f"http://{sidecar.target}/healthz", timeout_s=1)[0] == 200

    wait_until("the sidecar's /healthz", serving)
    return sidecar


def stop_sidecar(sidecar: Sidecar) -> None:
    process = sidecar.process
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # in case a test left it stopped
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


class Prometheus:
    """A Prometheus server on loopback, and the parts of its HTTP API the tests read."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], rules: dict[str, Any]):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [
                {"job_name": "fraudstream", "static_configs": [{"targets": targets}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port("127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.tail()}")
            return http_get(f"{self.base}/-/ready", timeout_s=1)[0] == 200

        wait_until("Prometheus to be ready", ready)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        if status != 200:
            raise AssertionError(f"GET {url}: {status} {body[:500]}")
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query; None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"].get("alertname") == alertname
            and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
