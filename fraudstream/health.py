"""Readiness conditions reported by the sidecar's components.

A component sets a named condition (``HEALTH.set("input:transactions", False, "topic missing")``);
the sidecar is ready when every condition is true. ``/readyz`` and the
``fraudstream_ready`` gauge read it. Thread-safe: the metrics server reads it from its own thread.
"""

from __future__ import annotations

import threading
import time

__all__ = ["HEALTH", "Health"]


class Health:
    """Named conditions, each ``(ok, detail, since)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, tuple[bool, str, float]] = {}

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

    def reset(self) -> None:
        with self._lock:
            self._conditions.clear()


HEALTH = Health()
