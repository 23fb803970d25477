"""WordPiece (BERT): vocabulary trained with HF `tokenizers`, tokenized with keras-hub's
``WordPieceTokenizer`` (tensorflow-text's FastWordpiece op) on both paths.

The HF trainer only proposes the vocabulary; ids always come from the keras-hub layer, so
``encode`` and ``tokenize`` agree by construction. WordPiece is lossy: ``detokenize``
joins word pieces with spaces.

Why not HF's ``WordPieceTrainer`` or tensorflow-text's ``bert_vocab_from_dataset``: the
former is not deterministic (``##c`` symbols get ids in hash-map order, which breaks ties
between equally frequent pairs differently each run); the latter took ~12 s on 150 KB
and returned 493-736 tokens when asked for 500-4000. So words are pre-split as BERT does
(HF's ``BertNormalizer`` + ``BertPreTokenizer``), every non-initial character is marked by
moving it to a private-use plane (``_MARK``), and HF's BPE trainer - deterministic when all
symbols are plain characters, as its alphabet is sorted - learns merges on those words;
a token whose first character is marked becomes ``##`` + the unmarked text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras_hub
import tensorflow as tf
from absl import logging
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, trainers

from tflm.errors import TokenizerError
from tflm.text import hf
from tflm.text.base import Tokenizer, register
from tflm.text.train import counted

VOCAB_FILE = "vocab.txt"
# In id order: [PAD] is 0, as BERT's.
SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# Continuation characters c are trained as chr(_MARK + ord(c)): planes 15-16 are private
# use. Characters at or above _MARK_LIMIT (rare CJK extensions) stay unmarked.
_MARK = 0xF0000
_MARK_LIMIT = 0x10FFFE - _MARK


class _Marks(dict):
    """``str.translate`` table: c -> its marked twin (filled on demand)."""

    def __missing__(self, code: int) -> int:
        self[code] = code + _MARK if code < _MARK_LIMIT else code
        return self[code]


_TO_MARKED = _Marks()


def _marked_words(texts: Iterable[str], lowercase: bool) -> Iterator[str]:
    """Each text as BERT's words joined by spaces, non-initial characters marked."""
    normalizer = normalizers.BertNormalizer(
        clean_text=False, strip_accents=lowercase, lowercase=lowercase
    )
    split = pre_tokenizers.BertPreTokenizer()
    for text in texts:
        words = split.pre_tokenize_str(normalizer.normalize_str(text))
        yield " ".join(
            w[0] + w[1:].translate(_TO_MARKED) for w, _ in words if max(w) < chr(_MARK)
        )


def _unmark(token: str) -> str:
    """A trained symbol as a WordPiece token: "##" + text when it starts marked."""
    text = "".join(chr(ord(c) - _MARK) if ord(c) >= _MARK else c for c in token)
    return "##" + text if ord(token[0]) >= _MARK else text


@register("wordpiece")
class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece; asset ``vocab.txt`` (one token per line, line number = id).

    Options: ``lowercase`` lower-cases and strips accents (uncased BERT) before splitting.
    Text is split on white space, punctuation and CJK characters; words that cannot be
    pieced together from the vocabulary become ``[UNK]``. A tokenizer imported from a
    Hugging Face checkpoint (options ``"huggingface": True``, see ``tflm.text.hf``)
    follows that checkpoint's rules and special tokens instead.
    """

    files = (VOCAB_FILE,)
    special_tokens = SPECIALS

    def __init__(self, assets: dict[str, bytes], options: dict | None = None):
        super().__init__(assets, options)
        # split("\n"), not splitlines(): a token may hold \x1c, \u2028 and the like.
        self._vocab = assets[VOCAB_FILE].decode("utf-8").rstrip("\n").split("\n")
        self._ids = {token: i for i, token in enumerate(self._vocab)}
        missing = [t for t in self.special_tokens.values() if t not in self._ids]
        if missing:
            raise TokenizerError(
                f"{VOCAB_FILE} lacks the special tokens {missing}; retrain the tokenizer"
            )
        self._fast = self._layer = None
        if hf.is_huggingface(self.options):
            # An imported checkpoint's tokenizer: its own rules (tflm.text.hf).
            self._hf_options = hf.check_options("wordpiece", self.options)
            self._fast = hf.wordpiece_fast(self._vocab, self._hf_options)
            return
        lowercase = bool(self.options.get("lowercase", False))
        self._layer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=self._vocab,
            lowercase=lowercase,
            strip_accents=lowercase,
            special_tokens=list(SPECIALS.values()),
            _allow_python_workflow=False,
        )

    @property
    def layer(self) -> keras_hub.tokenizers.WordPieceTokenizer:
        """The in-graph layer (an imported tokenizer's is built on first use)."""
        if self._layer is None:
            with tf.init_scope():  # first use may be inside a tf.data / tf.function trace
                self._layer = hf.WordPieceLayer(self._vocab, self._hf_options)
        return self._layer

    @classmethod
    def train(
        cls, texts: Iterable[str], vocabulary_size: int, lowercase: bool = False
    ) -> WordPieceTokenizer:
        """Learns a WordPiece vocabulary of at most ``vocabulary_size`` tokens.

        Raises:
            TokenizerError: no texts, or ``vocabulary_size`` below the specials plus the
                corpus' characters (each character is a token, alone and/or as ``##c``).
        """
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(
            vocab_size=vocabulary_size,
            special_tokens=list(SPECIALS.values()),
            show_progress=False,
        )
        texts = counted(texts)
        hf.train_from_iterator(_marked_words(texts, lowercase), trainer)
        texts.raise_if_empty()
        vocab = sorted(hf.get_vocab().items(), key=lambda item: item[1])
        tokens = [_unmark(token) for token, _ in vocab]
        if len(tokens) > vocabulary_size:
            raise TokenizerError(
                f"vocabulary_size={vocabulary_size} is too small for WordPiece on this "
                f"corpus: the specials and its characters alone take {len(tokens)} "
                f"tokens; use at least --vocab_size={len(tokens)}"
            )
        if len(tokens) < vocabulary_size:
            logging.warning(
                "WordPiece vocabulary has %d tokens, fewer than the %d asked for; use "
                "more text or a smaller vocabulary",
                len(tokens),
                vocabulary_size,
            )
        asset = "".join(token + "\n" for token in tokens).encode("utf-8")
        return cls({VOCAB_FILE: asset}, {"lowercase": bool(lowercase)})

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self._fast is not None:
            encoded = self._fast.encode_batch(list(texts), add_special_tokens=False)
            return [e.ids for e in encoded]
        # FastWordpiece is a C++ op: batched eager calls are already fast.
        return self.tokenize(list(texts)).to_list() if texts else []

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast.decode(list(ids), skip_special_tokens=False)
        return self.detokenize([list(ids)]).numpy()[0].decode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._vocab):
            raise TokenizerError(
                f"token id {token_id} is outside the vocabulary [0, {len(self._vocab)})"
            )
        return self._vocab[token_id]

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)
