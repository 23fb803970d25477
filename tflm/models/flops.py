"""Training FLOPs per token of a decoder-only Transformer, for model FLOPs utilisation."""


def flops_per_token(
    num_layers: int,
    hidden_dim: int,
    intermediate_dim: int,
    seq_len: int,
    vocabulary_size: int,
) -> int:
    """Forward + backward FLOPs per trained token: 6 N + 12 L T d (PaLM, appendix B).

    N counts the weights used in matrix multiplies: per layer the Q, K, V and output
    projections (4 d^2) and the MLP (2 d f), plus the LM head (d V, also when tied to the
    token table). Embedding look-ups, norms and biases are left out. The attention term
    counts q k^T and probs v (2 T d multiply-adds each per layer forward, times 3 for
    forward + backward), without halving for the causal mask, as PaLM does.
    """
    d, f, n_layers = hidden_dim, intermediate_dim, num_layers
    matmul_params = n_layers * (4 * d * d + 2 * d * f) + d * vocabulary_size
    return 6 * matmul_params + 12 * n_layers * seq_len * d
