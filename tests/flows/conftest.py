"""Fixtures for the dataflow: a small trained champion and a fresh topic set per test."""

from __future__ import annotations

import pytest

from fraudstream.flows.scoring import Topics
from fraudstream.kafka import create_topics
from fraudstream.replay.training import train_from_streams
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import default_feature_set


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    sim = generate(SimConfig(seed=3, n_customers=300, n_terminals=600, days=20))
    path = tmp_path_factory.mktemp("registry")
    train_from_streams(sim.transactions, sim.labels, default_feature_set(), path, n_estimators=20)
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
        )
        create_topics(
            kafka_settings,
            {
                t.transactions: tx_partitions,
                t.labels: 1,
                t.decisions: 2,
                t.transactions_dlq: 1,
                t.labels_dlq: 1,
            },
        )
        return t

    return make
