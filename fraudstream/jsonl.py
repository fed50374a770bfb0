"""JSON Lines files: one JSON object per line, gzip for a ``.gz`` path.

The format of every file the commands read and write besides Parquet (simulated streams, decision
logs, labels). Writing is deterministic: equal records give byte-identical files, gzipped ones
included (no timestamp nor file name in the gzip header).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Literal

import orjson

from fraudstream.errors import InputDataError

__all__ = ["read_jsonl", "write_jsonl"]


@contextmanager
def _open(path: str | os.PathLike[str], mode: Literal["r", "w"]) -> Iterator[IO[bytes]]:
    with open(path, mode + "b") as raw:
        if not os.fspath(path).endswith(".gz"):
            yield raw
            return
        # mtime=0 and no name in the header: equal records give byte-identical files
        with gzip.GzipFile(
            filename="", mode=mode + "b", fileobj=raw, mtime=0, compresslevel=6
        ) as gz:
            yield gz  # type: ignore[misc]


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict]) -> int:
    """Write one orjson document per line (gzip for a ``.gz`` path); return the count."""
    count = 0
    buffer: list[bytes] = []
    with _open(path, "w") as out:
        for record in records:
            buffer.append(orjson.dumps(record))
            count += 1
            if len(buffer) >= 10_000:
                out.write(b"\n".join(buffer) + b"\n")
                buffer.clear()
        if buffer:
            out.write(b"\n".join(buffer) + b"\n")
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict]:
    """Yield the records of a file written by :func:`write_jsonl`; blank lines are skipped.

    A line that is not a JSON object raises :class:`~fraudstream.errors.InputDataError` (a
    ``ValueError``) naming ``file:line``; a truncated gzip stream names the file.
    """
    lineno = 0
    try:
        with _open(path, "r") as src:
            for lineno, line in enumerate(src, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise InputDataError(
                        f"{os.fspath(path)}:{lineno}: invalid JSON: {exc}"
                    ) from exc
                if type(record) is not dict:
                    raise InputDataError(f"{os.fspath(path)}:{lineno}: expected an object")
                yield record
    except (EOFError, gzip.BadGzipFile) as exc:
        raise InputDataError(f"{os.fspath(path)}: after line {lineno}: {exc}") from exc
