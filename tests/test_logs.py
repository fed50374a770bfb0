"""Structured logs: one JSON object per line, context as keys, secrets masked everywhere."""

from __future__ import annotations

import logging

import orjson

from fraudstream.logs import JsonFormatter, SecretFilter, register_secret


def _emit(logger: logging.Logger, *args, **kwargs) -> dict:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(SecretFilter())
    logger.addHandler(handler)
    try:
        logger.error(*args, **kwargs)
    finally:
        logger.removeHandler(handler)
    [record] = records
    return orjson.loads(JsonFormatter().format(record))


def test_json_lines_carry_context_and_mask_secrets():
    register_secret("hunter2-the-password")
    log = logging.getLogger("fraudstream.test")
    out = _emit(
        log,
        "cannot connect with %s",
        "hunter2-the-password",
        extra={"tx_id": "t1", "partition": 3, "offset": 17, "sasl_password": "x"},
    )
    assert out["level"] == "error" and out["logger"] == "fraudstream.test"
    assert out["msg"] == "cannot connect with ***"
    assert (out["tx_id"], out["partition"], out["offset"]) == ("t1", 3, 17)
    assert out["sasl_password"] == "***"
    assert "hunter2" not in orjson.dumps(out).decode()


def test_exceptions_are_one_line_with_their_traceback():
    log = logging.getLogger("fraudstream.test")
    try:
        raise ValueError("boom")
    except ValueError:
        out = _emit(log, "failed", exc_info=True)
    assert out["error"] == "ValueError('boom')"
    assert "Traceback" in out["traceback"]
