"""Models: the Transformer backbone, the task models built on it, the objective registry."""

from tflm.models.backbone import TransformerBackbone, pool
from tflm.models.bert import BertPretrainer
from tflm.models.electra import ElectraPretrainer
from tflm.models.flops import flops_per_token
from tflm.models.gpt import GPT
from tflm.models.lm_head_loss import lm_head_cross_entropy
from tflm.models.losses import TokenCrossEntropy, token_cross_entropy
from tflm.models.metrics import Perplexity, TokenAccuracy
from tflm.models.simcse import SimCSE
from tflm.models.tasks import (
    Objective,
    get_objective,
    objective_names,
    register_objective,
    unregister_objective,
)

__all__ = [
    "BertPretrainer",
    "ElectraPretrainer",
    "GPT",
    "Objective",
    "Perplexity",
    "SimCSE",
    "TokenAccuracy",
    "TokenCrossEntropy",
    "TransformerBackbone",
    "flops_per_token",
    "get_objective",
    "lm_head_cross_entropy",
    "objective_names",
    "pool",
    "register_objective",
    "token_cross_entropy",
    "unregister_objective",
]
