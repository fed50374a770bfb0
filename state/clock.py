"""The maintenance clock: a robust event-time watermark for pruning, sweeps and expiry.

Deleting state is only harmless when it is driven by a clock that one bad record cannot move
far: a single valid transaction stamped 12 hours (or ten months) ahead of its stream would
otherwise make every entity of its partition look idle and be swept. The clock is

    M = max(M, min(t, M + step_ms))

over the event times ``t`` of the transactions in the input's order: it follows a normal stream
exactly (consecutive events rarely jump more than ``step_ms``), catches up after a gap at
``step_ms`` per transaction, and ``k`` outliers move it by at most ``k * step_ms``. The first
transaction starts it. It is a function of the ordered input alone, so every run (live, resumed,
replayed) computes the same clock at the same record.
"""

from __future__ import annotations

__all__ = ["DEFAULT_STEP_MS", "MaintenanceClock"]

DEFAULT_STEP_MS = 3_600_000


class MaintenanceClock:
    """``M = max(M, min(t, M + step_ms))``; see the module docstring."""

    __slots__ = ("step_ms", "value")

    def __init__(self, step_ms: int = DEFAULT_STEP_MS, value: int | None = None) -> None:
        if step_ms <= 0:
            raise ValueError("step_ms must be > 0")
        self.step_ms = step_ms
        self.value = value

    def observe(self, t_ms: int) -> int:
        m = self.value
        if m is None:
            self.value = t_ms
            return t_ms
        if t_ms > m:
            cap = m + self.step_ms
            m = self.value = t_ms if t_ms < cap else cap
        return m
