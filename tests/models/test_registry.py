"""Registry: layout and verified round trips for every kind, and the append-only stage log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fraudstream.errors import ModelArtifactError, RegistryError
from fraudstream.models import (
    ModelRegistry,
    OnlineLogistic,
    XGBChampion,
    fit_challenger,
    parse_model_ref,
    train_champion,
)
from fraudstream.state.features import default_feature_set, handbook_feature_set

FS = handbook_feature_set()
WHO = {"actor": "test", "reason": "unit test"}
CHALLENGER_THRESHOLDS = {"review": 0.7, "decline": 0.9}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, len(FS.feature_names)))
    y = (X[:, 0] + 0.5 * rng.normal(size=2000) > 1.3).astype(np.int8)
    return X, y


@pytest.fixture(scope="module")
def result(data):
    X, y = data
    return train_champion(X, y, FS.feature_names, seed=1, n_estimators=20)


@pytest.fixture(scope="module")
def challenger(data) -> OnlineLogistic:
    X, y = data
    return fit_challenger(X[:300], y[:300], FS.feature_names, seed=2)


class Clock:
    """A fake clock: one second later at every call."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", clock=Clock())


def register_challenger(registry: ModelRegistry, model: OnlineLogistic, **kw) -> str:
    return registry.register(
        model, FS, thresholds=CHALLENGER_THRESHOLDS, metrics={"auc_roc": 0.8}, **WHO, **kw
    )


# ----------------------------------------------------------------------------- artifacts


def test_round_trip_of_each_kind_in_its_own_folder(registry, result, challenger, data):
    window = {"from_ms": 0, "to_ms": 86_400_000}
    v1 = registry.register(result, FS, training_window=window, **WHO)
    v2 = register_challenger(registry, challenger, reference={"amount_p99": 1.0})
    assert (v1, v2) == ("v0001", "v0002")  # numbered across kinds
    X = data[0][:300]

    champion = registry.load(v1, feature_set=FS)
    assert isinstance(champion.model, XGBChampion) and champion.champion is champion.model
    np.testing.assert_array_equal(champion.model.score_many(X), result.booster.inplace_predict(X))
    m = champion.manifest
    assert (champion.version, champion.kind, champion.stage) == ("v0001", "xgboost", "shadow")
    assert m["feature_set"] == {
        "name": FS.name,
        "version": FS.version,
        "fingerprint": FS.fingerprint,
    }
    assert m["thresholds"] == result.thresholds == champion.thresholds
    assert m["metrics"] == result.metrics and m["training_window"] == window
    assert m["reference"] == result.reference and m["reference"]["format"] and "stage" not in m
    assert m["created_at"] == "2026-03-01T00:00:01.000+00:00"
    assert (
        m["model"]["hyperparameters"]["max_depth"]
        == champion.model.manifest["hyperparameters"]["max_depth"]
    )
    assert {"xgboost", "numpy", "python"} <= m["library_versions"].keys()
    raw = (registry.root / "xgboost" / "v0001" / "model.ubj").read_bytes()
    assert m["artifact"] == {
        "file": "model.ubj",
        "format": "ubj",
        "sha256": m["artifact"]["sha256"],
        "bytes": len(raw),
    }
    assert raw.startswith(b"{") and not raw.startswith(b"\x80")  # XGBoost's UBJSON, not a pickle

    online = registry.load(v2, feature_set=FS)
    assert isinstance(online.model, OnlineLogistic)
    assert (online.kind, online.thresholds) == ("river-logistic", CHALLENGER_THRESHOLDS)
    assert online.model.to_bytes() == challenger.to_bytes()
    np.testing.assert_array_equal(online.model.score_many(X), challenger.score_many(X))
    assert online.manifest["reference"] == {"amount_p99": 1.0}
    assert (registry.root / "river-logistic" / "v0002" / "model.json").is_file()


def test_versions_newest_and_kinds(registry, result, challenger):
    assert registry.versions() == [] and registry.newest() is None
    registry.register(result, FS, **WHO)
    register_challenger(registry, challenger)
    registry.register(result, FS, **WHO)
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    assert registry.versions(kind="xgboost") == ["v0001", "v0003"]
    assert registry.newest(stage="shadow", kind="river-logistic") == "v0002"
    assert registry.load(stage="shadow", kind="river-logistic").version == "v0002"
    assert registry.load(stage="shadow").version == "v0003"
    assert registry.kind_of("v0002") == "river-logistic"


def test_incomplete_version_invisible_but_not_reused(registry, result):
    (registry.root / "river-logistic" / "v0001").mkdir(parents=True)
    assert registry.versions() == []
    assert registry.register(result, FS, **WHO) == "v0002"


@pytest.mark.parametrize("kind", ["xgboost", "river-logistic"])
def test_tampered_artifact_refused(registry, result, challenger, kind):
    if kind == "xgboost":
        version, name = registry.register(result, FS, **WHO), "model.ubj"
    else:
        version, name = register_challenger(registry, challenger), "model.json"
    path = registry.root / kind / version / name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelArtifactError, match="sha256") as info:
        registry.load(version)
    assert name in str(info.value)


def _edit_manifest(registry: ModelRegistry, version: str, **changes) -> None:
    path = registry.root / registry.kind_of(version) / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_manifest_with_other_feature_list_refused(registry, result):
    version = registry.register(result, FS, **WHO)
    names = list(FS.feature_names)
    _edit_manifest(registry, version, feature_names=names[:-1])
    with pytest.raises(ModelArtifactError, match="features"):
        registry.load(version)
    swapped = [names[1], names[0], *names[2:]]
    _edit_manifest(registry, version, feature_names=swapped)
    with pytest.raises(ModelArtifactError, match="order differs"):
        registry.load(version)
    with pytest.raises(ModelArtifactError, match="order differs"):
        registry.load(version, feature_set=FS)


def test_other_feature_set_or_fingerprint_refused(registry, result):
    version = registry.register(result, FS, **WHO)
    with pytest.raises(ModelArtifactError, match=r"missing|unexpected"):
        registry.load(version, feature_set=default_feature_set())
    _edit_manifest(
        registry, version, feature_set={"name": FS.name, "version": 1, "fingerprint": "0" * 16}
    )
    with pytest.raises(ModelArtifactError, match="fingerprint"):
        registry.load(version, feature_set=FS)


def test_missing_or_corrupt_manifest(registry, result):
    with pytest.raises(ModelArtifactError, match="no model in stage production"):
        registry.load()
    version = registry.register(result, FS, **WHO)
    (registry.root / "xgboost" / version / "manifest.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="unreadable manifest"):
        registry.load(version)
    with pytest.raises(ModelArtifactError, match="no such model version"):
        registry.load("v0009")


def test_register_refuses_bad_input_before_claiming_a_version(registry, result, challenger):
    with pytest.raises(ValueError, match="feature"):
        registry.register(result, default_feature_set(), **WHO)
    with pytest.raises(ValueError, match="thresholds and metrics"):
        registry.register(challenger, FS, **WHO)
    with pytest.raises(ValueError, match="decline >= review"):
        registry.register(
            challenger, FS, thresholds={"review": 0.9, "decline": 0.1}, metrics={}, **WHO
        )
    with pytest.raises(ValueError, match="actor"):
        registry.register(result, FS, actor=" ", reason="x")
    assert registry.versions() == [] and not (registry.root / "stages.jsonl").exists()


def test_a_registry_of_the_earlier_layout_is_named(registry):
    (registry.root / "champion" / "v0001").mkdir(parents=True)
    with pytest.raises(RegistryError, match="earlier layout"):
        registry.versions()


# ----------------------------------------------------------------------------- stages


def test_at_most_one_production_and_one_canary(registry, result, challenger):
    v1 = registry.register(result, FS, stage="production", **WHO)
    v2 = registry.register(result, FS, **WHO)
    v3 = register_challenger(registry, challenger, stage="canary")
    assert registry.stages() == {v1: "production", v2: "shadow", v3: "canary"}

    changes = registry.set_stage(v2, "canary", reason="try it", actor="alice")
    assert [(c.version, c.from_stage, c.to_stage) for c in changes] == [
        (v2, "shadow", "canary"),
        (v3, "canary", "shadow"),
    ]
    assert changes[1].reason == f"{v2} promoted to canary: try it"
    registry.set_stage(v2, "production", reason="it works", actor="alice")
    assert registry.stages() == {v1: "archived", v2: "production", v3: "shadow"}
    assert registry.versions("production") == [v2] and registry.versions("canary") == []
    assert registry.load().version == v2  # no version, no stage: the production model
    assert registry.set_stage(v2, "production", reason="again", actor="alice") == []
    with pytest.raises(ValueError, match="invalid stage"):
        registry.set_stage(v2, "champion", reason="x", actor="alice")
    with pytest.raises(ModelArtifactError, match="no such model version"):
        registry.set_stage("v0042", "shadow", reason="x", actor="alice")
    with pytest.raises(ModelArtifactError, match="in stage production, not shadow"):
        registry.load(v2, stage="shadow")


def test_history_is_the_log_and_the_log_is_append_only(registry, result):
    v1 = registry.register(result, FS, stage="production", actor="ci", reason="bootstrap")
    v2 = registry.register(result, FS, actor="ci", reason="nightly")
    before = registry.stage_log.read_bytes()
    registry.set_stage(v2, "production", reason="gate passed", actor="sidecar:auto-halt")
    assert registry.stage_log.read_bytes().startswith(before)
    lines = [json.loads(line) for line in registry.stage_log.read_text().splitlines()]
    assert lines[2] == {
        "version": v2,
        "from": "shadow",
        "to": "production",
        "reason": "gate passed",
        "actor": "sidecar:auto-halt",
        "at": "2026-03-01T00:00:05.000+00:00",
    }
    history = registry.history()
    assert [(r.version, r.from_stage, r.to_stage) for r in history] == [
        (v1, None, "production"),
        (v2, None, "shadow"),
        (v2, "shadow", "production"),
        (v1, "production", "archived"),
    ]
    assert [r.to_stage for r in registry.history(v1)] == ["production", "archived"]


def test_a_torn_last_line_is_ignored_then_removed(registry, result, caplog):
    v1 = registry.register(result, FS, stage="production", **WHO)
    v2 = registry.register(result, FS, **WHO)
    complete = registry.stage_log.read_bytes()
    torn = b'{"actor":"x","at":"2026","from":"shadow","to":"produ'
    registry.stage_log.write_bytes(complete + torn)  # a crash in the middle of an append
    assert registry.stages() == {v1: "production", v2: "shadow"}
    assert len(registry.history()) == 2 and "torn last line" in caplog.text
    registry.set_stage(v2, "canary", reason="next", actor="alice")
    text = registry.stage_log.read_bytes()
    assert text.startswith(complete) and torn not in text and text.endswith(b"\n")
    assert registry.stages() == {v1: "production", v2: "canary"}


def test_a_bad_complete_line_is_an_error_with_its_place(registry, result):
    registry.register(result, FS, **WHO)
    with registry.stage_log.open("ab") as fh:
        fh.write(b'{"version": "v0001", "to": "nowhere"}\n')
    with pytest.raises(RegistryError, match=r"stages.jsonl:2: bad stage record"):
        registry.stages()


def test_readers_keep_one_production_even_if_the_second_record_is_torn(registry, result):
    v1 = registry.register(result, FS, stage="production", **WHO)
    v2 = registry.register(result, FS, **WHO)
    registry.set_stage(v2, "production", reason="r", actor="a")
    lines = registry.stage_log.read_bytes().splitlines(keepends=True)
    registry.stage_log.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # archive record torn
    assert registry.stages() == {v1: "archived", v2: "production"}


def test_rollback_returns_to_the_previous_production(registry, result):
    with pytest.raises(RegistryError, match="no previous production"):
        registry.rollback(reason="r", actor="a")
    v1 = registry.register(result, FS, stage="production", **WHO)
    with pytest.raises(RegistryError, match=f"production is {v1}"):
        registry.rollback(reason="r", actor="a")
    v2 = registry.register(result, FS, **WHO)
    v3 = registry.register(result, FS, **WHO)
    registry.set_stage(v2, "production", reason="r", actor="a")
    registry.set_stage(v3, "production", reason="r", actor="a")
    changes = registry.rollback(reason="bad release", actor="oncall")
    assert [(c.version, c.to_stage) for c in changes] == [(v2, "production"), (v3, "archived")]
    assert changes[0].reason == "rollback: bad release" and changes[0].actor == "oncall"
    assert registry.stages() == {v1: "archived", v2: "production", v3: "archived"}
    registry.rollback(reason="it was fine", actor="oncall")  # the previous production is v3
    assert registry.stage_of(v3) == "production" and registry.stage_of(v2) == "archived"
    registry.set_stage(v3, "shadow", reason="halted", actor="sidecar:auto-halt")
    registry.rollback(reason="no production left", actor="oncall")
    assert registry.versions("production") == [v2]


def test_revision_changes_with_every_stage_change(registry, result):
    assert registry.revision() == (0, 0)
    v1 = registry.register(result, FS, **WHO)
    first = registry.revision()
    assert first[0] > 0
    registry.set_stage(v1, "production", reason="r", actor="a")
    assert registry.revision() != first
    same = registry.revision()
    registry.set_stage(v1, "production", reason="r", actor="a")  # no change, nothing appended
    assert registry.revision() == same


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("models/reg", (Path("models/reg"), None)),
        ("models/reg:v0003", (Path("models/reg"), "v0003")),
        ("models/reg:v3", (Path("models/reg"), "v0003")),
        ("models/reg:12", (Path("models/reg"), "v0012")),
        ("models/reg:production", (Path("models/reg"), None)),
        ("models/reg:latest", (Path("models/reg"), None)),
    ],
)
def test_parse_model_ref(ref, expected):
    assert parse_model_ref(ref) == expected
