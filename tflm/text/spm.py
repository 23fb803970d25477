"""SentencePiece (unigram or BPE): trained and encoded with the `sentencepiece` library,
in-graph with keras-hub's ``SentencePieceTokenizer`` (tensorflow-text's op).

Both paths run tensorflow-text's op on the same model proto, so ids agree; the
``sentencepiece`` package trains and answers vocabulary look-ups. With ``byte_fallback``,
the identity normalization (no NFKC, white space kept) and no dummy prefix (tf-text's
decoder strips leading spaces otherwise), any text round-trips. The file is ``spm.py``
so it does not shadow the ``sentencepiece`` package.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator

import keras_hub
import sentencepiece
import tensorflow as tf
from absl import logging
from tensorflow_text.python.ops import sentencepiece_tokenizer as tf_text_spm

from tflm.errors import TokenizerError
from tflm.text.base import Tokenizer, register
from tflm.text.train import counted

MODEL_FILE = "spm.model"
# Ids 0-2 are control pieces, then the MLM pieces as user-defined symbols (each is one
# piece wherever it appears in a text), then the 256 byte pieces, then learned pieces.
SPECIALS = {
    "pad": "<pad>",
    "unk": "<unk>",
    "eos": "</s>",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}
_MIN_VOCABULARY = len(SPECIALS) + 256
_MAX_SENTENCE_BYTES = 1 << 16


def _lines(texts: Iterable[str]) -> Iterator[str]:
    """The non-empty lines of every text (SentencePiece trains on sentences)."""
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line


class _NamedModelResource(tf_text_spm._SentencepieceModelResource):
    """tf-text's SentencePiece model resource, under a name of its own.

    tf-text creates it "kernel-owned" (its b/318839908): the eager kernel cache owns it, so
    ``tf.random.set_seed`` / ``keras.utils.set_random_seed``, which clear that cache,
    delete it and every later call fails with "Resource .../SentencepieceOp does not
    exist". A shared name makes the resource manager own it instead.
    """

    def _create_resource(self):
        with tf.name_scope("SentenceTokenizerInitializer"):
            return tf_text_spm.gen_sentencepiece_tokenizer.sentencepiece_op(
                model=self._model, shared_name=f"tflm_sentencepiece_{uuid.uuid4().hex}"
            )


@register("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """SentencePiece; asset ``spm.model`` (the serialized ModelProto).

    Options: ``model_type`` (``"unigram"`` or ``"bpe"``), ``lowercase`` (NFKC + case
    folding inside the model, so both paths apply it; such a tokenizer is lossy).
    """

    files = (MODEL_FILE,)
    special_tokens = SPECIALS

    def __init__(self, assets: dict[str, bytes], options: dict | None = None):
        super().__init__(assets, options)
        proto = assets[MODEL_FILE]
        try:
            self._spm = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except RuntimeError as e:
            raise TokenizerError(f"{MODEL_FILE} is not a SentencePiece model ({e})") from e
        self.layer = keras_hub.tokenizers.SentencePieceTokenizer(
            proto=proto, _allow_python_workflow=False
        )
        self.layer._sentence_piece._model_resource = _NamedModelResource(
            proto, "sentencepiece"
        )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocabulary_size: int,
        lowercase: bool = False,
        model_type: str = "unigram",
    ) -> SentencePieceTokenizer:
        """Trains a ``model_type`` model of exactly ``vocabulary_size`` pieces.

        Raises:
            TokenizerError: no texts, unknown ``model_type``, or a ``vocabulary_size`` below
                the specials + 256 byte pieces + the corpus' characters.
        """
        if model_type not in ("unigram", "bpe"):
            raise TokenizerError(
                f"model_type={model_type!r} is not a SentencePiece model type this "
                "package trains; use 'unigram' or 'bpe'"
            )
        if vocabulary_size < _MIN_VOCABULARY + 1:
            raise TokenizerError(
                f"vocabulary_size={vocabulary_size} is too small for SentencePiece with "
                f"byte fallback ({len(SPECIALS)} specials + 256 bytes + pieces); use at "
                f"least --vocab_size={_MIN_VOCABULARY + 1}"
            )
        texts = counted(texts)
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=_lines(texts),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocabulary_size,
                pad_id=0,
                unk_id=1,
                eos_id=2,
                bos_id=-1,
                pad_piece=SPECIALS["pad"],
                unk_piece=SPECIALS["unk"],
                eos_piece=SPECIALS["eos"],
                user_defined_symbols=[SPECIALS[r] for r in ("cls", "sep", "mask")],
                byte_fallback=True,
                character_coverage=0.9995,
                normalization_rule_name="nfkc_cf" if lowercase else "identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                split_digits=True,
                max_sentence_length=_MAX_SENTENCE_BYTES,
                num_threads=1,  # deterministic
                minloglevel=2,
            )
        except RuntimeError as e:
            texts.raise_if_empty()
            raise TokenizerError(
                f"SentencePiece training failed: {e}; with a small corpus use a smaller "
                "--vocab_size (unigram needs enough distinct pieces)"
            ) from e
        texts.raise_if_empty()
        tokenizer = cls(
            {MODEL_FILE: model.getvalue()},
            {"model_type": model_type, "lowercase": bool(lowercase)},
        )
        logging.info("trained a %s SentencePiece model of %d pieces", model_type, vocabulary_size)
        return tokenizer

    def encode(self, texts: list[str]) -> list[list[int]]:
        # The tensorflow-text op (C++, batched) rather than the `sentencepiece` package:
        # its older copy of SentencePiece breaks unigram ties differently on rare inputs
        # (e.g. "*****..."), and the cache must hold the ids the SavedModel computes.
        return self.tokenize(list(texts)).to_list() if texts else []

    def decode(self, ids: list[int]) -> str:
        return self.detokenize([list(ids)]).numpy()[0].decode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        token_id = self._spm.piece_to_id(token)
        if token_id == self._spm.unk_id() and token != SPECIALS["unk"]:
            return None
        return token_id

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < self._spm.get_piece_size():
            raise TokenizerError(
                f"token id {token_id} is outside the vocabulary "
                f"[0, {self._spm.get_piece_size()})"
            )
        return self._spm.id_to_piece(token_id)

    @property
    def vocabulary_size(self) -> int:
        return self._spm.get_piece_size()
