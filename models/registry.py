"""A file-system model registry: verified versions of any model, and an append-only stage log.

Layout::

    root/xgboost/v0001/model.ubj             the booster in XGBoost's own UBJSON format
    root/xgboost/v0001/manifest.json         what it is, how it was trained, its sha256
    root/river-logistic/v0002/model.json     the online challenger's JSON state
    root/river-logistic/v0002/manifest.json
    root/stages.jsonl                        every stage change, appended: the only record of stages
    root/.lock                               taken (flock) by writers

A folder says which kind of model it holds (:data:`KINDS`; :func:`register_kind` adds one).
Versions are numbered across kinds (``v0001``, ``v0002``, ... whatever their folder), so a
version names one model. No artifact is ever a pickle. A version counts once its manifest exists:
the artifact is written first, the manifest last and atomically (temporary file + ``os.replace``),
so a crash mid-``register`` leaves no visible version. ``load`` reads the artifact's bytes once,
checks their sha256 against the manifest and only then parses them.

The manifest is immutable; it holds ``kind``, the feature set (name, version, fingerprint) and its
``feature_names``, the model's own ``thresholds`` (``review`` and ``decline``, chosen on that
model's validation scores: a challenger's scores are ranks, not probabilities), ``metrics``,
``training_window``, the ``artifact`` (file, format, sha256, bytes), ``library_versions``, the
model's own description (``model``: hyperparameters, seed, pipeline) and ``reference`` (a dict for
drift detection, or null).

Stages (:data:`STAGES`):

* ``shadow``: scored on all traffic, never actioned;
* ``canary``: actions a deterministic share of traffic; at most one version;
* ``production``: the champion, actions the rest; at most one version;
* ``archived``: kept for audit and rollback.

Every stage change is one JSON line appended to ``stages.jsonl``: ``version``, ``from`` (null for a
registration), ``to``, ``reason``, ``actor``, ``at`` (ISO UTC). The current stage of a version is
the ``to`` of its last line. Promoting a version to production moves the previous production
version to ``archived``; promoting one to canary moves the previous canary back to ``shadow``.
Both lines go in one write, the promotion first; a reader applies the same rule, so even a torn
write never leaves two production versions. Writers hold ``root/.lock``, append with
``O_APPEND`` and fsync before returning; a line cut short by a crash (the text after the last
newline) is ignored by readers and removed by the next writer.

A running sidecar polls :meth:`ModelRegistry.revision` (the log's size and mtime) and reloads when
it changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import math
import os
import platform
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fraudstream.errors import ModelArtifactError, RegistryError
from fraudstream.models.base import Model, sha256_hex, verify_sha256
from fraudstream.models.challenger import OnlineLogistic
from fraudstream.models.champion import XGBChampion
from fraudstream.models.train import TrainResult
from fraudstream.state.features import FeatureSet

__all__ = [
    "KINDS",
    "STAGES",
    "LoadedModel",
    "ModelKind",
    "ModelRegistry",
    "StageChange",
    "default_actor",
    "parse_model_ref",
    "parse_version",
    "register_kind",
]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
STAGE_LOG = "stages.jsonl"
LOCK_FILE = ".lock"
MANIFEST_FORMAT_VERSION = 2

#: Every stage a version can be in (see the module docstring).
STAGES = ("shadow", "canary", "production", "archived")
# A stage that one version at most may hold -> where a promotion moves the previous holder.
_SINGLE = {"production": "archived", "canary": "shadow"}

_VERSION_RE = re.compile(r"^v(\d{4,})$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_LEGACY_FOLDER = "champion"


# ----------------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class ModelKind:
    """How one model class is stored: its folder and its artifact's codec.

    ``decode(data, sha256, manifest)`` must verify ``data`` against ``sha256`` before it parses
    anything, and return a model over ``manifest["feature_names"]``.
    """

    name: str
    model_class: type[Model]
    artifact_file: str
    artifact_format: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes, str, Mapping[str, Any]], Model]

    def __post_init__(self) -> None:
        if not _KIND_RE.match(self.name) or self.name == _LEGACY_FOLDER:
            raise ValueError(f"invalid kind name {self.name!r}")
        if Path(self.artifact_file).name != self.artifact_file or self.artifact_file in (
            MANIFEST_FILE,
            "",
        ):
            raise ValueError(f"invalid artifact file name {self.artifact_file!r}")


def _encode_xgboost(model: XGBChampion) -> bytes:
    return bytes(model.booster.save_raw("ubj"))


def _decode_xgboost(data: bytes, sha256: str, manifest: Mapping[str, Any]) -> Model:
    verify_sha256(data, sha256, what="xgboost artifact")
    names = manifest["feature_names"]
    described = manifest.get("model") or {}
    try:
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        raise ModelArtifactError(f"XGBoost cannot load the artifact: {exc}") from exc
    if booster.num_features() != len(names):
        raise ModelArtifactError(
            f"booster has {booster.num_features()} features, manifest lists {len(names)}"
        )
    if booster.feature_names is not None and list(booster.feature_names) != names:
        raise ModelArtifactError(
            "feature_names differ from the booster's: "
            f"{_describe_difference(list(booster.feature_names), names)}"
        )
    nthread = (described.get("serving") or {}).get("nthread", 1)
    model = XGBChampion(booster, names, nthread=int(nthread))
    # XGBoost's model file does not keep training hyperparameters: keep the recorded ones.
    if "hyperparameters" in described:
        model._hyperparameters = dict(described["hyperparameters"])
        model._seed = described.get("seed")
    return model


def _encode_generic(model: Model) -> bytes:
    return model.to_bytes()


def _generic_decoder(cls: type[Model]) -> Callable[[bytes, str, Mapping[str, Any]], Model]:
    def decode(data: bytes, sha256: str, manifest: Mapping[str, Any]) -> Model:
        return cls.from_bytes(data, expected_sha256=sha256)

    return decode


#: Kinds by name; the folder of a version is its kind's name.
KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> None:
    """Teach the registry a new model class (its folder name and artifact codec)."""
    for other in KINDS.values():
        if other.name != kind.name and other.model_class is kind.model_class:
            raise ValueError(f"{kind.model_class.__name__} is already kind {other.name!r}")
    KINDS[kind.name] = kind


register_kind(
    ModelKind("xgboost", XGBChampion, "model.ubj", "ubj", _encode_xgboost, _decode_xgboost)
)
register_kind(
    ModelKind(
        "river-logistic",
        OnlineLogistic,
        "model.json",
        "json",
        _encode_generic,
        _generic_decoder(OnlineLogistic),
    )
)


def _kind_of(model: Model) -> ModelKind:
    for kind in KINDS.values():
        if type(model) is kind.model_class:
            return kind
    raise TypeError(f"no registry kind for {type(model).__name__}; add one with register_kind")


# ----------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StageChange:
    """One line of ``stages.jsonl``: ``version`` went ``from_stage`` (None: registered) ->
    ``to_stage`` at ``at`` (ISO UTC), by ``actor``, because ``reason``."""

    version: str
    from_stage: str | None
    to_stage: str
    reason: str
    actor: str
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "from": self.from_stage,
            "to": self.to_stage,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: Any) -> StageChange:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version, from_stage, to_stage = data["version"], data["from"], data["to"]
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ValueError(f"bad version {version!r}")
        if to_stage not in STAGES or (from_stage is not None and from_stage not in STAGES):
            raise ValueError(f"bad stages {from_stage!r} -> {to_stage!r}")
        reason, actor, at = str(data["reason"]), str(data["actor"]), str(data["at"])
        return cls(version, from_stage, to_stage, reason, actor, at)


@dataclass(frozen=True)
class LoadedModel:
    """A verified model with its manifest, version, kind and stage (None: never staged)."""

    model: Model
    manifest: dict[str, Any]
    version: str
    kind: str
    stage: str | None

    @property
    def champion(self) -> Model:
        """The model (the name callers of the XGBoost-only registry used)."""
        return self.model

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.manifest["thresholds"])


# ----------------------------------------------------------------------------------- helpers


def _utc_now() -> datetime:
    return datetime.now(UTC)


def default_actor() -> str:
    """``user:<login name>``, the actor recorded when none is given."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _format_version(number: int) -> str:
    return f"v{number:04d}"


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise ValueError(f"invalid model version {version!r} (expected like 'v0001')")
    return version


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"invalid stage {stage!r}; choose from {', '.join(STAGES)}")
    return stage


def _check_text(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _check_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    try:
        out = {"review": float(thresholds["review"]), "decline": float(thresholds["decline"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("thresholds need numeric 'review' and 'decline'") from exc
    if not all(math.isfinite(v) for v in out.values()) or out["decline"] < out["review"]:
        raise ValueError(f"thresholds must be finite with decline >= review, got {out}")
    return out


def _library_versions(model: Model) -> dict[str, str]:
    versions = dict(model.manifest.get("library_versions") or {})
    versions.setdefault("numpy", np.__version__)
    versions["python"] = platform.python_version()
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["fraudstream"] = metadata.version("fraudstream")
    return versions


# ----------------------------------------------------------------------------------- registry


class ModelRegistry:
    """Versions of any model under ``root`` and their stages (see the module docstring).

    ``clock`` gives the time written to manifests and stage records (timezone-aware).
    """

    def __init__(self, root: Path | str, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.root = Path(root)
        self._clock = clock

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------------- layout
    @property
    def stage_log(self) -> Path:
        return self.root / STAGE_LOG

    def _scan(self) -> dict[str, Path]:
        """Every claimed version directory (complete or not) -> its path."""
        found: dict[str, Path] = {}
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if folder.name == _LEGACY_FOLDER:
                raise RegistryError(
                    f"{folder}: a registry of the earlier layout (champion/vNNNN, stage in the "
                    "manifest); register its models again into a new registry"
                )
            for entry in folder.iterdir():
                if _VERSION_RE.match(entry.name) and entry.is_dir():
                    if entry.name in found:
                        raise RegistryError(
                            f"version {entry.name} exists twice: {found[entry.name]} and {entry}"
                        )
                    found[entry.name] = entry
        return found

    def _dir(self, version: str) -> Path:
        path = self._scan().get(_check_version(version))
        if path is None or not (path / MANIFEST_FILE).is_file():
            raise ModelArtifactError(f"{self.root}: no such model version {version}")
        return path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------------- versions
    def versions(self, stage: str | None = None, kind: str | None = None) -> list[str]:
        """Complete versions (manifest present), oldest first; only those currently in
        ``stage`` and of ``kind`` when given."""
        if stage is not None:
            _check_stage(stage)
        found = self._scan()
        out = [
            v
            for v in sorted(found, key=lambda v: int(v[1:]))
            if (kind is None or found[v].parent.name == kind)
            and (found[v] / MANIFEST_FILE).is_file()
        ]
        if stage is not None:
            stages = self.stages()
            out = [v for v in out if stages.get(v) == stage]
        return out

    def newest(self, *, stage: str | None = None, kind: str | None = None) -> str | None:
        """The newest version in ``stage`` of ``kind`` (either may be None: any), or None."""
        found = self.versions(stage, kind)
        return found[-1] if found else None

    def kind_of(self, version: str) -> str:
        """The kind (folder name) of ``version``."""
        return self._dir(version).parent.name

    def manifest(self, version: str) -> dict[str, Any]:
        """The parsed manifest of ``version``; :class:`ModelArtifactError` if absent or bad."""
        found = self._scan().get(_check_version(version))
        if found is None:
            raise ModelArtifactError(f"{self.root}: no such model version {version}")
        path = found / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"{path}: no such model manifest") from exc
        except (OSError, ValueError) as exc:
            raise ModelArtifactError(f"{path}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise ModelArtifactError(f"{path}: manifest is not a JSON object")
        missing = {"kind", "feature_names", "artifact", "thresholds", "feature_set"}
        missing -= manifest.keys()
        if missing:
            raise ModelArtifactError(f"{path}: manifest lacks {sorted(missing)}")
        if manifest["kind"] != found.parent.name:
            raise ModelArtifactError(
                f"{path}: manifest says kind {manifest['kind']!r}, folder is {found.parent.name!r}"
            )
        return manifest

    # ------------------------------------------------------------------------- register
    def register(
        self,
        model: Model | TrainResult,
        feature_set: FeatureSet,
        *,
        thresholds: Mapping[str, float] | None = None,
        metrics: Mapping[str, Any] | None = None,
        training_window: Mapping[str, Any] | None = None,
        reference: Mapping[str, Any] | None = None,
        stage: str = "shadow",
        actor: str,
        reason: str,
    ) -> str:
        """Save ``model`` as the next free version in ``stage`` and return it (``"v0003"``).

        A :class:`TrainResult` brings its own thresholds and metrics (``thresholds`` and
        ``metrics`` override them); any other model needs both. Registering straight into
        ``production`` or ``canary`` moves the previous holder as :meth:`set_stage` does.
        """
        _check_stage(stage)
        _check_text("actor", actor)
        _check_text("reason", reason)
        names = list(feature_set.feature_names)
        if isinstance(model, TrainResult):
            result = model
            for source, given in (
                ("result", result.feature_names),
                ("booster", result.booster.feature_names),
            ):
                if given and list(given) != names:
                    raise ValueError(
                        f"{source} feature names differ from feature set {feature_set.name!r}"
                    )
            if result.booster.num_features() != len(names):
                raise ValueError(
                    f"booster has {result.booster.num_features()} features, "
                    f"feature set {feature_set.name!r} has {len(names)}"
                )
            model = XGBChampion(result.booster, names)
            thresholds = result.thresholds if thresholds is None else thresholds
            metrics = result.metrics if metrics is None else metrics
            reference = result.reference if reference is None else reference
        if not isinstance(model, Model):
            raise TypeError(f"expected a Model or a TrainResult, got {type(model).__name__}")
        if list(model.feature_names) != names:
            raise ValueError(
                f"model features differ from feature set {feature_set.name!r}: "
                f"{_describe_difference(names, list(model.feature_names))}"
            )
        if thresholds is None or metrics is None:
            raise ValueError("thresholds and metrics are required for a model without a result")
        kind = _kind_of(model)
        described = {k: v for k, v in model.manifest.items() if k != "feature_names"}
        data = kind.encode(model)
        manifest: dict[str, Any] = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "kind": kind.name,
            "feature_set": {
                "name": feature_set.name,
                "version": feature_set.version,
                "fingerprint": feature_set.fingerprint,
            },
            "feature_names": names,
            "thresholds": _check_thresholds(thresholds),
            "metrics": dict(metrics),
            "training_window": None if training_window is None else dict(training_window),
            "reference": None if reference is None else dict(reference),
            "artifact": {
                "file": kind.artifact_file,
                "format": kind.artifact_format,
                "sha256": sha256_hex(data),
                "bytes": len(data),
            },
            "library_versions": _library_versions(model),
            "model": described,
        }
        # Fail on unserialisable input before a version directory is claimed.
        json.dumps(manifest, allow_nan=False)

        with self._locked():  # the number is global across kinds: claim it under the lock
            number = max((int(v[1:]) for v in self._scan()), default=0) + 1
            version = _format_version(number)
            vdir = self.root / kind.name / version
            vdir.mkdir(parents=True)
        manifest = {"version": version, "created_at": self._now(), **manifest}
        tmp = vdir / f".{kind.artifact_file}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, vdir / kind.artifact_file)
        text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
        _write_atomic(vdir / MANIFEST_FILE, text.encode())
        _fsync_dir(vdir)
        self._change(version, stage, reason=reason, actor=actor, registering=True)
        return version

    # ------------------------------------------------------------------------- load
    def load(
        self,
        version: str | None = None,
        *,
        stage: str | None = None,
        kind: str | None = None,
        feature_set: FeatureSet | None = None,
    ) -> LoadedModel:
        """Load and verify a version.

        ``version`` names one; without it, the newest version in ``stage`` (of ``kind`` when
        given) is loaded, and with neither, the production version: the model that decides.
        With ``feature_set``, the model's features and fingerprint must match it.
        """
        if version is None:
            wanted = "production" if stage is None else stage
            version = self.newest(stage=wanted, kind=kind)
            if version is None:
                what = f"{kind} model" if kind else "model"
                raise ModelArtifactError(f"{self.root}: no {what} in stage {wanted}")
        vdir = self._dir(version)
        current = self.stage_of(version)
        if stage is not None and current != stage:
            raise ModelArtifactError(f"{version} is in stage {current}, not {stage}")
        if kind is not None and vdir.parent.name != kind:
            raise ModelArtifactError(f"{version} is a {vdir.parent.name} model, not {kind}")
        manifest = self.manifest(version)
        where = vdir / MANIFEST_FILE
        names = manifest["feature_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelArtifactError(f"{where}: feature_names is not a list of strings")
        kind_spec = KINDS.get(manifest["kind"])
        if kind_spec is None:
            raise ModelArtifactError(f"{where}: unknown model kind {manifest['kind']!r}")

        artifact = manifest["artifact"]
        file_name = artifact.get("file") if isinstance(artifact, dict) else None
        if file_name != kind_spec.artifact_file:
            raise ModelArtifactError(f"{where}: bad artifact file entry {file_name!r}")
        model_path = vdir / file_name
        try:
            data = model_path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelArtifactError(f"{model_path}: model artifact missing") from exc
        expected = artifact.get("sha256")
        if not isinstance(expected, str):
            raise ModelArtifactError(f"{where}: no artifact sha256")
        if feature_set is not None:
            _check_feature_set(where, manifest, names, feature_set)
        try:
            verify_sha256(data, expected, what=str(model_path))
            model = kind_spec.decode(data, expected, manifest)
        except ModelArtifactError as exc:
            if str(model_path) in str(exc):
                raise
            raise ModelArtifactError(f"{model_path}: {exc}") from exc
        if list(model.feature_names) != names:
            raise ModelArtifactError(
                f"{where}: feature_names differ from the artifact's: "
                f"{_describe_difference(list(model.feature_names), names)}"
            )
        return LoadedModel(
            model=model, manifest=manifest, version=version, kind=manifest["kind"], stage=current
        )

    # ------------------------------------------------------------------------- stages
    def _read_log(self) -> list[StageChange]:
        try:
            data = self.stage_log.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        if lines[-1]:
            log.warning("%s: ignoring a torn last line (%d bytes)", self.stage_log, len(lines[-1]))
        out = []
        for number, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                out.append(StageChange.from_json(json.loads(line)))
            except (ValueError, KeyError) as exc:
                raise RegistryError(f"{self.stage_log}:{number}: bad stage record: {exc}") from exc
        return out

    @staticmethod
    def _replay(records: list[StageChange]) -> dict[str, str]:
        stages: dict[str, str] = {}
        for rec in records:
            displaced = _SINGLE.get(rec.to_stage)
            if displaced is not None:  # the rule writers follow; holds even after a torn write
                for other, stage in stages.items():
                    if stage == rec.to_stage and other != rec.version:
                        stages[other] = displaced
            stages[rec.version] = rec.to_stage
        return stages

    def stages(self) -> dict[str, str]:
        """Current stage of every version with a stage record (from ``stages.jsonl``)."""
        return self._replay(self._read_log())

    def stage_of(self, version: str) -> str | None:
        """The current stage of ``version`` (None when it has no stage record)."""
        return self.stages().get(_check_version(version))

    def history(self, version: str | None = None) -> list[StageChange]:
        """Every stage change, oldest first (only ``version``'s when given)."""
        records = self._read_log()
        if version is not None:
            _check_version(version)
            records = [r for r in records if r.version == version]
        return records

    def revision(self) -> tuple[int, int]:
        """A cheap token that changes with every stage change (the stage log's size and mtime
        in ns): a sidecar polls it and reloads when it differs from the last one it saw."""
        try:
            st = os.stat(self.stage_log)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_size, st.st_mtime_ns)

    def set_stage(self, version: str, to: str, *, reason: str, actor: str) -> list[StageChange]:
        """Move ``version`` to stage ``to``; returns the records appended (none when it is
        already there). Promoting to production archives the previous production version;
        promoting to canary moves the previous canary back to shadow."""
        _check_stage(to)
        _check_text("reason", reason)
        _check_text("actor", actor)
        self._dir(version)
        return self._change(version, to, reason=reason, actor=actor)

    def rollback(self, *, reason: str, actor: str) -> list[StageChange]:
        """Make the previous production version production again (the current one goes to
        ``archived``): the last version other than the current one that the log shows entering
        production. A second rollback therefore returns to the version rolled back from. When no
        version is in production (it was halted), the last one that was counts as the current
        one, and stays where it is."""
        _check_text("reason", reason)
        _check_text("actor", actor)
        with self._locked():
            records = self._read_log()
            current = self._replay(records)
            previous = [r.version for r in records if r.to_stage == "production"]
            serving = next((v for v, s in current.items() if s == "production"), None)
            # production was halted: roll back from the last version that held it
            now = serving if serving is not None or not previous else previous[-1]
            target = next((v for v in reversed(previous) if v != now), None)
            if target is None:
                raise RegistryError(
                    f"{self.stage_log}: no previous production version to roll back to"
                    + (f" (production is {serving})" if serving else "")
                )
            self._dir(target)
            return self._append_change(records, target, "production", f"rollback: {reason}", actor)

    def _change(
        self, version: str, to: str, *, reason: str, actor: str, registering: bool = False
    ) -> list[StageChange]:
        with self._locked():
            records = self._read_log()
            if registering and any(r.version == version for r in records):
                raise RegistryError(f"{self.stage_log}: {version} already has stage records")
            return self._append_change(records, version, to, reason, actor)

    def _append_change(
        self, records: list[StageChange], version: str, to: str, reason: str, actor: str
    ) -> list[StageChange]:
        """Append the change (caller holds the lock and passes the log as read under it)."""
        stages = self._replay(records)
        before = stages.get(version)
        if before == to:
            return []
        at = self._now()
        changes = [StageChange(version, before, to, reason, actor, at)]
        displaced = _SINGLE.get(to)
        if displaced is not None:
            for other, stage in sorted(stages.items()):
                if stage == to and other != version:
                    why = f"{version} promoted to {to}: {reason}"
                    changes.append(StageChange(other, stage, displaced, why, actor, at))
        self._append(changes)
        return changes

    def _append(self, changes: list[StageChange]) -> None:
        path = self.stage_log
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A torn line (no newline at the end) is cut off before anything is appended.
                data = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
                if not data.endswith(b"\n"):
                    cut = data.rfind(b"\n")
                    if cut < 0 and len(data) < size:
                        raise RegistryError(f"{path}: last line longer than 64 KiB: not a record")
                    keep = size - len(data) + cut + 1
                    log.warning("%s: removing a torn last line (%d bytes)", path, size - keep)
                    os.ftruncate(fd, keep)
            text = "".join(
                json.dumps(c.to_json(), sort_keys=True, separators=(",", ":")) + "\n"
                for c in changes
            )
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.root)

    def _now(self) -> str:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the registry's clock must return timezone-aware datetimes")
        return now.astimezone(UTC).isoformat(timespec="milliseconds")


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
    """Split ``"DIR:VERSION"`` or ``"DIR"`` into a registry root and a version.

    ``VERSION`` may be ``v3``, ``v0003`` or ``3``; ``DIR``, ``DIR:production`` and the older
    ``DIR:latest`` give None: the production version.
    """
    if not ref:
        raise ValueError("empty model reference")
    head, sep, tail = ref.rpartition(":")
    if sep and head:
        m = re.fullmatch(r"v?(\d+)", tail)
        if m:
            return Path(head), _format_version(int(m.group(1)))
        if tail in ("latest", "production"):
            return Path(head), None
    return Path(ref), None


def parse_version(text: str) -> str:
    """``v3``, ``v0003`` or ``3`` -> ``"v0003"``; ValueError otherwise."""
    m = re.fullmatch(r"v?(\d+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a model version (like v3, v0003 or 3)")
    return _format_version(int(m.group(1)))
