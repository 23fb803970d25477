"""``evaluate(model_dir)``: the task's loss and metrics on a corpus split or labelled file.

The ``tflm evaluate`` command: the model's own tokenizer encodes the split (token caches
are kept under the model config's ``data.cache_dir``), and the objective's pipeline
adapter (``training=False``: finite, ordered, random choices fixed by
``config.data.seed``) feeds ``Model.evaluate`` with the task's loss and metrics. A
fine-tuned model (an objective that reads labelled files) is evaluated on its validation
file or the file given, with the scores its training reported (macro-F1, Spearman, ...).
"""

from __future__ import annotations

import os

import tensorflow as tf

from tflm import config as config_lib
from tflm.data import load_corpus
from tflm.data.token_cache import build_token_cache
from tflm.model_dir import load_model_dir
from tflm.models.tasks import get_objective
from tflm.training.callbacks import TrainContext
from tflm.training.prepare import cache_root
from tflm.training.strategy import resolve_jit_compile


def evaluate(model_dir: str, corpus: str | None = None, split: str = "validation",
             batch_size: int | None = None, max_batches: int | None = None) -> dict:
    """The loss and metrics of a model directory on a corpus split (``tflm evaluate``).

    Args:
        model_dir: a model directory (``<workdir>/model``).
        corpus: a ``config.data.corpus`` value; default the corpus it was trained on.
            For a fine-tuned model: a labelled file (default its validation file).
        split: ``train``, ``validation`` or ``test`` (a fine-tuned model: ``train`` =
            its training file, else its validation file).
        batch_size: sequences per batch (default ``config.train.batch_size``).
        max_batches: evaluate only the first batches (default all).

    Returns:
        ``{"loss", <each of the task's metrics>, "batches", "split", "corpus",
        "model_dir", "objective"}`` (JSON-serialisable); for ``causal_lm`` the metrics
        are ``perplexity`` (every real token weighs the same) and ``accuracy``.

    Raises:
        ModelDirError, TokenizerError, DataError.
    """
    model, tokenizer, config = load_model_dir(model_dir)
    objective = get_objective(config.train.objective)
    file_key = "train" if split == "train" else "validation"
    if corpus:
        values = config_lib.config_to_dict(config)
        values["data"]["corpus" if objective.corpus else file_key] = corpus
        config = config_lib.config_from_dict(values)
    caches = {}
    if objective.corpus:
        source = load_corpus(config.data)
        caches[split] = build_token_cache(source, split, tokenizer,
                                          os.path.join(cache_root(config.data), "tokens"))
        name = source.name
    else:
        name = config.data[file_key]
    pipeline = objective.resolve("pipeline")
    dataset = pipeline(caches, tokenizer, config, batch_size or config.train.batch_size,
                       split=split, training=False, seed=config.data.seed)
    if max_batches:
        dataset = dataset.take(max_batches)
    # weighted: padded labels (weight 0) must not count in the metrics. Compiled as the
    # trainer compiles (XLA or not): the trainer's validation numbers, to the last digit
    # (ELECTRA samples replacements from the generator's logits: another compilation's
    # rounding can flip a sample).
    model.compile(loss=model.default_loss(), weighted_metrics=model.default_metrics(),
                  jit_compile=resolve_jit_compile(config.train, tf.distribute.get_strategy()))
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    hook = objective.resolve("callbacks")
    if hook and not objective.corpus:  # a fine-tuning task's scores (macro-F1, ...)
        context = TrainContext(config=config, tokenizer=tokenizer, caches=caches,
                               eval_dataset=dataset, log_dir=None, steps_per_epoch=1,
                               fresh_start=False)
        for callback in hook(model, context):
            if hasattr(callback, "evaluate"):
                results.update(callback.evaluate(model))
    return {
        **{k: float(v) for k, v in results.items()},
        "batches": int(dataset.cardinality().numpy()),
        "split": split,
        "corpus": name,
        "model_dir": os.path.abspath(model_dir),
        "objective": config.train.objective,
    }
