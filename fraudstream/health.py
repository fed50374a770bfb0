"""Readiness and liveness, as reported by the sidecar's components.

Readiness: a component sets a named condition (``HEALTH.set("input:transactions", False, "topic
missing")``); the sidecar is ready when every condition is true (``/readyz``).

Liveness: a component with work waiting reports it (``HEALTH.progress("input", pending=n)``)
every time it makes progress or looks; the process is live unless some component has had work
pending without progress for longer than the stall timeout (``/healthz``). A stuck flow (a
deadlocked step, a consumer that stopped fetching) then fails its liveness probe instead of
answering ``200 ok`` forever. Thread-safe: the metrics server reads it from its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["HEALTH", "Health"]


class Health:
    """Named conditions, each ``(ok, detail, since)``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._conditions: dict[str, tuple[bool, str, float]] = {}
        # component -> (pending work, monotonic time of its last progress)
        self._progress: dict[str, tuple[int, float]] = {}
        self.stall_timeout_s = 120.0

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            old = self._conditions.get(name)
            if old is None or old[0] != ok or old[1] != detail:
                self._conditions[name] = (ok, detail, time.time())

    def clear(self, name: str) -> None:
        with self._lock:
            self._conditions.pop(name, None)

    def failing(self) -> dict[str, str]:
        """The conditions that are not met, with their details."""
        with self._lock:
            return {k: v[1] for k, v in self._conditions.items() if not v[0]}

    def ready(self) -> bool:
        return not self.failing()

    def progress(self, component: str, *, pending: int, advanced: bool) -> None:
        """``pending`` units of work wait in ``component``; ``advanced``: it just made progress."""
        now = self._clock()
        with self._lock:
            old = self._progress.get(component)
            last = now if advanced or old is None or old[0] == 0 else old[1]
            self._progress[component] = (pending, last)

    def stalled(self) -> dict[str, str]:
        """Components with work pending and no progress for longer than the stall timeout."""
        now = self._clock()
        with self._lock:
            return {
                name: f"{pending} pending, no progress for {now - last:.0f} s"
                for name, (pending, last) in self._progress.items()
                if pending > 0 and now - last > self.stall_timeout_s
            }

    def reset(self) -> None:
        with self._lock:
            self._conditions.clear()
            self._progress.clear()


HEALTH = Health()
