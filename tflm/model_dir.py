"""The model directory: the unit a trained model is passed around as.

Layout of ``<path>/``:

- ``config.json``: the run's config (``tflm.config.save_config``); ``config.model`` is the
  constructor of the task model, ``config.train.objective`` names its class.
- ``model.weights.h5``: the task model's weights (``keras.Model.save_weights``).
- ``tokenizer/``: the tokenizer's assets (``Tokenizer.save``).

A directory is written next to its final place and renamed into it, so a reader never
sees a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras

from tflm import config as config_lib
from tflm.errors import ConfigError, ModelDirError
from tflm.models import GPT
from tflm.text import Tokenizer, check_vocabulary, load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_DIR = "tokenizer"

# config.train.objective -> the task model class built from config.model.
TASK_MODELS = {"causal_lm": GPT}


def build_model(config) -> keras.Model:
    """The (untrained) task model of ``config``: ``TASK_MODELS[objective](**config.model)``."""
    cls = TASK_MODELS.get(config.train.objective)
    if cls is None:
        raise ConfigError(
            f"config.train.objective = {config.train.objective!r} has no task model; "
            f"use one of {', '.join(map(repr, TASK_MODELS))}."
        )
    return cls(**config.model)


def save_model_dir(path: str, model: keras.Model, tokenizer: Tokenizer, config) -> str:
    """Writes ``model``, ``tokenizer`` and ``config`` as a model directory at ``path``.

    An existing directory at ``path`` is replaced.

    Args:
        path: the directory to write.
        model: the built task model (``GPT``), matching ``config.model``.
        tokenizer: the tokenizer the model was trained with.
        config: the run's validated config.

    Returns:
        ``path``.
    """
    path = os.path.abspath(os.path.expanduser(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        config_lib.save_config(config, os.path.join(tmp, CONFIG_FILE))
        model.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        tokenizer.save(os.path.join(tmp, TOKENIZER_DIR))
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model_dir(path: str) -> tuple[keras.Model, Tokenizer, object]:
    """Reads a model directory written by :func:`save_model_dir`.

    The model is built with the current Keras dtype policy (float32 by default).

    Returns:
        ``(model, tokenizer, config)``.

    Raises:
        ModelDirError: ``path`` is not a directory, misses a file, or its config or
            weights are unreadable or do not fit each other.
        TokenizerError: the tokenizer's vocabulary size differs from
            ``config.model.vocabulary_size``.
    """
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise ModelDirError(
            f"model directory '{path}' does not exist; pass the model/ folder of a "
            "finished run (e.g. runs/gpt_mini/model)."
        )
    expected = (CONFIG_FILE, WEIGHTS_FILE, os.path.join(TOKENIZER_DIR, "tokenizer.json"))
    missing = [name for name in expected if not os.path.exists(os.path.join(path, name))]
    if missing:
        raise ModelDirError(
            f"model directory '{path}' is incomplete: {', '.join(missing)} missing. It "
            f"must hold {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/; copy the whole "
            "directory, or rerun the training that writes it."
        )
    try:
        config = config_lib.read_config(os.path.join(path, CONFIG_FILE))
    except ConfigError as e:
        raise ModelDirError(f"model directory '{path}' has an unusable {CONFIG_FILE}: {e}") from e
    tokenizer = load_tokenizer(os.path.join(path, TOKENIZER_DIR))
    check_vocabulary(tokenizer, config.model.vocabulary_size)
    model = build_model(config)
    try:
        model.load_weights(os.path.join(path, WEIGHTS_FILE))
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"{os.path.join(path, WEIGHTS_FILE)} cannot be loaded into the model of "
            f"{CONFIG_FILE} ({e}); the files come from different runs or the weights "
            "file is damaged: copy the directory again from the run."
        ) from e
    return model, tokenizer, config
