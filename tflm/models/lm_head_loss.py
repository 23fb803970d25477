"""The LM head and its cross-entropy fused, chunk by chunk of tokens (keras.ops only).

A causal LM's head turns N = batch x length hidden states into (N, vocabulary) logits,
the largest tensor of a training step (gpt_mini: 2048 x 8192 float32, 64 MB), which the
softmax, the loss, the accuracy's argmax and the gradient each read again from memory.
``lm_head_cross_entropy`` never holds more than one chunk of ``chunk_size`` tokens'
logits: for each chunk it computes the logits, their log-sum-exp, the loss, whether the
label's logit is the largest (the accuracy) and, when training, the gradient
``g = (softmax - one_hot) * weight / total weight`` and with it both gradient products
(``g @ table`` for the hidden states, ``g^T @ hidden`` accumulated for the table) while
the chunk is still in cache. The backward pass then only scales those two results: three
matmuls in all, as in the unfused head's forward + backward, and no (N, V) tensor
written or read.

The gradients are attached without ``custom_gradient``:
``loss + (a - sg(a))`` with ``a = sum(hidden * sg(d_hidden)) + sum(table * sg(d_table))``
has the loss's value and the gradients
computed in the forward pass (``sg`` = stop_gradient), on every backend.

The accuracy is "the label's logit equals the row's maximum", not ``argmax == label``:
the same except on exact ties, and XLA:CPU's argmax (a variadic reduce) cost ~45 ms of
the fused head's ~260 ms. On the no-bf16 CPU where it was measured (AMD EPYC, 2 cores,
float32, XLA, gpt_mini's head, loss and accuracy, forward + backward): unfused 320-350 ms
a step, chunks of 256 tokens 218-222 ms (``benchmarks/train_throughput.py`` times the
whole training step).
"""

from __future__ import annotations

from keras import ops

DEFAULT_CHUNK = 256


def _chunk_count(tokens: int, chunk_size: int) -> int:
    return -(-tokens // chunk_size)


def lm_head_cross_entropy(hidden, table, labels, weights=None, chunk_size: int = DEFAULT_CHUNK,
                          with_gradient: bool = True):
    """Weighted-mean token cross-entropy of ``logits = hidden @ table^T``, chunked.

    Args:
        hidden: (..., D) hidden states in the compute dtype.
        table: (V, D) output table in the compute dtype (the tied token embedding).
        labels: (...) int label ids, the shape of ``hidden`` without its last axis.
        weights: (...) label weights (1 = counts, 0 = padding); None = all count.
        chunk_size: tokens per chunk (the last chunk is padded with weight-0 rows); with
            a batch size unknown when traced, all tokens are one chunk.
        with_gradient: compute the gradients in the forward pass (training); False
            computes only the loss and the accuracy flags (evaluation: one matmul a chunk).

    Returns:
        ``(loss, correct)``: the float32 scalar sum(w * ce) / sum(w) (0 when every weight
        is 0) whose gradients with respect to ``hidden`` and ``table`` are exact, and
        (...) float32 1 where the label's logit is the row's largest (else 0).
    """
    shape = ops.shape(labels)
    dim = hidden.shape[-1]
    compute_dtype = hidden.dtype
    hidden = ops.reshape(hidden, (-1, dim))  # (N, D)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    tokens = ops.shape(labels)[0]
    if weights is None:
        weights = ops.ones((tokens,), "float32")
    weights = ops.reshape(ops.cast(weights, "float32"), (-1,))
    scale = ops.divide_no_nan(weights, ops.sum(weights))  # (N,): d loss / d ce_t

    h = ops.stop_gradient(hidden)
    t = ops.stop_gradient(table)
    if isinstance(tokens, int):  # static: chunks, the last padded with weight-0 rows
        chunks = _chunk_count(tokens, chunk_size)
        pad = chunks * chunk_size - tokens
        if pad:
            h = ops.pad(h, ((0, pad), (0, 0)))
            labels = ops.pad(labels, ((0, pad),))
            scale = ops.pad(scale, ((0, pad),))
        bounds = [slice(i * chunk_size, (i + 1) * chunk_size) for i in range(chunks)]
    else:  # a batch size known only when it runs (an evaluation's last batch): one chunk
        bounds = [slice(None)]

    losses, correct, d_hidden = [], [], []
    d_table = None
    vocab = table.shape[0]
    for rows in bounds:
        h_c, y_c, s_c = h[rows], labels[rows], scale[rows]  # (C, D), (C,), (C,)
        logits = ops.cast(ops.matmul(h_c, ops.transpose(t)), "float32")  # (C, V)
        peak = ops.max(logits, axis=-1, keepdims=True)
        exp = ops.exp(logits - peak)
        total = ops.sum(exp, axis=-1, keepdims=True)
        picked = ops.take_along_axis(logits, y_c[:, None], axis=-1)  # (C, 1)
        losses.append(ops.squeeze(ops.log(total) + peak - picked, -1) * s_c)
        correct.append(ops.cast(ops.squeeze(picked >= peak, -1), "float32"))
        if with_gradient:
            one_hot = ops.one_hot(y_c, vocab, dtype="float32")
            g = ops.cast((exp / total - one_hot) * s_c[:, None], compute_dtype)  # (C, V)
            d_hidden.append(ops.matmul(g, t))  # (C, D)
            d_t = ops.cast(ops.matmul(ops.transpose(g), h_c), "float32")  # (V, D)
            d_table = d_t if d_table is None else d_table + d_t
    loss = ops.sum(ops.concatenate(losses, axis=0))
    correct = ops.reshape(ops.concatenate(correct, axis=0)[:tokens], shape)
    if not with_gradient:
        return loss, correct
    d_hidden = ops.concatenate(d_hidden, axis=0)[:tokens]
    # value: loss + (a - a), exactly the loss; gradients: d_hidden and d_table.
    attach = (ops.sum(ops.cast(hidden, "float32") * ops.cast(d_hidden, "float32"))
              + ops.sum(ops.cast(table, "float32") * d_table))
    return loss + (attach - ops.stop_gradient(attach)), correct
