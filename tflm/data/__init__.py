"""Corpora, the token cache and the tf.data pipelines of every objective."""

from tflm.data.corpus import Corpus, load_corpus
from tflm.data.token_cache import TokenCache, build_token_cache

__all__ = ["Corpus", "TokenCache", "build_token_cache", "load_corpus"]
