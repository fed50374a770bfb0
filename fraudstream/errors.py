"""Operational errors raised by fraudstream.

Programmer misuse raises plain ``TypeError``/``ValueError``; everything an operator may meet at run
time derives from one root::

    FraudstreamError
    ├── ConfigError            bad settings, flags or feature-set definitions at start-up
    ├── ModelArtifactError     a model artifact failed verification (hash, format, feature list)
    ├── RegistryError          the model registry refuses a stage change or its stage log is damaged
    ├── StateError             the state directory cannot serve the requested resume
    │   └── RecoveryError      undo history does not reach back to the resumed snapshot
    └── BrokerError            the embedded broker could not be started or reached

Bad *data* is never an exception that reaches the dataflow: it becomes a dead-letter record
(:class:`fraudstream.schema.Rejected`) with its reason and source coordinates.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ConfigError",
    "FraudstreamError",
    "ModelArtifactError",
    "RecoveryError",
    "RegistryError",
    "StateError",
]


class FraudstreamError(Exception):
    """Root of every operational error raised by fraudstream."""


class ConfigError(FraudstreamError):
    """Settings, flags or a feature-set definition are invalid."""


class ModelArtifactError(FraudstreamError):
    """A model artifact is missing, altered, or incompatible with the feature set."""


class RegistryError(FraudstreamError):
    """The model registry refuses a stage change, or its stage log or layout is damaged."""


class StateError(FraudstreamError):
    """The state directory cannot be used as requested."""


class RecoveryError(StateError):
    """The undo history of a state partition does not reach the snapshot being resumed."""


class BrokerError(FraudstreamError):
    """The embedded Kafka-protocol broker could not be started or reached."""
