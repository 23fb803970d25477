"""`LanguageModel`: text in, text out around a GPT and its tokenizer.

Strings never enter XLA: prompts are encoded in Python, the compiled decode loop
(`decode.py`) works on ids, and the new ids are decoded back to text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from tflm import special_ids
from tflm.errors import GenerationError
from tflm.generation.decode import bucket_length, compile_fn
from tflm.generation.decoder import get_decoder

SCORE_BATCH = 8  # windows per compiled scoring call (fixed, so shapes repeat)


class TextScore(NamedTuple):
    """How likely the model finds one text."""

    log_likelihood: float  # natural-log probability of the text's tokens
    perplexity: float  # exp(-log_likelihood / num_tokens); nan for an empty text
    num_tokens: int


class LanguageModel:
    """A causal LM with its tokenizer: `generate`, `stream` and `score` on strings.

    Args:
        model: a `tflm.models.GPT` (`call`, `call_with_cache`, `init_cache`).
        tokenizer: has `encode(list[str]) -> list[list[int]]`, `decode(list[int]) -> str`,
            `eos_id`, `pad_id` (and optionally `cls_id`), `vocabulary_size`.
        config: the run's ConfigDict (kept for callers; generation reads the model).

    An empty prompt starts from, and `score` scores after, the start token
    (`special_ids.start_id`: end-of-text, i.e. a fresh document; the model saw it between
    training documents), as the SavedModel's signatures do.
    """

    def __init__(self, model: keras.Model, tokenizer, config=None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.decoder = get_decoder(model)
        self._score_fns: dict[tuple, object] = {}

    @property
    def _eos_id(self) -> int | None:
        return getattr(self.tokenizer, "eos_id", None)

    def _stop_ids(self, stop_tokens: Sequence[int] | None) -> list[int]:
        stops = [] if self._eos_id is None else [self._eos_id]
        return stops + [int(t) for t in stop_tokens or ()]

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        if isinstance(prompts, str) or not len(prompts):
            raise GenerationError(
                f"prompts must be a non-empty list of strings, got {prompts!r}; wrap a "
                "single prompt in a list"
            )
        return [
            special_ids.prompt_ids(self.tokenizer, ids)
            for ids in self.tokenizer.encode(list(prompts))
        ]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        sampler: str = "top_p",
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = 0.9,
        num_beams: int | None = None,
        length_penalty: float = 1.0,
        seed: int = 0,
        stop_tokens: Sequence[int] | None = None,
        return_ids: bool = False,
        truncate: bool = False,
    ) -> list[str] | tuple[list[str], list[list[int]]]:
        """Continues each prompt; one compiled loop for the whole (left-padded) batch.

        Args:
            prompts: list of strings (an empty string starts a new document).
            max_new_tokens: most tokens generated per prompt.
            sampler: "greedy" | "temperature" | "top_k" | "top_p"; `num_beams` overrides.
            temperature, top_k, top_p: sampler options.
            num_beams, length_penalty: beam search of that width, score / len ** penalty.
            seed: the same seed gives the same text.
            stop_tokens: ids that end a continuation, besides the tokenizer's eos.
            return_ids: also return the new ids (up to and including a stop token).
            truncate: drop the oldest prompt tokens when prompt + new tokens do not fit.
        Returns:
            The continuations (without the stop token), and the ids if asked.
        Raises:
            GenerationError: see `tflm.generation.generate_ids`.
        """
        out = self.decoder.generate(
            self._encode(prompts),
            max_new_tokens=max_new_tokens,
            sampler=sampler,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            length_penalty=length_penalty,
            seed=seed,
            stop_tokens=self._stop_ids(stop_tokens),
            pad_id=special_ids.pad_id(self.tokenizer),
            truncate=truncate,
        )
        stops = set(self._stop_ids(stop_tokens))
        ids = [_until_stop(row.tolist(), stops) for row in out]
        texts = [self.tokenizer.decode([t for t in row if t not in stops]) for row in ids]
        return (texts, ids) if return_ids else texts

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        sampler: str = "top_p",
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = 0.9,
        seed: int = 0,
        stop_tokens: Sequence[int] | None = None,
        truncate: bool = False,
    ) -> Iterator[str]:
        """Yields the continuation of one prompt piece by piece as tokens are produced.

        The pieces join to `generate([prompt], ...)[0]` with the same arguments. A piece
        is held back while it ends in an incomplete character.
        """
        stops = set(self._stop_ids(stop_tokens))
        ids: list[int] = []
        shown = ""
        for token in self.decoder.stream(
            self._encode([prompt])[0],
            max_new_tokens=max_new_tokens,
            sampler=sampler,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop_tokens=sorted(stops),
            truncate=truncate,
        ):
            if token in stops:
                break
            ids.append(token)
            text = self.tokenizer.decode(ids)
            if text.endswith("\ufffd") or not text.startswith(shown):
                continue
            if len(text) > len(shown):
                yield text[len(shown) :]
                shown = text
        text = self.tokenizer.decode(ids)
        if len(text) > len(shown) and text.startswith(shown):
            yield text[len(shown) :]

    def score(self, texts: Sequence[str]) -> list[TextScore]:
        """Log-likelihood and perplexity of each text under the model.

        Each text is scored after the start token (so its first token counts too);
        texts longer than the model's positions are cut into windows that overlap by one
        token, every token scored once.
        """
        if isinstance(texts, str) or not len(texts):
            raise GenerationError(f"texts must be a non-empty list of strings, got {texts!r}")
        sequences = [
            special_ids.scored_ids(self.tokenizer, ids)
            for ids in self.tokenizer.encode(list(texts))
        ]
        size = self.model.max_sequence_length
        windows, owners = [], []
        for i, seq in enumerate(sequences):
            for begin in range(0, max(len(seq) - 1, 0), size - 1):
                windows.append(seq[begin : begin + size])
                owners.append(i)
        totals = np.zeros(len(texts))
        for first in range(0, len(windows), SCORE_BATCH):
            chunk = windows[first : first + SCORE_BATCH]
            logp = self._score_windows(chunk)  # (len(chunk),)
            np.add.at(totals, owners[first : first + SCORE_BATCH], logp)
        scores = []
        for total, seq in zip(totals, sequences):
            count = max(len(seq) - 1, 0)
            perplexity = math.exp(-total / count) if count else math.nan
            scores.append(TextScore(float(total), perplexity, count))
        return scores

    def _score_windows(self, windows: list[list[int]]) -> np.ndarray:
        """Sum of next-token log-probs of each window (padded to a fixed compiled shape)."""
        length = bucket_length(max(len(w) for w in windows), self.model.max_sequence_length)
        tokens = np.zeros((SCORE_BATCH, length), "int32")
        mask = np.zeros((SCORE_BATCH, length), "int32")
        for row, window in enumerate(windows):
            tokens[row, : len(window)] = window
            mask[row, : len(window)] = 1
        if length not in self._score_fns:
            self._score_fns[length] = compile_fn(self._window_logp, self.model)
        logp = self._score_fns[length](tokens, mask)
        return np.asarray(ops.convert_to_numpy(logp), "float64")[: len(windows)]

    def _window_logp(self, tokens, mask):
        logits = self.model({"token_ids": tokens, "padding_mask": mask})  # (B, T, V)
        logp = ops.log_softmax(ops.cast(logits[:, :-1], "float32"), axis=-1)
        target = ops.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[:, :, 0]  # (B, T-1)
        return ops.sum(target * ops.cast(mask[:, 1:], "float32"), axis=1)


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    """ids up to and including the first stop token."""
    for i, token in enumerate(ids):
        if token in stops:
            return ids[: i + 1]
    return ids
