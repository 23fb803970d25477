"""Corpora: where the text comes from, as documents per split (a list, or streamed).

``load_corpus(config.data)`` reads ``config.data.corpus``, which is one of

- ``"builtin"``: Python's own documentation (:mod:`tflm.data.builtin`), offline;
- a WikiText name (``wikitext-2``, ``wikitext-2-raw``, ``wikitext-103``,
  ``wikitext-103-raw``) or an unpacked WikiText directory (:mod:`tflm.data.wikitext`);
- a file, a directory (searched recursively) or a glob of ``.txt`` / ``.txt.gz`` files
  (one document per blank-line separated block, or per file with
  ``config.data.document_split = "file"``) or ``.jsonl`` / ``.jsonl.gz`` files (one
  document per line, the text in ``config.data.text_field``).

Splits: a directory holding ``train.*``, ``validation.*`` (or ``valid.*``) and
``test.*`` files uses those; otherwise each document goes to train / validation / test
(~90/5/5) by the SHA-1 of its text, so the split is the same in every process and
identical documents never straddle two splits.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import json
import os
from collections.abc import Callable, Iterable, Iterator

import tensorflow as tf
from absl import logging

from tflm import config as config_lib
from tflm.data import builtin, wikitext
from tflm.data.readers import (
    file_identity,
    iter_jsonl,
    iter_lines,
    iter_text_blocks,
    read_text,
)
from tflm.errors import DataError

SPLITS = ("train", "validation", "test")
# File name stems (before the first ".") of explicit split files in a directory.
SPLIT_STEMS = {"train": "train", "validation": "validation", "valid": "validation",
               "test": "test"}
TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
# Bumped when the way documents are read or split changes, to invalidate token caches.
_READER_VERSION = 1
_OPTION_KEYS = ("corpus", "corpus_format", "text_field", "document_split",
                "invalid_utf8", "download", "download_url", "cache_dir")


class Corpus:
    """Documents per split of one corpus, read lazily: kept once ``documents`` read them,
    streamed (never all in memory) by ``iter_documents``.

    Args:
        name: a short name for logs ("builtin", "wikitext-2", a file name).
        fingerprint: hex SHA-256 identifying the source and the reading options; equal
            fingerprints mean equal documents (used to key token caches).
        read: ``read(split) -> list[str]``, called at most once per split.
        stream: ``stream(split) -> Iterator[str]``, the same documents in the same order
            read a file at a time; None streams ``read``'s list.
    """

    def __init__(self, name: str, fingerprint: str, read: Callable[[str], list[str]],
                 stream: Callable[[str], Iterator[str]] | None = None):
        self.name = name
        self.fingerprint = fingerprint
        self._read = read
        self._stream = stream
        self._documents: dict[str, list[str]] = {}

    def documents(self, split: str) -> list[str]:
        """The documents (non-empty str) of ``split``, in a fixed order.

        Raises:
            DataError: ``split`` is not one of train / validation / test, the source is
                unreadable, or the split holds no documents.
        """
        if split not in SPLITS:
            raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        if split not in self._documents:
            documents = self._read(split)
            if not documents:
                raise DataError(
                    f"The {split} split of corpus '{self.name}' holds no documents; add "
                    "text (about 5% of the documents go to validation and to test) or "
                    "give train.*, validation.* and test.* files in one directory."
                )
            logging.info("Corpus %s, %s split: %d documents, %d characters.", self.name,
                         split, len(documents), sum(map(len, documents)))
            self._documents[split] = documents
        return list(self._documents[split])

    def iter_documents(self, split: str) -> Iterator[str]:
        """The documents of ``split`` as ``documents`` gives them, streamed: for the token
        cache build and tokenizer training of corpora larger than memory.

        Raises:
            DataError: as ``documents`` (an empty split raises once the stream ends).
        """
        if split not in SPLITS:
            raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        if split in self._documents or self._stream is None:
            yield from self.documents(split)
            return
        count = chars = 0
        for document in self._stream(split):
            count, chars = count + 1, chars + len(document)
            yield document
        if not count:
            self.documents(split)  # raises the empty split's DataError
        logging.info("Corpus %s, %s split (streamed): %d documents, %d characters.",
                     self.name, split, count, chars)

    def dataset(self, split: str) -> tf.data.Dataset:
        """The documents of ``split`` as a ``tf.data.Dataset`` of scalar ``tf.string``."""
        return tf.data.Dataset.from_tensor_slices(
            tf.constant(self.documents(split), dtype=tf.string))

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, fingerprint={self.fingerprint[:12]!r})"


def load_corpus(data_config) -> Corpus:
    """The corpus named by ``data_config.corpus`` (see the module docstring).

    Args:
        data_config: ``config.data`` (a ConfigDict, or any mapping; missing keys take
            the defaults of :func:`tflm.config.data_section`).

    Raises:
        DataError: the corpus is missing, cannot be downloaded, or is malformed.
    """
    opts = _options(data_config)
    source = opts["corpus"]
    if source == "builtin":
        return _builtin_corpus(opts)
    if source in wikitext.NAMES:
        directory = wikitext.locate(source, opts["cache_dir"], opts["download"],
                                    opts["download_url"])
        return _wikitext_corpus(source, directory, opts, suffix=wikitext.NAMES[source][2])
    path = os.path.expanduser(source)
    if os.path.isdir(path) and (opts["corpus_format"] == "wikitext"
                                or wikitext.split_files(path)):
        return _wikitext_corpus(os.path.basename(os.path.normpath(path)), path, opts)
    if opts["corpus_format"] == "wikitext":
        raise DataError(f"config.data.corpus_format is 'wikitext' but {source!r} is not a "
                        "directory; point config.data.corpus at the unpacked WikiText "
                        "directory (holding wiki.train.tokens) or a WikiText name.")
    return _files_corpus(path, opts)


def sample_documents(documents: Iterable[str], max_bytes: int) -> list[str]:
    """A deterministic sample of about ``max_bytes`` UTF-8 bytes, in corpus order.

    All documents when they fit (the list unchanged); else those with the smallest SHA-1
    of their text that fit (a uniform sample, the same in every process), read in one
    pass holding at most ``max_bytes`` of text. Logs the sample size.
    """
    kept, total, seen, seen_bytes = [], 0, 0, 0  # kept: max-heap of (-hash, index, doc)
    for index, document in enumerate(documents):
        size = len(document.encode("utf-8"))
        seen, seen_bytes = seen + 1, seen_bytes + size
        key = hashlib.sha1(document.encode("utf-8")).digest()
        heapq.heappush(kept, (_negate(key), index, document))
        total += size
        while total > max_bytes and kept:
            total -= len(heapq.heappop(kept)[2].encode("utf-8"))
    sample = [document for _, _, document in sorted(kept, key=lambda item: item[1])]
    logging.info("Tokenizer sample: %d of %d documents, %d of %d bytes (config.data."
                 "tokenizer_sample_bytes=%d).", len(sample), seen, total, seen_bytes,
                 max_bytes)
    return sample


def _negate(key: bytes) -> bytes:
    """A key that orders as ``key`` reversed (heapq is a min-heap: pop the largest hash)."""
    return bytes(255 - b for b in key)


def split_of(text: str) -> str:
    """The split of a document without explicit split files: ~90/5/5 by SHA-1."""
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _fingerprint(identity: dict) -> str:
    payload = json.dumps({"reader": _READER_VERSION, **identity}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _options(data_config) -> dict:
    defaults = config_lib.data_section()
    opts = {key: data_config.get(key, defaults[key]) for key in _OPTION_KEYS}
    opts["corpus"] = str(opts["corpus"])
    opts["cache_dir"] = os.path.expanduser(opts["cache_dir"])
    for key in ("corpus_format", "document_split", "invalid_utf8"):
        choices = config_lib.CHOICES[f"data.{key}"]
        if opts[key] not in choices:
            raise DataError(f"config.data.{key} = {opts[key]!r} is not one of "
                            f"{', '.join(map(repr, choices))}.")
    return opts


def _hash_split(documents: list[str]) -> dict[str, list[str]]:
    splits = {split: [] for split in SPLITS}
    for document in documents:
        splits[split_of(document)].append(document)
    return splits


def _builtin_corpus(opts: dict) -> Corpus:
    documents = builtin.builtin_documents(opts["cache_dir"])
    content = hashlib.sha256("\0".join(documents).encode("utf-8")).hexdigest()
    splits = _hash_split(documents)
    return Corpus("builtin", _fingerprint({"kind": "builtin", "content": content}),
                  lambda split: splits[split])


def _wikitext_corpus(name: str, directory: str, opts: dict,
                     suffix: str | None = None) -> Corpus:
    files = wikitext.split_files(directory, suffix)
    if not files:
        raise DataError(f"{directory} holds no wiki.train.tokens or wiki.train.raw; point "
                        "config.data.corpus at the unpacked WikiText directory.")

    def stream(split: str) -> Iterator[str]:
        yield from wikitext.iter_articles(iter_lines(files[split], opts["invalid_utf8"]))

    def read(split: str) -> list[str]:
        return list(stream(split))

    identity = {"kind": "wikitext", "files": {s: file_identity(p) for s, p in files.items()},
                "invalid_utf8": opts["invalid_utf8"]}
    return Corpus(name, _fingerprint(identity), read, stream)


def _files_corpus(path: str, opts: dict) -> Corpus:
    files = _find_files(path, opts["corpus_format"])
    explicit = _explicit_splits(path, files) if os.path.isdir(path) else None

    def read_files(paths: list[str]) -> list[str]:
        documents = []
        for file in paths:
            documents.extend(_iter_documents(file, opts))
        if not documents:
            raise DataError(f"No documents found in {path} (files: "
                            f"{', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}); "
                            "they are empty or hold only whitespace.")
        return documents

    if explicit:
        def split_files(split: str) -> list[str]:
            if split not in explicit:
                raise DataError(f"{path} has explicit split files but no {split}.* file; "
                                f"add one, or rename the split files to use the "
                                "automatic ~90/5/5 split.")
            return explicit[split]

        def read(split: str) -> list[str]:
            return read_files(split_files(split))

        def stream(split: str) -> Iterator[str]:
            for file in split_files(split):
                yield from _iter_documents(file, opts)
    else:
        read_all = {}

        def read(split: str) -> list[str]:
            if not read_all:
                read_all.update(_hash_split(read_files(files)))
            return read_all[split]

        def stream(split: str) -> Iterator[str]:
            for file in files:
                yield from (d for d in _iter_documents(file, opts) if split_of(d) == split)

    identity = {"kind": "files", "source": os.path.abspath(path),
                "files": [file_identity(f) for f in files],
                "options": {k: opts[k] for k in ("corpus_format", "text_field",
                                                 "document_split", "invalid_utf8")}}
    name = os.path.basename(os.path.normpath(path)) or path
    return Corpus(name, _fingerprint(identity), read, stream)


def _iter_documents(path: str, opts: dict) -> Iterator[str]:
    """The documents of one file, read a chunk at a time (a whole file with
    ``document_split="file"``, where the file is the document)."""
    fmt = opts["corpus_format"]
    if fmt == "jsonl" or (fmt == "auto" and path.endswith(JSONL_SUFFIXES)):
        yield from iter_jsonl(path, opts["text_field"], opts["invalid_utf8"])
    elif opts["document_split"] == "file":
        text = read_text(path, opts["invalid_utf8"]).strip()
        if text:
            yield text
    else:
        yield from iter_text_blocks(path, opts["invalid_utf8"])


def _find_files(path: str, corpus_format: str) -> list[str]:
    """The sorted files of a file, a directory (recursively) or a glob."""
    suffixes = {"text": TEXT_SUFFIXES, "jsonl": JSONL_SUFFIXES}.get(
        corpus_format, TEXT_SUFFIXES + JSONL_SUFFIXES)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(path)
            for name in names if name.endswith(suffixes) and not name.startswith("."))
        if not files:
            raise DataError(f"The directory {path} holds no {' / '.join(suffixes)} files; "
                            "add some or point config.data.corpus at the files.")
        return files
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError(f"The pattern {path!r} (config.data.corpus) matches no files.")
        return files
    raise DataError(
        f"config.data.corpus = {path!r} is not 'builtin', a WikiText name "
        f"({', '.join(wikitext.NAMES)}), nor an existing file, directory or glob; fix "
        "the path or pick one of those."
    )


def _explicit_splits(directory: str, files: list[str]) -> dict[str, list[str]] | None:
    """{split: files} from ``train.*`` / ``valid(ation).*`` / ``test.*`` at the top level."""
    splits: dict[str, list[str]] = {}
    for file in files:
        if os.path.normpath(os.path.dirname(file)) != os.path.normpath(directory):
            continue
        split = SPLIT_STEMS.get(os.path.basename(file).split(".")[0])
        if split:
            splits.setdefault(split, []).append(file)
    return splits or None
