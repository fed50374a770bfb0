"""Registry round trips and the checks ``load`` must make before trusting an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraudstream.errors import ModelArtifactError
from fraudstream.models import ModelRegistry, parse_model_ref, train_champion
from fraudstream.state.features import default_feature_set, handbook_feature_set

FS = handbook_feature_set()


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


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_round_trip_identical_predictions(registry, result, data):
    window = {"start_ms": 0, "end_ms": 86_400_000}
    version = registry.register(result, FS, training_window=window)
    assert version == "v0001"
    loaded = registry.load(version, feature_set=FS)
    X = data[0][:300]
    np.testing.assert_array_equal(loaded.champion.score_many(X), result.booster.inplace_predict(X))
    m = loaded.manifest
    assert loaded.version == "v0001"
    assert m["feature_names"] == list(FS.feature_names)
    assert m["feature_set"] == {
        "name": FS.name,
        "version": FS.version,
        "fingerprint": FS.fingerprint,
    }
    assert m["thresholds"] == result.thresholds == loaded.thresholds
    assert m["training_window"] == window
    assert m["stage"] == "shadow"
    assert m["artifact"]["format"] == "ubj"
    assert m["created_at"].endswith("+00:00")
    raw = (registry.root / "champion" / "v0001" / "model.ubj").read_bytes()
    assert m["artifact"]["bytes"] == len(raw)
    assert not raw.startswith(b"\x80")  # not a pickle


def test_versions_increment(registry, result):
    assert registry.versions() == [] and registry.latest() is None
    assert [registry.register(result, FS) for _ in range(3)] == ["v0001", "v0002", "v0003"]
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    assert registry.latest() == "v0003"
    assert registry.load().version == "v0003"


def test_incomplete_version_invisible_but_not_reused(registry, result):
    (registry.root / "champion" / "v0001").mkdir(parents=True)
    assert registry.versions() == []
    assert registry.register(result, FS) == "v0002"


def test_tampered_artifact_refused(registry, result):
    version = registry.register(result, FS)
    path = registry.root / "champion" / version / "model.ubj"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelArtifactError, match="sha256") as info:
        registry.load(version)
    assert "model.ubj" in str(info.value)


def _edit_manifest(registry: ModelRegistry, version: str, **changes) -> None:
    path = registry.root / "champion" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_manifest_with_other_feature_list_refused(registry, result):
    version = registry.register(result, FS)
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


def test_other_feature_set_refused(registry, result):
    version = registry.register(result, FS)
    other = default_feature_set()
    assert other.feature_names != FS.feature_names
    with pytest.raises(ModelArtifactError, match=r"missing|unexpected"):
        registry.load(version, feature_set=other)


def test_same_names_other_fingerprint_refused(registry, result):
    version = registry.register(result, FS)
    _edit_manifest(
        registry, version, feature_set={"name": FS.name, "version": 1, "fingerprint": "0" * 16}
    )
    with pytest.raises(ModelArtifactError, match="fingerprint"):
        registry.load(version, feature_set=FS)


def test_missing_or_corrupt_manifest(registry, result):
    with pytest.raises(ModelArtifactError, match="no registered models"):
        registry.load()
    version = registry.register(result, FS)
    (registry.root / "champion" / version / "manifest.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="unreadable manifest"):
        registry.load(version)
    with pytest.raises(ModelArtifactError, match="no such model manifest"):
        registry.load("v0009")


def test_register_refuses_mismatched_feature_set(registry, result):
    with pytest.raises(ValueError, match="feature"):
        registry.register(result, default_feature_set())
    assert registry.versions() == []


def test_promote(registry, result):
    version = registry.register(result, FS)
    registry.promote(version, "champion")
    loaded = registry.load(version, feature_set=FS)
    assert loaded.manifest["stage"] == "champion"
    with pytest.raises(ValueError):
        registry.promote(version, "")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("models/reg", (Path("models/reg"), None)),
        ("models/reg:v0003", (Path("models/reg"), "v0003")),
        ("models/reg:v3", (Path("models/reg"), "v0003")),
        ("models/reg:12", (Path("models/reg"), "v0012")),
        ("models/reg:latest", (Path("models/reg"), None)),
    ],
)
def test_parse_model_ref(ref, expected):
    assert parse_model_ref(ref) == expected
