"""Fine-tuning: ``finetune(config, workdir)`` behind ``tflm finetune``, and the validation
scores of the fine-tuning objectives.

Fine-tuning is training that starts from a model directory (``config.init_from``): the
trainer resolves the config (the directory's architecture and tokenizer,
``tflm.training.prepare.resolve_config``) and builds the task on the directory's trained
backbone (``tflm.model_dir.initial_backbone``), so the same trainer, strategies, resume,
TensorBoard and checkpoints serve pre-training and fine-tuning. Continued pre-training of
a GPT on new text is ``finetune`` with the ``causal_lm`` objective.
"""

from __future__ import annotations

from tflm.errors import ConfigError
from tflm.training.validation_scores import ValidationScores


def finetune(config, workdir: str) -> dict:
    """Trains ``config`` starting from ``config.init_from``; returns the run summary.

    Raises:
        ConfigError: ``config.init_from`` is empty, or does not fit the objective.
        What ``tflm.training.train`` raises.
    """
    from tflm.training.trainer import train

    if not config.init_from:
        raise ConfigError(
            "tflm finetune starts from a trained model directory: pass "
            "--config.init_from=MODEL_DIR (e.g. runs/bert_mini/model); to train from "
            "scratch use tflm train."
        )
    return train(config, workdir)


def _scores(kind, task, context, **arguments) -> list:
    return [ValidationScores(kind, context.eval_dataset, log_dir=context.log_dir,
                             **arguments)]


def classification_callbacks(task, context) -> list:
    """The ``classification`` objective's callbacks: accuracy, macro-F1 and Matthews
    correlation on the validation file at every evaluation."""
    return _scores("classification", task, context, num_classes=len(task.labels))


def regression_callbacks(task, context) -> list:
    """The ``regression`` objective's callbacks: Pearson and Spearman correlation."""
    return _scores("regression", task, context)


def token_classification_callbacks(task, context) -> list:
    """The ``token_classification`` objective's callbacks: token-level F1 (the tag
    ``config.data.outside_label`` counts as no entity), precision, recall, accuracy."""
    outside = context.config.data.outside_label
    labels = list(task.labels)
    if outside not in labels:
        raise ConfigError(
            f"config.data.outside_label = {outside!r} is not one of the tags {labels}; set "
            "it to the tag of tokens outside any entity."
        )
    return _scores("token_classification", task, context, num_classes=len(labels),
                   outside_id=labels.index(outside))
