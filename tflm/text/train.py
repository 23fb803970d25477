"""``train_tokenizer``: one entry point over the tokenizer kinds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tflm.errors import TokenizerError
from tflm.text.base import Tokenizer, tokenizer_class


class counted(Iterator[str]):
    """Wraps an iterable of texts, counting the non-empty ones the trainer consumed."""

    def __init__(self, texts: Iterable[str]):
        if isinstance(texts, str):
            raise TokenizerError(
                "texts must be an iterable of strings, not one string; pass [text]"
            )
        self._it = iter(texts)
        self.count = 0

    def __iter__(self) -> counted:
        return self

    def __next__(self) -> str:
        text = next(self._it)
        if text:
            self.count += 1
        return text

    def raise_if_empty(self) -> None:
        """Raises TokenizerError when no non-empty text went through."""
        if self.count == 0:
            raise TokenizerError(
                "cannot train a tokenizer on an empty corpus (no non-empty texts); "
                "check the corpus path and split (config.data)"
            )


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocabulary_size: int,
    lowercase: bool = False,
    **options,
) -> Tokenizer:
    """Trains a tokenizer of ``kind`` on ``texts``; deterministic given the texts.

    Args:
        kind: ``"bpe"`` (byte-level BPE), ``"wordpiece"`` or ``"sentencepiece"``.
        texts: iterable of documents or lines (read once).
        vocabulary_size: number of tokens wanted, special tokens included.
        lowercase: lower-case (and, for wordpiece, strip accents) before tokenizing.
        **options: kind-specific, e.g. ``model_type="bpe"`` for sentencepiece.
    Returns:
        The trained ``Tokenizer`` (not yet saved; call ``.save(dir)``).
    Raises:
        TokenizerError: unknown kind or option, empty texts, vocabulary too small.
    """
    cls = tokenizer_class(kind)
    try:
        return cls.train(texts, vocabulary_size, lowercase=lowercase, **options)
    except TypeError as e:
        if options and "unexpected keyword" in str(e):
            raise TokenizerError(
                f"{kind} tokenizer does not take options {sorted(options)} ({e})"
            ) from e
        raise
