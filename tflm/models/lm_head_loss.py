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
written or read. The chunks run in a ``fori_loop``: one body for XLA to compile, where
unrolled chunks made gpt_mini's compiled step larger and its compile ~80 MiB larger.

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
    vocab = table.shape[0]

    def chunk(h_c, y_c, s_c):
        """(loss (C,), correct (C,), d_hidden (C, D), d_table (V, D)) of one chunk."""
        logits = ops.cast(ops.matmul(h_c, ops.transpose(t)), "float32")  # (C, V)
        peak = ops.max(logits, axis=-1, keepdims=True)
        exp = ops.exp(logits - peak)
        total = ops.sum(exp, axis=-1, keepdims=True)
        picked = ops.take_along_axis(logits, y_c[:, None], axis=-1)  # (C, 1)
        loss = ops.squeeze(ops.log(total) + peak - picked, -1) * s_c
        correct = ops.cast(ops.squeeze(picked >= peak, -1), "float32")
        if not with_gradient:
            return loss, correct, None, None
        one_hot = ops.one_hot(y_c, vocab, dtype="float32")
        g = ops.cast((exp / total - one_hot) * s_c[:, None], compute_dtype)  # (C, V)
        d_t = ops.cast(ops.matmul(ops.transpose(g), h_c), "float32")  # (V, D)
        return loss, correct, ops.matmul(g, t), d_t  # d_hidden (C, D)

    if not isinstance(tokens, int) or tokens <= chunk_size:
        # One chunk (a batch size known only when it runs, e.g. an evaluation's last
        # batch, or a small one).
        losses, correct, d_hidden, d_table = chunk(h, labels, scale)
    else:
        losses, correct, d_hidden, d_table = _chunked(chunk, h, labels, scale, chunk_size,
                                                       with_gradient, vocab)
    loss = ops.sum(losses)
    correct = ops.reshape(correct, shape)
    if not with_gradient:
        return loss, correct
    # value: loss + (a - a), exactly the loss; gradients: d_hidden and d_table.
    attach = (ops.sum(ops.cast(hidden, "float32") * ops.cast(d_hidden, "float32"))
              + ops.sum(ops.cast(table, "float32") * d_table))
    return loss + (attach - ops.stop_gradient(attach)), correct


def _chunked(chunk, h, labels, scale, chunk_size: int, with_gradient: bool, vocab: int):
    """`chunk`'s results over the N rows, `chunk_size` rows at a time (the last chunk
    padded with weight-0 rows), in a loop (module docstring)."""
    tokens, dim = h.shape
    chunks = _chunk_count(tokens, chunk_size)
    pad = chunks * chunk_size - tokens
    h = ops.reshape(ops.pad(h, ((0, pad), (0, 0))), (chunks, chunk_size, dim))
    labels = ops.reshape(ops.pad(labels, ((0, pad),)), (chunks, chunk_size))
    scale = ops.reshape(ops.pad(scale, ((0, pad),)), (chunks, chunk_size))

    def body(i, carry):
        losses, correct, d_hidden, d_table = carry
        loss_c, correct_c, d_hidden_c, d_t = chunk(h[i], labels[i], scale[i])
        losses = ops.slice_update(losses, (i, 0), loss_c[None])
        correct = ops.slice_update(correct, (i, 0), correct_c[None])
        if with_gradient:
            d_hidden = ops.slice_update(d_hidden, (i, 0, 0), d_hidden_c[None])
            d_table = d_table + d_t
        return losses, correct, d_hidden, d_table

    rows = ops.zeros((chunks, chunk_size), "float32")
    d_hidden = ops.zeros((chunks, chunk_size, dim), h.dtype) if with_gradient else rows
    d_table = ops.zeros((vocab, dim), "float32") if with_gradient else rows
    losses, correct, d_hidden, d_table = ops.fori_loop(
        0, chunks, body, (rows, rows, d_hidden, d_table))
    correct = ops.reshape(correct, (-1,))[:tokens]
    if with_gradient:
        d_hidden = ops.reshape(d_hidden, (-1, dim))[:tokens]
    return losses, correct, d_hidden, d_table
