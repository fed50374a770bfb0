"""TLS and SASL: what works end to end, what Tansu 0.6.0 refuses, and secrets never leaking.

Tansu 0.6.0 has no working TLS listener and admits no SASL login (docs/security.md has the
experiments). TLS is therefore exercised against a TLS-terminating proxy in front of the
broker (``EmbeddedBroker(tls_context=...)``), with real certificates and real handshakes
from aiokafka and librdkafka. SASL is exercised as far as it goes: the clients speak it to
Tansu and are turned away; the tests under "what Tansu 0.6.0 does" pin that, so they fail
(and docs/security.md needs updating) the day a Tansu upgrade changes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from fraudstream.broker import (
    BrokerError,
    EmbeddedBroker,
    LocalS3Server,
    find_tansu_binary,
    probe_metadata,
)
from fraudstream.kafka import (
    KafkaSettings,
    consume,
    create_topics,
    end_offsets,
    produce,
)
from fraudstream.netfault import TcpProxy
from tests.tls_certs import TlsFiles, available_backends, make_tls_files, server_context

pytestmark = pytest.mark.kafka

DEADLINE_S = 20.0
SCRAM_USERS = {"SCRAM-SHA-256": ("alice", "alice-Pa55"), "SCRAM-SHA-512": ("bob", "bob-Pa55")}


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if not available_backends():
        pytest.skip("neither the cryptography package nor the openssl command is available")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("tls-broker") / "tansu.log"
    with EmbeddedBroker(tls_context=server_context(tls_files), log_path=log_path) as broker:
        yield broker


@pytest.fixture(scope="module")
def mtls_broker(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker]:
    log_path = tmp_path_factory.mktemp("mtls-broker") / "tansu.log"
    context = server_context(tls_files, require_client_cert=True)
    with EmbeddedBroker(tls_context=context, log_path=log_path) as broker:
        yield broker


def _tansu_user_create(broker: EmbeddedBroker, mechanism: str, user: str, password: str) -> str:
    flag = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}[mechanism]
    result = subprocess.run(
        [
            *[str(find_tansu_binary()), "user", "create", user, password],
            *["--mechanism", flag, "--broker", f"tcp://{broker.bootstrap_servers}"],
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tansu user create {user}: exit {result.returncode}: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A persistent broker whose SCRAM users were created, restarted with --authentication.

    Users are created first because, once authentication is on, ``tansu user create`` is
    itself refused; persistent storage so that they could survive the restart.
    """
    work = tmp_path_factory.mktemp("auth-broker")
    with (
        LocalS3Server(log_path=work / "moto.log") as s3,
        EmbeddedBroker(s3=s3, log_path=work / "tansu.log") as broker,
    ):
        for mechanism, (user, password) in SCRAM_USERS.items():
            _tansu_user_create(broker, mechanism, user, password)
        broker.extra_args = ("--authentication",)
        broker.restart()
        yield broker


# --- helpers ------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _librdkafka_failure(config: dict[str, str], pattern: str) -> str:
    """Run a librdkafka producer until its log or error callback matches ``pattern``."""
    handler = _Collect()
    logger = logging.getLogger(f"test.librdkafka.{uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.propagate = False
    errors: list[str] = []
    producer = Producer({**config, "logger": logger, "error_cb": lambda e: errors.append(e.str())})
    deadline = time.monotonic() + DEADLINE_S
    regex = re.compile(pattern)
    while True:
        producer.poll(0.05)  # serves logs and callbacks; bounded by the deadline
        for message in handler.messages + errors:
            if regex.search(message):
                return message
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"librdkafka never reported /{pattern}/; saw {handler.messages + errors}"
            )


def _confluent_roundtrip(settings: KafkaSettings, n: int = 20) -> list[bytes]:
    """Create a topic, produce ``n`` keyed records and read them back, with confluent-kafka."""
    topic = _topic("confluent")
    admin = AdminClient(settings.confluent_config())
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(timeout=DEADLINE_S)
    producer = Producer(settings.confluent_config(producer=True))
    for i in range(n):
        producer.produce(topic, value=b"v%d" % i, key=b"k%d" % (i % 5))
    assert producer.flush(DEADLINE_S) == 0, "records left unacknowledged"
    # assign(), not subscribe(): Tansu's group join has hung librdkafka before (FACTS.md)
    consumer = Consumer(
        {**settings.confluent_config(), "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    values: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(values) < n:
            if time.monotonic() >= deadline:
                raise AssertionError(f"read {len(values)} of {n} records")
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return sorted(values)


def _aiokafka_roundtrip(settings: KafkaSettings, n: int = 20) -> list[bytes]:
    topic = _topic("aiokafka")
    create_topics(settings, {topic: 2})
    assert produce(settings, topic, [{"i": i} for i in range(n)], key=lambda r: str(r["i"])) == n
    return sorted(r.value for r in consume(settings, topic, timeout_s=DEADLINE_S))


def _ssl(broker: EmbeddedBroker, **files: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, security_protocol="SSL", **files
    )


# --- certificates -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", available_backends())
def test_certificate_backends_make_verifiable_chains(tmp_path, backend: str) -> None:
    files = make_tls_files(tmp_path / "a", backend)
    stranger = make_tls_files(tmp_path / "b", backend)  # another CA
    # The TLS handshake happens on accept; nothing needs to listen upstream.
    with TcpProxy(("127.0.0.1", 9), ssl_context=server_context(files)) as proxy:
        trusting = ssl.create_default_context(cafile=str(files.ca))
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
            trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        distrusting = ssl.create_default_context(cafile=str(stranger.ca))
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            distrusting.wrap_socket(raw, server_hostname="127.0.0.1")


# --- TLS end to end (terminated by the harness's proxy) -------------------------------------


def test_ssl_with_ca_aiokafka(tls_broker: EmbeddedBroker, tls_files: TlsFiles) -> None:
    settings = _ssl(tls_broker, ssl_cafile=str(tls_files.ca))
    assert _aiokafka_roundtrip(settings) == sorted(b'{"i":%d}' % i for i in range(20))


def test_ssl_with_ca_confluent(tls_broker: EmbeddedBroker, tls_files: TlsFiles) -> None:
    settings = _ssl(tls_broker, ssl_cafile=str(tls_files.ca))
    assert _confluent_roundtrip(settings) == sorted(b"v%d" % i for i in range(20))


def test_ssl_without_the_ca_fails_clearly_aiokafka(
    tls_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        create_topics(_ssl(tls_broker), {_topic("never"): 1}, timeout_s=5)
    # aiokafka's exception names no cause; its log does
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_ssl_without_the_ca_fails_clearly_confluent(tls_broker: EmbeddedBroker) -> None:
    message = _librdkafka_failure(_ssl(tls_broker).confluent_config(), "certificate verify")
    assert "ssl.ca.location" in message or "certificate verify failed" in message


def test_mutual_tls_with_a_client_certificate(
    mtls_broker: EmbeddedBroker, tls_files: TlsFiles
) -> None:
    settings = _ssl(
        mtls_broker,
        ssl_cafile=str(tls_files.ca),
        ssl_certfile=str(tls_files.client_cert),
        ssl_keyfile=str(tls_files.client_key),
    )
    assert _aiokafka_roundtrip(settings, 10) == sorted(b'{"i":%d}' % i for i in range(10))
    assert _confluent_roundtrip(settings, 10) == sorted(b"v%d" % i for i in range(10))


def test_mutual_tls_without_a_client_certificate_fails(
    mtls_broker: EmbeddedBroker, tls_files: TlsFiles
) -> None:
    settings = _ssl(mtls_broker, ssl_cafile=str(tls_files.ca))
    with pytest.raises(KafkaConnectionError):
        create_topics(settings, {_topic("never"): 1}, timeout_s=5)
    # TLS 1.3 rejects the missing certificate after the client's handshake: librdkafka
    # sees the connection dropped, never a usable broker.
    _librdkafka_failure(settings.confluent_config(), r"brokers are down|Disconnected|SSL")


# --- what Tansu 0.6.0 does (update docs/security.md when one of these fails) ----------------


def test_tansu_refuses_cert_and_key_together(tls_files: TlsFiles, tmp_path) -> None:
    broker = EmbeddedBroker(
        extra_args=["--cert", str(tls_files.server_cert), "--key", str(tls_files.server_key)],
        log_path=tmp_path / "tansu.log",
        startup_timeout_s=10,
    )
    with pytest.raises(BrokerError, match="cannot be used with"):
        broker.start()


def test_tansu_with_cert_alone_still_speaks_plaintext(tls_files: TlsFiles, tmp_path) -> None:
    with EmbeddedBroker(
        extra_args=["--cert", str(tls_files.server_cert)], log_path=tmp_path / "tansu.log"
    ) as broker:
        assert probe_metadata("127.0.0.1", broker.broker_port)  # plaintext Kafka answers
        context = ssl.create_default_context(cafile=str(tls_files.ca))
        # Tansu reads the ClientHello as the start of a huge Kafka frame and waits for
        # the rest: the handshake times out (or fails, should Tansu close the socket).
        with (
            socket.create_connection(("127.0.0.1", broker.broker_port), timeout=1) as raw,
            pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)),
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


def _sasl(broker: EmbeddedBroker, mechanism: str, user: str, password: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username=user,
        sasl_password=password,
    )


@pytest.mark.parametrize(
    ("mechanism", "refusal"),
    [
        # users created with `tansu user create` are acknowledged but never stored
        ("SCRAM-SHA-256", "unknown-user"),
        ("SCRAM-SHA-512", "unknown-user"),
        # the SASL library is built without PLAIN: the handshake is refused
        ("PLAIN", "PLAIN mechanism handshake failed"),
    ],
)
def test_tansu_sasl_admits_no_login(
    auth_broker: EmbeddedBroker, mechanism: str, refusal: str
) -> None:
    user, password = SCRAM_USERS.get(mechanism, SCRAM_USERS["SCRAM-SHA-512"])
    settings = _sasl(auth_broker, mechanism, user, password)
    _librdkafka_failure(settings.confluent_config(), refusal)
    # aiokafka fails as well, less clearly: a SCRAM error reply ("e=unknown-user") surfaces
    # as KeyError('v') from its SCRAM client, a refused PLAIN handshake as a closed connection
    with pytest.raises((KafkaConnectionError, KeyError)):
        create_topics(settings, {_topic("never"): 1}, timeout_s=5)


def test_tansu_with_authentication_refuses_plaintext_clients_and_user_creation(
    auth_broker: EmbeddedBroker,
) -> None:
    plain = KafkaSettings(bootstrap_servers=auth_broker.bootstrap_servers)
    with pytest.raises(KafkaConnectionError):
        create_topics(plain, {_topic("never"): 1}, timeout_s=5)
    with pytest.raises(RuntimeError, match="exit 1"):
        _tansu_user_create(auth_broker, "SCRAM-SHA-512", "carol", "carol-Pa55")


# --- client configuration rendering (what cannot be tried against Tansu) ---------------------


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_render_for_both_clients(
    tls_files: TlsFiles, protocol: str, mechanism: str
) -> None:
    ssl_files = {"ssl_cafile": str(tls_files.ca)} if protocol == "SASL_SSL" else {}
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:9",
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username="scorer",
        sasl_password="pw",
        **ssl_files,
    )
    config = settings.confluent_config()
    expected = {
        "bootstrap.servers": "127.0.0.1:9",
        "client.id": "fraudstream",
        "security.protocol": protocol.lower(),
        "sasl.mechanisms": mechanism,
        "sasl.username": "scorer",
        "sasl.password": "pw",
    }
    if protocol == "SASL_SSL":
        expected["ssl.ca.location"] = str(tls_files.ca)
    assert config == expected
    # librdkafka validates the properties and values (mechanism built in, CA readable)
    Producer(config).flush(0)

    async def build() -> None:
        # aiokafka validates the mechanism and, for SASL_SSL, the SSL context
        producer = AIOKafkaProducer(**settings.aiokafka_kwargs())
        try:
            assert producer.client._sasl_mechanism == mechanism
            assert producer.client._security_protocol == protocol
        finally:
            await producer.stop()

    asyncio.run(build())


# --- secrets ----------------------------------------------------------------------------------


def _exception_texts(exc: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        current = current.__cause__ or current.__context__


def test_secrets_stay_out_of_repr_redacted_and_logs(
    auth_broker: EmbeddedBroker,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = f"s3cr3t-{uuid4().hex}"
    settings = _sasl(auth_broker, "SCRAM-SHA-512", "bob", secret)
    texts = [repr(settings), str(settings), f"{settings!r}", repr(settings.redacted())]
    assert settings.redacted()["sasl_password"] == "***"

    caplog.set_level(logging.DEBUG)  # every logger, aiokafka's included
    topic = _topic("secret")
    attempts: list[Callable[[], object]] = [
        lambda: create_topics(settings, {topic: 1}, timeout_s=5),
        lambda: produce(settings, topic, [{"i": 1}]),
        lambda: consume(settings, topic, timeout_s=5),
        lambda: end_offsets(settings, topic, timeout_s=5),
    ]
    for attempt in attempts:
        with pytest.raises((KafkaConnectionError, KeyError, TimeoutError)) as info:
            attempt()
        texts.extend(_exception_texts(info.value))
    # librdkafka with its configuration dump on: it must mask the password too
    debug_config = {**settings.confluent_config(), "debug": "conf,security"}
    _librdkafka_failure(debug_config, "unknown-user")
    with pytest.raises(KafkaException) as info:
        AdminClient(settings.confluent_config()).list_topics(timeout=1)
    texts.extend(_exception_texts(info.value))

    out, err = capfd.readouterr()
    texts.extend([caplog.text, out, err])
    # The SCRAM exchange really happened and was logged, with its payload masked
    assert re.search(r"SaslAuthenticateRequest_v\d\(<masked>\)", caplog.text)
    assert "n=bob,r=" not in caplog.text  # the SCRAM client-first message
    leaks = [text for text in texts if secret in text]
    assert not leaks, f"password leaked into: {leaks[0][:300]!r}"


def test_aiokafka_debug_log_of_a_plain_login_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    # Tansu refuses PLAIN before the payload is sent, so replay the exact log call aiokafka
    # makes for each request (aiokafka/conn.py) with a PLAIN payload.
    from aiokafka.protocol.admin import SaslAuthenticateRequest_v0

    secret = f"s3cr3t-{uuid4().hex}"
    request = SaslAuthenticateRequest_v0(b"\x00scorer\x00" + secret.encode())
    assert secret in str(request)  # what aiokafka would log unmasked
    caplog.set_level(logging.DEBUG, logger="aiokafka.conn")
    logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "127.0.0.1", 9, 3, request)
    assert caplog.records and "SaslAuthenticateRequest_v0(<masked>)" in caplog.text
    assert secret not in caplog.text


def test_settings_from_env_errors_do_not_echo_the_password() -> None:
    secret = f"s3cr3t-{uuid4().hex}"
    env = {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "FRAUDSTREAM_KAFKA_SASL_PASSWORD": secret,
    }
    with pytest.raises(ValueError) as info:
        KafkaSettings.from_env(environ=env)
    assert secret not in str(info.value)
