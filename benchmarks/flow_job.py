"""Run the scoring flow over a bounded topic with a benchmark's feature set (for ``peer.py``).

Usage: python -m benchmarks.flow_job SPEC_JSON, where SPEC_JSON has ``bootstrap``, ``registry``,
``work`` (state and recovery directories go under it) and ``feature_set`` (``peer-1h``, or a
preset name). The flow reads ``transactions`` and ``labels`` to their ends and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from benchmarks.peer import one_window_feature_set
from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import FlowConfig
from fraudstream.kafka import KafkaSettings
from fraudstream.state.features import get_feature_set


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    name = spec["feature_set"]
    fs = one_window_feature_set() if name == "peer-1h" else get_feature_set(name)
    work = Path(spec["work"])
    cfg = FlowConfig(
        kafka=KafkaSettings(bootstrap_servers=spec["bootstrap"]),
        feature_set=fs,
        model_registry=Path(spec["registry"]),
        state_dir=work / "state",
        tail=False,
    )
    run_flow(cfg, recovery_dir=work / "recovery")


if __name__ == "__main__":
    main()
