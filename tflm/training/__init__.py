"""Training: the one trainer (``train``), ``evaluate``, and their parts."""

from tflm.training.evaluation import evaluate
from tflm.training.prepare import prepare
from tflm.training.trainer import train

__all__ = ["evaluate", "prepare", "train"]
