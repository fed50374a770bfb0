"""Run the scoring dataflow in this process, or as one process of a Bytewax cluster."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main

from fraudstream.errors import StateError
from fraudstream.flows.scoring import FlowConfig, build_flow, close_stores
from fraudstream.runtime import STOP, tune_gc

__all__ = ["LOCKS_HELD_ENV", "dir_locks", "ensure_recovery_dir", "graceful_stop", "run_flow"]

log = logging.getLogger(__name__)

RECOVERY_PARTITIONS = 4
# Set by a parent that holds the directory locks for the processes it starts.
LOCKS_HELD_ENV = "FRAUDSTREAM_DIR_LOCKS_HELD"


def ensure_recovery_dir(path: Path) -> None:
    """Create and initialise a Bytewax recovery directory once; later runs resume from it."""
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.glob("part-*.sqlite3")):
        init_db_dir(path, RECOVERY_PARTITIONS)


@contextlib.contextmanager
def dir_locks(dirs: list[Path], name: str = "LOCK") -> Iterator[list[int]]:
    """Hold an exclusive lock on each directory (``flock`` on ``dir/name``) or fail at once.

    Taken before either directory is touched: a second instance started on the same state and
    recovery directories exits with a clear message and leaves both intact. The locks die with
    the process (and with every child that inherited the descriptors).
    """
    fds: list[int] = []
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(d / name, os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise StateError(
                    f"{d} is in use by another fraudstream process (pid {holder}); "
                    "stop it first, or give this one other --state-dir and --recovery-dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """SIGTERM/SIGINT end the input instead of the process (main thread only).

    The flow then finishes the batch in flight, flushes every output, takes a final snapshot and
    returns: the next run resumes exactly after it, re-emitting nothing. A second signal restores
    the default behaviour (a second SIGTERM kills at once).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the batch in flight", signum)
        STOP.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        STOP.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_flow(
    cfg: FlowConfig,
    *,
    recovery_dir: Path | None,
    epoch_interval_s: float = 2.0,
    addresses: list[str] | None = None,
    process_id: int = 0,
    workers_per_process: int = 1,
    probe: Any = None,
) -> None:
    """Block until the flow ends (only with ``tail=False``) or the process is stopped."""
    dirs = [cfg.state_dir] + ([recovery_dir] if recovery_dir is not None else [])
    clustered = bool(addresses and len(addresses) > 1)
    if os.environ.get(LOCKS_HELD_ENV):
        locks: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        locks = dir_locks(dirs, f"LOCK.p{process_id}" if clustered else "LOCK")
    with locks, graceful_stop():
        flow = build_flow(cfg, probe=probe)
        tune_gc()
        recovery = None
        if recovery_dir is not None:
            if process_id == 0:
                ensure_recovery_dir(recovery_dir)
            recovery = RecoveryConfig(str(recovery_dir))
        interval = timedelta(seconds=epoch_interval_s)
        try:
            if clustered or workers_per_process > 1:
                cluster_main(
                    flow,
                    addresses or [],
                    process_id,
                    epoch_interval=interval,
                    recovery_config=recovery,
                    worker_count_per_proc=workers_per_process,
                )
            else:
                run_main(flow, epoch_interval=interval, recovery_config=recovery)
        finally:
            close_stores()
