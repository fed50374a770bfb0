"""Operational errors raised by fraudstream.

Programmer misuse raises plain ``TypeError``/``ValueError``; everything an operator may meet at run
time derives from one root, one subclass per kind of failure::

    FraudstreamError
    ├── ConfigError            bad settings, flags, config file or feature-set definition
    ├── BrokerError            a Kafka broker cannot be reached, started, or refuses a request
    │   ├── BrokerTimeoutError a Kafka request or metadata wait passed its deadline
    │   └── TopicCreationError the broker refused to create a topic
    ├── InputDataError         an input file or record cannot be read (names file:line)
    ├── ModelError             a model cannot be loaded, verified or moved between stages
    │   ├── ModelArtifactError a model artifact failed verification (hash, format, feature list)
    │   └── RegistryError      the registry refuses a stage change or its stage log is damaged
    └── StateError             the state directory cannot serve the requested resume
        └── RecoveryError      undo history does not reach back to the resumed snapshot

Three classes also derive from a built-in, so that code written against the built-in keeps
working: :class:`ConfigError` and :class:`InputDataError` are ``ValueError``\\ s (a bad value),
:class:`BrokerTimeoutError` is a ``TimeoutError``.

Each class has a short :attr:`~FraudstreamError.kind` (``config``, ``broker``, ``input``, ``model``,
``state``) that the CLI writes to the JSON log as ``error_kind``. The CLI turns any of them into
one line on stderr (``fraudstream: error: ...``) and exit status 2; the traceback goes to the log.

Bad *data* in a stream is never an exception that reaches the dataflow: it becomes a dead-letter
record (:class:`fraudstream.schema.Rejected`) with its reason and source coordinates.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerError",
    "BrokerTimeoutError",
    "ConfigError",
    "FraudstreamError",
    "InputDataError",
    "ModelArtifactError",
    "ModelError",
    "RecoveryError",
    "RegistryError",
    "StateError",
    "TopicCreationError",
]


class FraudstreamError(Exception):
    """Root of every operational error raised by fraudstream."""

    kind: ClassVar[str] = "error"


class ConfigError(FraudstreamError, ValueError):
    """Settings, flags, the config file or a feature-set definition are invalid."""

    kind = "config"


class BrokerError(FraudstreamError):
    """A Kafka broker (the cluster, or the embedded one) cannot be reached, started or used."""

    kind = "broker"


class BrokerTimeoutError(BrokerError, TimeoutError):
    """A Kafka request, or a wait for cluster metadata, passed its deadline."""


class TopicCreationError(BrokerError):
    """The broker refused to create a topic for a reason other than that it exists."""


class InputDataError(FraudstreamError, ValueError):
    """An input file or record cannot be read; the message names the file and line."""

    kind = "input"


class ModelError(FraudstreamError):
    """A model cannot be loaded, verified, or moved between registry stages."""

    kind = "model"


class ModelArtifactError(ModelError):
    """A model artifact is missing, altered, or incompatible with the feature set."""


class RegistryError(ModelError):
    """The model registry refuses a stage change, or its stage log or layout is damaged."""


class StateError(FraudstreamError):
    """The state directory cannot be used as requested."""

    kind = "state"


class RecoveryError(StateError):
    """The undo history of a state partition does not reach the snapshot being resumed."""
