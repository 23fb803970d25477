"""The building blocks of generation: prefill, decode step, sampling and beam loops.

``tflm.generation.decoder.generate_ids(model, prompt_ids, ...)`` puts them together:

1. Prompts of different lengths are left-padded to a *bucket* length (a power of two
   >= 8), so prompts of similar length share one compiled function. Each sequence's
   positions start at 0 at its first real token (``position_ids``) and its pad slots are
   masked out of attention (``cache_mask``), so its output does not depend on the others.
2. One compiled function (``compile_fn``: XLA via ``tf.function(jit_compile=True)`` on
   TensorFlow, ``jax.jit`` on JAX) runs the prefill (one forward pass over the prompt into
   a cache of ``bucket + max_new_tokens`` slots) and then a ``keras.ops.while_loop`` that
   feeds one token per step (or beam search, see ``beam.py``). The loop ends when every
   sequence has produced a stop token or ``max_new_tokens`` tokens.
3. Compiled functions are kept per (batch, bucket, max_new_tokens, sampler, beams).

The model contract (``tflm.models.GPT``): ``init_cache(batch, length)``,
``call_with_cache(token_ids, cache, cache_index, cache_mask, position_ids) -> (logits,
cache)``, and a ``max_sequence_length`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from tflm.errors import GenerationError
from tflm.generation import beam

MIN_BUCKET = 8


def compile_fn(fn: Callable, model: keras.Model) -> Callable:
    """`fn(*tensors)` compiled with XLA for the current Keras backend (eager elsewhere).

    On JAX the model's weights are passed in as arguments (a ``StatelessScope``), so the
    compiled function sees weight updates instead of baking them in as constants.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, autograph=False)
    if backend == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in model.variables], *args)
    return fn


def bucket_length(length: int, max_new_tokens: int, max_sequence_length: int) -> int:
    """The padded prompt length: the next power of two >= max(length, 8), capped so that
    bucket + max_new_tokens fits the position table."""
    bucket = max(MIN_BUCKET, 1 << max(0, int(length) - 1).bit_length())
    return max(int(length), min(bucket, max_sequence_length - max_new_tokens))


def left_pad(prompt_ids: Sequence[Sequence[int]], length: int, pad_id: int):
    """(tokens, mask) int32 numpy arrays (B, length), prompts aligned to the right."""
    tokens = np.full((len(prompt_ids), length), pad_id, dtype="int32")
    mask = np.zeros((len(prompt_ids), length), dtype="int32")
    for row, ids in enumerate(prompt_ids):
        if len(ids):
            tokens[row, length - len(ids) :] = ids
            mask[row, length - len(ids) :] = 1
    return tokens, mask


def prefill(model, tokens, mask, max_new_tokens: int):
    """Runs the left-padded prompt through the model into a fresh cache.

    Args:
        tokens, mask: (B, P) int32, mask 1 on real tokens (pads on the left).
    Returns:
        (last_logits (B, V), cache, cache_mask (B, P + N), lengths (B,)): the cache holds
        the prompt in slots [0, P); decode step t writes slot P + t with position
        lengths + t.
    """
    batch, prompt_len = tokens.shape
    cache = model.init_cache(batch, prompt_len + max_new_tokens)
    # Slots after the prompt are allowed; causality hides those not yet written.
    cache_mask = ops.concatenate([mask, ops.ones((batch, max_new_tokens), "int32")], axis=1)
    positions = ops.maximum(ops.cumsum(mask, axis=1) - 1, 0)  # (B, P), 0 at the first real token
    if hasattr(model, "backbone") and hasattr(model, "logits"):
        # GPT: project only the last position to the vocabulary (P times less head work).
        hidden, cache = model.backbone.call_with_cache(
            tokens, cache, 0, cache_mask=cache_mask, position_ids=positions
        )
        logits = model.logits(hidden[:, -1:, :])  # (B, 1, V)
    else:
        logits, cache = model.call_with_cache(
            tokens, cache, 0, cache_mask=cache_mask, position_ids=positions
        )
    return logits[:, -1, :], cache, cache_mask, ops.sum(mask, axis=1)


def decode_step(model, token, cache, cache_mask, slot, positions):
    """Feeds one token per sequence: token (B,) at cache `slot`, positions (B,) ->
    (next-token logits (B, V), cache)."""
    logits, cache = model.call_with_cache(
        token[:, None], cache, slot, cache_mask=cache_mask, position_ids=positions[:, None]
    )
    return logits[:, -1, :], cache  # (B, V)


def sample_loop(model, sampler: Callable, tokens, mask, key, stop_mask, pad_id, max_new_tokens):
    """Prefill + while loop drawing one token per step; returns (B, N) int32 ids.

    After a sequence's stop token its later positions hold pad_id; the loop exits when all
    sequences stopped.
    """
    batch, prompt_len = tokens.shape
    logits, cache, cache_mask, lengths = prefill(model, tokens, mask, max_new_tokens)
    columns = ops.arange(max_new_tokens, dtype="int32")[None, :]  # (1, N)
    token = sampler(logits, key, 0)  # (B,)
    done = ops.take(stop_mask, token)
    out = ops.full((batch, max_new_tokens), pad_id, "int32")
    out = ops.where(columns == 0, token[:, None], out)

    def cond(step, token, done, cache, out):
        return ops.logical_and(step < max_new_tokens, ops.logical_not(ops.all(done)))

    def body(step, token, done, cache, out):
        # Feed the token of step - 1 (slot P + step - 1), draw the token of `step`.
        logits, cache = decode_step(
            model, token, cache, cache_mask, prompt_len + step - 1, lengths + step - 1
        )
        new = ops.where(done, pad_id, sampler(logits, key, step))
        out = ops.where(columns == step, new[:, None], out)
        return step + 1, new, ops.logical_or(done, ops.take(stop_mask, new)), cache, out

    state = (ops.convert_to_tensor(1, "int32"), token, done, cache, out)
    return ops.while_loop(cond, body, state, maximum_iterations=max_new_tokens)[-1]


def beam_loop(model, num_beams, tokens, mask, stop_mask, pad_id, length_penalty, max_new_tokens):
    """Prefill W copies of each prompt, then beam search; returns (B, N) int32 ids."""
    prompt_len = tokens.shape[1]
    tokens = ops.repeat(tokens, num_beams, axis=0)  # (B * W, P)
    mask = ops.repeat(mask, num_beams, axis=0)
    logits, cache, cache_mask, lengths = prefill(model, tokens, mask, max_new_tokens)

    def step_fn(token, cache, step):
        return decode_step(model, token, cache, cache_mask, prompt_len + step, lengths + step)

    ids, _ = beam.beam_search(
        logits,
        cache,
        step_fn,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        stop_mask=stop_mask,
        pad_id=pad_id,
        length_penalty=length_penalty,
    )
    return ids


def check_prompts(
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    max_sequence_length: int,
    vocabulary_size: int,
    truncate: bool = False,
) -> list[list[int]]:
    """Validates a request; returns the prompts as int lists (left-truncated if asked).

    Raises:
        GenerationError: see `generate_ids`.
    """
    if isinstance(prompt_ids, str) or not len(prompt_ids):
        raise GenerationError(
            f"prompt_ids must be a non-empty list of token-id lists, got {prompt_ids!r}"
        )
    prompts = [[int(t) for t in p] for p in prompt_ids]
    limit, vocab = max_sequence_length, vocabulary_size
    if int(max_new_tokens) < 1:
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if max_new_tokens >= limit:
        raise GenerationError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"max_sequence_length {limit}; ask for fewer than {limit} tokens"
        )
    for i, ids in enumerate(prompts):
        if not ids:
            raise GenerationError(f"prompt {i} is empty; give at least one token (e.g. the eos id)")
        if min(ids) < 0 or max(ids) >= vocab:
            raise GenerationError(
                f"prompt {i} holds a token id outside the vocabulary [0, {vocab})"
            )
        if len(ids) + max_new_tokens > limit:
            if not truncate:
                raise GenerationError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens {max_new_tokens} "
                    f"that is {len(ids) + max_new_tokens} positions, past the model's "
                    f"max_sequence_length {limit}; shorten the prompt, lower max_new_tokens "
                    "or pass truncate=True to drop the oldest tokens"
                )
            prompts[i] = ids[len(ids) + max_new_tokens - limit :]
    return prompts
