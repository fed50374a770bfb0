"""Fixtures for the dataflow: a small trained champion and a fresh topic set per test."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from fraudstream.flows.scoring import FlowConfig, Topics
from fraudstream.kafka import create_topics, produce_streams
from fraudstream.replay.training import train_challenger_from_streams, train_from_streams
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import default_feature_set


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    sim = generate(SimConfig(seed=3, n_customers=300, n_terminals=600, days=20))
    path = tmp_path_factory.mktemp("registry")
    fs = default_feature_set()
    train_from_streams(sim.transactions, sim.labels, fs, path, n_estimators=20)
    # an online challenger in shadow: every flow test also checks its scores and learning
    train_challenger_from_streams(sim.transactions, sim.labels, fs, path)
    return path


@pytest.fixture
def topics(kafka_settings, unique_topic):
    def make(tx_partitions: int = 2) -> Topics:
        base = unique_topic("fs")
        t = Topics(
            transactions=f"{base}.tx",
            labels=f"{base}.labels",
            decisions=f"{base}.decisions",
            transactions_dlq=f"{base}.tx.dlq",
            labels_dlq=f"{base}.labels.dlq",
            alerts=f"{base}.alerts",
        )
        create_topics(
            kafka_settings,
            {
                t.transactions: tx_partitions,
                t.labels: 1,
                t.decisions: 2,
                t.transactions_dlq: 1,
                t.labels_dlq: 1,
                t.alerts: 1,
            },
        )
        return t

    return make


DAY_MS = 86_400_000
SMALL_FETCHES = {"max.partition.fetch.bytes": "8192"}


def sidecar_argv(
    servers: str, registry, tmp: Path, t: Topics, *extra: str, partitions: int = 4
) -> list[str]:
    """``fraudstream run`` on ``t``'s topics with ``partitions`` state partitions, state and
    recovery directories under ``tmp``; ``extra`` flags go last."""
    return [
        sys.executable,
        "-m",
        "fraudstream",
        "run",
        "--bootstrap-servers",
        servers,
        "--registry",
        str(registry),
        "--state-dir",
        str(tmp / "state"),
        "--recovery-dir",
        str(tmp / "recovery"),
        "--partitions",
        str(partitions),
        "--transactions-topic",
        t.transactions,
        "--labels-topic",
        t.labels,
        "--decisions-topic",
        t.decisions,
        "--alerts-topic",
        t.alerts,
        *extra,
    ]


def recent_stream(*, seed: int, customers: int, days: int, days_ago: int):
    """A simulated stream that ends in the recent past (inside the schema's time bounds)."""
    now = int(time.time() * 1000)
    return generate(
        SimConfig(
            seed=seed,
            n_customers=customers,
            n_terminals=2 * customers,
            days=days,
            start_ms=now - days_ago * DAY_MS,
        )
    )


def load_history(settings, t: Topics, sim, transactions=None) -> None:
    """Produce a simulated history as it happened: labels interleaved with transactions in time,
    every record stamped with its own time (the order the sidecar and a file replay both use)."""
    produce_streams(
        settings,
        t.transactions,
        t.labels,
        sim.transactions if transactions is None else transactions,
        sim.labels,
        stamp="event",
    )


@pytest.fixture
def flow_config(kafka_settings, registry):
    """``make(topics, state_dir, batch_size)``: a bounded (no tail) flow with 4 state partitions."""

    def make(topics: Topics, state_dir, batch_size: int) -> FlowConfig:
        return FlowConfig(
            kafka=kafka_settings,
            feature_set=default_feature_set(),
            model_registry=registry,
            state_dir=state_dir,
            topics=topics,
            partitions=4,
            tail=False,
            batch_size=batch_size,
            # small fetches: the merge releases a backlog in many steps (mid-stream crashes)
            consumer_overrides=SMALL_FETCHES,
        )

    return make
