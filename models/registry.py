"""A file-system model registry: versioned XGBoost artifacts with a verified manifest.

Layout::

    root/champion/v0001/model.ubj       booster in XGBoost's UBJSON format (never pickle)
    root/champion/v0001/manifest.json   what it is, how it was trained, its sha256

A version directory counts once its manifest exists: the manifest is written last, atomically
(temporary file + ``os.replace``), so a crash mid-``register`` leaves no visible version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xgboost as xgb

from fraudstream.errors import ModelArtifactError
from fraudstream.models.champion import XGBChampion
from fraudstream.models.train import TrainResult
from fraudstream.state.features import FeatureSet

__all__ = ["LoadedModel", "ModelRegistry", "parse_model_ref"]

MODEL_FILE = "model.ubj"
MANIFEST_FILE = "manifest.json"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_STAGE_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class LoadedModel:
    """A verified champion with its manifest."""

    champion: XGBChampion
    manifest: dict[str, Any]
    version: str

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.manifest["thresholds"])


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _format_version(number: int) -> str:
    return f"v{number:04d}"


def _check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid model version {version!r} (expected like 'v0001')")
    return version


def _check_stage(stage: str) -> str:
    if not _STAGE_RE.match(stage):
        raise ValueError(f"invalid stage {stage!r}")
    return stage


class ModelRegistry:
    """Versioned champions under ``root/champion``; ``load`` verifies before it trusts."""

    def __init__(self, root: Path | str, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.root = Path(root)
        self._clock = clock

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    @property
    def _models(self) -> Path:
        return self.root / "champion"

    def _numbers(self) -> list[int]:
        if not self._models.is_dir():
            return []
        found = []
        for entry in self._models.iterdir():
            m = _VERSION_RE.match(entry.name)
            if m and entry.is_dir():
                found.append(int(m.group(1)))
        return sorted(found)

    def versions(self) -> list[str]:
        """Complete versions (manifest present), oldest first."""
        return [
            _format_version(n)
            for n in self._numbers()
            if (self._models / _format_version(n) / MANIFEST_FILE).is_file()
        ]

    def latest(self) -> str | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def register(
        self,
        result: TrainResult,
        feature_set: FeatureSet,
        *,
        training_window: dict[str, Any] | None = None,
        stage: str = "shadow",
    ) -> str:
        """Save ``result`` as the next free version and return it (e.g. ``"v0003"``)."""
        _check_stage(stage)
        names = list(feature_set.feature_names)
        booster_names = result.booster.feature_names
        for source, given in (("result", result.feature_names), ("booster", booster_names)):
            if given and list(given) != names:
                raise ValueError(
                    f"{source} feature names differ from feature set {feature_set.name!r}"
                )
        if result.booster.num_features() != len(names):
            raise ValueError(
                f"booster has {result.booster.num_features()} features, "
                f"feature set {feature_set.name!r} has {len(names)}"
            )
        # Fail on unserialisable input before a version directory is claimed.
        json.dumps({"w": training_window, "m": result.metrics, "t": result.thresholds})

        self._models.mkdir(parents=True, exist_ok=True)
        while True:  # claim the next number; mkdir is atomic against a concurrent register
            version = _format_version(max(self._numbers(), default=0) + 1)
            vdir = self._models / version
            try:
                vdir.mkdir()
                break
            except FileExistsError:
                continue

        # The suffix must stay ".ubj": XGBoost picks the format from it.
        tmp_model = vdir / ".model.tmp.ubj"
        result.booster.save_model(str(tmp_model))
        os.replace(tmp_model, vdir / MODEL_FILE)
        model_path = vdir / MODEL_FILE
        manifest = {
            "version": version,
            "created_at": self._clock().astimezone(UTC).isoformat(),
            "feature_set": {
                "name": feature_set.name,
                "version": feature_set.version,
                "fingerprint": feature_set.fingerprint,
            },
            "feature_names": names,
            "training_window": training_window,
            "metrics": result.metrics,
            "thresholds": result.thresholds,
            "stage": stage,
            "artifact": {
                "file": MODEL_FILE,
                "format": "ubj",
                "sha256": _sha256(model_path),
                "bytes": model_path.stat().st_size,
            },
            "xgboost_version": xgb.__version__,
        }
        _write_atomic(vdir / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        """The parsed manifest of ``version``; :class:`ModelArtifactError` if absent or bad."""
        path = self._models / _check_version(version) / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"{path}: no such model manifest") from exc
        except (OSError, ValueError) as exc:
            raise ModelArtifactError(f"{path}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise ModelArtifactError(f"{path}: manifest is not a JSON object")
        missing = {"feature_names", "artifact", "thresholds", "feature_set"} - manifest.keys()
        if missing:
            raise ModelArtifactError(f"{path}: manifest lacks {sorted(missing)}")
        return manifest

    def load(
        self, version: str | None = None, *, feature_set: FeatureSet | None = None
    ) -> LoadedModel:
        """Load and verify ``version`` (default: latest) against its hash and ``feature_set``."""
        if version is None:
            version = self.latest()
            if version is None:
                raise ModelArtifactError(f"{self._models}: no registered models")
        manifest = self.manifest(version)
        vdir = self._models / version
        where = vdir / MANIFEST_FILE
        names = manifest["feature_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelArtifactError(f"{where}: feature_names is not a list of strings")

        artifact = manifest["artifact"]
        file_name = artifact.get("file") if isinstance(artifact, dict) else None
        if not isinstance(file_name, str) or Path(file_name).name != file_name:
            raise ModelArtifactError(f"{where}: bad artifact file entry {file_name!r}")
        model_path = vdir / file_name
        if not model_path.is_file():
            raise ModelArtifactError(f"{model_path}: model artifact missing")
        actual = _sha256(model_path)
        expected = artifact.get("sha256")
        if actual != expected:
            raise ModelArtifactError(
                f"{model_path}: sha256 mismatch: manifest says {expected}, file has {actual}"
            )

        if feature_set is not None:
            _check_feature_set(where, manifest, names, feature_set)

        try:
            booster = xgb.Booster(model_file=str(model_path))
        except xgb.core.XGBoostError as exc:
            raise ModelArtifactError(f"{model_path}: XGBoost cannot load it: {exc}") from exc
        if booster.num_features() != len(names):
            raise ModelArtifactError(
                f"{model_path}: booster has {booster.num_features()} features, "
                f"manifest lists {len(names)}"
            )
        if booster.feature_names is not None and list(booster.feature_names) != names:
            raise ModelArtifactError(
                f"{where}: feature_names differ from the booster's: "
                f"{_describe_difference(list(booster.feature_names), names)}"
            )
        return LoadedModel(champion=XGBChampion(booster, names), manifest=manifest, version=version)

    def promote(self, version: str, stage: str) -> dict[str, Any]:
        """Set ``version``'s stage (rewrites its manifest atomically); returns the manifest."""
        _check_stage(stage)
        manifest = self.manifest(version)
        manifest["stage"] = stage
        path = self._models / version / MANIFEST_FILE
        _write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest


def _describe_difference(expected: list[str], actual: list[str]) -> str:
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    if missing or extra:
        return f"missing {missing}, unexpected {extra}"
    first = next(i for i, (a, b) in enumerate(zip(expected, actual, strict=True)) if a != b)
    return (
        f"same names, order differs from position {first} "
        f"({expected[first]!r} vs {actual[first]!r})"
    )


def _check_feature_set(
    where: Path, manifest: dict[str, Any], names: list[str], feature_set: FeatureSet
) -> None:
    wanted = list(feature_set.feature_names)
    if names != wanted:
        raise ModelArtifactError(
            f"{where}: model features differ from feature set {feature_set.name!r} "
            f"v{feature_set.version}: {_describe_difference(wanted, names)}"
        )
    recorded = manifest["feature_set"]
    fingerprint = recorded.get("fingerprint") if isinstance(recorded, dict) else None
    if fingerprint != feature_set.fingerprint:
        raise ModelArtifactError(
            f"{where}: feature set fingerprint {fingerprint} differs from "
            f"{feature_set.name!r} v{feature_set.version} ({feature_set.fingerprint}): "
            "same names, different definitions"
        )


def parse_model_ref(ref: str) -> tuple[Path, str | None]:
    """Split ``"DIR:VERSION"`` or ``"DIR"`` into a registry root and a version (None = latest).

    ``VERSION`` may be ``v3``, ``v0003``, ``3`` or ``latest``.
    """
    if not ref:
        raise ValueError("empty model reference")
    head, sep, tail = ref.rpartition(":")
    if sep and head:
        m = re.fullmatch(r"v?(\d+)", tail)
        if m:
            return Path(head), _format_version(int(m.group(1)))
        if tail == "latest":
            return Path(head), None
    return Path(ref), None
