"""Byte-level BPE (GPT-2 style): trained and encoded with HF `tokenizers`, in-graph with
keras-hub's ``BytePairTokenizer``.

Both paths split text into the same words (``SPLIT_PATTERN`` reproduces keras-hub's TF
split in HF's regex engine) and apply the same merges, so ``encode`` and ``tokenize``
give the same ids (tests/text/test_bpe.py checks this on real text). ``<|endoftext|>``
is id 0 and is both ``eos_id`` and ``pad_id`` (as in GPT-2); it is never split, also when
it appears literally in a text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import keras_hub
import tensorflow as tf
from absl import logging
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from tflm.errors import TokenizerError
from tflm.text import hf
from tflm.text.base import Tokenizer, register
from tflm.text.train import counted

EOS = "<|endoftext|>"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
_NUM_BYTES = 256

# keras-hub's TF pre-split (`split_strings_for_bpe`: RE2 cannot look ahead, so it inserts
# a marker before " x", splits, then splits off a trailing [ \t\r\f\v] char) differs from
# GPT-2's regex on whitespace runs: "a\n\nb" -> ["a", "\n\n", "b"] (GPT-2: "\n", "\n"),
# trailing "  " -> [" ", " "] (GPT-2: "  "), a trailing "\v" is split off, and \xa0
# \u2009 \u202f \u3000 count as white space but \v \x85 \u2028 do not. This Onig regex
# reproduces that split exactly (fuzzed on random mixes of these characters), so HF
# trains and encodes on the same words the in-graph layer sees. Limitation shared with
# keras-hub: the character "६" (U+0966) is dropped by the in-graph path.
_WS = "\t\n\f\r \xa0\u2009\u202f\u3000"  # white space for the split
_WS_END = "\r\t\f\xa0\u2009\u202f\u3000"  # split off the end of a white-space run
_PUNCT = rf"[^{_WS}\p{{L}}\p{{N}}]"
SPLIT_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d"
    rf"|(?: {_PUNCT}+|{_PUNCT}+| )(?=\v(?!{_PUNCT}))"  # punctuation before a final \v
    rf"| ?\p{{L}}+| ?\p{{N}}+| ?{_PUNCT}+"
    rf"|[{_WS}]+(?= [^{_WS}])"  # white space before " word" (GPT-2's \s+(?!\S))
    rf"|[{_WS}]+\n(?= *(?![{_WS}]))"  # ... ending in the run's last newline
    rf"|[{_WS}]+(?=[{_WS_END}] *(?![{_WS}]))"  # ... before its last \t \r \f
    rf"|(?<=[{_WS}])[{_WS_END}]"  # that last \t \r \f alone
    rf"|[{_WS}]+(?= \z)"  # trailing spaces but the last one
    rf"|[{_WS}]"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """HF pre-tokenizer: keras-hub's split, then bytes -> GPT-2's printable symbols."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


@register("bpe")
class BPETokenizer(Tokenizer):
    """Byte-level BPE; assets ``vocab.json`` (token -> id) and ``merges.txt`` (rank order).

    Any text round-trips (``detokenize(tokenize(x)) == x``): every byte has a token.
    A tokenizer imported from a Hugging Face checkpoint (options ``"huggingface": True``,
    see ``tflm.text.hf``) splits text with GPT-2's own regex and keeps the checkpoint's
    special tokens whole instead.
    """

    files = (VOCAB_FILE, MERGES_FILE)
    special_tokens = {"eos": EOS, "pad": EOS}

    def __init__(self, assets: dict[str, bytes], options: dict | None = None):
        super().__init__(assets, options)
        if self.options.get("lowercase"):
            raise TokenizerError(
                "byte-level BPE keeps case; train with lowercase=False "
                "(config.data.lowercase=False) or use the wordpiece / sentencepiece kind"
            )
        try:
            self._vocab = json.loads(assets[VOCAB_FILE].decode("utf-8"))
            merge_lines = assets[MERGES_FILE].decode("utf-8").splitlines()
            self._merges = [m for m in merge_lines if m and not m.startswith("#version")]
            pairs = [tuple(m.split(" ")) for m in self._merges]
        except ValueError as e:
            raise TokenizerError(f"BPE assets {self.files} are malformed ({e})") from e
        self._id_to_token = {i: t for t, i in self._vocab.items()}
        missing = [t for t in self.special_tokens.values() if t not in self._vocab]
        if missing:
            raise TokenizerError(f"{VOCAB_FILE} lacks the special tokens {missing}")
        self._layer = None
        if hf.is_huggingface(self.options):
            # An imported checkpoint's tokenizer: GPT-2's own split (tflm.text.hf).
            self._hf_options = hf.check_options("bpe", self.options)
            self._fast = hf.bpe_fast(self._vocab, pairs, self._hf_options)
            return
        # Fast eager path: the Rust tokenizer, configured exactly as for training.
        self._fast = HFTokenizer(models.BPE(vocab=self._vocab, merges=pairs))
        self._fast.pre_tokenizer = _pre_tokenizer()
        self._fast.decoder = decoders.ByteLevel()
        self._fast.add_special_tokens([EOS])
        # In-graph path. `_allow_python_workflow=False` makes eager calls run the same TF
        # ops as tf.data / tf.function (keras-hub would otherwise switch to Python).
        self._layer = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=self._vocab,
            merges=self._merges,
            unsplittable_tokens=[EOS],
            _allow_python_workflow=False,
        )

    @property
    def layer(self) -> keras_hub.tokenizers.BytePairTokenizer:
        """The in-graph layer (an imported tokenizer's is built on first use)."""
        if self._layer is None:
            with tf.init_scope():  # first use may be inside a tf.data / tf.function trace
                self._layer = hf.BytePairLayer(self._vocab, self._merges, self._hf_options)
        return self._layer

    @classmethod
    def train(
        cls, texts: Iterable[str], vocabulary_size: int, lowercase: bool = False
    ) -> BPETokenizer:
        """Learns merges from ``texts`` until the vocabulary has ``vocabulary_size`` tokens.

        The vocabulary is ``<|endoftext|>`` (id 0), the 256 byte symbols, then merges; it
        can end up smaller when the texts have too few distinct pairs (logged).

        Raises:
            TokenizerError: ``vocabulary_size`` < 257, ``lowercase``, or no texts.
        """
        minimum = _NUM_BYTES + 1
        if vocabulary_size < minimum:
            raise TokenizerError(
                f"vocabulary_size={vocabulary_size} is too small for byte-level BPE, "
                f"which needs {minimum} tokens (256 bytes + {EOS}); use at least "
                f"--vocab_size={minimum}"
            )
        if lowercase:
            cls({}, {"lowercase": True})  # raises the TokenizerError that says what to do
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = _pre_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocabulary_size,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = counted(texts)
        hf.train_from_iterator(texts, trainer)
        texts.raise_if_empty()
        model = json.loads(hf.to_str())["model"]
        vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        if len(vocab) < vocabulary_size:
            logging.warning(
                "BPE vocabulary has %d tokens, fewer than the %d asked for: the texts "
                "have too few distinct pairs; use more text or a smaller vocabulary",
                len(vocab),
                vocabulary_size,
            )
        assets = {
            VOCAB_FILE: json.dumps(vocab, ensure_ascii=False).encode("utf-8"),
            MERGES_FILE: "".join(m + "\n" for m in merges).encode("utf-8"),
        }
        return cls(assets, {})

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._fast.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._fast.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        if token_id not in self._id_to_token:
            raise TokenizerError(
                f"token id {token_id} is outside the vocabulary [0, {len(self._vocab)})"
            )
        return self._id_to_token[token_id]

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)
