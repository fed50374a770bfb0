"""One exception tree, and what a person sees when a command fails: one line, no traceback."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import fraudstream.cli as cli
from fraudstream import errors
from fraudstream.broker import BrokerError as HarnessBrokerError
from fraudstream.broker import free_port
from fraudstream.errors import (
    BrokerError,
    BrokerTimeoutError,
    ConfigError,
    FraudstreamError,
    InputDataError,
    ModelError,
    RegistryError,
    StateError,
)
from fraudstream.kafka import TopicCreationError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fraudstream", "flows", "state", "models", "replay")


def test_the_tree_is_drawn_and_every_class_is_documented():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, FraudstreamError) and name.endswith("Error")
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), name
        assert name in errors.__doc__, f"{name} is not drawn in the module docstring"
    kinds = {cls.kind for cls in map(errors.__dict__.get, errors.__all__)}
    assert kinds == {"error", "config", "broker", "input", "model", "state"}


def test_one_class_per_failure_wherever_it_is_imported_from():
    assert TopicCreationError is errors.TopicCreationError
    assert HarnessBrokerError is BrokerError
    assert issubclass(BrokerTimeoutError, TimeoutError)  # `except TimeoutError` still works
    assert issubclass(ConfigError, ValueError) and issubclass(InputDataError, ValueError)
    assert issubclass(RegistryError, ModelError)


def _modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_no_module_grows_its_own_exception_tree_or_raises_the_bare_root():
    public = {"errors.py"}
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and path.name not in public:
                bases = {ast.unparse(b) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    assert node.name.startswith("_"), (
                        f"{path.relative_to(REPO)}:{node.lineno}: {node.name} belongs in "
                        "fraudstream/errors.py"
                    )
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                called = ast.unparse(node.exc.func)
                assert called != "FraudstreamError", (
                    f"{path.relative_to(REPO)}:{node.lineno}: raise a subclass by kind"
                )


# --- the CLI ----------------------------------------------------------------------------------


def _fraudstream(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        cwd=cwd,
        check=False,
    )


def _plain(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def test_a_missing_input_file_is_one_line_and_exit_status_2(tmp_path):
    done = _fraudstream(
        "train", "--transactions", str(tmp_path / "none.jsonl"), "--labels", "x", cwd=tmp_path
    )
    assert done.returncode == 2
    lines = _plain(done.stderr)
    assert lines[-1].startswith("fraudstream: error: [Errno 2] No such file or directory")
    assert "Traceback" not in done.stderr
    assert len([line for line in lines if line.startswith("fraudstream:")]) == 1


def test_a_bad_line_in_an_input_file_names_file_and_line(tmp_path):
    bad = tmp_path / "tx.jsonl"
    bad.write_text('{"tx_id": "a"}\nnot json\n')
    done = _fraudstream("train", "--transactions", str(bad), "--labels", str(bad), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"fraudstream: error: {bad}:2: invalid JSON" in done.stderr


def test_a_bad_setting_is_one_line_before_anything_runs(tmp_path):
    done = _fraudstream("run", env={"FRAUDSTREAM_NO_TAIL": "sometimes"}, cwd=tmp_path)
    assert done.returncode == 2
    plain = _plain(done.stderr)
    assert plain == [
        "fraudstream: error: invalid settings: FRAUDSTREAM_NO_TAIL='sometimes': Input should be "
        "a valid boolean, unable to interpret input"
    ]
    # the sidecar logs JSON: the same failure, with its kind and traceback, for the pipeline
    (record,) = [orjson.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert record["error_kind"] == "config" and "Traceback" in record["traceback"]
    assert not (tmp_path / "var").exists()  # nothing was created


def test_an_unreachable_broker_is_a_broker_error_with_detail_in_the_json_log(tmp_path):
    port = free_port("127.0.0.1")  # nothing listens there
    done = _fraudstream(
        "alerts",
        "tail",
        "--bootstrap-servers",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (line,) = _plain(done.stderr)
    assert line.startswith("fraudstream: error: Kafka: KafkaConnectionError")
    records = [orjson.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    failure = [r for r in records if r.get("error_kind")]
    assert failure and failure[-1]["error_kind"] == "broker"
    assert "Traceback" in failure[-1]["traceback"]


@pytest.mark.parametrize(
    ("raised", "status", "prefix"),
    [
        (StateError("state dir in use"), 2, "fraudstream: error: state dir in use"),
        (RegistryError("stage log damaged"), 2, "fraudstream: error: stage log damaged"),
        (BrokerTimeoutError("no metadata"), 2, "fraudstream: error: no metadata"),
        (PermissionError(13, "Permission denied", "/reg"), 2, "fraudstream: error: [Errno 13]"),
        (KeyError("bug"), 1, "fraudstream: internal error: KeyError: 'bug'"),
        (KeyboardInterrupt(), 130, "fraudstream: interrupted"),
    ],
)
def test_every_failure_has_its_exit_status_and_one_line(
    monkeypatch, capsys, tmp_path, raised, status, prefix
):
    def fail(_args):
        raise raised

    monkeypatch.setattr(cli, "cmd_model_list", fail)
    assert cli.main(["model", "list", "--registry", str(tmp_path)]) == status
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("fraudstream:")] == [
        line for line in err.splitlines() if line.startswith(prefix)
    ]
    assert prefix in err


def test_a_secret_in_an_error_message_is_masked(monkeypatch, capsys):
    secret = "hunter2-but-longer"
    env = {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
        "FRAUDSTREAM_KAFKA_SASL_USERNAME": "u",
        "FRAUDSTREAM_KAFKA_SASL_PASSWORD": secret,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def fail(_args):
        raise BrokerError(f"login with {secret} refused")

    monkeypatch.setattr(cli, "cmd_alerts_tail", fail)
    assert cli.main(["alerts", "tail"]) == 2
    err = capsys.readouterr().err
    assert "fraudstream: error: login with *** refused" in err and secret not in err
