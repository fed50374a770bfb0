"""Where a replay's time goes, step by step: the state engine's parts timed per replay step.

The records are simulated and put in the live flow's order first (not timed), then replayed by
``replay_ordered`` in its usual 65,536-record steps with timers around the state engine's parts.
Printed as JSON: microseconds per record for each part over the first ~10% of the steps, the last
~10% and all of them (a part nests inside ``entities``). The timers add ~1 us per call; compare
runs of this harness only with each other::

    PYTHONPATH=. .venv/bin/python -m benchmarks.replay_steps --customers 17500 --feature-set default
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import orjson

import fraudstream.state.columnar as columnar
import fraudstream.state.engine as engine
import fraudstream.state.entities as entities
import fraudstream.state.ingest as ingest
from fraudstream.replay.features import file_order, replay_ordered
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import get_feature_set

_SPENT: dict[str, float] = {}

# (owner, attribute, part): the parts timed, looked up where the state engine calls them
PARTS = (
    (ingest.Ingest, "process", "ingest"),
    (entities.EntityPartition, "process", "entities"),
    (entities.EntityPartition, "_load", "load"),
    (entities, "Records", "records"),
    (entities, "evaluate", "evaluate"),
    (columnar.Rewrite, "encode", "encode"),
    (entities.EntityPartition, "_novelty", "novelty"),
    (entities.EntityPartition, "_apply_sequential", "per_op_path"),
    (entities.EntityPartition, "_evict", "evict"),
    (engine, "assemble_matrix", "assemble"),
)


def _timed(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPENT[part] = _SPENT.get(part, 0.0) + time.perf_counter() - start

    return run


def _summary(steps: list[tuple[int, float, dict[str, float]]]) -> dict[str, Any]:
    records = sum(n for n, _, _ in steps)
    parts: dict[str, float] = {}
    for _, _, spent in steps:
        for part, seconds in spent.items():
            parts[part] = parts.get(part, 0.0) + seconds
    return {
        "records": records,
        "us_per_record": round(sum(t for _, t, _ in steps) / records * 1e6, 2),
        "parts_us_per_record": {k: round(v / records * 1e6, 2) for k, v in sorted(parts.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=17_500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--feature-set", default="default")
    args = parser.parse_args()
    fs = get_feature_set(args.feature_set)
    sim = generate(SimConfig(seed=1, n_customers=args.customers, days=args.days))
    records = list(file_order(sim.transactions, sim.labels, fs))
    del sim
    for owner, name, part in PARTS:
        setattr(owner, name, _timed(getattr(owner, name), part))
    steps: list[tuple[int, float, dict[str, float]]] = []
    process = engine.InOrderEngine.process

    def step(self: engine.InOrderEngine, batch: Any) -> engine.EngineResult:
        _SPENT.clear()
        start = time.perf_counter()
        out = process(self, batch)
        steps.append((len(batch), time.perf_counter() - start, dict(_SPENT)))
        return out

    engine.InOrderEngine.process = step  # type: ignore[method-assign]
    replay_ordered(records, fs)
    full = steps[:-1] if len(steps) > 1 else steps  # the last step is partial
    k = max(1, round(len(full) / 10))
    row = {
        "benchmark": "replay_steps",
        "feature_set": fs.name,
        "records": len(records),
        "steps": len(steps),
        "first": _summary(full[:k]),
        "last": _summary(full[-k:]),
        "all": _summary(steps),
    }
    print(orjson.dumps(row).decode(), flush=True)


if __name__ == "__main__":
    main()
