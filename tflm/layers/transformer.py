"""One Transformer block: self-attention and an MLP, each with a residual and layer norm."""

import keras

from tflm.errors import ConfigError
from tflm.layers.attention import MultiHeadAttention
from tflm.layers.dense import Dense
from tflm.layers.dropout import Dropout
from tflm.layers.gelu import gelu

ACTIVATIONS = ("gelu_approximate", "gelu")


@keras.saving.register_keras_serializable(package="tflm")
class TransformerBlock(keras.layers.Layer):
    """A pre-LN (GPT, `norm_first=True`) or post-LN (BERT) Transformer block.

    pre-LN:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))
    post-LN: x = ln1(x + attn(x));  x = ln2(x + mlp(x))

    Layer norms compute in float32 under mixed precision (Keras' LayerNormalization does).

    Args:
        num_heads: attention heads; the hidden size comes from the input.
        intermediate_dim: width of the MLP.
        dropout: rate for attention probabilities, attention output and MLP output.
        norm_first: pre-LN when True, post-LN when False.
        activation: "gelu_approximate" (tanh GELU, GPT-2) or "gelu" (exact, BERT).
        layer_norm_epsilon: epsilon of both layer norms.
        use_bias: biases in the attention and MLP projections.
        rotary: rotary position embedding in the attention.

    Call args: as `MultiHeadAttention` (self-attention only): `inputs` (B, T, hidden),
        `padding_mask`, `use_causal_mask`, `cache` (B, 2, S, H, D), `cache_index`,
        `cache_mask`, `position_ids`, `training`, `cache_layer` (with it, `cache` is the
        whole model's (B, L, 2, S, H, D) cache, updated in place and returned whole).

    Returns:
        (B, T, hidden), or `(output, cache)` when a cache is passed.

    Raises:
        ConfigError: on an unknown activation.
    """

    def __init__(
        self,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "gelu_approximate",
        layer_norm_epsilon: float = 1e-5,
        use_bias: bool = True,
        rotary: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation {activation!r} is not one of {ACTIVATIONS}; "
                "set config.model.backbone.activation to one of them."
            )
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.rotary = rotary

    def build(self, inputs_shape):
        hidden = inputs_shape[-1]
        self.attention = MultiHeadAttention(
            self.num_heads, dropout=self.dropout, use_bias=self.use_bias, rotary=self.rotary,
            name="attention", dtype=self.dtype_policy,
        )
        self.attention.build(inputs_shape)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", dtype=self.dtype_policy
        )
        self.attention_norm.build(inputs_shape)
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="mlp_norm", dtype=self.dtype_policy
        )
        self.mlp_norm.build(inputs_shape)
        self.mlp_in = Dense(
            self.intermediate_dim, use_bias=self.use_bias, name="mlp_in",
            dtype=self.dtype_policy,
        )
        self.mlp_in.build(inputs_shape)
        self.mlp_out = Dense(
            hidden, use_bias=self.use_bias, name="mlp_out", dtype=self.dtype_policy
        )
        self.mlp_out.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self.mlp_dropout = Dropout(
            self.dropout, name="mlp_dropout", dtype=self.dtype_policy
        )
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_index=None,
        cache_mask=None,
        position_ids=None,
        training=None,
        cache_layer=None,
    ):
        x = inputs  # (B, T, hidden)
        attention_args = dict(
            padding_mask=padding_mask, use_causal_mask=use_causal_mask, cache=cache,
            cache_index=cache_index, cache_mask=cache_mask, position_ids=position_ids,
            training=training, cache_layer=cache_layer,
        )
        h = self.attention_norm(x) if self.norm_first else x
        h = self.attention(h, **attention_args)
        if cache is not None:
            h, cache = h
        x = x + h
        if not self.norm_first:
            x = self.attention_norm(x)
        h = self.mlp_norm(x) if self.norm_first else x
        h = self.mlp_in(h)  # (B, T, intermediate)
        h = gelu(h, self.activation == "gelu_approximate", training)
        h = self.mlp_dropout(self.mlp_out(h), training=training)  # (B, T, hidden)
        x = x + h
        if not self.norm_first:
            x = self.mlp_norm(x)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, inputs_shape, cache_shape=None):
        if cache_shape is None:
            return tuple(inputs_shape)
        return tuple(inputs_shape), tuple(cache_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "norm_first": self.norm_first,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "use_bias": self.use_bias,
                "rotary": self.rotary,
            }
        )
        return config
