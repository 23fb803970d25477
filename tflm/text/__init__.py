"""Tokenizers: train from a corpus, save / load as assets, tokenize in-graph or fast."""

from tflm.text import bpe, spm, wordpiece  # noqa: F401  (registers the kinds)
from tflm.text.base import Tokenizer, check_vocabulary, load_tokenizer
from tflm.text.train import train_tokenizer

__all__ = ["Tokenizer", "check_vocabulary", "load_tokenizer", "train_tokenizer"]
