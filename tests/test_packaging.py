"""The package as a platform team deploys it.

* deploy/ and the Dockerfile: the manifests parse, every setting they pass names a real flag (a
  misspelt variable would be ignored without a word), and probes, ports, volumes, the password's
  Secret and the non-root, read-only container agree with each other and with the image.
* The wheel built from this checkout, installed with its dependencies into a fresh venv, runs
  the sidecar configured by environment variables alone (no flags, no file) against the test
  broker: ready, every transaction decided, and a SIGTERM ends it with exit status 0.
* ``FRAUDSTREAM_TEST_IMAGE=TAG`` (an image from ``make image``) runs that image the same way with
  podman or docker (``FRAUDSTREAM_TEST_ENGINE``), read-only and on host networking; without it
  the test is skipped: CI has no image builder nor base image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fraudstream.broker import free_port
from fraudstream.cli import build_parser
from fraudstream.kafka import create_topics, produce_streams
from fraudstream.settings import settings_of
from tests.flows.conftest import recent_stream
from tests.flows.conftest import registry as registry  # the trained champion (session fixture)

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE = REPO / "deploy" / "compose.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes" / "sidecar.yaml"


def _run_settings() -> set[str]:
    """Every environment variable ``fraudstream run`` reads, by its current name (a deprecated
    name such as FRAUDSTREAM_PARTITIONS still works, but deploy files must not teach it)."""
    names = {spec.env for spec in settings_of(build_parser())[("run",)]}
    assert {"FRAUDSTREAM_STATE_PARTITIONS", "FRAUDSTREAM_KAFKA_SASL_PASSWORD"} <= names
    assert "FRAUDSTREAM_PARTITIONS" not in names
    return names


def _image_volumes() -> list[str]:
    match = re.search(r"^VOLUME (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "the Dockerfile declares its volumes as a JSON array"
    return json.loads(match.group(1))


def _image_env() -> dict[str, str]:
    return dict(re.findall(r"\b(FRAUDSTREAM_[A-Z_]+)=(\S+)", DOCKERFILE))


@pytest.mark.parametrize("path", [COMPOSE, KUBERNETES], ids=lambda p: p.name)
def test_manifests_are_valid_yaml(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


def test_image_runs_the_sidecar_as_a_non_root_user_configured_by_environment():
    assert re.search(r'^ENTRYPOINT \["fraudstream", "run"\]$', DOCKERFILE, re.MULTILINE)
    assert not re.search(r"^CMD ", DOCKERFILE, re.MULTILINE), "settings come from ENV, not flags"
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert user and user[-1].split(":")[0].isdigit() and not user[-1].startswith("0")
    assert re.search(r"^HEALTHCHECK .*/healthz", DOCKERFILE, re.MULTILINE | re.DOTALL)
    env = _image_env()
    assert set(env) <= _run_settings()
    assert env["FRAUDSTREAM_METRICS_ADDR"] == "0.0.0.0"  # probes come from outside the process
    assert {env["FRAUDSTREAM_STATE_DIR"], env["FRAUDSTREAM_RECOVERY_DIR"]} == set(_image_volumes())
    assert re.search(rf"^EXPOSE {env['FRAUDSTREAM_METRICS_PORT']}$", DOCKERFILE, re.MULTILINE)


def test_compose_sidecar_settings_and_volumes():
    sidecar = yaml.safe_load(COMPOSE.read_text())["services"]["fraudstream"]
    assert set(sidecar["environment"]) <= _run_settings()
    # SOURCE:TARGET[:MODE], where SOURCE may be ${VAR:-default}
    mounts = dict(re.fullmatch(r".+:(/[^:]+)(?::(\w+))?", v).groups() for v in sidecar["volumes"])
    assert set(_image_volumes()) <= set(mounts)
    # the canary auto-halt appends to the registry's stages.jsonl: mounted writable
    registry = sidecar["environment"].get(
        "FRAUDSTREAM_REGISTRY", _image_env()["FRAUDSTREAM_REGISTRY"]
    )
    assert registry in mounts and mounts[registry] != "ro"
    port = sidecar["environment"]["FRAUDSTREAM_METRICS_PORT"]
    assert any(p.endswith(f":{port}:{port}") for p in sidecar["ports"])


def _statefulset() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(KUBERNETES.read_text()))
    (sts,) = [d for d in documents if d["kind"] == "StatefulSet"]
    return sts


def test_kubernetes_probes_scrape_secrets_and_security_agree():
    sts = _statefulset()
    assert sts["spec"]["replicas"] == 1  # one reader of every partition (docs/design.md)
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= _run_settings()
    password = env["FRAUDSTREAM_KAFKA_SASL_PASSWORD"]
    assert "value" not in password and password["valueFrom"]["secretKeyRef"]["key"]

    port = int(env["FRAUDSTREAM_METRICS_PORT"]["value"])
    assert env["FRAUDSTREAM_METRICS_ADDR"]["value"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {
        kind: (container[kind]["httpGet"]["path"], ports[container[kind]["httpGet"]["port"]])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", port),
        "livenessProbe": ("/healthz", port),
        "readinessProbe": ("/readyz", port),
    }
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # the image's volumes are writable mounts of persistent claims
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in _image_volumes():
        assert mounts[path]["name"] in claims and not mounts[path].get("readOnly", False)
    assert env["FRAUDSTREAM_STATE_DIR"]["value"] in mounts
    assert env["FRAUDSTREAM_RECOVERY_DIR"]["value"] in mounts
    # the registry is shared with the training jobs and written by the canary auto-halt
    # (stages.jsonl): a writable mount of a ReadWriteMany claim
    registry = mounts[env["FRAUDSTREAM_REGISTRY"]["value"]]
    assert not registry.get("readOnly", False)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert not volumes[registry["name"]]["persistentVolumeClaim"].get("readOnly", False)
    assert container["resources"]["limits"]["memory"]


# --- the wheel in a fresh venv -------------------------------------------------------------


def _clean_env(venv_dir: Path) -> dict[str, str]:
    """This process's environment without any fraudstream setting or virtualenv of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FRAUDSTREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _check(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout and its pinned dependencies."""
    work = tmp_path_factory.mktemp("package")
    src = work / "src"  # a copy: building in the checkout would leave build/ and egg-info there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for folder in set(project["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(
            REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _check([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"), str(src)])
    (wheel,) = (work / "dist").glob("fraudstream-*.whl")
    venv_dir = work / "venv"
    venv.create(venv_dir, with_pip=False)
    python = venv_dir / "bin" / "python"
    _check([*pip, "--python", str(python), "install", "--quiet", str(wheel)], timeout=600)
    return venv_dir


def test_wheel_installs_the_command(installed, tmp_path):
    env = _clean_env(installed)
    code = "import fraudstream; print(fraudstream.__file__)"
    where = _check([str(installed / "bin" / "python"), "-c", code], env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed)  # not the checkout
    top = _check([str(installed / "bin" / "fraudstream"), "--help"], env=env, cwd=tmp_path)
    assert "run" in top.stdout
    run = _check([str(installed / "bin" / "fraudstream"), "run", "--help"], env=env, cwd=tmp_path)
    assert "--metrics-addr" in run.stdout


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _decisions(metrics: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "fraudstream_decisions_total"
    )


def _sidecar_input(kafka_settings, unique_topic) -> tuple[dict[str, str], int]:
    """Fresh topics holding a short recent stream: the ``run`` settings naming them, and how
    many transactions they hold."""
    base = unique_topic("pkg")
    tx, labels, decisions = f"{base}.tx", f"{base}.labels", f"{base}.decisions"
    create_topics(
        kafka_settings,
        {tx: 2, labels: 1, decisions: 1, f"{tx}.dlq": 1, f"{labels}.dlq": 1, f"{base}.alerts": 1},
    )
    sim = recent_stream(seed=11, customers=80, days=2, days_ago=3)
    n, _ = produce_streams(kafka_settings, tx, labels, sim.transactions, sim.labels, stamp="event")
    settings = kafka_settings.to_env()  # the test cluster's own security settings, if any
    settings.update(
        FRAUDSTREAM_TRANSACTIONS_TOPIC=tx,
        FRAUDSTREAM_LABELS_TOPIC=labels,
        FRAUDSTREAM_ALERTS_TOPIC=f"{base}.alerts",
        FRAUDSTREAM_DECISIONS_TOPIC=decisions,
        FRAUDSTREAM_STATE_PARTITIONS="4",
    )
    return settings, n


def _serve_decide_and_stop(cmd: list[str], env: dict[str, str], port: int, n: int, log: Path):
    """Start ``cmd``; wait until /readyz and /healthz answer 200 and ``n`` decisions are
    counted, then SIGTERM it and expect exit status 0 (the graceful stop)."""
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready, decided, health = 0, 0.0, 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = _get(f"{base_url}/readyz")[0]
                health = _get(f"{base_url}/healthz")[0]
                decided = _decisions(_get(f"{base_url}/metrics")[1])
            except OSError:
                pass  # not listening yet
            if ready == 200 and health == 200 and decided >= n:
                break
            time.sleep(0.2)  # polling a condition within the deadline
        tail = log.read_text(errors="replace")[-3000:]
        assert proc.poll() is None, f"the sidecar exited ({proc.returncode}):\n{tail}"
        assert (ready, health, decided) == (200, 200, n), tail

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sidecar_from_the_wheel_runs_on_environment_alone(
    installed, kafka_settings, registry, unique_topic, tmp_path
):
    settings, n = _sidecar_input(kafka_settings, unique_topic)
    port = free_port("127.0.0.1")
    env = _clean_env(installed) | settings
    env.update(
        FRAUDSTREAM_REGISTRY=str(registry),
        FRAUDSTREAM_STATE_DIR=str(tmp_path / "data" / "state"),
        FRAUDSTREAM_RECOVERY_DIR=str(tmp_path / "data" / "recovery"),
        FRAUDSTREAM_METRICS_PORT=str(port),
    )
    cmd = [str(installed / "bin" / "fraudstream"), "run"]
    _serve_decide_and_stop(cmd, env, port, n, tmp_path / "sidecar.log")
    # the directories came from the environment, not the defaults under the working directory
    assert (tmp_path / "data" / "state" / "LOCK").exists()
    assert any((tmp_path / "data" / "recovery").glob("part-*.sqlite3"))
    assert not (tmp_path / "var").exists()


IMAGE = os.environ.get("FRAUDSTREAM_TEST_IMAGE")
ENGINE = (
    os.environ.get("FRAUDSTREAM_TEST_ENGINE") or shutil.which("podman") or shutil.which("docker")
)


@pytest.mark.skipif(not (IMAGE and ENGINE), reason="FRAUDSTREAM_TEST_IMAGE: an image (make image)")
def test_image_runs_read_only_on_environment_alone(
    kafka_settings, registry, unique_topic, tmp_path
):
    """The built image, as the manifests run it: read-only root, its own user, the data volumes
    mounted, settings passed as environment variables; host networking reaches the test broker."""
    assert IMAGE and ENGINE
    settings, n = _sidecar_input(kafka_settings, unique_topic)
    port = free_port("127.0.0.1")
    data = tmp_path / "data"
    shutil.copytree(registry, data / "registry")
    for d in ("state", "recovery"):
        (data / d).mkdir()
    for path in [data, *data.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)  # the image's user is not this one
    settings["FRAUDSTREAM_METRICS_PORT"] = str(port)
    name = f"fraudstream-test-{port}"
    cmd = [ENGINE, "run", "--rm", "--name", name, "--network", "host", "--read-only"]
    cmd += [f"--volume={data / d}:/var/lib/fraudstream/{d}" for d in ("state", "recovery")]
    cmd += [f"--volume={data / 'registry'}:/var/lib/fraudstream/registry"]
    cmd += [arg for key in settings for arg in ("--env", key)]  # values from the environment
    cmd += [IMAGE]
    try:
        _serve_decide_and_stop(cmd, {**os.environ, **settings}, port, n, tmp_path / "image.log")
    finally:
        subprocess.run([ENGINE, "rm", "--force", name], capture_output=True)
    assert (data / "state" / "LOCK").exists()
    assert any((data / "recovery").glob("part-*.sqlite3"))
