"""Import of published checkpoints: Hugging Face BERT / RoBERTa / GPT-2 directories
(safetensors + tokenizer files) as tflm model directories (``import_hf``)."""

from tflm.convert.checkpoint import CheckpointError
from tflm.convert.importer import import_hf

__all__ = ["CheckpointError", "import_hf"]
