"""Network faults for tests: a loopback TCP proxy whose link can be cut and restored.

:class:`TcpProxy` forwards every connection it accepts to one upstream address. Its event
loop runs in a daemon thread, so it serves synchronous and asynchronous clients alike, and
:meth:`TcpProxy.cut` / :meth:`TcpProxy.restore` return only once the change is in force::

    with TcpProxy(("127.0.0.1", broker_port)) as proxy:
        ...                        # clients connect to proxy.port
        proxy.cut()                # every connection reset, new ones reset on accept
        proxy.restore()            # new connections are forwarded again

Two kinds of cut:

- ``"reset"``: open connections are closed with a TCP RST and new ones are reset as soon
  as they are accepted, like a peer that went away. Clients notice at once.
- ``"blackhole"``: connections stay open but no byte moves in either direction, and new
  connections are accepted but not forwarded, like a partition that drops packets. Clients
  notice only through their own timeouts. :meth:`TcpProxy.restore` lets the held bytes
  through, as a healed network would.

A Kafka client reconnects to the addresses the broker *advertises*, not to the one it
bootstrapped from: to put all of a client's traffic through the proxy the broker must
advertise the proxy's address (``EmbeddedBroker(via_proxy=True)`` does).

Optionally the proxy terminates TLS (``ssl_context``) and forwards plaintext upstream, which
gives a TLS listener in front of a broker that has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

__all__ = ["CutMode", "ProxyStats", "TcpProxy"]

log = logging.getLogger(__name__)

CutMode = Literal["reset", "blackhole"]
_CUT_MODES: frozenset[str] = frozenset({"reset", "blackhole"})
_CHUNK = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since the proxy started (a snapshot)."""

    accepted: int  # connections forwarded (or held by a blackhole)
    refused: int  # connections reset on accept during a "reset" cut
    active: int  # connections open now
    held: int  # chunks of bytes a blackhole kept from being forwarded


class _Link:
    """One client connection and, once opened, its upstream connection."""

    __slots__ = ("client", "task", "upstream")

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[None] | None) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def reset(self) -> None:
        """Close both sides with an RST and stop forwarding."""
        for writer in self.writers():
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def close(self) -> None:
        for writer in self.writers():
            writer.close()


class TcpProxy:
    """Forwards loopback TCP connections to ``upstream``; :meth:`cut` and :meth:`restore` it.

    ``port=0`` picks a free port (read it from :attr:`port` after :meth:`start`).
    ``upstream`` may be changed while no connection is open (e.g. to follow a restarted
    server). ``ssl_context`` (server side) makes the proxy terminate TLS.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 5.0,
        control_timeout_s: float = 10.0,
    ) -> None:
        if connect_timeout_s <= 0 or control_timeout_s <= 0:
            raise ValueError("connect_timeout_s and control_timeout_s must be positive")
        self.upstream = upstream
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.ssl_context = ssl_context
        self.connect_timeout_s = connect_timeout_s
        self.control_timeout_s = control_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Everything below is touched only on the proxy's event loop thread.
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._mode: CutMode | None = None
        self._links: set[_Link] = set()
        self._accepted = 0
        self._refused = 0
        self._held = 0

    def __repr__(self) -> str:
        state = "stopped" if self._loop is None else (self._mode or "forwarding")
        return (
            f"TcpProxy({self.host}:{self._port} -> {self.upstream[0]}:{self.upstream[1]}, {state})"
        )

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    @property
    def cut_mode(self) -> CutMode | None:
        return self._mode

    def stats(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            refused=self._refused,
            active=len(self._links),
            held=self._held,
        )

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen and forward; returns once the listening socket is bound."""
        if self._loop is not None:
            raise RuntimeError(f"{self!r} already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._open())
        except BaseException:
            self._shutdown_loop()
            raise
        log.info("proxy %s:%d -> %s:%d listening", self.host, self.port, *self.upstream)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread. Idempotent."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            self._call(self._close())
        self._shutdown_loop()

    def cut(self, mode: CutMode = "reset") -> None:
        """Cut the link (see the module docstring for the modes); in force on return."""
        if mode not in _CUT_MODES:
            raise ValueError(f"mode must be one of {sorted(_CUT_MODES)}, got {mode!r}")
        self._call(self._cut(mode))
        log.info("proxy %s cut (%s)", self.address, mode)

    def restore(self) -> None:
        """Forward again; bytes a blackhole held are delivered. In force on return."""
        self._call(self._restore())
        log.info("proxy %s restored", self.address)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout=self.control_timeout_s)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=self.control_timeout_s)
        if thread is None or not thread.is_alive():
            loop.close()

    # --- on the proxy's loop --------------------------------------------------------------

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._handle, self.host, self._requested_port, ssl=self.ssl_context
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [link.task for link in self._links if link.task is not None]
        for link in list(self._links):
            link.reset()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _cut(self, mode: CutMode) -> None:
        assert self._flowing is not None
        self._mode = mode
        self._flowing.clear()
        if mode == "reset":
            for link in list(self._links):
                link.reset()

    async def _restore(self) -> None:
        assert self._flowing is not None
        self._mode = None
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self._mode == "reset":
            self._refused += 1
            _Link(writer, None).reset()
            return
        link = _Link(writer, asyncio.current_task())
        self._links.add(link)
        self._accepted += 1
        try:
            await self._flowing.wait()  # a blackhole holds new connections here
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), self.connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                log.debug("proxy %s: upstream %s unreachable: %s", self.address, self.upstream, exc)
                link.reset()
                return
            link.upstream = up_writer
            if self._mode is not None:  # cut while connecting
                if self._mode == "reset":
                    link.reset()
                    return
                await self._flowing.wait()
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():  # cut while reading: hold the bytes
                    self._held += 1
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.close()  # one side gone: close the other (Kafka never half-closes)
