"""SIGTERM stops the sidecar gracefully: exit 0, nothing lost, nothing re-emitted after a
restart; with --processes N no child outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson

from fraudstream.broker import free_port
from fraudstream.kafka import consume, produce_streams
from tests.flows.conftest import recent_stream, sidecar_argv


def _argv(settings, registry, tmp: Path, t, *extra: str) -> list[str]:
    return sidecar_argv(
        settings.bootstrap_servers, registry, tmp, t, "--epoch-interval", "0.5", *extra
    )


def _decided(settings, topic: str, n: int) -> list[str]:
    recs = consume(settings, topic, until=lambda r: len({x.key for x in r}) >= n, timeout_s=120)
    return [orjson.loads(r.value)["tx_id"] for r in recs]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def test_sigterm_stops_cleanly_and_a_restart_neither_loses_nor_repeats(
    kafka_settings, topics, registry, tmp_path
):
    t = topics(tx_partitions=4)
    sim = recent_stream(seed=41, customers=100, days=4, days_ago=10)
    half = len(sim.transactions) // 2
    first, second = sim.transactions[:half], sim.transactions[half:]
    argv = _argv(kafka_settings, registry, tmp_path, t)
    for part, expected in ((first, half), (second, len(sim.transactions))):
        sidecar = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            produce_streams(kafka_settings, t.transactions, t.labels, part, [], stamp="now")
            _decided(kafka_settings, t.decisions, expected)
        finally:
            sidecar.send_signal(signal.SIGTERM)
            _, err = sidecar.communicate(timeout=60)
        assert sidecar.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    ids = _decided(kafka_settings, t.decisions, len(sim.transactions))
    assert sorted(ids) == sorted(tx["tx_id"] for tx in sim.transactions)  # once each


def test_the_parent_of_several_processes_takes_its_children_with_it(
    kafka_settings, topics, registry, tmp_path
):
    t = topics(tx_partitions=2)
    port = free_port("127.0.0.1", count=2)
    argv = _argv(kafka_settings, registry, tmp_path / "a", t, "--processes", "2")
    parent = subprocess.Popen([*argv, "--metrics-port", str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (_serving(port) and _serving(port + 1)):  # both processes are up
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)  # polling the endpoints with a deadline
    children = _children(parent.pid)
    assert len(children) == 2
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    assert not [c for c in children if Path(f"/proc/{c}").exists()]

    argv = _argv(kafka_settings, registry, tmp_path / "b", t, "--processes", "2")
    parent = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_children(parent.pid)) < 2:
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)  # polling /proc for the children with a deadline
    children = _children(parent.pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while [c for c in children if _alive(c)]:
        assert time.monotonic() < deadline, "children outlived a killed parent"
        time.sleep(0.05)  # polling /proc with a deadline


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
