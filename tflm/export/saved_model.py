"""SavedModel export for TF Serving: string signatures with the tokenizer in the graph.

Layout (what ``tensorflow_model_server --model_base_path=OUT/<name>`` expects)::

    OUT/<name>/<version>/saved_model.pb, variables/, assets/ (tokenizer files)

Signatures (``tflm/export/signatures.py``): ``serving_default`` {prompt},
``generate`` {prompt, max_new_tokens, temperature, top_k, top_p, seed},
``score`` {text}, ``logits`` {token_ids, padding_mask}. The SavedModel needs only
``tensorflow`` and ``tensorflow_text`` to load (no tflm, keras-hub or Python code).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tflm import special_ids
from tflm.errors import ExportError
from tflm.export import reference, signatures

GENERATE_DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0,
                     "seed": 0}


class ModelModule(tf.Module):
    """The model and its fixed shapes, for signatures on token ids (TFLite needs no more).

    Args:
        model: a Keras task with ``max_sequence_length`` (window S): a
            ``tflm.models.GPT`` (``call``, ``call_with_cache``, ``init_cache``) or a
            ``tflm.models.BertPretrainer`` (``backbone``, ``mlm_head``).
    """

    def __init__(self, model, name: str = "tflm_model"):
        super().__init__(name=name)
        self.model = model
        self.window = int(model.max_sequence_length)

    @property
    def cache_shape(self) -> tuple[int, ...]:
        """The KV-cache shape of one sequence (1, L, 2, S, H, D) (models with a cache)."""
        return tuple(int(d) for d in self.model.init_cache(1, self.window).shape)


class ServingModule(ModelModule):
    """``ModelModule`` plus the in-graph tokenizer, for the string signatures.

    Args:
        model: as ``ModelModule``.
        tokenizer: a ``tflm.text.Tokenizer``; its ``layer`` runs in the graph and its
            asset files are copied to the SavedModel's ``assets/``.
        generate_defaults: the values ``serving_default`` passes to ``generate``.
    """

    def __init__(self, model, tokenizer, generate_defaults: dict | None = None):
        super().__init__(model, name="tflm_serving")
        self.tokenizer = tokenizer.layer
        self.eos_id = tokenizer.eos_id
        self.pad_id = special_ids.pad_id(tokenizer)
        self.start_id = special_ids.start_id(tokenizer)
        self.generate_defaults = dict(GENERATE_DEFAULTS, **(generate_defaults or {}))
        self._asset_dir = tempfile.mkdtemp(prefix="tflm_tokenizer_")
        tokenizer_copy = type(tokenizer)(tokenizer.assets, tokenizer.options)
        tokenizer_copy.save(self._asset_dir)
        self.tokenizer_assets = [
            tf.saved_model.Asset(os.path.join(self._asset_dir, name))
            for name in sorted(os.listdir(self._asset_dir))
        ]

    def cleanup(self) -> None:
        """Removes the temporary copy of the tokenizer assets."""
        shutil.rmtree(self._asset_dir, ignore_errors=True)


def serving_signatures(module: ServingModule) -> dict:
    """Signature name -> ``tf.function`` for a causal LM."""
    generate = signatures.generate_signature(module)
    return {
        "serving_default": signatures.serving_default_signature(module, generate),
        "generate": generate,
        "score": signatures.score_signature(module),
        "logits": signatures.logits_signature(module),
    }


def export_saved_model(
    model,
    tokenizer,
    out: str,
    name: str = "tflm",
    version: int = 1,
    generate_defaults: dict | None = None,
) -> str:
    """Writes ``out/<name>/<version>/`` (TF Serving layout); returns that path.

    Raises:
        ExportError: the version directory exists and is not empty, or saving fails.
    """
    path = version_path(out, name, version)
    module = ServingModule(model, tokenizer, generate_defaults)
    return save_serving(module, path, serving_signatures)


def version_path(out: str, name: str, version: int) -> str:
    """``out/<name>/<version>``, the TF Serving directory of a new version.

    Raises:
        ExportError: the directory exists and is not empty (versions are immutable).
    """
    path = os.path.join(out, name, str(int(version)))
    if os.path.isdir(path) and os.listdir(path):
        raise ExportError(
            f"{path} already holds a SavedModel; TF Serving versions are immutable, so "
            "pass a new --config.export.version or remove the directory"
        )
    return path


def save_serving(module: ServingModule, path: str, make_signatures) -> str:
    """Saves ``module`` with the signatures ``make_signatures(module)`` to ``path``, then
    removes its temporary tokenizer copy; returns ``path``.

    Raises:
        ExportError: saving fails.
    """
    try:
        tf.saved_model.save(module, path, signatures=make_signatures(module))
    except (ValueError, TypeError, tf.errors.OpError) as e:
        raise ExportError(f"saving the SavedModel to {path} failed: {e}") from e
    finally:
        module.cleanup()
    return path


def verify_saved_model(path: str, model, tokenizer, texts: list[str],
                       max_new_tokens: int = 8) -> dict:
    """Loads the SavedModel at ``path`` and compares it with the Keras model.

    Returns a dict: ``logits_max_abs_diff`` (on token windows of ``texts``),
    ``greedy_token_identical`` (``generate`` vs a full-recompute Keras greedy loop on
    prompts cut from ``texts``) and the per-prompt tokens.
    """
    loaded = tf.saved_model.load(path)
    window = int(model.max_sequence_length)
    ids, mask = reference.token_windows(tokenizer, texts, window, num_windows=4)
    served = loaded.signatures["logits"](token_ids=tf.constant(ids),
                                         padding_mask=tf.constant(mask))["logits"].numpy()
    keras_logits = reference.keras_logits(model, ids, mask)
    real = mask.astype(bool)
    diff = float(np.max(np.abs(served - keras_logits)[real]))
    prompts = reference.prompts_from(texts)
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts), max_new_tokens=tf.constant(max_new_tokens),
        temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
        seed=tf.constant(0),
    )
    served_tokens = out["token_ids"].numpy().tolist()
    keras_tokens = [
        reference.keras_greedy(model, tokenizer, p, max_new_tokens) for p in prompts
    ]
    identical = all(
        reference.strip_after_eos(s, tokenizer.eos_id) == k
        for s, k in zip(served_tokens, keras_tokens)
    )
    return {
        "logits_max_abs_diff": diff,
        "logits_within_1e-4": diff <= 1e-4,
        "greedy_token_identical": identical,
        "greedy_prompts": prompts,
        "greedy_tokens": keras_tokens,
    }
