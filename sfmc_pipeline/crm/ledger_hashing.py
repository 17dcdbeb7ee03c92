"""Keyed hashes of what the sync ledger must not keep in clear.

The ledger only needs to know whether a value equals the one last confirmed written, so identifying
values (names, email, phone, columns labelled ``identifying``) are stored as keyed hashes and the diff
compares the hashes of the values it would send; fingerprints of what failed (``standing_failures``)
are keyed hashes too. Without the key a hash cannot be checked against guessed values.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.datasets.storage import StorageError

PREFIX = "keyed:"  # a ledger text is JSON, which never starts with "k": a hash is never mistaken for a value
KEY_BYTES = 32
DIGEST_BYTES = 16  # keyed BLAKE2b (BLAKE2's own MAC mode, RFC 7693): "keyed:" + 32 hex digits


def key_path(ledger_path: str | Path) -> Path:
    """Where the key of the ledger at ``ledger_path`` lives: ``<ledger stem>.key`` beside it."""
    path = Path(ledger_path)
    return path.with_name(f"{path.stem}.key")


def is_hashed(text: str | None) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


class KeyedHasher:
    """Keyed hashes with one key (``load_or_create`` reads or makes the ledger's).

    A lost or replaced key only makes the stored hashes unequal to the new ones: the next sync writes
    those attributes once more and stores the new hashes; nothing fails. ``texts`` hashes a whole
    column (each distinct value once), ``text`` one value being written."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ledger key has {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: str | Path) -> KeyedHasher:
        """The key in ``path`` (64 hex digits), created first when the file does not exist."""
        path = Path(path)
        if not path.exists():
            _create_key(path)
        try:
            text = path.read_text(encoding="ascii").strip()
            key = bytes.fromhex(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StorageError(
                f"The sync ledger's key {path} cannot be read ({type(exc).__name__}: {exc}). If it is damaged, move it "
                "away: a new key is created and the next sync writes the identifying attributes (names, email, ...) "
                "of its records once more. If the file is not readable, give the pipeline's user read access (mode "
                "0600)."
            ) from None
        if len(key) != KEY_BYTES:
            raise StorageError(
                f"The sync ledger's key {path} holds {len(key)} bytes instead of {KEY_BYTES}. Move it away: a new key "
                "is created and the next sync writes the identifying attributes of its records once more."
            )
        return cls(key)

    def text(self, text: str) -> str:
        """The keyed hash of one ledger text (a text already hashed is returned as it is)."""
        if text.startswith(PREFIX):
            return text
        return PREFIX + hashlib.blake2b(text.encode("utf-8"), key=self._key, digest_size=DIGEST_BYTES).hexdigest()

    def texts(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """``text`` of every ledger text (JSON, never a hash) of a string column, nulls kept: each distinct value is
        hashed once (the hot path of a re-run: one call per value, no per-value checks)."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if len(values) == 0:
            return pa.array([], pa.large_string())
        encoded = pc.dictionary_encode(values)
        key, blake2b = self._key, hashlib.blake2b
        hashed = [PREFIX + blake2b(v.encode("utf-8"), key=key, digest_size=DIGEST_BYTES).hexdigest()
                  for v in encoded.dictionary.to_pylist()]
        return pa.array(hashed, pa.large_string()).take(encoded.indices)

    def fingerprint(self, pairs: Iterable[tuple[str, str | None]]) -> str:
        """One keyed hash of ``(field, ledger text)`` pairs, whatever their order (field names case-insensitive):
        equal exactly when the same fields hold the same values."""
        parts = sorted(f"{name.lower()}\x1e{'' if text is None else text}" for name, text in pairs)
        return self.text("\x1f".join(parts))


def _create_key(path: Path) -> None:
    """Write a new key (32 random bytes, mode 0600) to ``path`` unless another process wrote one first (then its
    key is used): one key per storage directory, beside the ledger."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # atomic, and refuses to replace a key another process created meanwhile
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(
            f"The sync ledger's key {path} cannot be created ({type(exc).__name__}: {exc}). Make the directory "
            "writable or point SFMC_PIPELINE_STORAGE elsewhere."
        ) from None
