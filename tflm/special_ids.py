"""Which id pads a sequence and which starts one: the rules of generation, export and
the data pipelines, each in one function.

A leaf module (no imports of its own, like ``tflm.errors``), so ``tflm.data`` (TensorFlow)
and ``tflm.generation`` (keras.ops only, also on JAX) share it. A tokenizer here is
anything with ``pad_id`` / ``eos_id`` / ``cls_id`` attributes (a ``tflm.text``
tokenizer; a missing attribute counts as None).
"""

from __future__ import annotations

from collections.abc import Sequence


def _special(tokenizer, name: str) -> int | None:
    value = getattr(tokenizer, name, None)
    return None if value is None else int(value)


def pad_id(tokenizer) -> int:
    """The id written in padded slots: the tokenizer's pad, else its end-of-text, else 0.

    Padded slots are masked out of attention and loss, so the id only has to be a valid
    one; pad (or eos) keeps padded outputs readable.
    """
    for name in ("pad_id", "eos_id"):
        value = _special(tokenizer, name)
        if value is not None:
            return value
    return 0


def start_id(tokenizer) -> int:
    """The id a causal LM's sequence starts from: end-of-text (the separator the model saw
    between training documents, as GPT-2), else [CLS], else pad, else 0."""
    for name in ("eos_id", "cls_id", "pad_id"):
        value = _special(tokenizer, name)
        if value is not None:
            return value
    return 0


def prompt_ids(tokenizer, ids: Sequence[int]) -> list[int]:
    """A prompt's ids; an empty prompt is the start token (a new document)."""
    return list(ids) or [start_id(tokenizer)]


def scored_ids(tokenizer, ids: Sequence[int]) -> list[int]:
    """The ids a text is scored on: the start token, then the text (so its first token is
    scored too)."""
    return [start_id(tokenizer), *ids]
