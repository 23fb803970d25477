"""Serving signatures: one function per signature, each returning a ``tf.function``.

Every ``*_signature(module)`` takes a ``ServingModule`` (``tflm/export/saved_model.py``: the
model, the in-graph tokenizer layer and a few constants) and returns a ``tf.function``
with a fixed ``input_signature``, ready for ``tf.saved_model.save(signatures=...)`` or the
TFLite converter. These are the causal LM's; the masked LM's are in
``tflm/export/encoder_signatures.py``.

Strings never enter XLA: string signatures tokenize with TF / tensorflow-text ops, run a
``jit_compile=True`` function on int tensors of a fixed window, then detokenize.

Shapes: batch B, window S = ``max_sequence_length``, vocabulary V, layers L, heads H,
head size D.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from tflm.generation import decode, samplers


def clean_utf8(text: tf.Tensor) -> tf.Tensor:
    """Replaces invalid UTF-8 bytes by U+FFFD, so no input string can fail an op."""
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


def window_ids(module, text: tf.Tensor, keep: tf.Tensor, always_start: bool) -> tf.RaggedTensor:
    """Token ids (B, <= keep) of each text, truncated from the left (most recent context).

    The start token (``module.start_id``, ``tflm.generation.special_ids.start_id``) comes
    first in every row when ``always_start`` (scoring: ``special_ids.scored_ids``), else
    only in empty rows (generation: ``special_ids.prompt_ids``, an empty prompt starts a
    new document) -- the rules of ``tflm.generation.LanguageModel``, on ragged tensors.
    """
    ids = tf.cast(module.tokenizer.tokenize(clean_utf8(text)), tf.int32)  # (B, None)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    if always_start:
        starts = tf.ones([ids.nrows()], tf.int64)
    else:
        starts = tf.cast(ids.row_lengths() == 0, tf.int64)
    start_ids = tf.fill([tf.reduce_sum(starts)], tf.constant(module.start_id, tf.int32))
    ids = tf.concat([tf.RaggedTensor.from_row_lengths(start_ids, starts), ids], axis=1)
    return ids[:, -keep:]


def decode_window(module, ids, lengths, prompt_end, max_new, temperature, top_k, top_p,
                  seed):
    """The generation loop over the fixed (B, S) window, on int tensors (XLA-compiled).

    ``tflm.generation.decode``'s ``left_pad``, ``prefill`` and ``sample_loop`` with the
    runtime-options sampler ``samplers.sample``, so one compiled function serves every
    request (prompt end, ``max_new`` and the sampler options are tensors).

    Args:
        ids: (B, S) int32, row i's ``lengths[i]`` >= 1 prompt tokens in its first columns.
        prompt_end: int32 scalar, max(lengths); the prompts are left-padded to end there.
        max_new: int32 scalar in [0, S - prompt_end].
    Returns:
        (B, S) int32, the new tokens in columns [0, max_new) (column 0 holds a drawn token
        even when max_new is 0); after a row's end-of-text token, ``module.pad_id``.
    """
    window, model = module.window, module.model
    tokens, mask = decode.left_pad(ids, lengths, prompt_end, window, module.pad_id)
    state = decode.prefill(model, tokens, mask, window, prompt_end)
    eos = -1 if module.eos_id is None else module.eos_id
    stop_mask = ops.arange(model.vocabulary_size, dtype="int32") == eos  # (V,)

    def sampler(logits, key, step):
        return samplers.sample(logits, key, step, temperature, top_k, top_p)

    return decode.sample_loop(model, sampler, state, seed, stop_mask, module.pad_id,
                              ops.maximum(max_new, 1), window)


def generate_signature(module):
    """``generate``: {prompt string (B,), max_new_tokens, temperature, top_k, top_p, seed}
    -> {text string (B,), token_ids int32 (B, max_new_tokens)}.

    ``max_new_tokens`` is clipped to [0, S - 1]; a prompt keeps its last
    ``S - max_new_tokens`` tokens; an empty prompt is the start token. ``text`` stops
    before the first end-of-text token and is valid UTF-8; ``token_ids`` hold ``pad_id``
    after the end.
    """
    compiled = tf.function(
        lambda *args: decode_window(module, *args), jit_compile=True, reduce_retracing=True
    )

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompt"),
        tf.TensorSpec([], tf.int32, name="max_new_tokens"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k"),
        tf.TensorSpec([], tf.float32, name="top_p"),
        tf.TensorSpec([], tf.int32, name="seed"),
    ])
    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        max_new = tf.clip_by_value(max_new_tokens, 0, module.window - 1)
        ids = window_ids(module, prompt, module.window - max_new, always_start=False)
        lengths = tf.cast(ids.row_lengths(), tf.int32)  # (B,) >= 1
        prompt_end = tf.reduce_max(tf.concat([lengths, [1]], 0))
        dense = ids.to_tensor(shape=[None, module.window])  # (B, S), prompts first
        tokens = compiled(dense, lengths, prompt_end, max_new, temperature, top_k, top_p,
                          seed)[:, :max_new]  # (B, max_new)
        eos = -1 if module.eos_id is None else module.eos_id
        ended = tf.cumsum(tf.cast(tokens == eos, tf.int32), axis=1) > 0  # at or after eos
        text_len = tf.reduce_sum(1 - tf.cast(ended, tf.int32), axis=1)
        text = module.tokenizer.detokenize(tf.RaggedTensor.from_tensor(tokens, text_len))
        return {"text": clean_utf8(text), "token_ids": tokens}

    return generate


def serving_default_signature(module, generate):
    """``serving_default``: {prompt string (B,)} -> ``generate`` with the export defaults."""
    defaults = module.generate_defaults

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompt")])
    def serving_default(prompt):
        return generate(
            prompt,
            tf.constant(defaults["max_new_tokens"], tf.int32),
            tf.constant(defaults["temperature"], tf.float32),
            tf.constant(defaults["top_k"], tf.int32),
            tf.constant(defaults["top_p"], tf.float32),
            tf.constant(defaults["seed"], tf.int32),
        )

    return serving_default


def score_signature(module):
    """``score``: {text string (B,)} -> {log_likelihood, perplexity float32 (B,),
    num_tokens int32 (B,)}.

    Each text is scored after the start token, truncated from the left to the window;
    ``log_likelihood`` is the sum of log p(token | earlier tokens) over its ``num_tokens``
    tokens and ``perplexity`` = exp(-log_likelihood / num_tokens) (1 for an empty text).
    """

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(text):
        ids = window_ids(module, text, module.window, always_start=True)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        dense = ids.to_tensor(default_value=module.pad_id, shape=[None, module.window])
        mask = tf.sequence_mask(lengths, module.window, tf.int32)  # (B, S)
        logits = module.model({"token_ids": dense, "padding_mask": mask})  # (B, S, V)
        log_probs = tf.nn.log_softmax(logits[:, :-1], axis=-1)
        target_lp = tf.gather(log_probs, dense[:, 1:], batch_dims=2)  # (B, S - 1)
        weights = tf.cast(mask[:, 1:], tf.float32)
        log_likelihood = tf.reduce_sum(target_lp * weights, axis=1)
        num_tokens = lengths - 1
        denominator = tf.maximum(tf.cast(num_tokens, tf.float32), 1.0)
        return {
            "log_likelihood": log_likelihood,
            "perplexity": tf.exp(-log_likelihood / denominator),
            "num_tokens": num_tokens,
        }

    return score


def logits_signature(module, batch=None, length=None):
    """``logits``: {token_ids, padding_mask int32 (B, T)} -> {logits float32 (B, T, V)}.

    T <= S. TFLite uses fixed shapes (``batch=1, length=S``); padding is on the right.
    """

    @tf.function(input_signature=[
        tf.TensorSpec([batch, length], tf.int32, name="token_ids"),
        tf.TensorSpec([batch, length], tf.int32, name="padding_mask"),
    ])
    def logits(token_ids, padding_mask):
        return {"logits": module.model({"token_ids": token_ids, "padding_mask": padding_mask})}

    return logits


def cache_names(module) -> list[str]:
    """The TFLite cache tensor names: ``cache_0`` ... ``cache_{L-1}``."""
    return [f"cache_{i}" for i in range(module.cache_shape[1])]


def _layer_cache_spec(module, name):
    batch, _, *rest = module.cache_shape
    return tf.TensorSpec([batch, *rest], tf.float32, name=name)  # (1, 2, S, H, D)


def prefill_signature(module):
    """``prefill`` (TFLite, batch 1): {token_ids int32 (1, S), length int32 ()} ->
    {logits float32 (1, V) at slot length - 1, cache_i float32 (1, 2, S, H, D) per layer}.

    The prompt fills slots [0, length) (right padding). Slots from ``length`` on hold
    junk keys/values; ``decode`` overwrites each slot before any query can attend it.
    """
    window = module.window
    names = cache_names(module)

    @tf.function(input_signature=[
        tf.TensorSpec([1, window], tf.int32, name="token_ids"),
        tf.TensorSpec([], tf.int32, name="length"),
    ])
    def prefill(token_ids, length):
        spec = _layer_cache_spec(module, "cache")
        caches = [tf.zeros(spec.shape, module.model.compute_dtype) for _ in names]
        # One (B, 2, S, H, D) cache per layer: TFLite kernels stop at 5-D, and separate
        # tensors spare a decode step the copies of slicing one 6-D cache.
        logits, caches = module.model.call_with_cache(token_ids, caches, 0)
        last = tf.reshape(tf.clip_by_value(length, 1, window) - 1, [1])
        return {"logits": tf.gather(logits, last, axis=1)[:, 0], **dict(zip(names, caches))}

    return prefill


def decode_signature(module):
    """``decode`` (TFLite, batch 1): {token_id int32 (1, 1), index int32 (), cache_i
    (1, 2, S, H, D) per layer} -> {logits float32 (1, V), cache_i}: writes the token at
    slot ``index`` (< S) and returns the next-token logits."""
    names = cache_names(module)

    @tf.function(input_signature=[
        tf.TensorSpec([1, 1], tf.int32, name="token_id"),
        tf.TensorSpec([], tf.int32, name="index"),
        *[_layer_cache_spec(module, name) for name in names],
    ])
    def decode(token_id, index, *caches):
        logits, caches = module.model.call_with_cache(token_id, list(caches), index)
        return {"logits": logits[:, 0], **dict(zip(names, caches))}

    return decode

