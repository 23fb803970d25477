"""Masked-LM (encoder) signatures: ``fill_mask`` and ``encode`` on strings for the
SavedModel, ``encode`` and ``mlm`` on token ids for TFLite.

Each ``*_signature(module)`` takes an ``EncoderModule`` and returns a ``tf.function`` with a
fixed ``input_signature``, as ``tflm/export/signatures.py`` does for the causal LM. Texts
are laid out as in pre-training and as ``tflm.generation.masked_lm.MaskedLanguageModel``
does: ``[CLS] text [SEP]``, segment 0, right padding, literal mask tokens (``[MASK]``)
kept as the mask id. Strings never enter XLA: tokenize, then a ``jit_compile=True``
function on int tensors over the fixed window S = ``max_sequence_length``, then outputs.

Shapes: batch B, window S, hidden H, vocabulary V, masks per text M, top-k K,
predictions P.
"""

from __future__ import annotations

import tensorflow as tf

from tflm.export.saved_model import ServingModule
from tflm.export.signatures import clean_utf8
from tflm.text.masks import mask_token, tokenize_with_masks


class EncoderModule(ServingModule):
    """``ServingModule`` (model, in-graph tokenizer, its assets) plus the ids the masked-LM
    layout needs.

    Args:
        model: a ``tflm.models.BertPretrainer`` (``backbone``, ``mlm_head``,
            ``max_sequence_length``, ``vocabulary_size``).
        tokenizer: a ``tflm.text`` tokenizer with ``[CLS]``, ``[SEP]`` and a mask token.

    Raises:
        TokenizerError: the tokenizer has no mask token.
    """

    def __init__(self, model, tokenizer):
        mask_token(tokenizer)  # raises before any asset is copied
        super().__init__(model, tokenizer)
        self.text_tokenizer = tokenizer  # for tokenize_with_masks (its layer is tracked)
        self.cls_id, self.sep_id = int(tokenizer.cls_id), int(tokenizer.sep_id)
        self.mask_id = int(tokenizer.mask_id)


def masked_lm_ids(module, text: tf.Tensor) -> tf.RaggedTensor:
    """``[CLS] ids [SEP]`` (B, <= S) of each text, literal mask tokens kept as the mask id
    (``tflm.text.masks.tokenize_with_masks``), ids cut at the end to S - 2: the rule of
    ``tflm.generation.masked_lm.MaskedLanguageModel``, on ragged tensors."""
    ids = tokenize_with_masks(module.text_tokenizer, clean_utf8(text))
    ids = ids[:, :module.window - 2]
    column = tf.ones([ids.nrows(), 1], tf.int32)  # (B, 1)
    cls = tf.RaggedTensor.from_tensor(column * module.cls_id)
    sep = tf.RaggedTensor.from_tensor(column * module.sep_id)
    return tf.concat([cls, ids, sep], axis=1)


def _encoder_inputs(module, text):
    """(token_ids, padding_mask int32 (B, S), lengths int32 (B,)) of ``masked_lm_ids``."""
    ids = masked_lm_ids(module, text)
    lengths = tf.cast(ids.row_lengths(), tf.int32)
    dense = ids.to_tensor(default_value=module.pad_id, shape=[None, module.window])
    return dense, tf.sequence_mask(lengths, module.window, tf.int32), lengths


def _backbone(module, token_ids, padding_mask, segment_ids=None):
    """The backbone's float32 (sequence_output (B, T, H), pooled_output (B, H))."""
    segment_ids = tf.zeros_like(token_ids) if segment_ids is None else segment_ids
    out = module.model.backbone({"token_ids": token_ids, "padding_mask": padding_mask,
                                 "segment_ids": segment_ids})
    return (tf.cast(out["sequence_output"], tf.float32),
            tf.cast(out["pooled_output"], tf.float32))


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
        token_ids, padding_mask, _ = _encoder_inputs(module, text)
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

    Row i's hidden states are ``sequence_output[i, :lengths[i]]``, one per token of
    ``masked_lm_ids`` (``[CLS]`` first, ``[SEP]`` last); the rest of the row is 0.
    ``pooled`` is the backbone's pooled output.
    """
    compiled = tf.function(lambda ids, mask: _backbone(module, ids, mask),
                           jit_compile=True, reduce_retracing=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(text):
        token_ids, padding_mask, lengths = _encoder_inputs(module, text)
        sequence, pooled = compiled(token_ids, padding_mask)  # (B, S, H), (B, H)
        sequence = sequence * tf.cast(padding_mask, tf.float32)[:, :, None]
        return {"pooled": pooled, "sequence_output": sequence, "lengths": lengths}

    return encode


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
