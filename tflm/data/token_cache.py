"""Token cache: a corpus split encoded once per (corpus, tokenizer), as binary shards.

Layout of ``cache_dir/<split>-<key>/`` (``key`` hashes both fingerprints and the format):

- ``ids.bin``: int32 little-endian token ids of all documents, concatenated (no EOS added)
- ``offsets.npy``: int64, ``num_documents + 1``; document i is ``ids[offsets[i]:offsets[i+1]]``
- ``meta.json``: format version, split, corpus / tokenizer fingerprints, counts

A cache is built in a private ``.tmp-*`` directory and renamed into place, so a killed build
never leaves a directory that looks valid, and concurrent builders (e.g. one per worker)
are safe: the first rename wins and the others reuse its result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Protocol

import keras
import numpy as np
from absl import logging

from tflm.errors import DataError

FORMAT_VERSION = 1
IDS_FILE = "ids.bin"
OFFSETS_FILE = "offsets.npy"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
_BATCH = 1000  # documents per encode call


class _Corpus(Protocol):
    fingerprint: str

    def documents(self, split: str) -> list[str]: ...


class _Encoder(Protocol):
    fingerprint: str

    def encode(self, texts: list[str]) -> list[list[int]]: ...


class TokenCache:
    """A built token cache (see the module docstring), read-only.

    Attributes:
        ids: int32 (num_tokens,), memory-mapped from ``ids.bin``.
        offsets: int64 (num_documents + 1,).
        meta: the parsed ``meta.json``.
        path: the cache directory.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
                self.meta = json.load(f)
            self.offsets = np.load(os.path.join(path, OFFSETS_FILE))
            num_tokens = int(self.meta["num_tokens"])
            if num_tokens:
                self.ids = np.memmap(
                    os.path.join(path, IDS_FILE), dtype="<i4", mode="r", shape=(num_tokens,)
                )
            else:
                self.ids = np.zeros((0,), np.int32)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(
                f"token cache {path} is unreadable ({e!r}); delete the directory and it "
                "will be rebuilt"
            ) from e
        if len(self.offsets) != self.num_documents + 1 or self.offsets[-1] != num_tokens:
            raise DataError(
                f"token cache {path} is inconsistent (offsets vs meta.json); delete the "
                "directory and it will be rebuilt"
            )

    @property
    def num_tokens(self) -> int:
        return int(self.meta["num_tokens"])

    @property
    def num_documents(self) -> int:
        return int(self.meta["num_documents"])

    def document(self, i: int) -> np.ndarray:
        """Token ids (int32) of document ``i``."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range [0, {self.num_documents})")
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __repr__(self) -> str:
        return (
            f"TokenCache({self.path!r}, num_documents={self.num_documents}, "
            f"num_tokens={self.num_tokens})"
        )


def cache_path(corpus: _Corpus, split: str, tokenizer: _Encoder, cache_dir: str) -> str:
    """The directory ``build_token_cache`` uses for this (corpus, split, tokenizer)."""
    key = hashlib.sha256(
        json.dumps(
            [FORMAT_VERSION, str(corpus.fingerprint), split, str(tokenizer.fingerprint)]
        ).encode("utf-8")
    ).hexdigest()[:20]
    return os.path.join(os.path.expanduser(cache_dir), f"{split}-{key}")


def build_token_cache(
    corpus: _Corpus, split: str, tokenizer: _Encoder, cache_dir: str
) -> TokenCache:
    """Encodes ``corpus.documents(split)`` with ``tokenizer.encode``, or reuses the cache.

    Args:
        corpus: has ``documents(split) -> list[str]`` and a ``fingerprint`` string.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        tokenizer: has ``encode(list[str]) -> list[list[int]]`` and ``fingerprint``.
        cache_dir: parent directory of the caches (created if missing).
    Returns:
        The ``TokenCache``; built only when no cache for both fingerprints exists.
    Raises:
        DataError: the split has no documents, or a cache directory is unreadable.
    """
    path = cache_path(corpus, split, tokenizer, cache_dir)
    if os.path.isdir(path):
        logging.info("reusing token cache %s", path)
        return TokenCache(path)
    documents = corpus.documents(split)
    if not documents:
        raise DataError(
            f"corpus split {split!r} has no documents, so there is nothing to cache; "
            "check config.data (paths, split fractions)"
        )
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(path)}-", dir=parent)
    try:
        _write(tmp, documents, split, corpus, tokenizer)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isdir(path):
                raise
            logging.info("another process built %s first; reusing it", path)
        else:
            logging.info("built token cache %s", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenCache(path)


def _write(tmp: str, documents, split, corpus, tokenizer) -> None:
    """Encodes ``documents`` in batches into ``tmp`` (ids, offsets, then meta)."""
    offsets = np.zeros(len(documents) + 1, np.int64)
    progress = _Progress(len(documents), f"tokenizing {split}")
    with open(os.path.join(tmp, IDS_FILE), "wb") as f:
        for start in range(0, len(documents), _BATCH):
            batch = tokenizer.encode(documents[start : start + _BATCH])
            lengths = [len(ids) for ids in batch]
            flat = np.fromiter(
                (i for ids in batch for i in ids), dtype="<i4", count=sum(lengths)
            )
            f.write(flat.tobytes())
            offsets[start + 1 : start + 1 + len(batch)] = lengths
            progress.update(start + len(batch))
        f.flush()
        os.fsync(f.fileno())
    np.cumsum(offsets, out=offsets)
    np.save(os.path.join(tmp, OFFSETS_FILE), offsets)
    meta = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "corpus_fingerprint": str(corpus.fingerprint),
        "tokenizer_fingerprint": str(tokenizer.fingerprint),
        "num_documents": len(documents),
        "num_tokens": int(offsets[-1]),
        "dtype": "int32",
    }
    with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)


class _Progress:
    """Keras' progress bar on a terminal, else a log line every ~10%."""

    def __init__(self, total: int, title: str):
        self.total, self.title, self._next_log = total, title, 0
        self._bar = None
        if sys.stderr.isatty() and total > _BATCH:
            self._bar = keras.utils.Progbar(total, unit_name="document")

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)
        elif done >= self._next_log or done == self.total:
            logging.info("%s: %d / %d documents", self.title, done, self.total)
            self._next_log = done + max(1, self.total // 10)
