"""Models: the per-event protocol, the XGBoost champion, the online challenger, training and the
registry."""

from fraudstream.models.base import Model, sha256_hex, verify_sha256
from fraudstream.models.challenger import Challenger, OnlineLogistic, fit_challenger
from fraudstream.models.champion import XGBChampion
from fraudstream.models.registry import LoadedModel, ModelRegistry, parse_model_ref
from fraudstream.models.train import (
    TrainResult,
    action_for,
    actions,
    auc_roc,
    average_precision,
    train_champion,
)

__all__ = [
    "Challenger",
    "LoadedModel",
    "Model",
    "ModelRegistry",
    "OnlineLogistic",
    "TrainResult",
    "XGBChampion",
    "action_for",
    "actions",
    "auc_roc",
    "average_precision",
    "fit_challenger",
    "parse_model_ref",
    "sha256_hex",
    "train_champion",
    "verify_sha256",
]
