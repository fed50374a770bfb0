"""Operator errors fail safe: a second instance on the same directories, a broker replaced by an
empty one."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
import urllib.error
import urllib.request

import orjson

from fraudstream.broker import EmbeddedBroker, free_port
from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import Topics
from fraudstream.kafka import KafkaSettings, consume, create_topics, end_offsets, produce_streams
from tests.flows.conftest import load_history, recent_stream, sidecar_argv


def _argv(servers: str, registry, tmp, t: Topics, *extra: str) -> list[str]:
    return sidecar_argv(servers, registry, tmp, t, "--epoch-interval", "0.2", *extra)


def _ids(settings, topic: str, n: int) -> set[str]:
    recs = consume(settings, topic, until=lambda r: len({x.key for x in r}) >= n, timeout_s=120)
    return {orjson.loads(r.value)["tx_id"] for r in recs}


def test_a_second_instance_exits_at_once_and_leaves_the_first_intact(
    kafka_settings, topics, registry, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=31, customers=100, days=4, days_ago=20)
    half = len(sim.transactions) // 2
    load_history(kafka_settings, t, sim, transactions=sim.transactions[:half])
    argv = _argv(kafka_settings.bootstrap_servers, registry, tmp_path, t)
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        assert len(_ids(kafka_settings, t.decisions, half)) == half
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode != 0
        assert "in use by another fraudstream process" in second.stderr
        # one clear line for the person; the traceback only inside the JSON log record
        plain = [line for line in second.stderr.splitlines() if not line.startswith("{")]
        assert plain == [line for line in plain if line.startswith("fraudstream: error:")]
        assert len(plain) == 1
        assert first.poll() is None, "the first instance was disturbed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # the directories still resume: a new instance decides the rest
    produce_streams(kafka_settings, t.transactions, t.labels, sim.transactions[half:], [])
    done = subprocess.run(
        [*argv, "--no-tail"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _ids(kafka_settings, t.decisions, len(sim.transactions)) == {
        tx["tx_id"] for tx in sim.transactions
    }


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_a_broker_replaced_by_an_empty_one_is_reported_then_follows_the_policy(
    registry, flow_config, tmp_path
):
    t = Topics(transactions="tx", labels="labels", decisions="decisions", transactions_dlq="tx.dlq")
    topics = {"tx": 2, "labels": 1, "decisions": 1, "tx.dlq": 1, "labels.dlq": 1, "alerts": 1}
    sim = recent_stream(seed=32, customers=60, days=3, days_ago=20)
    with EmbeddedBroker(log_path=tmp_path / "old.log") as old:
        port = old.port
        settings = KafkaSettings(bootstrap_servers=old.bootstrap_servers)
        create_topics(settings, topics)
        load_history(settings, t, sim)
        cfg = dataclasses.replace(flow_config(t, tmp_path / "state", 200), kafka=settings)
        run_flow(cfg, recovery_dir=tmp_path / "recovery", epoch_interval_s=0.2)
        assert end_offsets(settings, "decisions")[0] == len(sim.transactions)

    with EmbeddedBroker(port=port, log_path=tmp_path / "new.log") as new:
        settings = KafkaSettings(bootstrap_servers=new.bootstrap_servers)
        create_topics(settings, topics)
        fresh = [
            {**tx, "tx_id": f"new-{tx['tx_id']}"}
            for tx in recent_stream(seed=33, customers=10, days=1, days_ago=2).transactions[:5]
        ]
        produce_streams(settings, "tx", "labels", fresh, [], stamp="now")
        metrics = free_port("127.0.0.1")
        argv = _argv(new.bootstrap_servers, registry, tmp_path, t, "--metrics-port", str(metrics))
        stuck = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            status, body = _readyz(metrics)
            while "beyond the log end" not in body:
                assert time.monotonic() < deadline, (status, body)
                assert stuck.poll() is None
                time.sleep(0.1)  # polling the endpoint until the deadline, not synchronisation
                status, body = _readyz(metrics)
            assert status == 503
            assert end_offsets(settings, "decisions")[0] == 0  # nothing silently skipped
        finally:
            stuck.terminate()
            _, err = stuck.communicate(timeout=30)
        assert "offset_policy=fail" in err

        reset = subprocess.Popen(
            [*argv[:-2], "--offset-policy", "earliest"], stderr=subprocess.PIPE, text=True
        )
        try:
            assert _ids(settings, "decisions", 5) == {tx["tx_id"] for tx in fresh}
        finally:
            reset.terminate()
            _, err = reset.communicate(timeout=30)
        assert "offset_policy=earliest" in err
