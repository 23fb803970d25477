"""The generation loop of the SavedModel: prefill + decode over a fixed window, XLA-compiled.

Unlike ``tflm.generation.decode`` (compiled per prompt bucket, ``max_new_tokens`` and
sampler, chosen in Python), one compiled function here serves every request: the prompt
window is always S = ``max_sequence_length`` and ``max_new_tokens``, ``temperature``,
``top_k``, ``top_p`` and ``seed`` are tensors. It runs on int tensors only (strings are
tokenized before it and detokenized after it).
"""

from __future__ import annotations

from keras import ops

from tflm.generation import samplers

_MASKED = -1e9


def sample(logits, seed, step, temperature, top_k, top_p):
    """Next ids (B,) from (B, V) logits with runtime sampler options (XLA friendly).

    ``temperature <= 0`` is greedy; ``top_k <= 0`` and ``top_p >= 1`` turn those filters
    off. The noise is ``tflm.generation.samplers.uniform_noise`` (a pure function of
    ``(seed, step)``; the Gumbel-max trick); unlike the samplers there, every option is a
    tensor, so one compiled loop serves all requests.
    """
    logits = ops.cast(logits, "float32")

    def draw():
        scaled = logits / ops.maximum(temperature, 1e-6)
        vocab = scaled.shape[-1]
        descending = ops.flip(ops.sort(scaled, axis=-1), axis=-1)  # (B, V)
        # top-k: drop logits below the k-th largest.
        k = ops.reshape(ops.clip(top_k, 1, vocab) - 1, (1,))
        keep = ops.logical_or(top_k <= 0, scaled >= ops.take(descending, k, axis=1))
        # top-p: keep the fewest best tokens whose probability sum reaches top_p.
        probs = ops.softmax(descending, axis=-1)
        in_nucleus = (ops.cumsum(probs, axis=-1) - probs) < top_p  # sorted order
        threshold = ops.min(ops.where(in_nucleus, descending, -_MASKED), axis=-1,
                            keepdims=True)
        keep = ops.logical_and(keep, scaled >= threshold)  # (B, V)
        noise = samplers.uniform_noise((ops.shape(scaled)[0], vocab), seed, step)
        gumbel = -ops.log(-ops.log(noise))
        return ops.cast(ops.argmax(ops.where(keep, scaled, _MASKED) + gumbel, axis=-1), "int32")

    # Greedy requests skip the sort over the vocabulary.
    return ops.cond(temperature > 0, draw, lambda: samplers.greedy(logits))


def decode_loop(module, ids, prompt_end, lengths, max_new, temperature, top_k, top_p, seed):
    """The compiled generation loop over a fixed (B, S) window (int tensors only).

    Args:
        ids: (B, S) int32, row i's prompt in slots [prompt_end - lengths[i], prompt_end).
        prompt_end: int32 scalar, the first slot after the prompts.
        lengths: (B,) int32 prompt lengths.
        max_new: int32 scalar <= S - prompt_end, the number of tokens to generate.
    Returns:
        (B, S) int32: the new tokens in columns [0, max_new); after a row's end-of-text
        token and past max_new, ``module.pad_id``.
    """
    model, window = module.model, module.window
    batch = ops.shape(ids)[0]
    slots = ops.arange(window, dtype="int32")[None, :]  # (1, S)
    first = (prompt_end - lengths)[:, None]  # (B, 1) slot of each row's first token
    cache_mask = ops.logical_and(slots >= first, slots < prompt_end)  # (B, S)
    positions = ops.maximum(slots - first, 0)  # (B, S)
    cache = model.init_cache(batch, window)  # (B, L, 2, S, H, D)
    logits, cache = model.call_with_cache(
        ids, cache, 0, cache_mask=cache_mask, position_ids=positions
    )  # (B, S, V)
    next_logits = ops.take(logits, ops.reshape(prompt_end - 1, (1,)), axis=1)[:, 0]  # (B, V)
    tokens = ops.full((batch, window), module.pad_id, dtype="int32")
    done = ops.zeros((batch,), dtype="bool")

    def cond(step, cache, cache_mask, next_logits, tokens, done):
        return ops.logical_and(step < max_new, ops.logical_not(ops.all(done)))

    def body(step, cache, cache_mask, next_logits, tokens, done):
        token = sample(next_logits, seed, step, temperature, top_k, top_p)  # (B,)
        token = ops.where(done, module.pad_id, token)
        tokens = ops.slice_update(tokens, [0, step], token[:, None])
        if module.eos_id is not None:
            done = ops.logical_or(done, token == module.eos_id)
        index = prompt_end + step
        cache_mask = ops.logical_or(cache_mask, slots == index)
        logits, cache = model.call_with_cache(
            token[:, None], cache, index, cache_mask=cache_mask,
            position_ids=(lengths + step)[:, None],
        )  # (B, 1, V)
        return step + 1, cache, cache_mask, logits[:, 0], tokens, done

    state = (ops.convert_to_tensor(0, "int32"), cache, cache_mask, next_logits, tokens, done)
    return ops.while_loop(cond, body, state)[4]
