"""Kafka client settings and small I/O helpers: create topics, produce, consume.

:class:`KafkaSettings` is the one place connection and security settings live; it renders
them for aiokafka (:meth:`KafkaSettings.aiokafka_kwargs`) and for librdkafka, which Bytewax's
connectors use (:meth:`KafkaSettings.confluent_config`). Secrets never appear in its repr.

The helpers are for tooling, tests, demos and benchmarks, not the hot path of a flow. Each has
a sync form (``asyncio.run``; not callable from a running event loop) and an async form
prefixed with ``a``. :func:`consume` uses manual partition assignment, never a consumer group,
so it works on brokers whose group coordinator is flaky and leaves no offsets behind.

Errors (see :mod:`fraudstream.errors`)::

    BrokerError
    ├── BrokerTimeoutError   a consume/create_topics/end_offsets deadline passed (a TimeoutError)
    └── TopicCreationError   the broker refused to create a topic

Connection failures surface as aiokafka's own ``KafkaConnectionError``; the CLI reports them as
broker errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from fraudstream.errors import BrokerTimeoutError, ConfigError, TopicCreationError

__all__ = [
    "KafkaSettings",
    "Record",
    "TopicCreationError",
    "aconsume",
    "acreate_topics",
    "aend_offsets",
    "aproduce",
    "aproduce_streams",
    "consume",
    "create_topics",
    "end_offsets",
    "produce",
    "produce_streams",
]

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
SASL_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_REDACTED = "***"
_SEND_CHUNK = 5_000  # sends in flight before awaiting their acks


class _MaskSaslExchange(logging.Filter):
    """Masks SASL payloads in aiokafka's DEBUG log of every request and response.

    aiokafka logs ``SaslAuthenticateRequest_v0(sasl_auth_bytes=b'\\x00user\\x00password')``:
    with PLAIN that is the password in clear, with SCRAM the transcript an offline guesser
    needs. Installed on the ``aiokafka.conn`` logger when this module is imported.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_sasl_exchange, record.args)):
            record.args = tuple(
                f"{type(arg).__name__}(<masked>)" if _is_sasl_exchange(arg) else arg
                for arg in record.args
            )
        return True


def _is_sasl_exchange(value: object) -> bool:
    return type(value).__name__.startswith("SaslAuthenticate")


logging.getLogger("aiokafka.conn").addFilter(_MaskSaslExchange())


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise TypeError(f"a secret must be str or SecretStr, got {type(value).__name__}")


def _reveal(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach a Kafka cluster. Validated at construction; secrets never printed.

    ``sasl_password`` and ``ssl_key_password`` may be given as ``str`` and are kept as pydantic
    ``SecretStr`` (``repr``/``str`` show ``**********``); only :meth:`aiokafka_kwargs`,
    :meth:`confluent_config` and :meth:`to_env` reveal them, for the clients. An inconsistent
    combination raises :class:`~fraudstream.errors.ConfigError` (a ``ValueError``).

    Built by the CLI from flags, environment and config file (:mod:`fraudstream.settings`), or
    from the environment alone by :meth:`from_env`: both take the same path.
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)
    client_id: str = "fraudstream"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sasl_password", _secret(self.sasl_password))
        object.__setattr__(self, "ssl_key_password", _secret(self.ssl_key_password))
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers must name at least one host:port")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"security_protocol={self.security_protocol!r}; "
                f"expected one of {sorted(SECURITY_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"security_protocol={self.security_protocol} needs sasl_mechanism in "
                    f"{sorted(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    f"security_protocol={self.security_protocol} needs sasl_username "
                    "and sasl_password"
                )
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password is not None:
            raise ConfigError(
                f"SASL settings given but security_protocol={self.security_protocol} "
                "does not use SASL"
            )
        ssl_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password)
        if not self.uses_ssl and any(v is not None for v in ssl_files):
            raise ConfigError(
                f"ssl_* settings given but security_protocol={self.security_protocol} "
                "does not use SSL"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("ssl_keyfile needs ssl_certfile")
        if self.ssl_key_password is not None and not self.ssl_keyfile:
            raise ConfigError("ssl_key_password needs ssl_keyfile")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(
        cls, prefix: str = "FRAUDSTREAM_KAFKA_", environ: Mapping[str, str] | None = None
    ) -> KafkaSettings:
        """Read ``{prefix}BOOTSTRAP_SERVERS``, ``SECURITY_PROTOCOL``, ``SASL_*``, ``SSL_*``.

        The same parsing and validation as the CLI's settings (:mod:`fraudstream.settings`):
        empty variables count as unset, the protocol and mechanism are case-insensitive, values
        are stripped except the passwords (spaces may be part of them). ``environ`` defaults to
        ``os.environ``. Raises :class:`~fraudstream.errors.ConfigError` (a ``ValueError``).
        """
        from fraudstream.settings import kafka_from_env

        return kafka_from_env(os.environ if environ is None else environ, prefix=prefix)

    def redacted(self) -> dict[str, str | None]:
        """Return the settings as a dict safe to log: the passwords are masked."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": None if self.sasl_password is None else _REDACTED,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_key_password": None if self.ssl_key_password is None else _REDACTED,
            "client_id": self.client_id,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items() if v is not None)
        return f"KafkaSettings({fields})"

    def to_env(self, prefix: str = "FRAUDSTREAM_KAFKA_") -> dict[str, str]:
        """The environment variables :meth:`from_env` reads back into these settings, for a
        child process. Holds the passwords: do not log it."""
        values = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": _reveal(self.sasl_password),
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_key_password": _reveal(self.ssl_key_password),
        }
        return {prefix + k.upper(): v for k, v in values.items() if v is not None}

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients. Holds the password: do not log it."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = _reveal(self.sasl_password)
        if self.uses_ssl:
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=_reveal(self.ssl_key_password),
            )
        return kwargs

    def confluent_config(self, *, producer: bool = False) -> dict[str, str]:
        """librdkafka properties (confluent-kafka, Bytewax ``add_config``). Holds the password.

        ``producer=True`` adds ``partitioner=murmur2_random``: librdkafka's default
        (crc32-based) puts a key on a different partition than aiokafka and the Java client.
        """
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.uses_sasl:
            password = _reveal(self.sasl_password)
            assert self.sasl_mechanism is not None
            assert self.sasl_username is not None and password is not None
            config["sasl.mechanisms"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = password
        if self.ssl_cafile:
            config["ssl.ca.location"] = self.ssl_cafile
        if self.ssl_certfile:
            config["ssl.certificate.location"] = self.ssl_certfile
        if self.ssl_keyfile:
            config["ssl.key.location"] = self.ssl_keyfile
        key_password = _reveal(self.ssl_key_password)
        if key_password is not None:
            config["ssl.key.password"] = key_password
        if producer:
            config["partitioner"] = "murmur2_random"
        return config


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def json(self) -> Any:
        """Decode the value as JSON."""
        return orjson.loads(self.value)


# --- topics -------------------------------------------------------------------------------


async def acreate_topics(
    settings: KafkaSettings,
    topics: Mapping[str, int],
    timeout_s: float = 30,
    *,
    replication_factor: int = 1,
) -> None:
    """Create ``{name: partitions}`` topics; ones that already exist are left as they are.

    Returns once every topic is visible in the cluster metadata.
    """
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    if not topics:
        return
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(
        **settings.aiokafka_kwargs(), request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(name, num_partitions=n, replication_factor=replication_factor)
                for name, n in topics.items()
            ],
            timeout_ms=int(timeout_s * 1000),
        )
        for name, code, *rest in response.topic_errors:
            if code == 0 or code == TopicAlreadyExistsError.errno:
                continue
            message = rest[0] if rest else None
            error = for_code(code)
            raise TopicCreationError(
                f"creating topic {name!r} on {settings.bootstrap_servers}: "
                f"{error.__name__} ({code}): {message}"
            )
        await _await_topics_visible(admin, topics, deadline)
    finally:
        await admin.close()


async def _await_topics_visible(
    admin: AIOKafkaAdminClient, topics: Mapping[str, int], deadline: float
) -> None:
    missing = set(topics)
    while True:
        for meta in await admin.describe_topics(sorted(missing)):
            name = meta["topic"]
            if meta["error_code"] == 0 and meta["partitions"]:
                missing.discard(name)
                if len(meta["partitions"]) != topics[name]:
                    log.warning(
                        "topic %r already existed with %d partitions, not %d",
                        name,
                        len(meta["partitions"]),
                        topics[name],
                    )
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise BrokerTimeoutError(f"topics {sorted(missing)} not in cluster metadata yet")
        await asyncio.sleep(0.05)  # metadata propagation poll, bounded by the deadline


def create_topics(
    settings: KafkaSettings,
    topics: Mapping[str, int],
    timeout_s: float = 30,
    *,
    replication_factor: int = 1,
) -> None:
    """Sync form of :func:`acreate_topics`."""
    asyncio.run(acreate_topics(settings, topics, timeout_s, replication_factor=replication_factor))


# --- produce ------------------------------------------------------------------------------


def _encode_key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"key function must return str, bytes or None, got {type(key).__name__}")


async def aproduce(
    settings: KafkaSettings,
    topic: str,
    records: Iterable[bytes | dict[str, Any]],
    *,
    key: Callable[[Any], str | bytes | None] | None = None,
    rate_per_s: float | None = None,
    acks: int | str = "all",
    compression: str | None = "lz4",
    linger_ms: int = 5,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``records`` to ``topic`` and return how many were acknowledged.

    Dicts are orjson-encoded; bytes are sent as they are. ``key`` is called with each record
    as given. Sends are pipelined and awaited in chunks. With ``rate_per_s``, record ``i``
    is sent no earlier than ``start + i / rate_per_s`` (an absolute schedule: no drift).
    ``progress`` gets the running count of acknowledged records after each chunk.
    """
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    producer = AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        acks=acks,
        compression_type=compression,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        start = time.monotonic()
        for i, record in enumerate(records):
            if rate_per_s is not None:
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if isinstance(record, bytes):
                value = record
            elif isinstance(record, dict):
                value = orjson.dumps(record)
            else:
                raise TypeError(f"record {i}: expected bytes or dict, got {type(record).__name__}")
            record_key = _encode_key(key(record)) if key is not None else None
            pending.append(await producer.send(topic, value, key=record_key))
            if len(pending) >= _SEND_CHUNK:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if progress is not None:
                    progress(sent)
        if pending:
            await asyncio.gather(*pending)
            sent += len(pending)
            pending.clear()
            if progress is not None:
                progress(sent)
    finally:
        await producer.stop()  # flushes what is still buffered
    return sent


def produce(
    settings: KafkaSettings,
    topic: str,
    records: Iterable[bytes | dict[str, Any]],
    *,
    key: Callable[[Any], str | bytes | None] | None = None,
    rate_per_s: float | None = None,
    acks: int | str = "all",
    compression: str | None = "lz4",
    linger_ms: int = 5,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Sync form of :func:`aproduce`."""
    return asyncio.run(
        aproduce(
            settings,
            topic,
            records,
            key=key,
            rate_per_s=rate_per_s,
            acks=acks,
            compression=compression,
            linger_ms=linger_ms,
            progress=progress,
        )
    )


def _merged_by_time(
    transactions: Iterable[bytes | dict[str, Any]], labels: Iterable[dict[str, Any]]
) -> Iterator[tuple[bool, bytes | dict[str, Any], int | None]]:
    """``(is_label, record, time)``: each label just before the first transaction at or after its
    ``label_time_ms`` (as it would have been issued). A record without a usable time (raw bytes,
    a malformed payload) keeps its place and takes the time of the record before it."""
    pending = sorted(labels, key=lambda lab: lab["label_time_ms"])
    li = 0
    last: int | None = None
    for record in transactions:
        t = record.get("event_time_ms") if isinstance(record, dict) else None
        if type(t) is int and 0 <= t < 2**62:
            while li < len(pending) and pending[li]["label_time_ms"] <= t:
                last = pending[li]["label_time_ms"]
                yield True, pending[li], last
                li += 1
            last = t
        yield False, record, last
    for lab in pending[li:]:
        yield True, lab, lab["label_time_ms"]


async def aproduce_streams(
    settings: KafkaSettings,
    transactions_topic: str,
    labels_topic: str,
    transactions: Iterable[bytes | dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    *,
    stamp: Literal["event", "now"] = "event",
    rate_per_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Produce a transaction stream and its labels interleaved in time, as they happened.

    Transactions are keyed by ``account_id``, labels by ``tx_id``. ``stamp="event"`` sets each
    record's Kafka timestamp to its own time (``event_time_ms``/``label_time_ms``): a recorded
    history loaded into Kafka, ordered by the sidecar exactly as a replay of the files orders it.
    ``stamp="now"`` leaves the producer's clock (a live stream, e.g. at ``rate_per_s``). Returns
    ``(transactions, labels)`` acknowledged.
    """
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    producer = AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        acks="all",
        compression_type="lz4",
        linger_ms=5,
        max_batch_size=8 * 1024,  # small record batches: consumers can fetch in small steps
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    counts = [0, 0]
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    try:
        start = time.monotonic()
        for i, (is_label, record, t) in enumerate(_merged_by_time(transactions, labels)):
            if rate_per_s is not None:
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if isinstance(record, bytes):
                value, key = record, None
            else:
                value = orjson.dumps(record)
                key_field = record.get("tx_id" if is_label else "account_id")
                key = key_field.encode() if isinstance(key_field, str) else None
            topic = labels_topic if is_label else transactions_topic
            ts = t if stamp == "event" else None
            pending.append(
                (int(is_label), await producer.send(topic, value, key=key, timestamp_ms=ts))
            )
            if len(pending) >= _SEND_CHUNK:
                await asyncio.gather(*(f for _, f in pending))
                for kind, _ in pending:
                    counts[kind] += 1
                pending.clear()
                if progress is not None:
                    progress(counts[0] + counts[1])
        await asyncio.gather(*(f for _, f in pending))
        for kind, _ in pending:
            counts[kind] += 1
        if progress is not None:
            progress(counts[0] + counts[1])
    finally:
        await producer.stop()
    return counts[0], counts[1]


def produce_streams(
    settings: KafkaSettings,
    transactions_topic: str,
    labels_topic: str,
    transactions: Iterable[bytes | dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    *,
    stamp: Literal["event", "now"] = "event",
    rate_per_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Sync form of :func:`aproduce_streams`."""
    return asyncio.run(
        aproduce_streams(
            settings,
            transactions_topic,
            labels_topic,
            transactions,
            labels,
            stamp=stamp,
            rate_per_s=rate_per_s,
            progress=progress,
        )
    )


# --- consume ------------------------------------------------------------------------------


def _consumer(settings: KafkaSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **settings.aiokafka_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, deadline: float
) -> list[TopicPartition]:
    while True:
        await consumer.topics()  # refreshes the cluster metadata
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() >= deadline:
            raise BrokerTimeoutError(f"topic {topic!r} not found in cluster metadata")
        await asyncio.sleep(0.05)  # metadata poll, bounded by the deadline


async def _end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], deadline: float
) -> dict[TopicPartition, int]:
    """High watermarks of ``tps``, confirmed by a fetch. Changes the consumer's assignment.

    Tansu 0.6 answers ListOffsets(latest) with the last batch's *base* offset + 1, so a
    5-record batch reads as end offset 1; its Fetch responses carry the true high watermark.
    Fetching from ListOffsets' answer - 1 yields the real value on Tansu and Kafka alike.
    """
    ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
    probe = [tp for tp in tps if ends[tp] > 0]
    if probe:
        consumer.assign(probe)
        for tp in probe:
            consumer.seek(tp, ends[tp] - 1)
        while any(consumer.highwater(tp) is None for tp in probe):
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise BrokerTimeoutError(f"no fetch response for {probe} to confirm end offsets")
            await consumer.getmany(timeout_ms=max(1, int(min(remaining_s, 0.1) * 1000)))
        for tp in probe:
            ends[tp] = max(ends[tp], consumer.highwater(tp))
    return ends


async def _assign_all(
    consumer: AIOKafkaConsumer, topic: str, deadline: float, *, from_beginning: bool
) -> dict[TopicPartition, int]:
    """Assign every partition of ``topic`` to ``consumer``, positioned at the earliest offsets
    or at the end offsets; return the end offsets found (``{partition: high watermark}``)."""
    tps = await _partitions(consumer, topic, deadline)
    ends = await _end_offsets(consumer, tps, deadline)
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        for tp in tps:
            consumer.seek(tp, ends[tp])
    return ends


async def aend_offsets(
    settings: KafkaSettings, topic: str, timeout_s: float = 30
) -> dict[int, int]:
    """Return ``{partition: high watermark}`` (the offset the next record will get)."""
    deadline = time.monotonic() + timeout_s
    consumer = _consumer(settings)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic, deadline)
        ends = await _end_offsets(consumer, tps, deadline)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def end_offsets(settings: KafkaSettings, topic: str, timeout_s: float = 30) -> dict[int, int]:
    """Sync form of :func:`aend_offsets`."""
    return asyncio.run(aend_offsets(settings, topic, timeout_s))


async def aconsume(
    settings: KafkaSettings,
    topic: str,
    *,
    until: Callable[[list[Record]], bool] | None = None,
    max_records: int | None = None,
    timeout_s: float = 60,
    from_beginning: bool = True,
) -> list[Record]:
    """Read ``topic`` with manual assignment of all partitions (no consumer group).

    Stops when ``max_records`` were read, else when ``until(records_so_far)`` is true, else
    (``until`` is None) when every partition reached the end offset captured at the start.
    Raises :class:`TimeoutError` at the deadline. Records of one partition are in offset
    order; partitions are interleaved as fetched.
    """
    if max_records is not None and max_records < 0:
        raise ValueError(f"max_records must be >= 0, got {max_records}")
    deadline = time.monotonic() + timeout_s
    records: list[Record] = []
    consumer = _consumer(settings)
    await consumer.start()
    try:
        ends = await _assign_all(consumer, topic, deadline, from_beginning=from_beginning)
        pending = set(ends)

        async def done() -> bool:
            if max_records is not None and len(records) >= max_records:
                return True
            if until is not None:
                return until(records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            return not pending

        while not await done():
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                goal = (
                    f"until() still false after {len(records)} records"
                    if until is not None
                    else f"end offsets {dict(sorted((tp.partition, o) for tp, o in ends.items()))}"
                )
                raise BrokerTimeoutError(
                    f"consume({topic!r}) saw {len(records)} records in {timeout_s}s; "
                    f"waiting for {goal}"
                )
            want = None if max_records is None else max_records - len(records)
            batches = await consumer.getmany(
                timeout_ms=max(1, int(min(remaining_s, 0.2) * 1000)), max_records=want
            )
            for tp, messages in batches.items():
                records.extend(
                    Record(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=m.offset,
                        timestamp_ms=m.timestamp,
                        key=m.key,
                        value=m.value if m.value is not None else b"",
                        headers=tuple(m.headers or ()),
                    )
                    for m in messages
                )
        return records
    finally:
        await consumer.stop()


def consume(
    settings: KafkaSettings,
    topic: str,
    *,
    until: Callable[[list[Record]], bool] | None = None,
    max_records: int | None = None,
    timeout_s: float = 60,
    from_beginning: bool = True,
) -> list[Record]:
    """Sync form of :func:`aconsume`."""
    return asyncio.run(
        aconsume(
            settings,
            topic,
            until=until,
            max_records=max_records,
            timeout_s=timeout_s,
            from_beginning=from_beginning,
        )
    )
