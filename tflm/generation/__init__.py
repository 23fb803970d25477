"""Text generation: samplers, beam search and the compiled KV-cache decode loop."""

from tflm.generation.decoder import Decoder, generate_ids
from tflm.generation.embedding import SentenceEncoder
from tflm.generation.lm import LanguageModel, TextScore
from tflm.generation.samplers import SAMPLERS, get_sampler, make_sampler

__all__ = [
    "SAMPLERS",
    "Decoder",
    "LanguageModel",
    "SentenceEncoder",
    "TextScore",
    "generate_ids",
    "get_sampler",
    "make_sampler",
]
