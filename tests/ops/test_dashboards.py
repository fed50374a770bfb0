"""The Grafana dashboards are ready for file provisioning: unique uids, no fixed ids, and every
panel on the Prometheus data source the viewer picks (``${datasource}``). That their queries run
and name exported metrics is checked against real servers in test_live.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from tests.ops.conftest import DASHBOARDS, REPO, dashboard_exprs

TOPICS = {
    "throughput-latency.json",
    "models-actions.json",
    "drift-alerts.json",
    "kafka-dead-letters.json",
    "state.json",
}


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_one_dashboard_per_topic():
    assert {p.name for p in DASHBOARDS.glob("*.json")} == TOPICS


def test_dashboards_are_provisioning_ready():
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc.get("uid") and doc["uid"] not in uids, path.name
        uids.add(doc["uid"])
        assert doc.get("id") is None, f"{path.name}: a provisioned dashboard has no fixed id"
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert {"job", "instance"} <= set(variables)
        ids = [p["id"] for p in _panels(doc["panels"])]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in _panels(doc["panels"]):
            if panel["type"] == "row":
                continue
            where = (path.name, panel.get("title"))
            assert panel.get("datasource", {}).get("uid") == "${datasource}", where
            assert panel.get("targets"), where
            for target in panel["targets"]:
                assert target.get("datasource", {}).get("uid") == "${datasource}", where
        assert len(dashboard_exprs(path)) >= 8, path.name


def test_the_provisioning_files_point_at_the_dashboards():
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/fraudstream.yaml").read_text()
    )
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
    sources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
