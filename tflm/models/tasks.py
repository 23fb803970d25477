"""The objective registry: one table that every consumer reads.

An objective is a task model class plus the functions around it: the pipeline adapter
that feeds it (``tflm.data``), and optional hooks for training callbacks, the object
``tflm.load`` returns and export. The config's choices (``config.train.objective``), the
trainer, ``tflm evaluate``, the model directory, the CLI and ``tflm.load`` all look an
objective up here; adding one is a task class, an adapter, a config file and one
``register_objective`` call, with no edit to any of them.

References to code above ``tflm.models`` (adapters in ``tflm.data``, callbacks in
``tflm.training``, ...) are ``"module:attribute"`` strings, resolved on first use, so this
module keeps ``tflm.models`` free of TensorFlow imports (the models also run on JAX);
a callable works as well (e.g. a test's own adapter).

The contracts:

- **task**: a ``keras.Model`` (``tflm.models.backbone.BackboneTask`` gives the shared
  parts) built as ``task(backbone=TransformerBackbone(...), **head)``
  where ``head`` are the other keys of ``config.model``; it has ``default_loss()``,
  ``default_metrics()`` (compiled as ``weighted_metrics``; a dict per output for a
  multi-output task), ``flops_per_token(data_config)`` (training FLOPs per token),
  a ``backbone`` attribute, and a class attribute ``perplexity_from_loss`` (True only
  when the loss is a token-weighted mean cross-entropy and nothing else).
- **pipeline** (adapter): ``pipeline(caches, tokenizer, config, batch_size, *, split,
  training, seed, start_step=0, input_context=None) -> dataset``: a TensorFlow data
  pipeline of ``(x, y, sample_weight)``. ``config`` is the run's config: the adapter reads
  ``config.data`` and whatever head argument shapes its batches (e.g. the masked LM's
  ``config.model.pair_task``). ``caches`` maps split names to token caches; ``training``
  gives the endless (seed, step) stream of ``split`` from ``start_step`` (this worker's
  rows of every global batch under ``input_context``), else finite, ordered batches of
  the whole split (random choices such as masking drawn from ``seed``, so every call
  gives the same batches).
- **callbacks** (optional): ``callbacks(task, context) -> list[keras.callbacks.Callback]``
  with ``context`` a ``tflm.training.TrainContext``; a callback with a
  ``summary_fields() -> dict`` method adds those fields to the run summary.
- **interface** (optional): ``interface(model, tokenizer, config)`` is what
  ``tflm.load`` returns (default: ``tflm.model_dir.LoadedModel``).
- **export** (optional): ``export(model, tokenizer, config, out, format, quantize) ->
  report`` behind ``tflm export``.
- **data** (optional): the objective's own ``config.data`` keys with their defaults (a
  fine-tuning task's ``train`` / ``validation`` files and column names), added to
  ``base_config(objective)``'s data section.
- **corpus**: False for objectives whose examples come from their own files
  (``config.data.train``...), not from the corpus: no corpus is read and no token cache
  built (``caches`` is empty), and the tokenizer comes from ``config.init_from`` or
  ``config.data.tokenizer_dir``.
- **configure** (optional): ``configure(config) -> dict`` of ``"section.key": value``
  that the run's data decide (a classifier's ``model.labels`` read from its training
  file), applied before the run's config is written (``tflm.training.prepare.
  resolve_config``), so the model directory rebuilds the same model.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable

from tflm.errors import ConfigError
from tflm.models.bert import BertPretrainer
from tflm.models.classifier import SequenceClassifier, SequenceRegressor, TokenClassifier
from tflm.models.electra import ElectraPretrainer
from tflm.models.gpt import GPT
from tflm.models.simcse import SimCSE


@dataclasses.dataclass(frozen=True)
class Objective:
    """One registry entry (see the module docstring for each field's contract).

    Attributes:
        name: the value of ``config.train.objective``.
        task: the task model class.
        pipeline: the pipeline adapter (callable or ``"module:attribute"``).
        special_tokens: tokenizer roles the objective needs (``tflm.text.SPECIAL_ROLES``:
            ``"eos"``, ``"mask"``, ``"cls"``, ``"sep"``, ...).
        causal: the ``config.model.backbone.causal`` the task needs; None = either.
        callbacks, interface, export, configure: optional hooks (callable or
            ``"module:attribute"``).
        data: the objective's own ``config.data`` keys and defaults.
        corpus: whether the run reads the corpus (and builds token caches).
        description: one line for error messages and ``--help``.
    """

    name: str
    task: type
    pipeline: Callable | str
    special_tokens: tuple[str, ...] = ()
    causal: bool | None = None
    callbacks: Callable | str | None = None
    interface: Callable | str | None = None
    export: Callable | str | None = None
    data: dict = dataclasses.field(default_factory=dict)
    corpus: bool = True
    configure: Callable | str | None = None
    description: str = ""

    def resolve(self, field: str) -> Callable | None:
        """The callable of hook ``field`` (importing a ``"module:attribute"`` string)."""
        value = getattr(self, field)
        if not isinstance(value, str):
            return value
        module, _, attribute = value.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def head_arguments(self) -> dict:
        """The task's constructor arguments besides ``backbone``, with their defaults."""
        head = {}
        for name, parameter in inspect.signature(self.task.__init__).parameters.items():
            if name in ("self", "backbone") or parameter.kind in (
                    parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            head[name] = None if parameter.default is parameter.empty else parameter.default
        return head


_REGISTRY: dict[str, Objective] = {}


def register_objective(objective: Objective, replace: bool = False) -> Objective:
    """Adds ``objective`` to the registry; returns it.

    Raises:
        ValueError: the name is taken (pass ``replace=True`` to redefine it).
    """
    if objective.name in _REGISTRY and not replace:
        raise ValueError(f"objective {objective.name!r} is already registered; pass "
                         "replace=True to redefine it.")
    _REGISTRY[objective.name] = objective
    return objective


def unregister_objective(name: str) -> None:
    """Removes objective ``name`` (no error if absent)."""
    _REGISTRY.pop(name, None)


def objective_names() -> tuple[str, ...]:
    """The registered objective names, in registration order."""
    return tuple(_REGISTRY)


def get_objective(name: str) -> Objective:
    """The registered objective ``name``.

    Raises:
        ConfigError: no such objective; the message names the registered ones.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"config.train.objective = {name!r} is not a registered objective; use one of "
            f"{', '.join(map(repr, _REGISTRY))}."
        )
    return _REGISTRY[name]


def check_special_tokens(objective: Objective, available, tokenizer_name: str) -> None:
    """Raises ConfigError when the tokenizer lacks a special token the objective needs.

    Args:
        available: the roles the tokenizer has (e.g. its ``special_tokens`` keys).
        tokenizer_name: how the error names the tokenizer (the config key and value).
    """
    missing = [role for role in objective.special_tokens if role not in set(available)]
    if missing:
        raise ConfigError(
            f"objective {objective.name!r} needs the special token(s) "
            f"{', '.join(missing)}, which {tokenizer_name} does not have (it has "
            f"{', '.join(sorted(available)) or 'none'}). Use a tokenizer kind that has "
            "them (config.data.tokenizer) or another objective (config.train.objective)."
        )


register_objective(Objective(
    name="causal_lm",
    task=GPT,
    pipeline="tflm.data.causal:causal_lm_pipeline",
    special_tokens=("eos",),
    causal=True,
    callbacks="tflm.training.monitor:causal_lm_callbacks",
    interface="tflm.generation:LanguageModel",
    export="tflm.export.api:export_causal_lm",
    description="next-token prediction (GPT): documents joined with end-of-text, packed "
                "into blocks",
))

register_objective(Objective(
    name="masked_lm",
    task=BertPretrainer,
    pipeline="tflm.data.masked_lm:masked_lm_pipeline",
    special_tokens=("mask", "cls", "sep", "pad"),
    causal=False,
    interface="tflm.generation.masked_lm:MaskedLanguageModel",
    export="tflm.export.encoder:export_masked_lm",
    description="masked-LM pre-training (BERT: 15% masking, 80/10/10) with next-sentence "
                "(nsp) or sentence-order (sop) prediction, or none",
))

register_objective(Objective(
    name="electra",
    task=ElectraPretrainer,
    pipeline="tflm.data.electra:electra_pipeline",
    special_tokens=("mask", "cls", "sep", "pad"),
    causal=False,
    interface="tflm.generation.embedding:task_encoder",
    export="tflm.export.encoder:export_sentence_encoder",
    description="replaced-token detection (ELECTRA): a small masked-LM generator fills "
                "15% of the tokens, the discriminator spots the replaced ones",
))

# The config.data keys of the fine-tuning objectives: labelled files and their columns.
FILE_DATA = {
    "train": "",  # .tsv / .csv / .jsonl (token classification: also CoNLL .conll / .txt)
    "validation": "",
    "header": True,  # TSV / CSV: the first row names the columns; False: "0", "1", ...
    "text_column": "text",
    "text_pair_column": "",  # a second text for pair tasks; "" = single texts
    "label_column": "label",
    "too_long": "truncate",  # texts longer than seq_len: "truncate" (warned) or "error"
}

register_objective(Objective(
    name="classification",
    task=SequenceClassifier,
    pipeline="tflm.data.classification:classification_pipeline",
    callbacks="tflm.training.finetune:classification_callbacks",
    interface="tflm.generation.classifier:TextClassifier",
    data=FILE_DATA,
    corpus=False,
    configure="tflm.data.classification:configure_labels",
    export="tflm.export.classifier:export_classifier",
    description="text or text-pair classification from labelled files (fine-tuning)",
))

register_objective(Objective(
    name="regression",
    task=SequenceRegressor,
    pipeline="tflm.data.classification:regression_pipeline",
    callbacks="tflm.training.finetune:regression_callbacks",
    interface="tflm.generation.classifier:TextRegressor",
    data=FILE_DATA,
    corpus=False,
    configure="tflm.data.classification:check_regression_file",
    export="tflm.export.classifier:export_classifier",
    description="text or text-pair regression (e.g. STS-B scores) from labelled files",
))

register_objective(Objective(
    name="token_classification",
    task=TokenClassifier,
    pipeline="tflm.data.token_classification:token_classification_pipeline",
    callbacks="tflm.training.finetune:token_classification_callbacks",
    interface="tflm.generation.classifier:TokenTagger",
    data={**FILE_DATA, "text_column": "tokens", "label_column": "tags",
          "outside_label": "O"},  # JSONL keys; CoNLL files: word ... tag per line
    corpus=False,
    configure="tflm.data.token_classification:configure_tags",
    export="tflm.export.classifier:export_classifier",
    description="a tag per word (named entities, part of speech) from CoNLL / JSONL files",
))

register_objective(Objective(
    name="simcse",
    task=SimCSE,
    pipeline="tflm.data.contrastive:simcse_pipeline",
    callbacks="tflm.training.simcse:simcse_callbacks",
    interface="tflm.generation.embedding:task_encoder",
    export="tflm.export.encoder:export_sentence_encoder",
    data={
        # Supervised SimCSE: (anchor, positive[, hard negative]) rows of .tsv / .csv
        # (header row) / .jsonl files; "" = unsupervised on the corpus' documents.
        "train": "",
        "validation": "",
        "columns": ("sent0", "sent1", "hard_neg"),  # SimCSE's NLI file; 2 names = pairs
        # Sentence pairs with a gold score: the Spearman of their cosine at every
        # validation (STS-B's columns).
        "similarity_validation": "",
        "similarity_columns": ("sentence1", "sentence2", "score"),
    },
    configure="tflm.training.simcse:configure_pooling",
    description="contrastive sentence embeddings (SimCSE): InfoNCE with in-batch negatives "
                "over two dropout views of each corpus document, or pairs / triples of a file",
))
