"""Contracts of the state layer: a raw key-value store, and epoch-consistent versioning over it.

:class:`KVStore` is what a backend implements (:mod:`.memory`, :mod:`.rocksdb`).
:class:`EpochStore` wraps any backend and ties its contents to the stream engine's snapshots:

* every write batch carries, in the same atomic batch, an *undo record* (the previous value) for
  each key written for the first time in the current epoch;
* :meth:`EpochStore.commit_epoch` is called when the engine snapshots; it returns the epoch number
  that the engine stores as this partition's recovery state, and trims undo records older than
  ``keep_epochs`` epochs;
* on resume from epoch ``r`` the undo records of epochs after ``r`` are applied newest first, which
  restores exactly the contents the store had when snapshot ``r`` was taken. Input is then
  re-read from the offsets of snapshot ``r`` and reproduces the same updates.

A resume from a snapshot older than the retained undo history, or with a recovery snapshot but no
state, raises :class:`~fraudstream.errors.RecoveryError` instead of guessing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import orjson

from fraudstream.errors import RecoveryError

__all__ = ["EpochStore", "KVStore", "json_value"]

_META_SNAPSHOT = b"\xff\xffmeta:snapshot"
_META_TRIMMED = b"\xff\xffmeta:trimmed"
_META_FORMAT = b"\xff\xffmeta:format"
_UNDO = b"\xff\xffundo:"
_SEQ = struct.Struct(">Q")
_ABSENT = b"\x01"
_PRESENT = b"\x00"


def json_value(obj: Any) -> bytes:
    """``orjson.dumps(obj)`` as a right-sized value to store.

    orjson (3.12 and later) returns bytes whose allocation is rounded up to at least 4 KiB and
    never shrunk; a value that stays in memory (:class:`~fraudstream.state.memory.MemoryKV`, a
    cache) keeps all of it: a replay of 1M events held ~4 GB of ~100-byte transaction-index
    values that way. Joining with an empty bytes copies it into an exact-size object (~50 ns).
    """
    return b"".join((orjson.dumps(obj), b""))


class KVStore(Protocol):
    """A byte-keyed store with atomic batches and ordered prefix scans."""

    def get_many(self, keys: list[bytes]) -> list[bytes | None]: ...

    def write(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply puts (and deletes, value ``None``) atomically."""

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order."""

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete keys in ``[start, end)``."""

    def clear(self) -> None: ...

    def close(self) -> None: ...


def _undo_prefix(seq: int) -> bytes:
    return _UNDO + _SEQ.pack(seq)


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(_SEQ.unpack(raw)[0])


class EpochStore:
    """A :class:`KVStore` whose contents can be rolled back to any of the last snapshots."""

    def __init__(
        self,
        kv: KVStore,
        *,
        resume_epoch: int | None,
        keep_epochs: int = 8,
        log_undo: bool = True,
        format_tag: bytes = b"",
    ) -> None:
        """``log_undo=False`` is for stores that are never resumed (replays, tests).

        ``format_tag`` names the encoding of the values; a resume refuses a store written with
        another one (after an upgrade that changed it, start fresh or migrate).
        """
        if keep_epochs < 2:
            raise ValueError("keep_epochs must be >= 2")
        self.kv = kv
        self.log_undo = log_undo
        self.keep_epochs = keep_epochs
        self._logged: set[bytes] = set()
        if resume_epoch is None:
            # No snapshot: whatever is on disk is from a run the engine does not remember.
            kv.clear()
            kv.write([(_META_FORMAT, format_tag)])
            self.epoch = 1
            self._trimmed = 0
        else:
            (found,) = kv.get_many([_META_FORMAT])
            if found is not None and found != format_tag:
                raise RecoveryError(
                    f"state store format {found!r} differs from this version's {format_tag!r}: "
                    "start with fresh state and recovery directories (or migrate the state)"
                )
            self._rollback(resume_epoch)
            self.epoch = resume_epoch + 1

    def _rollback(self, resume: int) -> None:
        snap, trimmed = self.kv.get_many([_META_SNAPSHOT, _META_TRIMMED])
        last, self._trimmed = _int(snap), _int(trimmed) or 0
        if last is None and resume > 0:
            raise RecoveryError(
                f"recovery resumes epoch {resume} but the state store has no snapshot: "
                "was the state directory deleted while the recovery directory was kept?"
            )
        if resume < self._trimmed:
            raise RecoveryError(
                f"cannot resume epoch {resume}: undo history only reaches epoch {self._trimmed} "
                f"(keep_epochs={self.keep_epochs}); restore state and recovery dirs together"
            )
        newer: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in self.kv.iter_prefix(_UNDO):
            seq = _SEQ.unpack_from(key, len(_UNDO))[0]
            if seq > resume:
                newer.setdefault(seq, []).append((key, value))
        for seq in sorted(newer, reverse=True):
            batch: list[tuple[bytes, bytes | None]] = []
            for undo_key, old in newer[seq]:
                key = undo_key[len(_UNDO) + _SEQ.size :]
                batch.append((key, None if old == _ABSENT else old[1:]))
            batch.append((_META_SNAPSHOT, _SEQ.pack(resume)))
            self.kv.write(batch)
            self.kv.delete_range(_undo_prefix(seq), _undo_prefix(seq + 1))

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self.kv.get_many(keys)

    def unlogged(self, keys: list[bytes]) -> list[bytes]:
        """The keys whose previous value :meth:`write` still needs in this epoch."""
        if not self.log_undo:
            return []
        logged = self._logged
        return [k for k in keys if k not in logged]

    def write(self, updates: dict[bytes, bytes | None], before: dict[bytes, bytes | None]) -> None:
        """Write ``updates`` atomically; ``before`` holds each updated key's current value."""
        if not self.log_undo:
            self.kv.write(updates.items())
            return
        batch: list[tuple[bytes, bytes | None]] = []
        logged = self._logged
        prefix = _undo_prefix(self.epoch)
        for key in updates:
            if key not in logged:
                logged.add(key)
                old = before[key]
                batch.append((prefix + key, _ABSENT if old is None else _PRESENT + old))
        batch.extend(updates.items())
        self.kv.write(batch)

    def commit_epoch(self) -> int:
        """Mark the current contents as snapshot ``epoch``; return it for the engine to store."""
        done = self.epoch
        self.epoch += 1
        self._logged = set()
        trim_to = done - self.keep_epochs
        batch: list[tuple[bytes, bytes | None]] = [(_META_SNAPSHOT, _SEQ.pack(done))]
        if trim_to > self._trimmed:
            self.kv.delete_range(_undo_prefix(self._trimmed + 1), _undo_prefix(trim_to + 1))
            self._trimmed = trim_to
            batch.append((_META_TRIMMED, _SEQ.pack(trim_to)))
        self.kv.write(batch)
        return done

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.kv.iter_prefix(prefix)

    def close(self) -> None:
        self.kv.close()
