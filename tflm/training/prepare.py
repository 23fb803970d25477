"""Data preparation of a run: its resolved config, then corpus -> tokenizer -> token
caches, all cached on disk.

``resolve_config`` settles what a run takes from outside its config file before anything
is written: with ``config.init_from`` (a model directory) the backbone's architecture
and the tokenizer are the directory's, and the objective's ``configure`` hook fills
what its data decide (a classifier's labels).

The tokenizer is loaded from ``config.data.tokenizer_dir`` when it is set; otherwise it
is trained on the corpus' train split with ``config.data.tokenizer`` and
``config.model.backbone.vocabulary_size`` and kept under
``<cache_dir>/tokenizers/<kind>-<vocabulary_size>-<key>/``, ``key`` hashing the corpus
fingerprint, kind, size and ``lowercase``, so a second run (or worker) reuses it. Token
caches are kept under ``<cache_dir>/tokens/`` (see ``tflm.data.token_cache``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

from absl import logging

from tflm import config as config_lib
from tflm.data import load_corpus
from tflm.data.corpus import Corpus, sample_documents
from tflm.data.token_cache import TokenCache, build_token_cache
from tflm.errors import ConfigError, DataError
from tflm.models.tasks import check_special_tokens, get_objective
from tflm.text import Tokenizer, check_vocabulary, load_tokenizer, train_tokenizer

SPLITS = ("train", "validation")
# Backbone arguments a fine-tuning run may set itself: they hold no weights.
FREE_BACKBONE_KEYS = ("dropout", "pooling")


@dataclasses.dataclass
class Prepared:
    """What a run reads: the corpus, its tokenizer and a token cache per split."""

    corpus: Corpus | None
    tokenizer: Tokenizer
    caches: dict[str, TokenCache]


def cache_root(data_config) -> str:
    """``config.data.cache_dir`` with ``~`` expanded."""
    return os.path.expanduser(data_config.cache_dir)


def tokenizer_dir(config, corpus: Corpus) -> str:
    """Where the tokenizer trained for (corpus, kind, vocabulary size) is cached."""
    d = config.data
    key = hashlib.sha256(json.dumps(
        [corpus.fingerprint, d.tokenizer, config.model.backbone.vocabulary_size, d.lowercase]
    ).encode("utf-8")).hexdigest()[:16]
    name = f"{d.tokenizer}-{config.model.backbone.vocabulary_size}-{key}"
    return os.path.join(cache_root(d), "tokenizers", name)


def _init_from(config, defaults) -> dict:
    """The ``"section.key": value`` updates that ``config.init_from`` implies.

    The directory's backbone arguments replace the config's, except ``dropout`` and
    ``pooling``; a shape the config sets to another value than both the default and the
    directory's is a conflict. The tokenizer is the directory's.
    """
    from tflm.model_dir import TOKENIZER_DIR, read_model_config

    path = os.path.abspath(os.path.expanduser(config.init_from))
    source = read_model_config(path).model.backbone.to_dict()
    updates = {}
    for key, value in source.items():
        mine = config.model.backbone[key]
        if key in FREE_BACKBONE_KEYS:
            continue
        if mine != value and mine != defaults.model.backbone[key]:
            raise ConfigError(
                f"config.model.backbone.{key} = {mine!r}, but config.init_from={path!r} "
                f"holds a model with {key}={value!r}: a pre-trained model's architecture is "
                "fixed. Remove the override, or train from scratch without init_from."
            )
        updates[f"model.backbone.{key}"] = value
    tokenizer = os.path.join(path, TOKENIZER_DIR)
    given = config.data.tokenizer_dir
    if given and os.path.abspath(os.path.expanduser(given)) != tokenizer:
        raise ConfigError(
            f"config.data.tokenizer_dir={given!r} and config.init_from={path!r}: a model "
            "directory is fine-tuned with its own tokenizer (its token ids are what the "
            "weights learned); remove config.data.tokenizer_dir."
        )
    updates["data.tokenizer_dir"] = tokenizer
    updates["data.tokenizer"] = load_tokenizer(tokenizer).kind
    updates["init_from"] = path
    return updates


def resolve_config(config):
    """``config`` with what ``init_from`` and the objective's data decide filled in.

    Idempotent: resolving a resolved config changes nothing, so a resumed run compares
    equal to the config it wrote.

    Raises:
        ConfigError: a conflict with ``init_from``'s architecture or tokenizer (naming
            the key), or what ``validate`` raises for the resolved config (e.g. a causal
            model directory for a bidirectional objective).
        ModelDirError: ``init_from`` is not a model directory.
    """
    objective = get_objective(config.train.objective)
    updates = {}
    if config.init_from:
        updates.update(_init_from(config, config_lib.base_config(objective.name)))
    hook = objective.resolve("configure")
    values = config_lib.config_to_dict(config)
    for path, value in updates.items():
        _set_path(values, path, value)
    try:
        resolved = config_lib.config_from_dict(values)
        if hook:
            for path, value in hook(resolved).items():
                _set_path(values, path, value)
            resolved = config_lib.config_from_dict(values)
    except ConfigError as e:
        if not config.init_from:
            raise
        raise ConfigError(f"with config.init_from={config.init_from!r}: {e}") from e
    return resolved


def _set_path(values: dict, path: str, value) -> None:
    *parents, key = path.split(".")
    for parent in parents:
        values = values[parent]
    values[key] = list(value) if isinstance(value, tuple) else value


def get_tokenizer(config, corpus: Corpus | None) -> Tokenizer:
    """The run's tokenizer: loaded, or trained once and cached (see module docstring).

    Raises:
        TokenizerError: it cannot be trained / loaded, or its size is not
            ``config.model.backbone.vocabulary_size``.
        ConfigError: it lacks a special token the objective needs.
    """
    if config.data.tokenizer_dir:
        tokenizer = load_tokenizer(os.path.expanduser(config.data.tokenizer_dir))
    elif corpus is None:
        raise ConfigError(
            f"objective {config.train.objective!r} reads no corpus to train a tokenizer "
            "on: set config.init_from=MODEL_DIR (fine-tuning uses the directory's "
            "tokenizer) or config.data.tokenizer_dir=DIR."
        )
    else:
        path = tokenizer_dir(config, corpus)
        if not os.path.isdir(path):
            logging.info("Training a %s tokenizer of %d tokens on %s.", config.data.tokenizer,
                         config.model.backbone.vocabulary_size, corpus.name)
            sample = sample_documents(corpus.iter_documents("train"),
                                      config.data.tokenizer_sample_bytes)
            trained = train_tokenizer(config.data.tokenizer, sample,
                                      config.model.backbone.vocabulary_size,
                                      lowercase=config.data.lowercase)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(path))
            try:
                trained.save(tmp)
                os.rename(tmp, path)
            except OSError:
                if not os.path.isdir(path):  # else another process saved it first
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = load_tokenizer(path)
    check_vocabulary(tokenizer, config.model.backbone.vocabulary_size)
    where = (f"the tokenizer in config.data.tokenizer_dir={config.data.tokenizer_dir!r}"
             if config.data.tokenizer_dir else f"config.data.tokenizer={config.data.tokenizer!r}")
    check_special_tokens(get_objective(config.train.objective), tokenizer.special_ids, where)
    return tokenizer


def prepare(config, splits=SPLITS) -> Prepared:
    """Loads the corpus, gets the tokenizer and builds (or reuses) the token caches.

    An objective without a corpus (``Objective.corpus`` False: it reads its own files)
    gets only the tokenizer and no caches.

    Args:
        config: the run's validated config; reads ``config.data`` and
            ``config.model.backbone.vocabulary_size``.
        splits: the splits to cache.

    Raises:
        DataError: the corpus is missing or a split is empty.
        TokenizerError: see :func:`get_tokenizer`.
    """
    if not get_objective(config.train.objective).corpus:
        return Prepared(None, get_tokenizer(config, None), {})
    corpus = load_corpus(config.data)
    tokenizer = get_tokenizer(config, corpus)
    tokens_dir = os.path.join(cache_root(config.data), "tokens")
    caches = {split: build_token_cache(corpus, split, tokenizer, tokens_dir,
                                       shard_tokens=config.data.cache_shard_tokens)
              for split in splits}
    return Prepared(corpus, tokenizer, caches)


def build_tokenizer(corpus: str, kind: str, vocabulary_size: int, out: str,
                    lowercase: bool = False, encode: bool = False,
                    cache_dir: str | None = None) -> dict:
    """``tflm tokenizer``: trains a tokenizer on a corpus' train split and saves it to ``out``.

    With ``encode``, also builds the token cache of every split under
    ``<cache_dir>/tokens`` (default: ``config.data.cache_dir``), where a run with
    ``--config.data.tokenizer_dir=<out>`` and the same ``cache_dir`` finds it.

    Returns:
        What was built: the tokenizer directory, its size and fingerprint, and the token
        count of each encoded split.

    Raises:
        ConfigError: an unknown ``kind``.
        DataError: the corpus is missing or empty.
        TokenizerError: the tokenizer cannot be trained on it.
    """
    kinds = config_lib.CHOICES["data.tokenizer"]
    if kind not in kinds:
        raise ConfigError(f"tokenizer kind {kind!r} is not one of {', '.join(kinds)}.")
    data = config_lib.data_section()
    data.update(corpus=corpus, tokenizer=kind, lowercase=lowercase)
    if cache_dir:
        data.cache_dir = cache_dir
    source = load_corpus(data)
    sample = sample_documents(source.iter_documents("train"), data.tokenizer_sample_bytes)
    tokenizer = train_tokenizer(kind, sample, vocabulary_size,
                                lowercase=lowercase)
    tokenizer.save(out)
    report = {"tokenizer_dir": os.path.abspath(out), "kind": kind, "corpus": source.name,
              "vocabulary_size": tokenizer.vocabulary_size,
              "fingerprint": tokenizer.fingerprint}
    if encode:
        tokens_dir = os.path.join(cache_root(data), "tokens")
        saved = load_tokenizer(out)
        report["token_caches"] = {}
        for split in ("train", "validation", "test"):
            try:
                cache = build_token_cache(source, split, saved, tokens_dir,
                                          shard_tokens=data.cache_shard_tokens)
            except DataError as e:
                if split == "train":
                    raise
                report["token_caches"][split] = f"not built: {e}"
                continue
            report["token_caches"][split] = {"path": cache.path, "tokens": cache.num_tokens,
                                             "documents": cache.num_documents}
    return report
