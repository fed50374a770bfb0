"""The alert rules: valid for promtool, unit-tested by deploy/prometheus/alerts_test.yml, and
each one labelled, annotated and linked to its section of docs/runbook.md."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.ops.conftest import REPO, RULES, RULES_TESTS, RUNBOOK, load_rules, metric_names, tool

SEVERITIES = {"critical", "warning", "info"}


def _anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def _alerts() -> list[dict]:
    return [r for r in load_rules() if "alert" in r]


def test_promtool_accepts_the_rules():
    promtool = tool("promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_pass_their_unit_tests():
    promtool = tool("promtool")
    out = subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        cwd=RULES_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section():
    anchors = _anchors()
    alerts = _alerts()
    assert len(alerts) >= 12
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        link = notes.get("runbook_url", "")
        m = re.fullmatch(r"docs/runbook\.md#([a-z0-9-]+)", link)
        assert m, f"{name}: runbook_url {link!r} is not docs/runbook.md#section"
        assert m.group(1) in anchors, f"{name}: docs/runbook.md has no section #{m.group(1)}"


def test_every_alert_is_unit_tested_firing():
    doc = yaml.safe_load(RULES_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = {a["alert"] for a in _alerts()} - fired
    assert not missing, f"alerts with no unit test that fires them: {sorted(missing)}"


def test_recorded_series_follow_the_naming_convention_and_are_used():
    rules = load_rules()
    records = {r["record"] for r in rules if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for r in rules))
    for name in records:
        assert re.fullmatch(r"[a-z_]+:fraudstream_[a-z0-9_]+:[a-z0-9_]+", name), name
    assert records <= used, f"recorded but never read: {sorted(records - used)}"


def test_the_sidecars_own_runbook_links_have_sections():
    """Alert records on the alerts topic carry runbook links too (models/drift.py, step.py)."""
    anchors = _anchors()
    linked = set()
    for folder in ("fraudstream", "models", "flows"):
        for path in (REPO / folder).glob("*.py"):
            linked |= set(re.findall(r"runbook\.md#([a-z0-9-]+)", path.read_text()))
    from fraudstream.models.drift import _ANCHORS

    linked |= set(_ANCHORS.values())
    assert {"score-drift", "canary-halt", "model-failure"} <= linked
    assert linked <= anchors, f"missing sections in docs/runbook.md: {sorted(linked - anchors)}"


def test_metric_names_are_found_in_expressions():
    expr = (
        'sum by (job) (rate(fraudstream_dlq_total{topic=~"$topic", le="1.0"}[$__rate_interval]))'
        " / on (job) group_left max without (x) (fraudstream_events_total offset 5m) > 1e3"
        ' and label_replace(up, "a", "$1", "b", "(.+)") unless job:fraudstream_x:rate5m'
    )
    assert metric_names(expr) == {
        "fraudstream_dlq_total",
        "fraudstream_events_total",
        "up",
        "job:fraudstream_x:rate5m",
    }


def test_the_example_prometheus_config_is_valid(tmp_path):
    """deploy/prometheus/prometheus.yml as written; its commented Kubernetes job is YAML of the
    same shape (Debian's promtool is built without Kubernetes discovery: it cannot check it)."""
    promtool = tool("promtool")
    example = RULES.parent / "prometheus.yml"
    out = subprocess.run(
        [promtool, "check", "config", str(example)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = example.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - job_name:"))
    job = yaml.safe_load("\n".join(line.replace("  # ", "", 1) for line in lines[start:]))
    (job,) = job
    assert job["job_name"] == "fraudstream"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert {r["action"] for r in job["relabel_configs"][:2]} == {"keep"}
