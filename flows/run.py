"""Run the scoring dataflow in this process, or as one process of a Bytewax cluster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main

from fraudstream.flows.scoring import FlowConfig, build_flow, close_stores
from fraudstream.runtime import tune_gc

__all__ = ["ensure_recovery_dir", "run_flow"]

RECOVERY_PARTITIONS = 4


def ensure_recovery_dir(path: Path) -> None:
    """Create and initialise a Bytewax recovery directory once; later runs resume from it."""
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.glob("part-*.sqlite3")):
        init_db_dir(path, RECOVERY_PARTITIONS)


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
    flow = build_flow(cfg, probe=probe)
    tune_gc()
    recovery = None
    if recovery_dir is not None:
        if process_id == 0:
            ensure_recovery_dir(recovery_dir)
        recovery = RecoveryConfig(str(recovery_dir))
    interval = timedelta(seconds=epoch_interval_s)
    try:
        if (addresses and len(addresses) > 1) or workers_per_process > 1:
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
