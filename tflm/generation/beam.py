"""Beam search with a length penalty, as one compiled loop over a KV cache (keras.ops only).

Per batch row the search keeps ``num_beams`` *alive* hypotheses (no stop token yet) and
the ``num_beams`` best *finished* ones. A hypothesis of ``n`` generated tokens (a stop
token counts) with log-probability sum ``logp`` scores ``logp / n ** length_penalty``;
alpha > 0 favours longer outputs. Each step extends every alive beam by every token,
takes the 2W best extensions (at most W of them end in a stop token, so W alive ones are
always left), moves those ending in a stop token to the finished pool and keeps the W
best others alive, reordering the KV cache rows to follow their parents. The loop stops
early when no alive beam can still beat the worst finished one. Sequences that reach
``max_new_tokens`` without a stop token compete with the finished ones at the end.

With ``num_beams >= vocab ** max_new_tokens`` nothing is ever pruned, so the result is the
exhaustive optimum.
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

# Score of an empty slot / impossible hypothesis (finite so arithmetic stays NaN-free).
NEG = -1e9


def _gather_beams(x, index):
    """x (B, K, ...) gathered along beams by index (B, J) -> (B, J, ...)."""
    index = ops.reshape(index, tuple(index.shape) + (1,) * (len(x.shape) - 2))
    index = ops.broadcast_to(index, tuple(index.shape[:2]) + tuple(x.shape[2:]))
    return ops.take_along_axis(x, index, axis=1)


def beam_search(
    first_logits,
    cache,
    step_fn: Callable,
    *,
    num_beams: int,
    max_new_tokens: int,
    stop_mask,
    pad_id,
    length_penalty,
):
    """Runs beam search from prefilled state; returns (sequences (B, N) int32, scores (B,)).

    Args:
        first_logits: (B * W, V) next-token logits after the prompt (all W copies of a
            row are equal).
        cache: the KV cache after the prompt, batch dimension B * W (row b * W + j is
            beam j of prompt b).
        step_fn: ``step_fn(tokens (B * W,), cache, step) -> (logits (B * W, V), cache)``
            feeds the token chosen at decode step ``step`` (0-based).
        num_beams: W.
        max_new_tokens: N, the most tokens generated.
        stop_mask: (V,) bool, True for tokens that end a hypothesis.
        pad_id: int32 scalar written after a stop token.
        length_penalty: float scalar alpha.
    Returns:
        The best hypothesis per row, padded with pad_id after its stop token, and its
        length-penalised score.
    """
    width, steps = num_beams, max_new_tokens
    vocab = first_logits.shape[-1]
    batch = first_logits.shape[0] // width
    alpha = ops.cast(length_penalty, "float32")
    columns = ops.arange(steps, dtype="int32")[None, None, :]  # (1, 1, N)

    def penalised(logp, length):
        return logp / ops.power(ops.cast(length, "float32"), alpha)

    def select(step, logits, alive_seq, alive_logp, fin_seq, fin_score):
        """Extends the alive beams by one token; returns the new beams and their parents."""
        logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        logp = ops.reshape(logp, (batch, width, vocab))
        candidates = ops.reshape(alive_logp[:, :, None] + logp, (batch, width * vocab))
        cand_logp, flat = ops.top_k(candidates, 2 * width)  # (B, 2W)
        parent = flat // vocab
        token = ops.cast(flat % vocab, "int32")
        seq = _gather_beams(alive_seq, parent)  # (B, 2W, N)
        seq = ops.where(columns == step, token[:, :, None], seq)
        stopped = ops.take(stop_mask, token)
        live = cand_logp > NEG / 2  # extensions of real (not placeholder) beams
        # Finished pool: the W best of the old pool and the candidates that just stopped.
        new_fin = ops.where(ops.logical_and(stopped, live), penalised(cand_logp, step + 1), NEG)
        pool_score = ops.concatenate([fin_score, new_fin], axis=1)  # (B, 3W)
        pool_seq = ops.concatenate([fin_seq, seq], axis=1)
        fin_score, best = ops.top_k(pool_score, width)
        fin_seq = _gather_beams(pool_seq, best)
        # Alive: the W best candidates that did not stop.
        alive_logp, best = ops.top_k(ops.where(stopped, NEG, cand_logp), width)
        alive_seq = _gather_beams(seq, best)
        parent = ops.take_along_axis(parent, best, axis=1)
        token = ops.take_along_axis(token, best, axis=1)
        return alive_seq, alive_logp, fin_seq, fin_score, parent, token

    def can_improve(step, alive_logp, fin_score):
        """Whether some row's best alive beam may still beat its worst finished one."""
        # The next hypotheses have log-prob <= the best alive one and length step + 1 .. N.
        best = alive_logp[:, 0]
        bound = ops.maximum(penalised(best, step + 1), penalised(best, steps))
        return ops.any(bound > fin_score[:, -1])

    def cond(step, logits, cache, alive_seq, alive_logp, fin_seq, fin_score):
        return ops.logical_and(step < steps - 1, can_improve(step, alive_logp, fin_score))

    def body(step, logits, cache, alive_seq, alive_logp, fin_seq, fin_score):
        alive_seq, alive_logp, fin_seq, fin_score, parent, token = select(
            step, logits, alive_seq, alive_logp, fin_seq, fin_score
        )
        rows = ops.arange(batch, dtype="int32")[:, None] * width + ops.cast(parent, "int32")
        cache = ops.take(cache, ops.reshape(rows, (-1,)), axis=0)  # follow the parents
        logits, cache = step_fn(ops.reshape(token, (-1,)), cache, step)
        return step + 1, logits, cache, alive_seq, alive_logp, fin_seq, fin_score

    # Only beam 0 starts alive, so the first step does not pick W copies of one token.
    alive_logp = ops.concatenate(
        [ops.zeros((batch, 1), "float32"), ops.full((batch, width - 1), NEG, "float32")], axis=1
    )
    alive_seq = ops.full((batch, width, steps), pad_id, "int32")
    fin_seq = ops.full((batch, width, steps), pad_id, "int32")
    fin_score = ops.full((batch, width), NEG, "float32")
    state = (ops.convert_to_tensor(0, "int32"), first_logits, cache, alive_seq, alive_logp,
             fin_seq, fin_score)
    step, logits, _, alive_seq, alive_logp, fin_seq, fin_score = ops.while_loop(
        cond, body, state, maximum_iterations=steps
    )
    # The last step needs no forward pass; then alive beams compete as they are.
    alive_seq, alive_logp, fin_seq, fin_score, _, _ = select(
        step, logits, alive_seq, alive_logp, fin_seq, fin_score
    )
    final_score = ops.concatenate([fin_score, penalised(alive_logp, step + 1)], axis=1)
    final_seq = ops.concatenate([fin_seq, alive_seq], axis=1)
    score, best = ops.top_k(final_score, 1)
    return _gather_beams(final_seq, best)[:, 0], score[:, 0]
