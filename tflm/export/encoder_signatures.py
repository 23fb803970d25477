"""Encoder signatures: ``fill_mask``, ``encode`` and ``embed`` on strings for the
SavedModel, ``encode``, ``mlm`` and ``embed`` on token ids for TFLite.

Each ``*_signature(module)`` takes a ``SentenceModule`` (``EncoderModule`` for a masked
LM) and returns a ``tf.function`` with a fixed ``input_signature``, as
``tflm/export/signatures.py`` does for the causal LM. Texts are laid out as in
pre-training and as ``tflm.generation`` does (``laid_out``): ``[CLS] text [SEP]`` when the
tokenizer has both tokens (else the ids; an empty text is the start token), segment 0,
right padding; ``fill_mask`` and the masked LM's ``encode`` keep literal mask tokens
(``[MASK]``) as the mask id (``MaskedLanguageModel``), ``embed`` tokenizes plainly and
pools as ``tflm.generation.embedding.SentenceEncoder`` (``sentence_embedding``). Strings
never enter XLA: tokenize, then a ``jit_compile=True`` function on int tensors over the
fixed window S = ``max_sequence_length``, then outputs.

Shapes: batch B, window S, hidden H, vocabulary V, masks per text M, top-k K,
predictions P.
"""

from __future__ import annotations

import tensorflow as tf

from tflm.export.saved_model import ServingModule
from tflm.export.signatures import clean_utf8
from tflm.generation.embedding import sentence_embedding, sentence_pooling
from tflm.models import TransformerBackbone
from tflm.text.masks import mask_token, tokenize_with_masks


def backbone_of(model) -> TransformerBackbone:
    """``model`` itself if it is a ``TransformerBackbone``, else its ``backbone``."""
    return model if isinstance(model, TransformerBackbone) else model.backbone


class SentenceModule(ServingModule):
    """``ServingModule`` (model, in-graph tokenizer, its assets) plus what the sentence
    layout needs: the ``[CLS]`` / ``[SEP]`` ids (None for a tokenizer without them) and
    the pooling of ``embed``.

    Args:
        model: a ``tflm.models.TransformerBackbone``, or a task with one as ``backbone``
            (only the backbone is used and saved unless a signature needs more).
        tokenizer: its ``tflm.text`` tokenizer.
        pooling: ``embed``'s pooling; None = ``sentence_pooling`` of the backbone's.
        normalize: ``embed`` L2-normalises (``sentence_normalize`` of the model's config).
    """

    def __init__(self, model, tokenizer, pooling: str | None = None, normalize: bool = True):
        super().__init__(model, tokenizer)
        self.normalize = bool(normalize)
        self.text_tokenizer = tokenizer  # for tokenize_with_masks (its layer is tracked)
        framed = tokenizer.cls_id is not None and tokenizer.sep_id is not None
        self.cls_id = int(tokenizer.cls_id) if framed else None
        self.sep_id = int(tokenizer.sep_id) if framed else None
        self.pooling = sentence_pooling(backbone_of(model).pooling, pooling)

    def text_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
        """The ids ``encode`` lays out: the tokenizer's (``sentence_ids``)."""
        return sentence_ids(self, text)


class EncoderModule(SentenceModule):
    """``SentenceModule`` of a masked LM: ``encode`` keeps literal mask tokens.

    Args:
        model: a ``tflm.models.BertPretrainer`` (``backbone``, ``mlm_head``,
            ``max_sequence_length``, ``vocabulary_size``).
        tokenizer: a ``tflm.text`` tokenizer with ``[CLS]``, ``[SEP]`` and a mask token.
        pooling: as ``SentenceModule``.

    Raises:
        TokenizerError: the tokenizer has no mask token.
    """

    def __init__(self, model, tokenizer, pooling: str | None = None):
        mask_token(tokenizer)  # raises before any asset is copied
        super().__init__(model, tokenizer, pooling)
        self.mask_id = int(tokenizer.mask_id)

    def text_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
        """Ids with literal mask tokens as the mask id (``tokenize_with_masks``)."""
        return tokenize_with_masks(self.text_tokenizer, clean_utf8(text))


def sentence_ids(module, text: tf.Tensor) -> tf.RaggedTensor:
    """The tokenizer's int32 ids (B, None) of each text (invalid UTF-8 replaced)."""
    ids = tf.cast(module.tokenizer.tokenize(clean_utf8(text)), tf.int32)
    return ids if isinstance(ids, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(ids)


def laid_out(module, ids: tf.RaggedTensor) -> tf.RaggedTensor:
    """``[CLS] ids [SEP]`` (B, <= S), ids cut at the end to S - 2; for a tokenizer without
    ``[CLS]`` / ``[SEP]`` the ids cut to S, an empty row the start token: the rule of
    ``SentenceEncoder.token_ids`` and ``MaskedLanguageModel``, on ragged tensors."""
    if module.cls_id is None:
        ids = ids[:, :module.window]
        starts = tf.cast(ids.row_lengths() == 0, tf.int64)  # (B,) 1 on empty rows
        start_ids = tf.fill([tf.reduce_sum(starts)], tf.constant(module.start_id, tf.int32))
        return tf.concat([tf.RaggedTensor.from_row_lengths(start_ids, starts), ids], axis=1)
    ids = ids[:, :module.window - 2]
    column = tf.ones([ids.nrows(), 1], tf.int32)  # (B, 1)
    cls = tf.RaggedTensor.from_tensor(column * module.cls_id)
    sep = tf.RaggedTensor.from_tensor(column * module.sep_id)
    return tf.concat([cls, ids, sep], axis=1)


def masked_lm_ids(module, text: tf.Tensor) -> tf.RaggedTensor:
    """``[CLS] ids [SEP]`` (B, <= S) of each text, literal mask tokens kept as the mask id
    (``tflm.text.masks.tokenize_with_masks``), cut as ``laid_out``."""
    return laid_out(module, tokenize_with_masks(module.text_tokenizer, clean_utf8(text)))


def _encoder_inputs(module, ids: tf.RaggedTensor):
    """(token_ids, padding_mask int32 (B, S), lengths int32 (B,)) of laid-out ``ids``."""
    lengths = tf.cast(ids.row_lengths(), tf.int32)
    dense = ids.to_tensor(default_value=module.pad_id, shape=[None, module.window])
    return dense, tf.sequence_mask(lengths, module.window, tf.int32), lengths


def _backbone(module, token_ids, padding_mask, segment_ids=None):
    """The backbone's float32 (sequence_output (B, T, H), pooled_output (B, H))."""
    segment_ids = tf.zeros_like(token_ids) if segment_ids is None else segment_ids
    out = backbone_of(module.model)({"token_ids": token_ids, "padding_mask": padding_mask,
                                     "segment_ids": segment_ids})
    return (tf.cast(out["sequence_output"], tf.float32),
            tf.cast(out["pooled_output"], tf.float32))


def _embedding(module, token_ids, padding_mask, pooling: str, normalize: bool = True):
    """(B, H) float32 sentence vectors, L2-normalised with ``normalize``
    (``sentence_embedding``)."""
    out = backbone_of(module.model)({"token_ids": token_ids, "padding_mask": padding_mask})
    return sentence_embedding(out["sequence_output"], padding_mask, pooling, normalize)


def fill_mask_signature(module):
    """``fill_mask``: {text string (B,), top_k int32 ()} -> {token_ids int32 (B, M, K),
    scores float32 (B, M, K), mask_count int32 (B,)}.

    M is the most mask tokens of any text of the batch (0 when none has one), K =
    ``top_k`` clipped to [1, V]. Row i's mask j < ``mask_count[i]`` (left to right) holds
    the K most likely tokens, most likely first (ties: lower id first), and their
    probabilities; slots j >= ``mask_count[i]`` hold id -1 and score 0. Texts are laid
    out as ``masked_lm_ids`` (masks cut off with a long text are not counted).
    """
    def probabilities(token_ids, padding_mask, mask_positions):
        sequence, _ = _backbone(module, token_ids, padding_mask)
        logits = module.model.mlm_head(sequence, mask_positions)  # (B, M, V)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    compiled = tf.function(probabilities, jit_compile=True, reduce_retracing=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([], tf.int32, name="top_k")])
    def fill_mask(text, top_k):
        token_ids, padding_mask, _ = _encoder_inputs(module, masked_lm_ids(module, text))
        is_mask = (token_ids == module.mask_id) & (padding_mask > 0)  # (B, S)
        mask_count = tf.reduce_sum(tf.cast(is_mask, tf.int32), axis=1)  # (B,)
        most = tf.reduce_max(tf.concat([mask_count, [0]], 0))  # M
        columns = tf.cast(tf.where(is_mask)[:, 1], tf.int32)  # row-major order
        positions = tf.RaggedTensor.from_row_lengths(
            columns, tf.cast(mask_count, tf.int64)).to_tensor()  # (B, M)
        # At least one slot, so the compiled function never sees an empty axis.
        width = tf.maximum(most, 1)
        positions = tf.pad(positions, [[0, 0], [0, width - most]])  # (B, max(M, 1))
        probs = compiled(token_ids, padding_mask, positions)[:, :most]  # (B, M, V)
        k = tf.clip_by_value(top_k, 1, module.model.vocabulary_size)
        scores, ids = tf.math.top_k(probs, k)  # (B, M, K)
        real = tf.sequence_mask(mask_count, most)[:, :, None]  # (B, M, 1)
        return {"token_ids": tf.where(real, ids, -1),
                "scores": tf.where(real, scores, 0.0),
                "mask_count": mask_count}

    return fill_mask


def encode_signature(module):
    """``encode``: {text string (B,)} -> {pooled float32 (B, H), sequence_output float32
    (B, S, H), lengths int32 (B,)}.

    Row i's hidden states are ``sequence_output[i, :lengths[i]]``, one per token of the
    laid-out ``module.text_ids`` (``[CLS]`` first, ``[SEP]`` last: ``masked_lm_ids`` for a
    masked LM); the rest of the row is 0. ``pooled`` is the backbone's pooled output.
    """
    compiled = tf.function(lambda ids, mask: _backbone(module, ids, mask),
                           jit_compile=True, reduce_retracing=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(text):
        ids = laid_out(module, module.text_ids(text))
        token_ids, padding_mask, lengths = _encoder_inputs(module, ids)
        sequence, pooled = compiled(token_ids, padding_mask)  # (B, S, H), (B, H)
        sequence = sequence * tf.cast(padding_mask, tf.float32)[:, :, None]
        return {"pooled": pooled, "sequence_output": sequence, "lengths": lengths}

    return encode


def embed_signature(module):
    """``embed``: {text string (B,)} -> {embedding float32 (B, H)}: one L2-normalised
    vector per text, pooled with ``module.pooling``, texts tokenized plainly and laid out
    as ``laid_out`` (``tflm.generation.embedding.SentenceEncoder.embed``)."""
    compiled = tf.function(lambda ids, mask: _embedding(module, ids, mask, module.pooling,
                                                       module.normalize),
                           jit_compile=True, reduce_retracing=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def embed(text):
        token_ids, padding_mask, _ = _encoder_inputs(
            module, laid_out(module, sentence_ids(module, text)))
        return {"embedding": compiled(token_ids, padding_mask)}  # (B, H)

    return embed


def _id_specs(batch, length, names=("token_ids", "padding_mask", "segment_ids")):
    return [tf.TensorSpec([batch, length], tf.int32, name=name) for name in names]


def encoder_ids_signature(module, batch=None, length=None):
    """``encode`` on ids (TFLite: ``batch=1, length=S``): {token_ids, padding_mask,
    segment_ids int32 (B, T)} -> {sequence_output float32 (B, T, H), pooled_output float32
    (B, H)}."""

    @tf.function(input_signature=_id_specs(batch, length))
    def encode(token_ids, padding_mask, segment_ids):
        sequence, pooled = _backbone(module, token_ids, padding_mask, segment_ids)
        return {"sequence_output": sequence, "pooled_output": pooled}

    return encode


def mlm_signature(module, predictions, batch=None, length=None):
    """``mlm`` (TFLite: ``batch=1, length=S``): {token_ids, padding_mask, segment_ids
    int32 (B, T), mask_positions int32 (B, P)} -> {logits float32 (B, P, V)}, the masked-LM
    logits at ``mask_positions`` (P = ``predictions``; unused slots may repeat a
    position)."""

    @tf.function(input_signature=[
        *_id_specs(batch, length),
        tf.TensorSpec([batch, predictions], tf.int32, name="mask_positions"),
    ])
    def mlm(token_ids, padding_mask, segment_ids, mask_positions):
        sequence, _ = _backbone(module, token_ids, padding_mask, segment_ids)
        logits = module.model.mlm_head(sequence, mask_positions)  # (B, P, V)
        return {"logits": tf.cast(logits, tf.float32)}

    return mlm


def embed_ids_signature(module, pooling: str, batch=None, length=None, normalize=True):
    """``embed`` on ids (TFLite: ``batch=1, length=S``): {token_ids, padding_mask int32
    (B, T)} -> {embedding float32 (B, H)}, the ``sentence_embedding`` of ``pooling``."""

    @tf.function(input_signature=_id_specs(batch, length, ("token_ids", "padding_mask")))
    def embed(token_ids, padding_mask):
        return {"embedding": _embedding(module, token_ids, padding_mask, pooling, normalize)}

    return embed
