"""The fault-injection harness: persistent broker restarts, the cuttable proxy, child cleanup."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from fraudstream.broker import BrokerError, EmbeddedBroker, LocalS3Server, free_port
from fraudstream.kafka import (
    KafkaSettings,
    Record,
    acreate_topics,
    consume,
    create_topics,
    end_offsets,
    produce,
)
from fraudstream.netfault import TcpProxy

pytestmark = pytest.mark.kafka

DEADLINE_S = 20.0


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)  # polling interval inside the deadline, not synchronisation


async def _await_until(
    condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)  # polling interval inside the deadline


def _settings(broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers)


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    with LocalS3Server(log_path=log_path) as server:
        yield server


# --- the object store ---------------------------------------------------------------------


def test_local_s3_server_serves_buckets_until_stopped(tmp_path) -> None:
    with LocalS3Server(log_path=tmp_path / "moto.log") as server:
        server.create_bucket("bucket-1")
        server.create_bucket("bucket-1")  # existing bucket: not an error
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/")
        listing = conn.getresponse().read()
        conn.close()
        assert b"<Name>bucket-1</Name>" in listing
        env = server.client_env()
        assert env["AWS_ENDPOINT"] == f"http://127.0.0.1:{server.port}"
        assert env["AWS_ALLOW_HTTP"] == "true"
        with pytest.raises(BrokerError, match="already in use"):
            LocalS3Server(port=server.port).start()
        port = server.port
        broker = EmbeddedBroker(s3=server, log_path=tmp_path / "tansu.log").start()
    try:
        assert not server.is_running()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        broker.stop_broker()
        with pytest.raises(BrokerError, match="storage is gone"):
            broker.start_broker()
    finally:
        broker.stop()


# --- persistent broker and restarts ---------------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "sigkill"])
def test_persistent_broker_keeps_records_across_restart(
    s3_server: LocalS3Server, tmp_path, kill: bool
) -> None:
    topic = _topic("persist")
    with EmbeddedBroker(s3=s3_server, log_path=tmp_path / "tansu.log") as broker:
        settings = _settings(broker)
        port_before = broker.port
        create_topics(settings, {topic: 3})

        async def produce_across_restart() -> None:
            # One producer for both halves: it must reconnect to the restarted broker.
            producer = AIOKafkaProducer(**settings.aiokafka_kwargs(), acks="all")
            await producer.start()
            try:
                first = [producer.send(topic, b"a%d" % i, key=b"k%d" % (i % 7)) for i in range(90)]
                await asyncio.gather(*[await f for f in first])
                broker.restart(kill=kill)  # blocks the loop briefly; the producer is idle
                second = [producer.send(topic, b"b%d" % i, key=b"k%d" % (i % 7)) for i in range(60)]
                await asyncio.wait_for(asyncio.gather(*[await f for f in second]), DEADLINE_S)
            finally:
                await producer.stop()

        asyncio.run(produce_across_restart())
        assert broker.port == port_before
        records = consume(settings, topic, timeout_s=DEADLINE_S)

    values = sorted(r.value for r in records)
    assert values == sorted([b"a%d" % i for i in range(90)] + [b"b%d" % i for i in range(60)])
    for partition in {r.partition for r in records}:
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets))), f"partition {partition}: gaps or reuse"
    # the same key kept its partition across the restart
    by_key: dict[bytes | None, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_memory_broker_restarts_empty_on_the_same_port(tmp_path) -> None:
    topic = _topic("volatile")
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        settings = _settings(broker)
        create_topics(settings, {topic: 1})
        port = broker.port
        broker.stop_broker()
        assert not broker.is_running()
        broker.start_broker()
        assert broker.port == port

        async def topics() -> set[str]:
            admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        assert topic not in asyncio.run(topics())
        with pytest.raises(BrokerError, match="already running"):
            broker.start_broker()


# --- the proxy on its own -------------------------------------------------------------------


class _EchoServer:
    """A threaded TCP echo server on loopback."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    yield server
    server.close()


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _is_reset(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (RST or FIN); blocks until something arrives."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_proxy_reset_cut_and_restore(echo: _EchoServer) -> None:
    with TcpProxy(("127.0.0.1", echo.port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert _roundtrip(sock, b"hello") == b"hello"
            proxy.cut()
            assert proxy.is_cut and proxy.cut_mode == "reset"
            assert _is_reset(sock)
        try:
            refused = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        except (ConnectionResetError, ConnectionRefusedError):
            pass  # the reset can arrive before connect() returns
        else:
            with refused:
                assert _is_reset(refused)
        _wait_until(lambda: proxy.stats().refused == 1, "the proxy to refuse the connection")
        proxy.restore()
        assert not proxy.is_cut
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert _roundtrip(sock, b"again") == b"again"
        assert proxy.stats().accepted == 2


def test_proxy_blackhole_holds_bytes_until_restore(echo: _EchoServer) -> None:
    with TcpProxy(("127.0.0.1", echo.port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert _roundtrip(sock, b"before") == b"before"
            proxy.cut("blackhole")
            sock.sendall(b"during")
            _wait_until(lambda: proxy.stats().held >= 1, "the proxy to hold the bytes")
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)  # nothing came back: the bytes never reached the echo server
            sock.setblocking(True)
            proxy.restore()
            got = b""
            while len(got) < len(b"during"):
                got += sock.recv(64)
            assert got == b"during"
        # a connection opened during a blackhole is held, then forwarded
        proxy.cut("blackhole")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as late:
            late.sendall(b"late")
            _wait_until(lambda: proxy.stats().accepted == 2, "the late connection")
            proxy.restore()
            got = b""
            while len(got) < len(b"late"):
                got += late.recv(64)
            assert got == b"late"


def test_proxy_rejects_bad_mode_and_unstarted_use() -> None:
    proxy = TcpProxy(("127.0.0.1", 9))
    with pytest.raises(RuntimeError, match="not started"):
        proxy.cut()
    with proxy, pytest.raises(ValueError, match="mode"):
        proxy.cut("drop")  # type: ignore[arg-type]


# --- network cuts against a real broker -----------------------------------------------------


def test_broker_advertises_the_proxy(tmp_path) -> None:
    with EmbeddedBroker(via_proxy=True, log_path=tmp_path / "tansu.log") as broker:
        assert broker.proxy is not None
        assert broker.port == broker.proxy.port != broker.broker_port

        async def advertised() -> set[tuple[str, int]]:
            client = AIOKafkaClient(bootstrap_servers=broker.bootstrap_servers)
            await client.bootstrap()
            try:
                return {(b.host, b.port) for b in client.cluster.brokers()}
            finally:
                await client.close()

        assert asyncio.run(advertised()) == {("127.0.0.1", broker.proxy.port)}


async def _consume_into(consumer: AIOKafkaConsumer, sink: list[Record]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        for tp, messages in batches.items():
            sink.extend(
                Record(tp.topic, tp.partition, m.offset, m.timestamp, m.key, m.value or b"")
                for m in messages
            )


async def _with_consumer(
    settings: KafkaSettings,
    topic: str,
    body: Callable[[list[Record]], Awaitable[None]],
) -> list[Record]:
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: list[Record] = []
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    task = asyncio.create_task(_consume_into(consumer, seen))
    try:
        await body(seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
    return seen


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_cut_hides_new_records_from_a_consumer_until_restore(tmp_path, mode: str) -> None:
    topic = _topic("cut")
    with EmbeddedBroker(via_proxy=True, log_path=tmp_path / "tansu.log") as broker:
        proxy = broker.proxy
        assert proxy is not None
        settings = _settings(broker)
        create_topics(settings, {topic: 1})
        produce(settings, topic, [{"phase": "before", "i": i} for i in range(20)])

        async def scenario(seen: list[Record]) -> None:
            await _await_until(lambda: len(seen) == 20, "the records produced before the cut")
            before = proxy.stats()
            await asyncio.to_thread(proxy.cut, mode)  # type: ignore[arg-type]
            # The broker gets more data through its own listener; the consumer cannot.
            await asyncio.to_thread(
                broker.produce_direct, topic, [{"phase": "during", "i": i} for i in range(15)]
            )
            if mode == "reset":
                # the consumer tried to reconnect and was turned away
                await _await_until(
                    lambda: proxy.stats().refused > before.refused, "a refused reconnect"
                )
                with pytest.raises(KafkaConnectionError):  # nor can a new client bootstrap
                    await acreate_topics(settings, {_topic("never"): 1}, timeout_s=5)
            else:
                # the consumer's next fetch went into the blackhole
                await _await_until(lambda: proxy.stats().held > before.held, "a held fetch")
            assert len(seen) == 20, "the consumer saw records through a cut link"
            await asyncio.to_thread(proxy.restore)
            await _await_until(lambda: len(seen) == 35, "the records produced during the cut")

        seen = asyncio.run(_with_consumer(settings, topic, scenario))
        assert [r.offset for r in seen] == list(range(35))
        assert end_offsets(settings, topic) == {0: 35}


# --- child processes die with their parent ----------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DEATHSIG is Linux-only")
def test_broker_and_object_store_die_with_their_parent() -> None:
    script = (
        "from fraudstream.broker import EmbeddedBroker\n"
        "import sys\n"
        "b = EmbeddedBroker(persistent=True, via_proxy=True).start()\n"
        "print(b.pid, b.s3.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally in the parent
        parent.wait()

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")  # zombie until reaped
        except FileNotFoundError:
            return True

    for pid in pids:
        _wait_until(lambda pid=pid: gone(pid), f"pid {pid} to exit after its parent was killed")


def test_free_ports_lie_below_the_ephemeral_range_and_are_bindable() -> None:
    # a port drawn from the ephemeral range can be taken by any outgoing connection before it
    # is used (again): a restarted sidecar's metrics port, a peer's worker address
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for count in (1, 2, 4):
        first = free_port("127.0.0.1", count=count)
        assert first + count <= low
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))  # raises if the port were taken
        finally:
            for sock in held:
                sock.close()
