"""Structured logs: one JSON object per line on stderr, secrets masked.

Every record has ``ts`` (ISO 8601 UTC), ``level``, ``logger`` and ``msg``; context passed with
``extra=`` (for example ``tx_id``, ``topic``, ``partition``, ``offset``) becomes top-level keys;
an exception adds ``error`` and ``traceback``. Values of keys that look like secrets
(``password``, ``secret``, ``token``, ``sasl.password``) and the value of every registered secret
(:func:`register_secret`, e.g. the Kafka SASL password) are replaced by ``***`` wherever they
appear in a record.

``--log-format text`` gives the classic one-line format for a person at a terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "SecretFilter", "configure", "register_secret"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
}
_SECRET_KEY = re.compile(r"(password|secret|token)", re.IGNORECASE)
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (short values are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def _mask(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class SecretFilter(logging.Filter):
    """Masks registered secrets in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = _mask(str(record.msg))
            if record.args:
                args = record.args if isinstance(record.args, tuple) else (record.args,)
                record.args = tuple(_mask(a) if isinstance(a, str) else a for a in args)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _mask(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = "***" if _SECRET_KEY.search(key) else value
        if record.exc_info:
            out["error"] = _mask(repr(record.exc_info[1]))
            out["traceback"] = _mask(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Install the handler on the root logger (once); ``fmt`` is ``json`` or ``text``."""
    fmt = fmt or os.environ.get("FRAUDSTREAM_LOG_FORMAT", "json")
    level = (level or os.environ.get("FRAUDSTREAM_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if any(getattr(h, "_fraudstream", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._fraudstream = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    handler.addFilter(_quiet_libraries)
    root.addHandler(handler)
    root.setLevel(level)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Chatty client libraries below WARNING say nothing an operator needs (on this handler
    only: other handlers, and the libraries' own levels, are left alone)."""
    return record.levelno >= logging.WARNING or not record.name.startswith(("aiokafka", "kafka"))
