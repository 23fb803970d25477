"""Token cache: a corpus split encoded once per (corpus, tokenizer), as binary shards.

Layout of ``cache_dir/<split>-<key>/`` (``key`` hashes both fingerprints and the format):

- ``ids-00000.bin``, ``ids-00001.bin``, ...: int32 little-endian token ids of all
  documents, concatenated (no EOS added), cut into shards of ``shard_tokens`` tokens (the
  last one shorter; a document may continue in the next shard)
- ``offsets.npy``: int64, ``num_documents + 1``; document i is ``ids[offsets[i]:offsets[i+1]]``
- ``meta.json``: format version, split, corpus / tokenizer fingerprints, counts, and the
  index of the shards (file and token count of each)

The build streams the split's documents in chunks (bounded memory: a few chunks in
flight), encodes them on every core (worker processes, each loading the tokenizer) and
appends them to the shards in order, so the ids do not depend on the shard size or the
number of workers. A cache is built in a private ``.tmp-*`` directory and renamed into
place, so a killed build never leaves a directory that looks valid (a new build starts
over in its own directory), and concurrent builders (e.g. one per worker) are safe: the
first rename wins and the others reuse its result.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

import keras
import numpy as np
from absl import logging

from tflm.errors import DataError
from tflm.quiet import quiet, stderr_to_devnull

FORMAT_VERSION = 2
SHARD_FILE = "ids-{:05d}.bin"
OFFSETS_FILE = "offsets.npy"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
SHARD_TOKENS = 2**26  # 256 MB of int32 per shard
CHUNK_DOCUMENTS = 20000  # documents per encode call (and per worker task); a small
# corpus (the built-in one: 3k documents, 1.3M characters) is one chunk, encoded in-process
# without paying for worker start-up (each imports TensorFlow)
CHUNK_CHARS = 2**23  # ... or fewer, when they hold more characters than this


class _Corpus(Protocol):
    fingerprint: str

    def documents(self, split: str) -> list[str]: ...


class _Encoder(Protocol):
    fingerprint: str

    def encode(self, texts: list[str]) -> list[list[int]]: ...


class ShardFile:
    """One shard file of int32 little-endian ids, read with ``os.pread`` (never mapped:
    a mapping would keep every page a batch touched, and the kernel's read-around of each
    fault, resident in this process, so its RSS would grow with the corpus).

    Supports ``len`` and ``shard[a:b]`` (a new int32 array). The file stays open while
    the object lives.
    """

    def __init__(self, file: str, num_tokens: int):
        self.file, self.num_tokens = file, num_tokens
        self._fd = os.open(file, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.num_tokens

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.num_tokens)
        out = np.empty(max(stop - start, 0), "<i4")
        if len(out):
            got = os.preadv(self._fd, [memoryview(out).cast("B")], 4 * start)
            if got != out.nbytes:
                raise DataError(
                    f"token cache shard {self.file} is shorter than its index says; delete "
                    "the cache directory and it will be rebuilt"
                )
        return out.astype(np.int32, copy=False)


class ShardedIds:
    """The token ids of a cache's shards as one read-only int32 array-like.

    ``shards`` are anything sliceable to int32 arrays (``ShardFile``, arrays). Supports
    ``len``, ``shape``, ``ndim``, ``dtype``, ``ids[i]``, ``ids[a:b]`` and ``ids[int
    array]``, each reading only what it returns (an index array is read as its runs of
    consecutive positions: a block of a batch is one read); ``np.asarray(ids)`` reads
    all. ``lazy_view`` tells the pipelines not to copy it.
    """

    lazy_view = True
    dtype = np.dtype(np.int32)
    ndim = 1

    def __init__(self, shards: list):
        self.shards = shards
        sizes = [len(s) for s in shards]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # (S + 1,)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def _range(self, start: int, stop: int) -> np.ndarray:
        """int32 ids ``[start, stop)``, ``0 <= start <= stop <= len``."""
        if stop <= start:
            return np.zeros((0,), np.int32)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        if stop <= self.starts[first + 1]:
            base = self.starts[first]
            return np.asarray(self.shards[first][start - base : stop - base], np.int32)
        parts, position, shard = [], start, first
        while position < stop:
            base, end = self.starts[shard], min(stop, self.starts[shard + 1])
            parts.append(np.asarray(self.shards[shard][position - base : end - base], np.int32))
            position, shard = end, shard + 1
        return np.concatenate(parts)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self._range(start, stop)
        if np.ndim(key) == 0:
            position = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {key} out of range [0, {len(self)})")
            return self._range(position, position + 1)[0]
        positions = np.asarray(key, np.int64)
        flat = positions.reshape(-1)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token positions out of range [0, {len(self)})")
        out = np.empty(flat.shape, np.int32)
        cuts = np.flatnonzero(np.diff(flat) != 1) + 1  # where a run of +1 steps breaks
        for a, b in zip([0, *cuts], [*cuts, len(flat)]) if len(flat) else ():
            out[a:b] = self._range(int(flat[a]), int(flat[a]) + b - a)
        return out.reshape(positions.shape)

    def __array__(self, dtype=None, copy=None):
        whole = self._range(0, len(self))
        return whole if dtype is None else whole.astype(dtype)


class TokenCache:
    """A built token cache (see the module docstring), read-only.

    Attributes:
        ids: int32 (num_tokens,): a ``ShardedIds`` view over the shard files (read on
            demand, nothing held in memory).
        offsets: int64 (num_documents + 1,), memory-mapped (read-only).
        meta: the parsed ``meta.json``.
        path: the cache directory.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
                self.meta = json.load(f)
            self.offsets = np.load(os.path.join(path, OFFSETS_FILE), mmap_mode="r")
            shards = [self._open(s["file"], int(s["num_tokens"])) for s in self.meta["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"token cache {path} is unreadable ({e!r}); delete the directory and it "
                "will be rebuilt"
            ) from e
        self.ids = ShardedIds([s for s in shards if len(s)])
        num_tokens = self.num_tokens
        if (
            len(self.offsets) != self.num_documents + 1
            or self.offsets[-1] != num_tokens
            or len(self.ids) != num_tokens
        ):
            raise DataError(
                f"token cache {path} is inconsistent (offsets, shards vs meta.json); delete "
                "the directory and it will be rebuilt"
            )

    def _open(self, name: str, num_tokens: int) -> ShardFile:
        """The shard ``name`` of ``num_tokens`` ids (checked against its size)."""
        file = os.path.join(self.path, os.path.basename(name))
        if os.path.getsize(file) != 4 * num_tokens:
            raise ValueError(f"{file} holds {os.path.getsize(file)} bytes, not 4 * {num_tokens}")
        return ShardFile(file, num_tokens)

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
    corpus: _Corpus,
    split: str,
    tokenizer: _Encoder,
    cache_dir: str,
    *,
    shard_tokens: int = SHARD_TOKENS,
    workers: int = 0,
    chunk_documents: int = CHUNK_DOCUMENTS,
) -> TokenCache:
    """Encodes the documents of ``split`` with ``tokenizer.encode``, or reuses the cache.

    Args:
        corpus: has ``iter_documents(split)`` (an iterator; else ``documents(split)``, a
            list) and a ``fingerprint`` string.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        tokenizer: has ``encode(list[str]) -> list[list[int]]`` and ``fingerprint``; a
            ``tflm.text`` Tokenizer (one with ``save``) is also run in worker processes.
        cache_dir: parent directory of the caches (created if missing).
        shard_tokens: most token ids per shard file (``config.data.cache_shard_tokens``).
        workers: encoding processes; 0 = one per core. Only a split of more than one
            chunk starts them; 1 encodes in this process.
        chunk_documents: documents per encode call (fewer when they exceed
            ``CHUNK_CHARS`` characters).
    Returns:
        The ``TokenCache``; built only when no cache for both fingerprints exists. The
        ids do not depend on ``shard_tokens``, ``workers`` or ``chunk_documents``.
    Raises:
        DataError: the split has no documents, or a cache directory is unreadable.
    """
    if shard_tokens < 1 or chunk_documents < 1:
        raise DataError(
            f"shard_tokens and chunk_documents must be >= 1, got {shard_tokens} and "
            f"{chunk_documents}; check config.data.cache_shard_tokens."
        )
    path = cache_path(corpus, split, tokenizer, cache_dir)
    if os.path.isdir(path):
        logging.info("reusing token cache %s", path)
        return TokenCache(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(path)}-", dir=parent)
    try:
        chunks = _chunks(_iter_documents(corpus, split), chunk_documents)
        meta = _write(tmp, _encoded(chunks, tokenizer, workers or os.cpu_count() or 1),
                      shard_tokens, split)
        if not meta["num_documents"]:
            raise DataError(
                f"corpus split {split!r} has no documents, so there is nothing to cache; "
                "check config.data (paths, split fractions)"
            )
        meta.update(corpus_fingerprint=str(corpus.fingerprint),
                    tokenizer_fingerprint=str(tokenizer.fingerprint))
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.isdir(path):
                raise
            logging.info("another process built %s first; reusing it", path)
        else:
            logging.info("built token cache %s (%d tokens, %d shards)", path,
                         meta["num_tokens"], len(meta["shards"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenCache(path)


def _iter_documents(corpus, split: str) -> Iterator[str]:
    """The documents of ``split``: streamed when the corpus can, else its list."""
    stream = getattr(corpus, "iter_documents", None)
    return iter(stream(split) if stream is not None else corpus.documents(split))


def _chunks(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of at most ``size`` documents and about ``CHUNK_CHARS`` characters."""
    chunk, chars = [], 0
    for document in documents:
        chunk.append(document)
        chars += len(document)
        if len(chunk) >= size or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _encode(tokenizer, documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32 (tokens,), lengths int64 (documents,))`` of one chunk."""
    batch = tokenizer.encode(documents)
    lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
    flat = np.fromiter(itertools.chain.from_iterable(batch), dtype="<i4", count=lengths.sum())
    return flat, lengths


_worker_tokenizer = None


def _start_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    from tflm.text import load_tokenizer

    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _encode_in_worker(documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode(_worker_tokenizer, documents)


def _encoded(chunks: Iterator[list[str]], tokenizer, workers: int):
    """``_encode`` of every chunk, in order: in this process for one worker, one chunk, or
    a tokenizer that cannot be saved; else in ``workers`` spawned processes with at most
    ``2 * workers`` chunks in flight (bounded memory)."""
    first = next(chunks, None)
    second = next(chunks, None) if first is not None else None
    if second is None or workers <= 1 or not hasattr(tokenizer, "save"):
        for chunk in itertools.chain([first] if first is not None else [],
                                     [second] if second is not None else [], chunks):
            yield _encode(tokenizer, chunk)
        return
    tokenizer_dir = tempfile.mkdtemp(prefix=TMP_PREFIX + "tokenizer-")
    try:
        home = tokenizer.directory
        tokenizer.save(tokenizer_dir)  # a copy for the workers, deleted below:
        tokenizer.directory = home  # the tokenizer still lives where it was loaded
        context = multiprocessing.get_context("spawn")  # TF is not fork-safe
        # Workers import TensorFlow again: its C++ lines stay off a quiet terminal (their
        # errors still reach this process as exceptions).
        with stderr_to_devnull(quiet()):
            pool = context.Pool(workers, _start_worker, (tokenizer_dir,))
        with pool:
            pending = collections.deque()
            for chunk in itertools.chain([first, second], chunks):
                pending.append(pool.apply_async(_encode_in_worker, (chunk,)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        shutil.rmtree(tokenizer_dir, ignore_errors=True)


def _write(tmp: str, encoded, shard_tokens: int, split: str) -> dict:
    """Appends the encoded chunks to shards of ``shard_tokens`` ids in ``tmp``, then the
    offsets; returns the meta (counts and the shard index)."""
    lengths, shards, shard = [], [], None
    progress = _Progress(f"tokenizing {split}")
    try:
        for flat, chunk_lengths in encoded:
            lengths.append(chunk_lengths)
            while len(flat) or shard is None:
                if shard is None or shards[-1]["num_tokens"] == shard_tokens:
                    if shard is not None:
                        _close(shard)
                    shards.append({"file": SHARD_FILE.format(len(shards)), "num_tokens": 0})
                    shard = open(os.path.join(tmp, shards[-1]["file"]), "wb")
                room = shard_tokens - shards[-1]["num_tokens"]
                shard.write(flat[:room].tobytes())
                shards[-1]["num_tokens"] += len(flat[:room])
                flat = flat[room:]
            progress.update(len(chunk_lengths), int(chunk_lengths.sum()))
    finally:
        if shard is not None:
            _close(shard)
    offsets = np.concatenate([[0], *lengths]).astype(np.int64)
    np.cumsum(offsets, out=offsets)
    np.save(os.path.join(tmp, OFFSETS_FILE), offsets)
    progress.done()
    return {
        "format_version": FORMAT_VERSION,
        "split": split,
        "num_documents": len(offsets) - 1,
        "num_tokens": int(offsets[-1]),
        "dtype": "int32",
        "shard_tokens": shard_tokens,
        "shards": shards,
    }


def _close(f) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


class _Progress:
    """Keras' progress bar (documents, tokens) on a terminal, else a log line every 30 s."""

    def __init__(self, title: str):
        self.title, self.documents, self.tokens = title, 0, 0
        self._start = self._last_log = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            self._bar = keras.utils.Progbar(
                None, unit_name="document", stateful_metrics=["tokens"])

    def update(self, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens
        if self._bar is not None:
            self._bar.update(self.documents, [("tokens", self.tokens)])
        elif time.monotonic() - self._last_log >= 30:
            self._log()

    def done(self) -> None:
        self._log()

    def _log(self) -> None:
        self._last_log = time.monotonic()
        seconds = max(self._last_log - self._start, 1e-9)
        logging.info("%s: %d documents, %d tokens (%.0f tokens/s)", self.title,
                     self.documents, self.tokens, self.tokens / seconds)
