"""The building blocks of generation, shared with the SavedModel's ``generate`` signature.

``tflm.generation.decoder.generate_ids(model, prompt_ids, ...)`` puts them together:

1. Prompts of different lengths are stacked in a *bucket* length (``bucket_length``: a
   power of two >= 8), so prompts of similar length share one compiled function.
2. One compiled function (``compile_fn``: XLA via ``tf.function(jit_compile=True)`` on
   TensorFlow, ``jax.jit`` on JAX) left-pads them (``left_pad``), runs the prefill (one
   forward pass over the prompts into a cache of ``bucket + max_new_tokens`` slots) and
   then a ``keras.ops.while_loop`` that feeds one token per step (``sample_loop``, or beam
   search, see ``beam.py``). Each sequence's positions start at 0 at its first real token
   and its pad slots are masked out of attention, so its output does not depend on the
   others. The loop ends when every sequence has produced a stop token or
   ``max_new_tokens`` tokens.
3. Compiled functions are kept per (batch, bucket, max_new_tokens, sampler, beams).

The SavedModel (``tflm.export.signatures``) runs the same ``left_pad``, ``prefill`` and
``sample_loop`` over its fixed window, with the runtime-options sampler
``samplers.sample``.

The model contract (``tflm.models.GPT``): ``init_cache(batch, length)``,
``call_with_cache(token_ids, cache, cache_index, cache_mask, position_ids) -> (logits,
cache)``, ``backbone.call_with_cache(...) -> (hidden, cache)``, ``logits(hidden)``, and
``max_sequence_length``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from tflm.errors import GenerationError
from tflm.generation import beam

MIN_BUCKET = 8


def compile_fn(fn: Callable, model: keras.Model,
               input_specs: Sequence[tuple[tuple, str]] | None = None) -> Callable:
    """`fn(*tensors)` compiled with XLA for the current Keras backend (eager elsewhere).

    On JAX the model's weights are passed in as arguments (a ``StatelessScope``), so the
    compiled function sees weight updates instead of baking them in as constants.

    ``input_specs`` (a ``(shape, dtype)`` per argument, None for a dimension of any size)
    has TensorFlow trace ``fn`` once for every shape they allow: XLA still compiles each
    input shape it meets, but the shapes share one traced graph, which TensorFlow holds
    for good (with each op's Python stack trace: megabytes per trace of a small model).
    JAX traces each shape anyway.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        signature = None if input_specs is None else [
            tf.TensorSpec(shape, dtype) for shape, dtype in input_specs]
        return tf.function(fn, jit_compile=True, autograph=False, input_signature=signature)
    if backend == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in model.variables], *args)
    return fn


def bucket_length(length: int, limit: int) -> int:
    """The padded length of sequences of up to `length` tokens, shared by every length of
    its bucket (so they share a compiled function): the next power of two
    >= max(length, MIN_BUCKET), capped at `limit` but never below `length`."""
    bucket = max(MIN_BUCKET, 1 << max(0, int(length) - 1).bit_length())
    return max(int(length), min(bucket, int(limit)))


def stack_prompts(prompt_ids: Sequence[Sequence[int]], length: int):
    """(tokens (B, length), lengths (B,)) int32 numpy: row i's ids in its first columns
    (the input `left_pad` takes; the slots after them hold 0)."""
    tokens = np.zeros((len(prompt_ids), length), dtype="int32")
    for row, ids in enumerate(prompt_ids):
        tokens[row, : len(ids)] = ids
    return tokens, np.asarray([len(ids) for ids in prompt_ids], dtype="int32")


def left_pad(tokens, lengths, end, total: int, pad_id):
    """Left padding, the one rule of generation and export (keras.ops, in-graph).

    Args:
        tokens: (B, W) int32, row i's n_i tokens in its first n_i columns.
        lengths: (B,) int32 n_i <= end.
        end: int or int32 scalar <= total, the slot after every prompt.
        total: the window length (static).
        pad_id: int or int32 scalar written in the other slots.
    Returns:
        (tokens (B, total), mask (B, total)) int32: row i's tokens in slots
        [end - n_i, end), mask 1 exactly there.
    """
    slots = ops.arange(total, dtype="int32")[None, :]  # (1, total)
    first = end - lengths[:, None]  # (B, 1) the slot of each row's first token
    mask = ops.logical_and(slots >= first, slots < end)  # (B, total)
    source = ops.clip(slots - first, 0, tokens.shape[1] - 1)  # (B, total) column in `tokens`
    moved = ops.take_along_axis(tokens, source, axis=1)
    return ops.where(mask, moved, pad_id), ops.cast(mask, "int32")


class Prefilled(NamedTuple):
    """The state after the prompts; decode step t feeds slot ``slot + t`` at position
    ``position + t``."""

    logits: object  # (B, V) next-token logits after each prompt
    cache: object  # the model's cache, C slots
    cache_mask: object  # (B, C) int32, 0 on the pad slots before each prompt
    slot: object  # int or int32 scalar: the slot of the first new token (prompt end)
    position: object  # (B,) int32: the position of the first new token (prompt length)


def prefill(model, tokens, mask, cache_length: int, prompt_end=None) -> Prefilled:
    """Runs left-padded prompts through the model into a fresh cache.

    Args:
        tokens, mask: (B, T) int32 from `left_pad`: row i's prompt in slots
            [prompt_end - n_i, prompt_end), mask 1 exactly there.
        cache_length: C >= T, the cache slots.
        prompt_end: int or int32 scalar, the slot after the prompts; default T.
    Returns:
        `Prefilled`. Slots from prompt_end on are open in ``cache_mask``: causality hides
        those not yet written, and a decode step writes its slot before attending to it.
    """
    batch, length = ops.shape(tokens)
    prompt_end = length if prompt_end is None else prompt_end
    cache = model.init_cache(batch, cache_length)
    slots = ops.arange(cache_length, dtype="int32")[None, :]  # (1, C)
    prompt = ops.pad(mask, [[0, 0], [0, cache_length - length]])  # (B, C)
    cache_mask = ops.cast(ops.logical_or(prompt > 0, slots >= prompt_end), "int32")
    positions = ops.maximum(ops.cumsum(mask, axis=1) - 1, 0)  # (B, T), 0 at the first token
    hidden, cache = model.backbone.call_with_cache(
        tokens, cache, 0, cache_mask=cache_mask, position_ids=positions
    )  # (B, T, hidden)
    last = ops.reshape(ops.convert_to_tensor(prompt_end - 1, "int32"), (1,))
    # Project only the last prompt position to the vocabulary (T times less head work).
    logits = model.logits(ops.take(hidden, last, axis=1))  # (B, 1, V)
    return Prefilled(logits[:, 0], cache, cache_mask, prompt_end, ops.sum(mask, axis=1))


def decode_step(model, token, cache, cache_mask, slot, positions):
    """Feeds one token per sequence: token (B,) at cache `slot`, positions (B,) ->
    (next-token logits (B, V), cache)."""
    logits, cache = model.call_with_cache(
        token[:, None], cache, slot, cache_mask=cache_mask, position_ids=positions[:, None]
    )
    return logits[:, -1, :], cache  # (B, V)


def sample_loop(model, sampler: Callable, state: Prefilled, key, stop_mask, pad_id, steps,
                width: int):
    """A while loop drawing one token per step after `prefill`; returns (B, width) int32.

    Args:
        sampler: ``sampler(logits, key, step) -> ids`` (``tflm.generation.samplers``).
        stop_mask: (V,) bool, True for the tokens that end a sequence (kept).
        steps: int or int32 scalar in [1, width], the most tokens drawn.
        width: the output columns (static).
    Returns:
        Row i's new tokens in columns [0, steps); pad_id after its stop token and from
        column `steps` on. The loop exits when all sequences stopped.
    """
    batch = ops.shape(state.logits)[0]
    columns = ops.arange(width, dtype="int32")[None, :]  # (1, width)
    token = sampler(state.logits, key, 0)  # (B,)
    done = ops.take(stop_mask, token)
    out = ops.full((batch, width), pad_id, "int32")
    out = ops.where(columns == 0, token[:, None], out)

    def cond(step, token, done, cache, out):
        return ops.logical_and(step < steps, ops.logical_not(ops.all(done)))

    def body(step, token, done, cache, out):
        # Feed the token of step - 1, draw the token of `step`.
        logits, cache = decode_step(
            model, token, cache, state.cache_mask, state.slot + step - 1,
            state.position + step - 1,
        )
        new = ops.where(done, pad_id, sampler(logits, key, step))
        out = ops.where(columns == step, new[:, None], out)
        return step + 1, new, ops.logical_or(done, ops.take(stop_mask, new)), cache, out

    loop_state = (ops.convert_to_tensor(1, "int32"), token, done, state.cache, out)
    return ops.while_loop(cond, body, loop_state, maximum_iterations=width)[-1]


def beam_loop(model, num_beams, tokens, lengths, stop_mask, pad_id, length_penalty,
              max_new_tokens):
    """Left-pads and prefills W copies of each `stack_prompts` row, then beam search;
    returns (B, N) int32 ids."""
    prompt_len = tokens.shape[1]
    tokens = ops.repeat(tokens, num_beams, axis=0)  # (B * W, P)
    lengths = ops.repeat(lengths, num_beams, axis=0)
    tokens, mask = left_pad(tokens, lengths, prompt_len, prompt_len, pad_id)
    state = prefill(model, tokens, mask, prompt_len + max_new_tokens)

    def step_fn(token, cache, step):
        return decode_step(
            model, token, cache, state.cache_mask, state.slot + step, state.position + step
        )

    ids, _ = beam.beam_search(
        state.logits,
        state.cache,
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
