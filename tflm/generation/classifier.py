"""What `tflm.load` returns for fine-tuned models: `TextClassifier.classify`,
`TextRegressor.predict` and `TokenTagger.tag` on strings (each also `embed`s).

Texts are laid out exactly as the training pipeline lays them out (the same in-graph
packing, `tflm.data.encoding`, at the run's `config.data.seq_len`): `[CLS] text [SEP]`
or `[CLS] a [SEP] b [SEP]` for an encoder, `text eos` / `a eos b eos` for a decoder.
Batches have a fixed size and run through one compiled function.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from absl import logging
from keras import ops

from tflm.errors import GenerationError
from tflm.generation.decode import compile_fn

BATCH = 32  # examples per compiled call (fixed, so the shape repeats)


class _FineTuned:
    """Shared: input layout, batching, the compiled forward pass, `embed`."""

    def __init__(self, model: keras.Model, tokenizer, config):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.pairs = bool(config.data.text_pair_column)
        self._function = None
        self._encoder = None

    @property
    def labels(self) -> list[str]:
        return list(getattr(self.model, "labels", ()))

    def features(self, texts) -> dict:
        """Packed inputs (N, seq_len) of texts (or (a, b) pairs), cut texts warned."""
        import tensorflow as tf

        from tflm.data.classification import layout_ids
        from tflm.data.encoding import pack_texts, special_count, tokenize

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise GenerationError(f"pass a list of texts, got {type(texts).__name__}; wrap a "
                                  "single text in a list")
        texts = list(texts)
        paired = [isinstance(t, (tuple, list)) and len(t) == 2 for t in texts]
        if self.pairs and not all(paired):
            raise GenerationError("this model was fine-tuned on text pairs: pass (text_a, "
                                  "text_b) tuples")
        if not self.pairs and any(paired) or not all(isinstance(t, (str, tuple, list))
                                                     for t in texts):
            raise GenerationError("this model was fine-tuned on single texts: pass a list of "
                                  "strings")
        seq_len = self.config.data.seq_len
        cls_id, sep_id, pad_id = layout_ids(self.tokenizer)
        budget = seq_len - special_count(cls_id, sep_id, self.pairs)
        if self.pairs:
            first = tokenize(self.tokenizer, tf.constant([a for a, _ in texts]))
            second = tokenize(self.tokenizer, tf.constant([b for _, b in texts]))
            lengths = first.row_lengths() + second.row_lengths()
        else:
            first, second = tokenize(self.tokenizer, tf.constant(texts)), None
            lengths = first.row_lengths()
        cut = int(np.sum(lengths.numpy() > budget))
        if cut:
            logging.warning("%d of %d texts are longer than %d tokens and were cut at the "
                            "end.", cut, len(texts), budget)
        x = pack_texts(first, second, seq_len, cls_id, sep_id, pad_id,
                       segments=self.model.backbone.num_segments > 0)
        return {k: v.numpy().astype("int32") for k, v in x.items()}

    def _outputs(self, texts) -> np.ndarray:
        """The task model's outputs for every text, in order."""
        return self._run(self.features(texts))

    def _run(self, features: dict) -> np.ndarray:
        """The task model's outputs for packed features (N, seq_len), in fixed batches."""
        if self._function is None:
            self._function = compile_fn(lambda x: self.model(x, training=False), self.model)
        count = len(features["token_ids"])
        outputs = []
        for first in range(0, count, BATCH):
            chunk = {}
            for name, values in features.items():
                part = values[first:first + BATCH]
                chunk[name] = np.pad(part, [(0, BATCH - len(part)), (0, 0)])
            out = np.asarray(ops.convert_to_numpy(self._function(chunk)))
            outputs.append(out[:min(BATCH, count - first)])
        return np.concatenate(outputs) if outputs else np.zeros((0,), "float32")

    def embed(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """L2-normalised sentence vectors of the fine-tuned backbone
        (`tflm.generation.SentenceEncoder`)."""
        from tflm.generation.embedding import SentenceEncoder

        if self._encoder is None:
            self._encoder = SentenceEncoder(self.model.backbone, self.tokenizer, self.config)
        return self._encoder.embed(texts, **kwargs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class TextClassifier(_FineTuned):
    """A fine-tuned `SequenceClassifier` with its tokenizer (`classification`)."""

    def classify(self, texts) -> list[dict]:
        """The predicted label of each text (or `(a, b)` pair).

        Returns:
            Per text `{"label": str, "score": float, "probabilities": {label: float}}`.

        Raises:
            GenerationError: single texts for a pair model or the other way round.
        """
        if not len(texts):
            return []
        probabilities = _softmax(self._outputs(texts))
        labels = self.labels
        return [{"label": labels[int(np.argmax(p))], "score": float(np.max(p)),
                 "probabilities": {label: float(q) for label, q in zip(labels, p)}}
                for p in probabilities]


class TextRegressor(_FineTuned):
    """A fine-tuned `SequenceRegressor` with its tokenizer (`regression`)."""

    def predict(self, texts) -> np.ndarray:
        """(N,) float32 predictions for texts (or `(a, b)` pairs)."""
        if not len(texts):
            return np.zeros((0,), "float32")
        return self._outputs(texts).astype("float32")


class TokenTagger(_FineTuned):
    """A fine-tuned `TokenClassifier` with its tokenizer (`token_classification`)."""

    def tag(self, texts) -> list[list[dict]]:
        """The tag of every word: texts are strings (split on whitespace) or word lists.

        Returns:
            Per text, per word `{"word", "label", "score"}` (label None for words past
            the model's `config.data.seq_len` tokens, with a warning).
        """
        from tflm.data.token_classification import encode_words

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise GenerationError(f"pass a list of texts (or word lists), got "
                                  f"{type(texts).__name__}")
        sentences = [t.split() if isinstance(t, str) else [str(w) for w in t] for t in texts]
        if not sentences:
            return []
        token_ids, mask, first = encode_words(self.tokenizer, sentences, self.config.data.seq_len)
        features = {"token_ids": token_ids, "padding_mask": mask}
        if self.model.backbone.num_segments:
            features["segment_ids"] = np.zeros_like(token_ids)
        probabilities = _softmax(self._run(features))
        labels, results, cut = self.labels, [], 0
        for row, words in enumerate(sentences):
            tagged = []
            for i, word in enumerate(words):
                position = first[row, i]
                if position < 0:
                    cut += 1
                    tagged.append({"word": word, "label": None, "score": None})
                    continue
                p = probabilities[row, position]
                tagged.append({"word": word, "label": labels[int(np.argmax(p))],
                               "score": float(np.max(p))})
            results.append(tagged)
        if cut:
            logging.warning("%d words did not fit the model's %d tokens and are not tagged.",
                            cut, self.config.data.seq_len)
        return results
