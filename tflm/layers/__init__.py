"""Transformer building blocks (keras.ops only, so they also run on JAX)."""

from tflm.layers.attention import MultiHeadAttention
from tflm.layers.dropout import Dropout
from tflm.layers.embedding import TokenAndPositionEmbedding
from tflm.layers.masked_lm_head import MaskedLMHead
from tflm.layers.rotary import RotaryEmbedding
from tflm.layers.transformer import TransformerBlock

__all__ = [
    "Dropout",
    "MaskedLMHead",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
]
