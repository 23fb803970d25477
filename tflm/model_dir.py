"""The model directory: the unit a trained model is passed around as.

Layout of ``<path>/``:

- ``config.json``: the run's config (``tflm.config.save_config``); ``config.train.objective``
  names the task (``tflm.models.tasks``), ``config.model`` holds its constructor
  arguments (``config.model.backbone`` the backbone's).
- ``model.weights.h5``: the task model's weights (``keras.Model.save_weights``).
- ``backbone.weights.h5``: the backbone's weights on their own, for starting another task
  from this pre-trained backbone (:func:`load_backbone`).
- ``tokenizer/``: the tokenizer's assets (``Tokenizer.save``).
- ``labels.json``: a classifier's class names in index order (a copy of
  ``config.model.labels`` for tools that read no config).

A directory is written next to its final place and renamed into it, so a reader never
sees a half-written one. Directories written before ``backbone.weights.h5`` and
``config.model.backbone`` existed still load (the config is converted on read, the
backbone is taken from the task's weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import keras

from tflm import config as config_lib
from tflm.errors import ConfigError, ModelDirError
from tflm.models import TransformerBackbone
from tflm.models.tasks import get_objective
from tflm.text import Tokenizer, check_vocabulary, load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
BACKBONE_WEIGHTS_FILE = "backbone.weights.h5"
TOKENIZER_DIR = "tokenizer"
LABELS_FILE = "labels.json"


@dataclasses.dataclass
class LoadedModel:
    """What ``tflm.load`` returns for an objective without an interface of its own."""

    model: keras.Model
    tokenizer: Tokenizer
    config: object


def head_arguments(config) -> dict:
    """``config.model`` without ``backbone``: the task's head arguments."""
    return {k: v for k, v in config_lib.config_to_dict(config)["model"].items()
            if k != "backbone"}


def build_model(config, backbone: TransformerBackbone | None = None) -> keras.Model:
    """The task model of ``config``: ``Task(backbone=..., **head)``.

    Args:
        config: a validated config; ``config.train.objective`` picks the task.
        backbone: a (pre-trained) backbone to build the task on; default a new
            ``TransformerBackbone(**config.model.backbone)``.

    Raises:
        ConfigError: unknown objective, or a backbone the task cannot use.
    """
    objective = get_objective(config.train.objective)
    if backbone is None:
        backbone = TransformerBackbone(**config.model.backbone.to_dict(), name="backbone")
    return objective.task(backbone=backbone, **head_arguments(config))


def save_model_dir(path: str, model: keras.Model, tokenizer: Tokenizer, config) -> str:
    """Writes ``model``, ``tokenizer`` and ``config`` as a model directory at ``path``.

    An existing directory at ``path`` is replaced.

    Args:
        path: the directory to write.
        model: the built task model, matching ``config.model``.
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
        model.backbone.save_weights(os.path.join(tmp, BACKBONE_WEIGHTS_FILE))
        tokenizer.save(os.path.join(tmp, TOKENIZER_DIR))
        if getattr(model, "labels", None):
            with open(os.path.join(tmp, LABELS_FILE), "w", encoding="utf-8") as f:
                json.dump(list(model.labels), f, ensure_ascii=False, indent=1)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _check_dir(path: str, files: tuple[str, ...]) -> None:
    if not os.path.isdir(path):
        raise ModelDirError(
            f"model directory '{path}' does not exist; pass the model/ folder of a "
            "finished run (e.g. runs/gpt_mini/model)."
        )
    missing = [name for name in files if not os.path.exists(os.path.join(path, name))]
    if missing:
        raise ModelDirError(
            f"model directory '{path}' is incomplete: {', '.join(missing)} missing. It "
            f"must hold {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/; copy the whole "
            "directory, or rerun the training that writes it."
        )


def read_model_config(path: str):
    """The validated config of the model directory ``path`` (a flat one converted).

    Raises:
        ModelDirError: missing or unusable ``config.json``.
    """
    path = os.path.expanduser(path)
    _check_dir(path, (CONFIG_FILE,))
    try:
        return config_lib.read_config(os.path.join(path, CONFIG_FILE))
    except ConfigError as e:
        raise ModelDirError(f"model directory '{path}' has an unusable {CONFIG_FILE}: {e}") from e


def _load_weights(model: keras.Model, weights: str) -> None:
    try:
        model.load_weights(weights)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"{weights} cannot be loaded into the model of {CONFIG_FILE} ({e}); the files "
            "come from different runs or the weights file is damaged: copy the directory "
            "again from the run."
        ) from e


def load_model_dir(path: str) -> tuple[keras.Model, Tokenizer, object]:
    """Reads a model directory written by :func:`save_model_dir`.

    The model is built with the current Keras dtype policy (float32 by default).

    Returns:
        ``(model, tokenizer, config)``.

    Raises:
        ModelDirError: ``path`` is not a directory, misses a file, or its config or
            weights are unreadable or do not fit each other.
        TokenizerError: the tokenizer's vocabulary size differs from
            ``config.model.backbone.vocabulary_size``.
    """
    path = os.path.expanduser(path)
    _check_dir(path, (CONFIG_FILE, WEIGHTS_FILE, os.path.join(TOKENIZER_DIR, "tokenizer.json")))
    config = read_model_config(path)
    tokenizer = load_tokenizer(os.path.join(path, TOKENIZER_DIR))
    check_vocabulary(tokenizer, config.model.backbone.vocabulary_size)
    model = build_model(config)
    _load_weights(model, os.path.join(path, WEIGHTS_FILE))
    return model, tokenizer, config


def load_backbone(path: str, **overrides) -> TransformerBackbone:
    """The pre-trained backbone of the model directory ``path``, to build a task on.

    Args:
        path: a model directory.
        **overrides: backbone arguments that hold no weights to change, e.g.
            ``pooling="mean"`` or ``dropout=0.1`` for fine-tuning.

    Raises:
        ModelDirError: see :func:`load_model_dir`; an override that would change the
            weights' shapes.
    """
    path = os.path.expanduser(path)
    config = read_model_config(path)
    arguments = config.model.backbone.to_dict()
    shaped = {"vocabulary_size", "num_layers", "hidden_dim", "num_heads", "intermediate_dim",
              "max_sequence_length", "norm_first", "position_embedding", "use_bias",
              "num_segments"}
    changed = sorted(k for k in overrides if k in shaped and overrides[k] != arguments.get(k))
    if changed:
        raise ModelDirError(f"load_backbone cannot change {', '.join(changed)} of the "
                            f"pre-trained backbone in '{path}': its weights fix them.")
    arguments.update(overrides)
    weights = os.path.join(path, BACKBONE_WEIGHTS_FILE)
    if os.path.exists(weights):
        backbone = TransformerBackbone(**arguments, name="backbone")
        _load_weights(backbone, weights)
        return backbone
    # A directory written before backbone.weights.h5 existed: the task's weights.
    model, _, _ = load_model_dir(path)
    if overrides:
        backbone = TransformerBackbone(**arguments, name="backbone")
        backbone.set_weights(model.backbone.get_weights())
        return backbone
    return model.backbone


def initial_backbone(config) -> TransformerBackbone | None:
    """The pre-trained backbone a run starts from: ``config.init_from``'s, with the run's
    ``dropout`` and ``pooling``; None without ``init_from`` (a new backbone)."""
    if not config.init_from:
        return None
    b = config.model.backbone
    return load_backbone(config.init_from, dropout=b.dropout, pooling=b.pooling)


def load(path: str):
    """``tflm.load``: the model directory as its objective's interface (e.g. a
    ``tflm.generation.LanguageModel`` for ``causal_lm``), else a :class:`LoadedModel`."""
    model, tokenizer, config = load_model_dir(path)
    interface = get_objective(config.train.objective).resolve("interface") or LoadedModel
    return interface(model, tokenizer, config)
