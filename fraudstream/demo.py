"""``fraudstream demo``: the whole system end to end on the embedded broker.

1. start the embedded Kafka-protocol broker on a free loopback port;
2. simulate a history and the days after it (with a drift injected a few days into them),
   replay the history into point-in-time features, train an XGBoost champion (production) and
   an online River challenger (shadow) on its warm days;
3. load the history into the broker, start the sidecar (``fraudstream run``, Bytewax with
   recovery and RocksDB state) as a process and let it drain the history, measuring the rate it
   sustains;
4. offer the live days at a quarter of that rate (latency of a sidecar that keeps up), with
   malformed records mixed in and the late labels interleaved as they were issued;
5. read every decision, dead letter and alert back and print a summary: both models' catches,
   latency, and the drift alerts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from fraudstream.broker import EmbeddedBroker
from fraudstream.errors import ConfigError
from fraudstream.kafka import Record, consume, create_topics, produce_streams
from fraudstream.simulate import SimConfig, generate

__all__ = ["malformed_payloads", "run_demo", "start_sidecar"]

_DAY_MS = 86_400_000


def malformed_payloads(now_ms: int) -> list[bytes]:
    """One example of each kind of bad input the DLQ must catch."""
    good = {"tx_id": "bad-0", "event_time_ms": now_ms, "account_id": "c1", "amount": 1.0}
    bad: list[Any] = [
        b"{not json",
        b"[1, 2, 3]",
        {**good, "amount": -5.0},
        {**good, "amount": "12.50"},
        {k: v for k, v in good.items() if k != "account_id"},
        {**good, "event_time_ms": 10},
        {**good, "event_time_ms": now_ms + 400 * _DAY_MS},
        {**good, "event_time_ms": "yesterday"},
        b'{"tx_id": "x", "amount": NaN}',
        {**good, "schema_version": 7},
        {**good, "card_id": 1234},
        b'{"tx_id": "' + b"x" * 70_000 + b'"}',
    ]
    out = []
    for i, item in enumerate(bad):
        if isinstance(item, dict):
            item = orjson.dumps({**item, "tx_id": f"bad-{i}"} if "tx_id" in item else item)
        out.append(item)
    return out


def start_sidecar(
    bootstrap_servers: str,
    workdir: Path,
    registry: Path,
    *,
    processes: int = 1,
    tail: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``fraudstream run`` as a child process, state and logs under ``workdir``."""
    argv = [
        sys.executable,
        "-m",
        "fraudstream",
        "run",
        "--bootstrap-servers",
        bootstrap_servers,
        "--registry",
        str(registry),
        "--state-dir",
        str(workdir / "state"),
        "--recovery-dir",
        str(workdir / "recovery"),
        "--processes",
        str(processes),
        *extra,
    ]
    if not tail:
        argv.append("--no-tail")
    with open(workdir / "sidecar.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_demo(
    *,
    workdir: Path,
    customers: int = 1000,
    history_days: int = 60,
    stream_days: int = 10,
    rate: float = 5000.0,
    seed: int = 7,
    drift: str | None = "amount",
    drift_after_days: int = 4,
) -> int:
    """See the module docstring. ``rate`` caps the live offer: the demo measures what the
    sidecar sustains while it drains the history and offers a quarter of it, at most ``rate``."""
    from fraudstream.kafka import KafkaSettings
    from fraudstream.models.registry import ModelRegistry
    from fraudstream.replay.training import train_challenger_from_streams, train_from_streams
    from fraudstream.state.features import default_feature_set

    fs = default_feature_set()
    horizon_days = -(-fs.horizon_ms() // _DAY_MS)
    if history_days < horizon_days + 14:
        raise ConfigError(
            f"--history-days must be at least {horizon_days + 14}: the features need "
            f"{horizon_days} days of history, then a week of training rows and a week for "
            "their labels to arrive"
        )
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    now_ms = int(time.time() * 1000)
    start_ms = (now_ms // _DAY_MS - history_days - stream_days - 2) * _DAY_MS
    live_ms = start_ms + history_days * _DAY_MS
    drift_day = history_days + drift_after_days if drift else None
    train_to_ms = live_ms - 7 * _DAY_MS

    print(
        f"[1/6] simulating {history_days} days of history and {stream_days} live days for "
        f"{customers} customers"
        + (f" (drift '{drift}' from live day {drift_after_days})" if drift else "")
    )
    sim = generate(
        SimConfig(
            seed=seed,
            n_customers=customers,
            n_terminals=2 * customers,
            days=history_days + stream_days,
            start_ms=start_ms,
            drift_at_day=drift_day,
            drift_kinds=(drift,) if drift else (),
        )
    )
    past = [t for t in sim.transactions if t["event_time_ms"] < live_ms]
    past_labels = [lab for lab in sim.labels if lab["label_time_ms"] < live_ms]
    live = [t for t in sim.transactions if t["event_time_ms"] >= live_ms]
    live_labels = [lab for lab in sim.labels if lab["label_time_ms"] >= live_ms]
    print(f"      history {len(past)} transactions, live {len(live)}; {len(sim.fraud)} frauds")

    print(
        f"[2/6] training on days {horizon_days}-{history_days - 7} (point-in-time features): "
        "XGBoost champion, online River challenger"
    )
    t0 = time.perf_counter()
    registry = workdir / "registry"
    # labels come weeks late: the last week's frauds are mostly unknown yet, so training (and
    # its time-ordered validation) stops a week before the live days
    window = {"train_from_ms": start_ms + horizon_days * _DAY_MS, "train_to_ms": train_to_ms}
    # the first model of an empty registry goes straight to production (docs/models.md)
    version = train_from_streams(past, past_labels, fs, registry, seed=seed, actor="demo", **window)
    challenger = train_challenger_from_streams(
        past, past_labels, fs, registry, seed=seed, actor="demo", **window
    )
    reg = ModelRegistry(registry)
    m, c = reg.manifest(version), reg.manifest(challenger)
    print(
        f"      {version} ({reg.stage_of(version)}): validation AUC {m['metrics']['auc_roc']:.3f}"
        f"; {challenger} ({reg.stage_of(challenger)}): AUC {c['metrics']['auc_roc']:.3f} "
        f"[{time.perf_counter() - t0:.0f}s]"
    )

    bad = malformed_payloads(now_ms)
    records: list[Any] = list(live)
    step = max(1, len(records) // (len(bad) + 1))
    for i, payload in enumerate(bad):
        records.insert((i + 1) * step + i, payload)

    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(
            settings,
            {
                "transactions": 4,
                "labels": 1,
                "decisions": 4,
                "transactions.dlq": 1,
                "labels.dlq": 1,
                "alerts": 1,
            },
        )
        print(f"[3/6] loading the history into the broker at {broker.bootstrap_servers}")
        produce_streams(settings, "transactions", "labels", past, past_labels, stamp="event")
        print("[4/6] starting the sidecar (Bytewax + RocksDB); it drains the history first")
        sidecar = start_sidecar(
            broker.bootstrap_servers, workdir, registry, extra=("--epoch-interval", "1")
        )
        try:
            t0 = time.perf_counter()
            with tqdm(total=len(past), unit="dec", leave=False) as bar:
                backlog = consume(
                    settings,
                    "decisions",
                    until=_progress(bar, len(past), sidecar, workdir),
                    timeout_s=1800,
                )
            drain_s = time.perf_counter() - t0
            capacity = _sustained_rate(backlog)
            offer = max(50.0, min(rate, capacity / 4))
            print(
                f"      {len(past)} decisions in {drain_s:.0f}s; sustained {capacity:,.0f}/s "
                f"while draining"
            )
            print(
                f"[5/6] live: {len(records)} records at {offer:,.0f}/s (1/4 of the drain rate; "
                f"{len(bad)} malformed), their {len(live_labels)} labels as they are issued"
            )
            with tqdm(total=len(records) + len(live_labels), unit="ev", leave=False) as bar:
                produce_streams(
                    settings,
                    "transactions",
                    "labels",
                    records,
                    live_labels,
                    stamp="now",
                    rate_per_s=offer,
                    progress=lambda sent: bar.update(sent - bar.n),
                )
            total = len(past) + len(live)
            with tqdm(total=total, unit="dec", leave=False) as bar:
                decisions = consume(
                    settings,
                    "decisions",
                    until=_progress(bar, total, sidecar, workdir),
                    timeout_s=600,
                )
            dlq = consume(settings, "transactions.dlq", until=lambda r: len(r) >= len(bad))
            print("[6/6] reading decisions and alerts back")
            alerts = consume(settings, "alerts", timeout_s=5)
        finally:
            sidecar.terminate()
            try:
                sidecar.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sidecar.kill()

    live_ids = {t["tx_id"] for t in live}
    live_decisions = [r for r in decisions if r.json()["tx_id"] in live_ids]
    drift_ms = None if drift_day is None else start_ms + drift_day * _DAY_MS
    _summary(live_decisions, dlq, sim.fraud, len(live), version, challenger, drift_ms)
    _print_alerts(alerts, start_ms, drift_day)
    return 0


def _progress(bar: Any, n: int, sidecar: subprocess.Popen[bytes], workdir: Path) -> Any:
    def enough(recs: list[Record]) -> bool:
        bar.update(len(recs) - bar.n)
        if sidecar.poll() is not None:
            raise RuntimeError(f"sidecar exited: see {workdir / 'sidecar.log'}")
        return len(recs) >= n

    return enough


def _sustained_rate(records: list[Record]) -> float:
    """Decisions per second over the middle 80 % of a drain (by decision time)."""
    times = np.sort(np.array([r.json()["decided_at_ms"] for r in records], dtype=np.float64))
    if times.size < 10:
        return 1000.0
    lo, hi = int(times.size * 0.1), int(times.size * 0.9)
    span = max(1.0, times[hi] - times[lo]) / 1000.0
    return (hi - lo) / span


def _print_alerts(alerts: list[Record], start_ms: int, drift_day: int | None) -> None:
    """One line per detector and state; feature alerts list their features."""
    print(f"alerts               {len(alerts)} records on the alerts topic")
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for rec in alerts:
        a = rec.json()
        groups.setdefault((a["kind"], a["detector"], a["severity"], a["state"]), []).append(a)
    for (kind, detector, severity, state), items in groups.items():
        days = [(a["first_event_ms"] - start_ms) / _DAY_MS for a in items if a["first_event_ms"]]
        when = f"from day {min(days):.1f}" if days else ""
        features = [a["feature"] for a in items if a.get("feature")]
        what = ""
        if features:
            what = ", ".join(features[:4]) + (
                f" (+{len(features) - 4})" if len(features) > 4 else ""
            )
        elif items[0].get("detail"):
            what = str(items[0]["detail"])[:70]
        print(f"  {state:<8} {severity:<8} {kind}/{detector:<12} {when:<15} {what}")
    if drift_day is not None:
        print(f"  drift injected from day {drift_day}; what to do: docs/runbook.md")


def _summary(
    decisions: list[Record],
    dlq: list[Record],
    fraud: dict[str, str],
    n: int,
    champion: str,
    challenger: str,
    drift_ms: int | None,
) -> None:
    by_action: dict[str, int] = {}
    # per model: fraud caught, missed; legitimate flagged, legitimate (before / after drift)
    flagged: dict[str, list[int]] = {champion: [0] * 6, challenger: [0] * 6}
    latency = []
    times = []
    seen = set()
    for rec in decisions:
        d = rec.json()
        if d["tx_id"] in seen:
            continue
        seen.add(d["tx_id"])
        by_action[d["action"]] = by_action.get(d["action"], 0) + 1
        is_fraud = d["tx_id"] in fraud
        for model in d.get("models", []):
            counts = flagged.get(model["version"])
            if counts is not None and model["score"] is not None:
                hit = model["action"] != "approve"
                if is_fraud:
                    counts[0 if hit else 1] += 1
                else:
                    late = drift_ms is not None and d["event_time_ms"] >= drift_ms
                    counts[4 if late else 2] += hit
                    counts[5 if late else 3] += 1
        latency.append(d["decided_at_ms"] - d["ingested_at_ms"])
        times.append(d["decided_at_ms"])
    span_s = max(1e-3, (max(times) - min(times)) / 1000) if times else 1.0
    reasons: dict[str, int] = {}
    for rec in dlq:
        headers = dict(rec.headers)
        reason = headers.get("dlq.reason", b"?").decode()
        reasons[reason] = reasons.get(reason, 0) + 1
    print("\n== fraudstream demo summary (live part) ==")
    print(f"events (valid)       {n}")
    print(f"decisions            {len(seen)}  {by_action}")
    print(f"dead letters         {len(dlq)}  {reasons if reasons else ''}")
    for version, role in ((champion, "champion"), (challenger, "challenger")):
        caught, missed, fp, neg, fp_late, neg_late = flagged[version]
        fpr = f"false-positive rate {fp / max(1, neg):.1%}"
        if drift_ms is not None:
            fpr += f" before the drift, {fp_late / max(1, neg_late):.1%} after"
        shadow = " (shadow: scored, not acted on)" if role == "challenger" else ""
        print(f"{role + ' ' + version:<20} fraud caught/missed {caught}/{missed}; {fpr}{shadow}")
    print(f"throughput           {len(seen) / span_s:,.0f} decisions/s over {span_s:.1f}s")
    print(
        f"event->decision      p50 {_percentile(latency, 50):.0f} ms, "
        f"p99 {_percentile(latency, 99):.0f} ms (producer timestamp to decision)"
    )
