"""Models: the per-event protocol, the XGBoost champion, the online challenger, training, the
registry and the promotion gate."""

from fraudstream.models.base import Model, sha256_hex, verify_sha256
from fraudstream.models.challenger import Challenger, OnlineLogistic, fit_challenger
from fraudstream.models.champion import XGBChampion
from fraudstream.models.lifecycle import (
    GateCheck,
    GateDecision,
    GatePolicy,
    ModelEvaluation,
    check_promotion,
)
from fraudstream.models.registry import (
    STAGES,
    LoadedModel,
    ModelRegistry,
    StageChange,
    parse_model_ref,
)
from fraudstream.models.train import (
    TrainResult,
    action_for,
    actions,
    auc_roc,
    average_precision,
    train_champion,
)

__all__ = [
    "STAGES",
    "Challenger",
    "GateCheck",
    "GateDecision",
    "GatePolicy",
    "LoadedModel",
    "Model",
    "ModelEvaluation",
    "ModelRegistry",
    "OnlineLogistic",
    "StageChange",
    "TrainResult",
    "XGBChampion",
    "action_for",
    "actions",
    "auc_roc",
    "average_precision",
    "check_promotion",
    "fit_challenger",
    "parse_model_ref",
    "sha256_hex",
    "train_champion",
    "verify_sha256",
]
