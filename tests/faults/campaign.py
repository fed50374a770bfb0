"""A fault campaign against the sidecar on a real broker, and its pass criteria.

A simulated stream (with exact re-deliveries and a fuzz corpus mixed in) is produced at a rate
while ``fraudstream run --processes N`` tails it. Faults hit at points spread over the stream
(when the decision log has grown past each point): SIGKILL of the whole sidecar, SIGTERM, a
broker crash and restart that keeps its data (Tansu's ``s3://`` storage on a local S3 server), and
a network cut between every client and the broker (a TCP proxy the broker advertises). Then a
reference run, uninterrupted and in-process, decides the same topics.

Pass criteria (:meth:`Report.failures`): every valid transaction decided; after de-duplication by
``tx_id``, every decision, re-emitted copies included, equal to the reference's (features, scores,
action); the entity state stores equal; every bad record in a dead-letter topic with a reason;
the sidecar's memory bounded; it never exited on its own; no input record was late behind an idle
bound (records the producer reordered within a partition are placed by the log alone: counted,
not failed).

``make soak`` runs the long form (``python -m tests.faults.campaign --soak``); ``make test`` a
bounded one (tests/faults/test_campaign.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from fraudstream.broker import EmbeddedBroker, free_port
from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import FlowConfig, Topics
from fraudstream.kafka import KafkaSettings, consume, create_topics, end_offsets
from fraudstream.schema import Limits, Rejected, Transaction, parse_label, parse_transaction
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import default_feature_set

DAY_MS = 86_400_000
FAULTS = ("kill", "term", "broker", "cut")


@dataclass(frozen=True, kw_only=True)
class Plan:
    customers: int = 200
    days: int = 5
    rate: float = 600.0
    faults: tuple[str, ...] = ("kill", "broker", "kill", "cut", "term", "kill")
    processes: int = 2
    duplicates: int = 20
    fuzz: int = 40
    seed: int = 1
    cut_s: float = 3.0
    grace_ms: int = 5000
    max_rss_mib: int = 1500


@dataclass
class Report:
    plan: Plan
    valid: int = 0
    bad: int = 0
    produced: int = 0
    decided: int = 0
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    state_equal: bool = False
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    undead: int = 0
    max_rss_mib: float = 0.0
    crashes: list[str] = field(default_factory=list)
    late: float = 0.0
    faults_done: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def failures(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} valid transactions undecided: {self.missing[:5]}")
        if self.mismatched:
            out.append(f"{len(self.mismatched)} decisions differ: {self.mismatched[:5]}")
        if not self.state_equal:
            out.append("entity state differs from the uninterrupted run's")
        if self.undead:
            out.append(f"{self.undead} bad records have no dead letter")
        if self.max_rss_mib > self.plan.max_rss_mib:
            out.append(f"sidecar RSS {self.max_rss_mib:.0f} MiB > {self.plan.max_rss_mib}")
        if self.crashes:
            out.append("sidecar exited on its own:\n" + "\n".join(self.crashes))
        if self.late:
            out.append(f"{self.late:.0f} input records were late behind an idle bound")
        if len(self.faults_done) != len(self.plan.faults):
            out.append(f"only {self.faults_done} of {list(self.plan.faults)} injected")
        return out

    def summary(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mismatched"] = len(self.mismatched)
        d["missing"] = len(self.missing)
        d["failures"] = self.failures()
        return d


# --- input --------------------------------------------------------------------------------


def hostile_payloads(now_ms: int) -> list[bytes]:
    """The hand-picked bad inputs (each must be dead-lettered, none may stop the flow)."""
    good = {"tx_id": "hp", "event_time_ms": now_ms, "account_id": "hp-acct", "amount": 1.5}
    cases: list[Any] = [
        {**good, "tx_id": "hp-nul\x00"},
        {**good, "amount": -0.0},
        {**good, "amount": 1e-320},
        {**good, "amount": -3},
        {**good, "amount": True},
        {**good, "amount": "12.50"},
        {k: v for k, v in good.items() if k != "account_id"},
        {**good, "event_time_ms": 5},
        {**good, "event_time_ms": now_ms + 400 * DAY_MS},
        {**good, "schema_version": 7},
        {**good, "card_id": 1234},
    ]
    out = [orjson.dumps(c) for c in cases]
    out += [
        b"\xff\xfe\xfd not utf-8",
        b"{not json",
        b"[1, 2, 3]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"tx_id": "hp-nan", "event_time_ms": 1, "account_id": "a", "amount": NaN}',
        b'{"tx_id": "hp-inf", "event_time_ms": 1, "account_id": "a", "amount": Infinity}',
        b'{"tx_id": "hp-e400", "event_time_ms": 1e400, "account_id": "a", "amount": 1}',
        b'{"tx_id": "hp-big", "event_time_ms": 1, "account_id": "a", "amount": 1'
        + b"0" * 30
        + b"}",
        b'{"tx_id": "hp-10mb", "pad": "' + b"x" * 10_000_000 + b'"}',
    ]
    return out


_JUNK: list[Any] = [None, True, -1, 0, 2**63, -(2**70), 1.5e308, "", "x" * 300, "\x07", [], {}]


def fuzz_corpus(rng: random.Random, valid: list[dict[str, Any]], n: int) -> list[bytes]:
    """Mutants of valid records: fields dropped, retyped, stretched (seeded, reproducible)."""
    out = []
    fields = ["tx_id", "event_time_ms", "account_id", "amount", "card_id", "terminal_id"]
    for i in range(n):
        rec = dict(rng.choice(valid))
        rec["tx_id"] = f"fuzz-{i}"
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(fields)
            op = rng.random()
            if op < 0.3:
                rec.pop(name, None)
            else:
                rec[name] = rng.choice(_JUNK)
        try:
            out.append(orjson.dumps(rec))
        except TypeError:  # e.g. an int beyond 64 bits: send its JSON text anyway
            out.append(json.dumps(rec).encode())
    return out


@dataclass
class Stream:
    records: list[tuple[str, bytes, bytes | None]]  # (topic kind, value, key)
    valid: set[str]
    bad_tx: list[bytes]
    bad_labels: list[bytes]


def build_stream(plan: Plan, now_ms: int) -> Stream:
    rng = random.Random(plan.seed)
    sim = generate(
        SimConfig(
            seed=plan.seed,
            n_customers=plan.customers,
            n_terminals=2 * plan.customers,
            days=plan.days,
            start_ms=now_ms - (plan.days + 3) * DAY_MS,
        )
    )
    limits = Limits()
    txs = [("tx", orjson.dumps(t), t["account_id"].encode()) for t in sim.transactions]
    # labels not issued yet by "now" do not exist yet
    labels = sorted(
        (lab for lab in sim.labels if lab["label_time_ms"] <= now_ms),
        key=lambda lab: lab["label_time_ms"],
    )
    # labels interleaved as issued (a label after the first transaction at or after its time)
    records: list[tuple[str, bytes, bytes | None]] = []
    li = 0
    for (kind, value, key), tx in zip(txs, sim.transactions, strict=True):
        while li < len(labels) and labels[li]["label_time_ms"] <= tx["event_time_ms"]:
            records.append(("labels", orjson.dumps(labels[li]), labels[li]["tx_id"].encode()))
            li += 1
        records.append((kind, value, key))
    records += [("labels", orjson.dumps(lab), lab["tx_id"].encode()) for lab in labels[li:]]
    bad = hostile_payloads(now_ms) + fuzz_corpus(rng, sim.transactions, plan.fuzz)
    valid = {t["tx_id"] for t in sim.transactions}
    bad_tx = []
    for payload in bad:
        parsed = parse_transaction(payload, now_ms=now_ms, limits=limits)
        if isinstance(parsed, Transaction):
            valid.add(parsed.tx_id)  # a mutant that is still valid gets a decision
        else:
            bad_tx.append(payload)
        records.insert(rng.randrange(len(records) // 10, len(records)), ("tx", payload, None))
    for _ in range(plan.duplicates):  # exact re-deliveries, some far after the original
        i = rng.randrange(len(records))
        records.insert(rng.randrange(i, len(records) + 1), records[i])
    bad_labels = [
        b'{"tx_id": "tx0000000001", "label": 1, "label_time_ms": 18446744073709551615}',
        b'{"tx_id": "tx0000000001", "label": 2, "label_time_ms": 5}',
        b"not a label",
    ]
    for payload in bad_labels:
        assert isinstance(parse_label(payload, now_ms=now_ms, limits=limits), Rejected)
        records.insert(rng.randrange(len(records)), ("labels", payload, None))
    return Stream(records, valid, bad_tx, bad_labels)


class Producer(threading.Thread):
    """Produces the stream at a rate with the producer's clock as timestamp; a send that fails
    (broker restarting, network cut) is sent again until acknowledged (at least once)."""

    def __init__(self, settings: KafkaSettings, topics: Topics, stream: Stream, rate: float):
        super().__init__(daemon=True, name="campaign-producer")
        self.settings, self.topics, self.stream, self.rate = settings, topics, stream, rate
        self.sent = 0
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the campaign
            self.error = exc

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            **self.settings.aiokafka_kwargs(),
            acks="all",
            # few, larger record batches: Tansu on s3 reads a fetch object by object
            linger_ms=100,
            request_timeout_ms=5000,
            max_request_size=16 * 1024 * 1024,
        )
        await producer.start()
        try:
            start = time.monotonic()
            chunk: list[tuple[str, bytes, bytes | None]] = []
            labels: list[tuple[str, bytes, bytes | None]] = []
            for i, rec in enumerate(self.stream.records):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                # labels go out in bursts (one record batch each), transactions in chunks
                (labels if rec[0] == "labels" else chunk).append(rec)
                if len(chunk) >= 200:
                    await self._send(producer, labels + chunk)
                    chunk, labels = [], []
            await self._send(producer, labels + chunk)
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, chunk: list[Any]) -> None:
        topic = {"tx": self.topics.transactions, "labels": self.topics.labels}
        todo = list(chunk)
        while todo:
            # send() itself raises when it cannot even queue the record (no metadata while the
            # broker restarts or the network is cut: KafkaTimeoutError after
            # request_timeout_ms); that record is resent like one whose delivery failed
            pending: list[Any] = []
            for k, v, key in todo:
                try:
                    pending.append(await producer.send(topic[k], v, key=key))
                except KafkaError as exc:
                    pending.append(exc)
            results = await asyncio.gather(
                *(f for f in pending if not isinstance(f, Exception)), return_exceptions=True
            )
            delivered = iter(results)
            outcome = [f if isinstance(f, Exception) else next(delivered) for f in pending]
            failed = [r for r, res in zip(todo, outcome, strict=True) if isinstance(res, Exception)]
            self.sent += len(todo) - len(failed)
            if failed:
                self.retries += len(failed)
                await asyncio.sleep(0.2)  # back-off before resending, not synchronisation
            todo = failed


# --- the sidecar ----------------------------------------------------------------------------


class Sidecar:
    def __init__(self, argv: list[str], ports: list[int], log: Path) -> None:
        self.argv, self.ports, self.log = argv, ports, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.late_seen = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_report(self) -> str:
        """How the sidecar ended on its own, with the last lines it logged (for the report)."""
        code = self.proc and self.proc.returncode
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-15:]
        except OSError as exc:
            lines = [f"(no log: {exc})"]
        return f"exited {code}; log tail:\n" + "\n".join(line[:400] for line in lines)

    def pids(self) -> list[int]:
        assert self.proc is not None
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid:  # process group
                        out.append(int(entry.name))
        return out

    def rss_mib(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                if m:
                    total += int(m.group(1)) / 1024
        return total

    def _samples(self, prefix: str) -> list[float]:
        out = []
        for port in self.ports:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith(prefix):
                            out.append(float(line.rsplit(" ", 1)[1]))
        return out

    def scrape_late(self) -> None:
        """Input records declared late behind an idle bound so far in this life (the gauge is per
        process). Those are the ones whose place depends on timing; a record behind an earlier
        record of its own partition (the producer's retries reordered a partition) is placed by
        the log alone, the same in every run, and the reference run checks its decision."""
        samples = self._samples("fraudstream_input_late_idle_records ")
        self.late_seen = max(self.late_seen, sum(samples))

    def drained(self) -> bool:
        """Everything on the broker read and released in order (labels after the last
        transaction included)."""
        buffered = self._samples("fraudstream_input_buffered_records ")
        lags = self._samples("fraudstream_consumer_lag_records{")
        return bool(buffered) and bool(lags) and not any(buffered) and not any(lags)

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._gone()

    def _gone(self) -> None:
        """Wait until no process of the group is left (children die a moment after)."""
        deadline = time.monotonic() + 60
        while self.pids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sidecar processes {self.pids()} outlive their group")
            time.sleep(0.05)  # polling /proc with a deadline

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._gone()

    def stop(self) -> None:
        """Whatever happened: nothing of the sidecar outlives the campaign."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


# --- the campaign ---------------------------------------------------------------------------


def _decided_count(settings: KafkaSettings, topic: str) -> int:
    return sum(end_offsets(settings, topic).values())


def _decisions(settings: KafkaSettings, topic: str) -> Iterator[dict[str, Any]]:
    for rec in consume(settings, topic, timeout_s=300):
        yield orjson.loads(rec.value)


def run_campaign(plan: Plan, workdir: Path, registry: Path, log: Any = print) -> Report:
    """Run the campaign of ``plan`` in ``workdir``; see the module docstring."""
    started = time.monotonic()
    report = Report(plan=plan)
    topics = Topics(transactions="transactions", labels="labels", decisions="decisions")
    stream = build_stream(plan, int(time.time() * 1000))
    report.valid, report.bad = len(stream.valid), len(stream.bad_tx) + len(stream.bad_labels)
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(persistent=True, via_proxy=True, log_path=workdir / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        create_topics(
            settings,
            {
                topics.transactions: 4,
                topics.labels: 1,
                topics.decisions: 4,
                topics.transactions_dlq: 1,
                topics.labels_dlq: 1,
                topics.alerts: 1,
                "decisions.reference": 4,
            },
        )
        base_port = free_port("127.0.0.1", count=plan.processes)
        argv = [
            sys.executable, "-m", "fraudstream", "run",
            "--bootstrap-servers", broker.bootstrap_servers,
            "--registry", str(registry),
            "--state-dir", str(workdir / "state"),
            "--recovery-dir", str(workdir / "recovery"),
            "--partitions", "4",
            "--processes", str(plan.processes),
            "--epoch-interval", "0.5",
            "--idle-grace-ms", str(plan.grace_ms),
            "--metrics-port", str(base_port),
            # Tansu on s3 answers a fetch empty when it cannot read its objects in time
            "--fetch-wait-ms", "500",
        ]  # fmt: skip
        ports = [base_port + i for i in range(plan.processes)]
        sidecar = Sidecar(argv, ports, workdir / "sidecar.log")
        try:
            seen = _chaos(plan, report, broker, settings, topics, stream, sidecar, log)
        finally:
            sidecar.stop()
        report.decided = len(seen)
        report.missing = sorted(stream.valid - seen.keys())
        _check(plan, report, settings, topics, stream, seen, workdir, registry, log)
    report.seconds = time.monotonic() - started
    return report


def _chaos(
    plan: Plan,
    report: Report,
    broker: EmbeddedBroker,
    settings: KafkaSettings,
    topics: Topics,
    stream: Stream,
    sidecar: Sidecar,
    log: Any,
) -> dict[str, list[tuple[Any, ...]]]:
    """Produce while the faults hit; returns every decision copy by tx_id once all are in."""
    assert broker.proxy is not None
    sidecar.start()
    producer = Producer(settings, topics, stream, plan.rate)
    producer.start()

    def watch() -> None:
        if not sidecar.alive():
            report.crashes.append(sidecar.exit_report())
            sidecar.start()

    expected = len(stream.valid)
    points = [expected * (k + 1) // (len(plan.faults) + 1) for k in range(len(plan.faults))]
    for fault, point in zip(plan.faults, points, strict=True):
        deadline = time.monotonic() + 600
        while _decided_count(settings, topics.decisions) < point:
            watch()
            if producer.error is not None:  # the stream will never reach the point
                raise RuntimeError(f"producer failed: {producer.error!r}") from producer.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress to {point} decisions before {fault}")
            time.sleep(0.2)  # polling the decision log with a deadline
        report.max_rss_mib = max(report.max_rss_mib, sidecar.rss_mib())
        sidecar.scrape_late()
        log(f"fault {fault} at {point} decisions")
        if fault in ("kill", "term"):
            report.late += sidecar.late_seen
            sidecar.late_seen = 0
            sidecar.kill() if fault == "kill" else sidecar.terminate()
            sidecar.start()
        elif fault == "broker":
            broker.restart(kill=True)
        elif fault == "cut":
            broker.proxy.cut("blackhole")
            time.sleep(plan.cut_s)  # the length of the outage, not synchronisation
            broker.proxy.restore()
        report.faults_done.append(fault)
    producer.join(timeout=1200)
    if producer.error is not None:
        raise RuntimeError(f"producer failed: {producer.error!r}")
    report.produced = producer.sent
    log(f"produced {producer.sent} records ({producer.retries} resends); waiting for decisions")
    deadline = time.monotonic() + 600
    while True:
        seen: dict[str, list[tuple[Any, ...]]] = {}
        for d in _decisions(settings, topics.decisions):
            seen.setdefault(d["tx_id"], []).append(
                (d["features"], d["champion"]["score"], d["action"])
            )
        if stream.valid <= seen.keys() or time.monotonic() > deadline:
            break
        watch()
        time.sleep(1.0)  # polling the decision log with a deadline
    while not sidecar.drained() and time.monotonic() < deadline:
        watch()
        time.sleep(0.5)  # polling the sidecar's metrics with a deadline
    report.max_rss_mib = max(report.max_rss_mib, sidecar.rss_mib())
    sidecar.scrape_late()
    report.late += sidecar.late_seen
    if not sidecar.alive():
        report.crashes.append(sidecar.exit_report())
    return seen


def _check(
    plan: Plan,
    report: Report,
    settings: KafkaSettings,
    topics: Topics,
    stream: Stream,
    seen: dict[str, list[tuple[Any, ...]]],
    workdir: Path,
    registry: Path,
    log: Any,
) -> None:
    """The uninterrupted reference run, then the comparisons of the pass criteria."""
    from tests.flows.test_recovery import entity_state

    log("reference run (uninterrupted, in process)")
    ref_topics = dataclasses.replace(topics, decisions="decisions.reference")
    cfg = FlowConfig(
        kafka=settings,
        feature_set=default_feature_set(),
        model_registry=registry,
        state_dir=workdir / "reference",
        topics=ref_topics,
        partitions=4,
        tail=False,
        fetch_wait_ms=500,
    )
    run_flow(cfg, recovery_dir=None, epoch_interval_s=1.0)
    ref = {
        d["tx_id"]: (d["features"], d["champion"]["score"], d["action"])
        for d in _decisions(settings, ref_topics.decisions)
    }
    for tx_id, copies in seen.items():
        if any(c != ref.get(tx_id) for c in copies):
            report.mismatched.append(tx_id)
    report.state_equal = entity_state(workdir / "state") == entity_state(workdir / "reference")
    dead = consume(settings, topics.transactions_dlq, timeout_s=120)
    dead += consume(settings, topics.labels_dlq, timeout_s=120)
    report.dead_letters = len(dead)
    for rec in dead:
        reason = dict(rec.headers).get("dlq.reason", b"?").decode()
        report.dead_letter_reasons[reason] = report.dead_letter_reasons.get(reason, 0) + 1
    covered = {rec.value for rec in dead}
    truncated = {rec.value for rec in dead if "dlq.truncated" in dict(rec.headers)}
    for payload in [*stream.bad_tx, *stream.bad_labels]:
        if payload not in covered and not any(payload.startswith(t) for t in truncated):
            report.undead += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="the long form (~100k events)")
    parser.add_argument("--workdir", default="var/soak")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    plan = Plan(seed=args.seed)
    if args.soak:
        plan = Plan(
            seed=args.seed,
            customers=2300,
            days=30,
            rate=1000.0,
            faults=("kill", "cut", "kill", "term", "kill", "broker", "kill", "kill", "cut",
                    "kill", "term", "kill", "broker", "kill", "kill", "kill"),
            duplicates=400,
            fuzz=400,
            cut_s=10.0,
        )  # fmt: skip
    workdir = Path(args.workdir)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    registry = workdir / "registry"
    from fraudstream.replay.training import train_from_streams

    sim = generate(SimConfig(seed=3, n_customers=300, n_terminals=600, days=20))
    train_from_streams(
        sim.transactions, sim.labels, default_feature_set(), registry, n_estimators=20
    )
    report = run_campaign(plan, workdir, registry)
    print(json.dumps(report.summary(), indent=2, default=str))
    return 1 if report.failures() else 0


if __name__ == "__main__":
    raise SystemExit(main())
