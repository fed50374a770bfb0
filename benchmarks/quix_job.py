"""Quix Streams job for ``benchmarks/peer.py``; runs in the Quix venv (no fraudstream imports).

1-hour sliding count and sum of ``amount`` per account (the message key) over ``transactions``,
event time from ``event_time_ms``. Prints one JSON line: events, seconds from the first to the
last processed message, and wall seconds including start-up.

Tansu returns no topic configs (``retention.ms`` is absent) while Quix derives its changelog
topics' configs from the source topic's: ``TopicAdmin.inspect_topics`` is patched here (harness
only) to fill in Kafka's defaults.

Usage: python quix_job.py BOOTSTRAP TOPIC EVENTS TIMEOUT_S STATE_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import timedelta

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum
from quixstreams.models.topics import admin as quix_admin

_DEFAULTS = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}
_inspect = quix_admin.TopicAdmin.inspect_topics


def _inspect_with_defaults(self, topic_names, timeout=30):  # type: ignore[no-untyped-def]
    configs = _inspect(self, topic_names, timeout=timeout)
    for cfg in configs.values():
        if cfg is not None:
            for key, value in _DEFAULTS.items():
                cfg.extra_config.setdefault(key, value)
    return configs


quix_admin.TopicAdmin.inspect_topics = _inspect_with_defaults  # type: ignore[method-assign]


def main() -> None:
    bootstrap, topic_name, n_arg, timeout_arg, state_dir = sys.argv[1:6]
    n, timeout_s = int(n_arg), float(timeout_arg)
    started = time.perf_counter()
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-bench-{int(time.time() * 1000)}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        auto_create_topics=True,
    )
    topic = app.topic(
        topic_name,
        value_deserializer="json",
        timestamp_extractor=lambda value, headers, ts, ts_type: value["event_time_ms"],
    )
    seen = {"n": 0, "first": 0.0, "last": 0.0, "last_value": None}

    def count(value: dict) -> None:
        now = time.perf_counter()
        if seen["n"] == 0:
            seen["first"] = now
        seen["n"] += 1
        seen["last"] = now
        seen["last_value"] = value
        if seen["n"] >= n:
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.sliding_window(timedelta(hours=1)).agg(count=Count(), total=Sum("amount")).current()
    sdf = sdf.update(count)
    timer = threading.Timer(timeout_s, app.stop)
    timer.start()
    try:
        app.run()
    finally:
        timer.cancel()
    span = seen["last"] - seen["first"]
    print(
        json.dumps(
            {
                "events": seen["n"],
                "span_s": span,
                "wall_s": time.perf_counter() - started,
                "last_value": seen["last_value"],
            },
            default=str,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
