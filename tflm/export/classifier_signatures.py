"""Signatures of fine-tuned models: ``classify``, ``predict`` and ``tag`` on strings for the
SavedModel, the same heads on token ids for TFLite.

Texts are laid out as the fine-tuning pipeline and ``tflm.generation.classifier`` lay them
out, with the same in-graph packing (``tflm.data.encoding``) at the run's
``config.data.seq_len``: ``[CLS] text [SEP]`` / ``[CLS] a [SEP] b [SEP]`` (segments 0 / 1)
for an encoder, ``text eos`` / ``a eos b eos`` for a decoder (``layout_ids``); segment ids
only for a backbone with ``num_segments > 0``. ``tag`` splits texts into words as Python's
``str.split()`` does and lays out each word's pieces as ``encode_words``. Strings never
enter XLA: tokenize and lay out, then a ``jit_compile=True`` function on int tensors, then
labels.

Shapes: batch B, window S = ``config.data.seq_len``, classes C, words W.
"""

from __future__ import annotations

import tensorflow as tf

from tflm.data.classification import layout_ids
from tflm.data.encoding import pack_texts, tokenize
from tflm.export.encoder_signatures import SentenceModule
from tflm.export.signatures import clean_utf8
from tflm.models.classifier import SequenceClassifier, SequenceRegressor, TokenClassifier

# The signature of each fine-tuning task (also its TFLite signature's name).
HEADS = {SequenceClassifier: "classify", SequenceRegressor: "predict", TokenClassifier: "tag"}
# Every character Python's str.split() splits at (str.isspace): ASCII and Unicode spaces.
WHITESPACE = r"[\t-\r\x{1c}-\x{20}\x{85}\p{Zs}\x{2028}\x{2029}]"


def head_of(model) -> str:
    """``"classify"``, ``"predict"`` or ``"tag"``: the signature of ``model``'s task."""
    for task, head in HEADS.items():
        if isinstance(model, task):
            return head
    raise TypeError(f"{type(model).__name__} is not a fine-tuning task ({list(HEADS)})")


class ClassifierModule(SentenceModule):
    """``SentenceModule`` (the task, in-graph tokenizer and its assets, ``embed``'s
    pooling) plus the fine-tuning layout.

    Args:
        model: a ``SequenceClassifier``, ``SequenceRegressor`` or ``TokenClassifier``.
        tokenizer: its ``tflm.text`` tokenizer.
        config: the model directory's config (``data.seq_len``, ``data.text_pair_column``).
        pooling: ``embed``'s pooling (None: ``sentence_pooling`` of the backbone's).
    """

    def __init__(self, model, tokenizer, config, pooling: str | None = None):
        super().__init__(model, tokenizer, pooling)
        self.head = head_of(model)
        self.seq_len = int(config.data.seq_len)
        self.pairs = bool(config.data.text_pair_column) and self.head != "tag"
        self.layout = layout_ids(tokenizer)  # (cls_id | None, sep_id, pad_id)
        self.segments = model.backbone.num_segments > 0
        self.labels = tuple(getattr(model, "labels", ()))
        self.bpe = tokenizer.kind == "bpe"  # words after the first keep their space
        self.unknown_id = int(tokenizer.unk_id if tokenizer.unk_id is not None
                              else self.layout[2])


def head_outputs(module: ClassifierModule, features: dict) -> dict:
    """The task on laid-out ``features``: ``{"score": (B,)}`` (regression), else
    ``{"probabilities": (B, C) | (B, S, C)}`` float32 (softmax of the logits)."""
    if not module.segments:
        features = {k: v for k, v in features.items() if k != "segment_ids"}
    out = tf.cast(module.model(features, training=False), tf.float32)
    if module.head == "predict":
        return {"score": out}
    return {"probabilities": tf.nn.softmax(out, axis=-1)}


def packed_texts(module: ClassifierModule, text: tf.Tensor, text_pair=None) -> dict:
    """``{token_ids, padding_mask, segment_ids}`` int32 (B, S) of texts (or pairs): the
    fine-tuning layout (``tflm.data.encoding.pack_texts``)."""
    cls_id, sep_id, pad_id = module.layout
    first = tokenize(module.tokenizer, clean_utf8(text))
    second = None if text_pair is None else tokenize(module.tokenizer, clean_utf8(text_pair))
    return pack_texts(first, second, module.seq_len, cls_id, sep_id, pad_id)


def _text_function(module: ClassifierModule, body):
    """``body(text, text_pair or None)`` as a ``tf.function`` on {text (B,)[, text_pair
    (B,)]} strings (``text_pair`` for a model fine-tuned on pairs)."""
    text = tf.TensorSpec([None], tf.string, name="text")
    if module.pairs:
        pair = tf.TensorSpec([None], tf.string, name="text_pair")
        return tf.function(lambda text, text_pair: body(text, text_pair),
                           input_signature=[text, pair])
    return tf.function(lambda text: body(text, None), input_signature=[text])


def _compiled(module: ClassifierModule):
    return tf.function(lambda features: head_outputs(module, features), jit_compile=True,
                       reduce_retracing=True)


def classify_signature(module: ClassifierModule):
    """``classify``: {text string (B,)[, text_pair string (B,)]} -> {label string (B,),
    label_id int32 (B,), probabilities float32 (B, C)}: the most likely class (its name in
    ``config.model.labels``) and the softmax of the logits (``TextClassifier.classify``)."""
    compiled = _compiled(module)
    names = tf.constant(module.labels)

    def classify(text, text_pair):
        probabilities = compiled(packed_texts(module, text, text_pair))["probabilities"]
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # (B,)
        return {"label": tf.gather(names, label_id), "label_id": label_id,
                "probabilities": probabilities}

    return _text_function(module, classify)


def predict_signature(module: ClassifierModule):
    """``predict``: {text string (B,)[, text_pair string (B,)]} -> {score float32 (B,)}
    (``TextRegressor.predict``)."""
    compiled = _compiled(module)
    return _text_function(module, lambda text, text_pair: compiled(
        packed_texts(module, text, text_pair)))


def split_words(text: tf.Tensor) -> tf.RaggedTensor:
    """(B, None) words of each text, split as Python's ``str.split()`` splits."""
    return tf.strings.split(tf.strings.regex_replace(clean_utf8(text), WHITESPACE, " "))


def _fits(lengths: tf.Tensor, budget: int):
    """``(start, fits)`` (B, W) of words with ``lengths`` (B, W) pieces: a word fits when
    it ends within ``budget`` after the words that fit before it (``encode_words``'
    rule); ``start`` is its offset after those."""
    def step(state, length):  # length (B,): word w's pieces in each row
        used = state[0]
        fits = used + length <= budget
        return used + tf.where(fits, length, 0), used, fits

    rows, words = tf.shape(lengths)[0], tf.shape(lengths)[1]
    zeros = tf.zeros([rows], lengths.dtype)
    # One empty word more, so the scan never runs over nothing (a batch without words).
    padded = tf.pad(lengths, [[0, 0], [0, 1]])
    _, start, fits = tf.scan(step, tf.transpose(padded),
                             initializer=(zeros, zeros, tf.ones([rows], tf.bool)))
    return tf.transpose(start)[:, :words], tf.transpose(fits)[:, :words]  # (B, W)


def packed_words(module: ClassifierModule, words: tf.RaggedTensor):
    """The ``encode_words`` layout of ``words`` (B, W): ``{token_ids, padding_mask,
    segment_ids}`` int32 (B, S) and each word's first-piece position (B, W), -1 for words
    cut off and padding words."""
    cls_id, sep_id, pad_id = module.layout
    flat = words.flat_values  # every word of the batch
    if module.bpe:
        later = tf.ragged.range(words.row_lengths()).flat_values > 0
        flat = tf.where(later, tf.strings.join([" ", flat]), flat)
    pieces = tokenize(module.tokenizer, flat)  # (N, None)
    empty = tf.cast(pieces.row_lengths() == 0, tf.int64)  # a word without pieces: unknown
    filler = tf.fill([tf.reduce_sum(empty)], tf.constant(module.unknown_id, tf.int32))
    pieces = tf.concat([pieces, tf.RaggedTensor.from_row_lengths(filler, empty)], axis=1)
    pieces = tf.RaggedTensor.from_row_lengths(pieces, words.row_lengths())  # (B, W, None)
    budget = module.seq_len - (cls_id is not None) - (sep_id is not None)
    start, fits = _fits(pieces.row_lengths(axis=2).to_tensor(), budget)
    real = tf.sequence_mask(words.row_lengths(), tf.shape(start)[1])  # (B, W)
    kept = tf.ragged.boolean_mask(pieces, tf.RaggedTensor.from_tensor(
        fits, lengths=words.row_lengths()))
    ids = kept.merge_dims(1, 2)  # (B, <= budget)
    column = tf.ones([ids.nrows(), 1], tf.int32)
    if cls_id is not None:
        ids = tf.concat([column * cls_id, ids], axis=1)
    if sep_id is not None:
        ids = tf.concat([ids, column * sep_id], axis=1)
    token_ids = ids.to_tensor(pad_id, shape=[None, module.seq_len])
    first = tf.where(real & fits, tf.cast(start, tf.int32) + int(cls_id is not None), -1)
    return {"token_ids": token_ids,
            "padding_mask": tf.ones_like(ids).to_tensor(0, shape=[None, module.seq_len]),
            "segment_ids": tf.zeros_like(token_ids)}, first


def tag_signature(module: ClassifierModule):
    """``tag``: {text string (B,)} -> {words string (B, W), word_count int32 (B,), label
    string (B, W), label_id int32 (B, W), score float32 (B, W)}: the tag of each word
    (``TokenTagger.tag``), read at its first piece. W is the most words of a text of the
    batch; row i's words ``j >= word_count[i]`` are padding (``""``, -1, 0), as are words
    cut off by the window (label ``""``, label_id -1, score 0; ``TokenTagger``'s None)."""
    compiled = _compiled(module)
    names = tf.constant(module.labels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tag(text):
        words = split_words(text)
        features, first = packed_words(module, words)
        probabilities = compiled(features)["probabilities"]  # (B, S, C)
        at_words = tf.gather(probabilities, tf.maximum(first, 0), batch_dims=1)  # (B, W, C)
        tagged = first >= 0
        label_id = tf.where(tagged, tf.argmax(at_words, -1, output_type=tf.int32), -1)
        return {"words": words.to_tensor(""),
                "word_count": tf.cast(words.row_lengths(), tf.int32),
                "label": tf.where(tagged, tf.gather(names, tf.maximum(label_id, 0)), ""),
                "label_id": label_id,
                "score": tf.where(tagged, tf.reduce_max(at_words, -1), 0.0)}

    return tag


SIGNATURES = {"classify": classify_signature, "predict": predict_signature,
              "tag": tag_signature}


def ids_signature(module: ClassifierModule, batch=None):
    """The head on ids (TFLite: ``batch=1``): {token_ids, padding_mask[, segment_ids]
    int32 (B, S)} -> ``head_outputs`` ({probabilities (B, C)}, {score (B,)} or
    {probabilities (B, S, C)}); ``segment_ids`` only for a backbone with segments."""
    names = ("token_ids", "padding_mask") + (("segment_ids",) if module.segments else ())
    specs = [tf.TensorSpec([batch, module.seq_len], tf.int32, name=n) for n in names]

    @tf.function(input_signature=specs)
    def head(*ids):
        return head_outputs(module, dict(zip(names, ids)))

    return head
