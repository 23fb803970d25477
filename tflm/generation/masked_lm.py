"""`MaskedLanguageModel`: fill-mask, encoding and sentence embeddings on strings around a
masked-LM model.

Texts are laid out as in pre-training, `[CLS] text [SEP]` (segment 0), with every
literal mask token of the tokenizer (`[MASK]`) kept as the mask id
(`tflm.text.masks.encode_with_masks`). Batches are padded to a bucket length and run
through one compiled function per (bucket, masks per text), as `LanguageModel` does.
`embed` / `similarity` are a `tflm.generation.embedding.SentenceEncoder`'s on the
backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
from absl import logging
from keras import ops

from tflm.errors import GenerationError
from tflm.generation.decode import bucket_length, compile_fn
from tflm.generation.embedding import SentenceEncoder

BATCH = 8  # texts per compiled call (fixed, so shapes repeat)


class Encoding(NamedTuple):
    """What `MaskedLanguageModel.encode` returns for N texts."""

    hidden_states: list[np.ndarray]  # N arrays (tokens_i, hidden): [CLS] ... [SEP]
    pooled: np.ndarray  # (N, hidden): the backbone's pooled output (first token)
    token_ids: list[list[int]]  # the ids each row of hidden_states belongs to


class MaskedLanguageModel:
    """A masked LM with its tokenizer: `fill_mask`, `encode`, `embed` and `similarity` on
    strings.

    Args:
        model: a `tflm.models.BertPretrainer` (anything with a `backbone` and an
            `mlm_head(sequence_output, mask_positions) -> (B, P, V)` logits).
        tokenizer: a tokenizer with `cls_id`, `sep_id`, `mask_id` and a mask token.
        config: the run's config (its `config.model.backbone.pooling` sets `embed`'s
            pooling, see `tflm.generation.embedding.sentence_pooling`).
    """

    def __init__(self, model: keras.Model, tokenizer, config=None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._functions: dict[tuple, object] = {}
        self._sentence_encoder = None

    def _sequences(self, texts: Sequence[str]) -> list[list[int]]:
        """`[CLS] ids [SEP]` of each text, cut to the model's positions (warned)."""
        from tflm.text.masks import encode_with_masks

        if isinstance(texts, str) or not len(texts):
            raise GenerationError(
                f"texts must be a non-empty list of strings, got {texts!r}; wrap a single "
                "text in a list")
        limit = self.model.max_sequence_length - 2
        encoded = encode_with_masks(self.tokenizer, list(texts))
        cut = sum(len(ids) > limit for ids in encoded)
        if cut:
            logging.warning("%d of %d texts are longer than the model's %d tokens and were "
                            "cut at the end.", cut, len(encoded), limit)
        cls_id, sep_id = self.tokenizer.cls_id, self.tokenizer.sep_id
        return [[cls_id, *ids[:limit], sep_id] for ids in encoded]

    def _run(self, sequences: list[list[int]], positions: list[list[int]], width: int):
        """Model outputs for sequences in fixed-size chunks: (mlm logits (N, width, V)
        float32, sequence outputs list, pooled (N, hidden))."""
        length = bucket_length(max(len(s) for s in sequences), self.model.max_sequence_length)
        key = (length, width)
        if key not in self._functions:
            self._functions[key] = compile_fn(self._forward, self.model)
        logits, hidden, pooled = [], [], []
        for first in range(0, len(sequences), BATCH):
            chunk = sequences[first:first + BATCH]
            tokens = np.zeros((BATCH, length), "int32")
            mask = np.zeros((BATCH, length), "int32")
            where = np.zeros((BATCH, width), "int32")
            for row, ids in enumerate(chunk):
                tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
                where[row, :len(positions[first + row])] = positions[first + row]
            out = self._functions[key](tokens, mask, where)
            out = [np.asarray(ops.convert_to_numpy(o)) for o in out]
            logits.append(out[0][:len(chunk)])
            hidden += [out[1][row, :len(ids)] for row, ids in enumerate(chunk)]
            pooled.append(out[2][:len(chunk)])
        return np.concatenate(logits), hidden, np.concatenate(pooled)

    def _forward(self, tokens, mask, mask_positions):
        x = {"token_ids": tokens, "padding_mask": mask,
             "segment_ids": ops.zeros_like(tokens)}
        outputs = self.model.backbone(x)
        logits = self.model.mlm_head(outputs["sequence_output"], mask_positions)
        return logits, outputs["sequence_output"], outputs["pooled_output"]

    def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list[list[list[dict]]]:
        """The `top_k` most likely tokens at every mask token of every text.

        Returns:
            For each text, for each of its mask tokens (left to right), `top_k` dicts
            `{"token_id", "token", "score"}` (score = probability), most likely first.

        Raises:
            GenerationError: a text without the tokenizer's mask token, or top_k < 1.
        """
        from tflm.text.masks import mask_token

        if int(top_k) < 1:
            raise GenerationError(f"top_k must be >= 1, got {top_k}")
        sequences = self._sequences(texts)
        mask_id = self.tokenizer.mask_id
        positions = [[i for i, t in enumerate(s) if t == mask_id] for s in sequences]
        for text, found in zip(texts, positions):
            if not found:
                raise GenerationError(
                    f"text {text!r} has no mask token {mask_token(self.tokenizer)!r} (or it "
                    "was cut off); write the token where a word should be predicted")
        width = max(len(p) for p in positions)
        logits, _, _ = self._run(sequences, positions, width)
        results = []
        for row, found in enumerate(positions):
            masks = []
            for slot in range(len(found)):
                probs = _softmax(logits[row, slot])
                best = np.argsort(-probs, kind="stable")[:int(top_k)]
                masks.append([{"token_id": int(i), "token": self.tokenizer.id_to_token(int(i)),
                               "score": float(probs[i])} for i in best])
            results.append(masks)
        return results

    def encode(self, texts: Sequence[str]) -> Encoding:
        """Hidden states of every token of `[CLS] text [SEP]` and the pooled vector."""
        sequences = self._sequences(texts)
        _, hidden, pooled = self._run(sequences, [[] for _ in sequences], 1)
        return Encoding(hidden, pooled, sequences)

    def _encoder(self):
        """The `SentenceEncoder` on the backbone (made on first use)."""
        if self._sentence_encoder is None:
            self._sentence_encoder = SentenceEncoder(self.model.backbone, self.tokenizer,
                                                     self.config)
        return self._sentence_encoder

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """(N, hidden) float32 L2-normalised sentence embeddings, in input order
        (`tflm.generation.embedding.SentenceEncoder.embed`)."""
        return self._encoder().embed(texts, batch_size=batch_size, progress=progress)

    def similarity(self, a, b):
        """Cosine similarity of two texts, or pairwise of two equal-length lists
        (`tflm.generation.embedding.SentenceEncoder.similarity`)."""
        return self._encoder().similarity(a, b)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()
