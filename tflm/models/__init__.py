"""Models: the Transformer backbone and the task models built on it."""

from tflm.models.backbone import TransformerBackbone
from tflm.models.flops import flops_per_token
from tflm.models.gpt import GPT
from tflm.models.losses import TokenCrossEntropy, token_cross_entropy
from tflm.models.metrics import Perplexity

__all__ = [
    "GPT",
    "Perplexity",
    "TokenCrossEntropy",
    "TransformerBackbone",
    "flops_per_token",
    "token_cross_entropy",
]
