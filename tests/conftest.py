"""Session-wide fixtures: a Kafka-protocol broker and fresh topic names.

``--bootstrap-servers`` (or ``$FRAUDSTREAM_BOOTSTRAP_SERVERS``) points the tests at a real
cluster, with security settings from ``$FRAUDSTREAM_KAFKA_*``; otherwise the session starts
an embedded Tansu broker on a random loopback port. Tests using these fixtures are marked
``kafka`` (deselect with ``-m "not kafka"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from fraudstream.broker import EmbeddedBroker
from fraudstream.kafka import KafkaSettings

_KAFKA_FIXTURES = frozenset({"kafka_settings", "unique_topic"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bootstrap-servers",
        default=os.environ.get("FRAUDSTREAM_BOOTSTRAP_SERVERS"),
        help="Kafka cluster to test against (default: an embedded Tansu broker)",
    )
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="also run the long runs marked soak (make soak); make test skips them",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = config.getoption("--soak")
    skip_soak = pytest.mark.skip(reason="a long run: make soak (pytest --soak) runs it")
    for item in items:
        if _KAFKA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
        if not soak and item.get_closest_marker("soak") is not None:
            item.add_marker(skip_soak)


@pytest.fixture(scope="session")
def kafka_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaSettings]:
    servers = request.config.getoption("--bootstrap-servers")
    if servers:
        env = {**os.environ, "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": servers}
        yield KafkaSettings.from_env(environ=env)
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield KafkaSettings(bootstrap_servers=broker.bootstrap_servers)


@pytest.fixture
def unique_topic() -> Callable[..., str]:
    """Factory: each call returns a topic name no other test uses."""

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{uuid4().hex[:8]}"

    return make
