"""``Decoder``: compiles and caches the generation functions of one model; ``generate_ids``.

See ``decode.py`` for the steps (bucketing, prefill, the compiled loop).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
from keras import ops

from tflm.errors import GenerationError
from tflm.generation import samplers
from tflm.generation.decode import (
    beam_loop,
    bucket_length,
    check_prompts,
    compile_fn,
    decode_step,
    left_pad,
    prefill,
    sample_loop,
    stack_prompts,
)


class Decoder:
    """Generates token ids with `model`, keeping one compiled function per shape/setting.

    ``traces`` counts how often a function was traced (compiled); prompts of different
    lengths within one bucket reuse the same function, and seed, temperature, top_p,
    stop tokens, pad id and length penalty are inputs (changing them does not recompile).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.traces = 0
        self._functions: dict[tuple, Callable] = {}

    def _function(self, key: tuple, fn: Callable) -> Callable:
        if key not in self._functions:

            def traced(*args):
                self.traces += 1
                return fn(*args)

            self._functions[key] = compile_fn(traced, self.model)
        return self._functions[key]

    def _prepare(self, prompt_ids, max_new_tokens, stop_tokens, pad_id, truncate):
        """Checked prompts in a bucket: (tokens (B, P), lengths (B,), stop_mask (V,), pad);
        the compiled functions left-pad them."""
        prompt_ids = check_prompts(
            prompt_ids, max_new_tokens, self.model.max_sequence_length,
            self.model.vocabulary_size, truncate,
        )
        vocab = self.model.vocabulary_size
        stop_mask = np.zeros((vocab,), dtype=bool)
        for token in stop_tokens or ():
            if not 0 <= int(token) < vocab:
                raise GenerationError(f"stop token {token} is outside the vocabulary [0, {vocab})")
            stop_mask[int(token)] = True
        length = bucket_length(
            max(len(p) for p in prompt_ids), self.model.max_sequence_length - max_new_tokens
        )
        tokens, lengths = stack_prompts(prompt_ids, length)
        return tokens, lengths, stop_mask, np.asarray(pad_id, "int32")

    @staticmethod
    def _sampling(sampler, temperature, top_k, top_p, seed):
        """(static key part, sampler factory, runtime inputs (seed, temperature, top_p))."""
        samplers.make_sampler(sampler, temperature, top_k, top_p)  # checks the options
        top_k = int(top_k) if sampler == "top_k" else None

        def factory(temperature, top_p):
            return samplers.make_sampler(sampler, temperature, top_k, top_p)

        top_p = samplers.DEFAULT_TOP_P if top_p is None else top_p
        inputs = (
            samplers.seed_tensor(seed),
            np.asarray(temperature, "float32"),
            np.asarray(top_p, "float32"),
        )
        return (sampler, top_k), factory, inputs

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        max_new_tokens: int = 64,
        sampler: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_beams: int | None = None,
        length_penalty: float = 1.0,
        seed: int = 0,
        stop_tokens: Sequence[int] | None = None,
        pad_id: int = 0,
        truncate: bool = False,
    ) -> np.ndarray:
        """New tokens for each prompt: (B, max_new_tokens) int32 numpy array.

        A row ends with its first stop token (kept) followed by pad_id. See
        `generate_ids` for the arguments and errors.
        """
        tokens, lengths, stop_mask, pad = self._prepare(
            prompt_ids, max_new_tokens, stop_tokens, pad_id, truncate
        )
        batch, prompt_len = tokens.shape
        shape = (batch, prompt_len, max_new_tokens)
        if num_beams is not None:
            if int(num_beams) < 1:
                raise GenerationError(f"num_beams must be >= 1, got {num_beams}")
            width = int(num_beams)

            def loop(tokens, lengths, stop_mask, pad, alpha):
                return beam_loop(
                    self.model, width, tokens, lengths, stop_mask, pad, alpha, max_new_tokens
                )

            fn = self._function(("beam", *shape, width), loop)
            out = fn(tokens, lengths, stop_mask, pad, np.asarray(length_penalty, "float32"))
        else:
            key, factory, inputs = self._sampling(sampler, temperature, top_k, top_p, seed)

            def loop(tokens, lengths, stop_mask, pad, seed, temperature, top_p):
                tokens, mask = left_pad(tokens, lengths, prompt_len, prompt_len, pad)
                state = prefill(self.model, tokens, mask, prompt_len + max_new_tokens)
                return sample_loop(
                    self.model, factory(temperature, top_p), state, seed, stop_mask, pad,
                    max_new_tokens, max_new_tokens,
                )

            fn = self._function(("sample", *shape, *key), loop)
            out = fn(tokens, lengths, stop_mask, pad, *inputs)
        return np.asarray(ops.convert_to_numpy(out), dtype="int32")

    def stream(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int = 64,
        sampler: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        stop_tokens: Sequence[int] | None = None,
        truncate: bool = False,
    ) -> Iterator[int]:
        """Yields the new tokens of one prompt as they are produced (the stop token last).

        One compiled prefill, then one compiled decode step per token; the same tokens as
        `generate` with the same arguments.
        """
        tokens, lengths, stop_mask, pad = self._prepare(
            [prompt_ids], max_new_tokens, stop_tokens, 0, truncate
        )
        key, factory, (seed, temperature, top_p) = self._sampling(
            sampler, temperature, top_k, top_p, seed
        )
        prompt_len = tokens.shape[1]
        shape = (prompt_len, max_new_tokens, *key)

        def first(tokens, lengths, pad, seed, temperature, top_p):
            tokens, mask = left_pad(tokens, lengths, prompt_len, prompt_len, pad)
            state = prefill(self.model, tokens, mask, prompt_len + max_new_tokens)
            token = factory(temperature, top_p)(state.logits, seed, 0)
            return token, state.cache, state.cache_mask, state.position

        def step(token, cache, cache_mask, slot, positions, seed, index, temperature, top_p):
            logits, cache = decode_step(self.model, token, cache, cache_mask, slot, positions)
            return factory(temperature, top_p)(logits, seed, index), cache

        token, cache, cache_mask, position = self._function(("prefill", *shape), first)(
            tokens, lengths, pad, seed, temperature, top_p
        )
        step_fn = self._function(("step", *shape), step)
        for index in range(max_new_tokens):
            token_id = int(ops.convert_to_numpy(token)[0])
            yield token_id
            if stop_mask[token_id] or index + 1 == max_new_tokens:
                return
            token, cache = step_fn(
                token, cache, cache_mask, np.asarray(prompt_len + index, "int32"),
                position + index, seed, np.asarray(index + 1, "int32"), temperature, top_p,
            )


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_decoder(model: keras.Model) -> Decoder:
    """The Decoder of `model`, created once so its compiled functions are reused."""
    if model not in _DECODERS:
        _DECODERS[model] = Decoder(model)
    return _DECODERS[model]


def generate_ids(
    model: keras.Model,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    **kwargs,
) -> np.ndarray:
    """Generates up to `max_new_tokens` tokens after each prompt with `model`.

    Args:
        model: a `tflm.models.GPT` (or anything with its cache contract).
        prompt_ids: B non-empty lists of token ids, any lengths.
        max_new_tokens: N >= 1; every prompt length + N must fit max_sequence_length.
        sampler: "greedy" | "temperature" | "top_k" | "top_p" (ignored with num_beams).
        temperature, top_k, top_p: sampler options.
        num_beams: beam search with this width instead of sampling.
        length_penalty: beam score = log-prob sum / length ** length_penalty.
        seed: int; the same seed gives the same samples.
        stop_tokens: ids that end a sequence (kept in the output, pad_id after).
        pad_id: id written after a sequence ends, and used to pad prompts.
        truncate: drop the oldest prompt tokens instead of raising when too long.
    Returns:
        (B, N) int32 numpy array of new tokens.
    Raises:
        GenerationError: empty prompt list or prompt, max_new_tokens < 1, a prompt that
        does not fit the position table, ids outside the vocabulary, unknown sampler.
    """
    return get_decoder(model).generate(prompt_ids, max_new_tokens, **kwargs)
