"""Text with mask tokens -> ids: the fill-mask input rule, eager and in-graph.

Tokenizers do not keep a literal ``[MASK]`` in text whole (WordPiece splits it into
``[``, ``mask``, ``]``). So a text is split at the tokenizer's mask-token string, each
piece is tokenized on its own, and the pieces are joined with the mask id. The eager
function (``LanguageModel``-side, fast tokenizer) and the in-graph one (SavedModel
signatures) implement that one rule and are tested to give the same ids. A tokenizer that
keeps its mask token whole itself (one imported from a Hugging Face checkpoint, whose
``<mask>`` may also take the space before it) is simply called.
"""

from __future__ import annotations

import tensorflow as tf

from tflm.errors import TokenizerError


def mask_token(tokenizer) -> str:
    """The tokenizer's mask-token string (e.g. ``[MASK]``).

    Raises:
        TokenizerError: the tokenizer has no mask token (byte-level BPE).
    """
    token = tokenizer.special_tokens.get("mask")
    if token is None or tokenizer.mask_id is None:
        raise TokenizerError(
            f"a {tokenizer.kind} tokenizer has no mask token; fill-mask needs a masked-LM "
            "model trained with a wordpiece or sentencepiece tokenizer."
        )
    return token


def encode_with_masks(tokenizer, texts: list[str]) -> list[list[int]]:
    """The ids of each text, every literal mask token kept as the mask id (eager)."""
    token, mask_id = mask_token(tokenizer), tokenizer.mask_id
    if token in tokenizer.added_tokens:  # the tokenizer keeps it whole (by its own rule)
        return tokenizer.encode(list(texts))
    out = []
    for text in texts:
        pieces = text.split(token)
        encoded = tokenizer.encode([p for p in pieces])
        ids = list(encoded[0])
        for piece_ids in encoded[1:]:
            ids += [mask_id, *piece_ids]
        out.append(ids)
    return out


def tokenize_with_masks(tokenizer, texts: tf.Tensor) -> tf.RaggedTensor:
    """`encode_with_masks` in-graph: string (B,) -> int32 ragged (B, None).

    Uses the tokenizer's in-graph ``tokenize``, so it runs inside ``tf.function`` and
    SavedModels.
    """
    token, mask_id = mask_token(tokenizer), tokenizer.mask_id
    if token in tokenizer.added_tokens:
        return tf.cast(tokenizer.tokenize(texts), tf.int32)
    pieces = tf.strings.split(texts, sep=token)  # ragged (B, pieces)
    ids = tf.cast(tokenizer.tokenize(pieces.flat_values), tf.int32)  # (pieces, None)
    # A mask id after every piece but the last of its text.
    count = tf.shape(pieces.flat_values, out_type=tf.int64)[0]
    last = tf.scatter_nd((pieces.row_limits() - 1)[:, None],
                         tf.ones_like(pieces.row_limits(), tf.bool), [count])  # (pieces,)
    marks = tf.where(last, tf.constant(0, tf.int64), 1)
    mask_ids = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(marks)], tf.constant(mask_id, tf.int32)), marks)
    joined = tf.concat([ids, mask_ids], axis=1)  # (pieces, None)
    return tf.RaggedTensor.from_row_splits(joined, pieces.row_splits).merge_dims(1, 2)
