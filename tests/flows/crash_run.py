"""Run the flow in a child process and die abruptly (``os._exit``) after N input batches.

Used by the recovery test to simulate a killed sidecar: no cleanup, no final snapshot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson

from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import FlowConfig, Topics
from fraudstream.kafka import KafkaSettings
from fraudstream.state.features import default_feature_set


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    cfg = FlowConfig(
        kafka=KafkaSettings(bootstrap_servers=spec["bootstrap"]),
        feature_set=default_feature_set(),
        model_registry=Path(spec["registry"]),
        state_dir=Path(spec["state_dir"]),
        topics=Topics(**spec["topics"]),
        partitions=4,
        tail=False,
        batch_size=spec["batch_size"],
        consumer_overrides=spec.get("consumer_overrides", {}),
    )
    seen = 0

    def probe(batch: list) -> None:
        nonlocal seen
        seen += 1
        if seen > spec["crash_after_batches"]:
            os._exit(17)

    run_flow(cfg, recovery_dir=Path(spec["recovery_dir"]), epoch_interval_s=0.0, probe=probe)


if __name__ == "__main__":
    main()
