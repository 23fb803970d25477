"""The interface every tflm tokenizer has, and saving / loading it as a directory.

A tokenizer is its asset files (bytes, e.g. ``vocab.json`` + ``merges.txt``) plus a few
options. Each kind wraps an in-graph layer (keras-hub / tensorflow-text ops, exposed as
``tokenizer.layer``) for ``tokenize`` / ``detokenize`` inside ``tf.data`` and SavedModels,
and a fast eager path (``encode`` / ``decode``) used to build token caches. A saved
tokenizer directory holds the asset files and ``tokenizer.json``::

    {"format_version": 1, "kind": "bpe", "options": {...}, "files": ["vocab.json", ...],
     "vocabulary_size": 8192, "special_tokens": {"eos": "<|endoftext|>", ...}}
"""

from __future__ import annotations

import hashlib
import json
import os

import tensorflow as tf

from tflm.errors import TokenizerError

META_FILENAME = "tokenizer.json"
FORMAT_VERSION = 1
# Names of the special-token roles; ``Tokenizer.<role>_id`` is None where a kind has none.
SPECIAL_ROLES = ("pad", "eos", "unk", "cls", "sep", "mask")

_KINDS: dict[str, type[Tokenizer]] = {}


def register(kind: str):
    """Class decorator: makes ``load_tokenizer`` / ``train_tokenizer`` know ``kind``."""

    def wrap(cls):
        cls.kind = kind
        _KINDS[kind] = cls
        return cls

    return wrap


def tokenizer_class(kind: str) -> type[Tokenizer]:
    """The tokenizer class of ``kind``; raises TokenizerError for an unknown kind."""
    if kind not in _KINDS:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; use one of {sorted(_KINDS)} "
            "(config.data.tokenizer)"
        )
    return _KINDS[kind]


class Tokenizer:
    """Shared behaviour of the tokenizer kinds (see the module docstring).

    Subclasses set ``files`` (asset names), ``special_tokens`` (role -> token string,
    roles from ``SPECIAL_ROLES``), build ``self.layer`` in ``__init__``, and implement
    ``train``, ``encode``, ``decode``, ``token_to_id``, ``id_to_token``,
    ``vocabulary_size``.

    Args:
        assets: asset file name -> bytes; must hold every name in ``files``.
        options: JSON-serializable options of the kind (e.g. ``{"lowercase": True}``).
    """

    kind: str = ""
    files: tuple[str, ...] = ()

    def __init__(self, assets: dict[str, bytes], options: dict | None = None):
        self.assets = dict(assets)
        self.options = dict(options or {})
        # The directory the tokenizer was loaded from or last saved to (None if neither).
        self.directory: str | None = None
        if "special_tokens" in self.options:
            # An imported vocabulary's own tokens (tflm.text.hf), e.g. {"cls": "<s>"}.
            self.special_tokens = dict(self.options["special_tokens"])

    # -- in-graph path -------------------------------------------------------------------
    def tokenize(self, strings) -> tf.RaggedTensor:
        """Token ids of UTF-8 strings, in-graph (works in ``tf.data`` and ``tf.function``).

        Args:
            strings: string tensor / list of shape (batch,) or a scalar string.
        Returns:
            int32 ``tf.RaggedTensor`` (batch, None); a scalar input gives a 1-D tensor.
        """
        if tf.executing_eagerly():
            # keras-hub layers return Python lists when called eagerly; tracing keeps
            # the TF ops (and tensor outputs) of the graph path.
            strings = tf.convert_to_tensor(strings, tf.string)
            spec = tf.TensorSpec([None] * strings.shape.rank, tf.string)
            return self._traced("tokenize", spec)(strings)
        return self.layer.tokenize(strings)

    def detokenize(self, ids) -> tf.Tensor:
        """Strings of token ids, in-graph: (batch, None) ids -> (batch,) tf.string.

        A 1-D sequence of ids gives a scalar string.
        """
        if tf.executing_eagerly():
            if not isinstance(ids, (tf.Tensor, tf.RaggedTensor)):
                ids = tf.ragged.constant(ids, dtype=tf.int32)
            ids = tf.cast(ids, tf.int32)
            if isinstance(ids, tf.RaggedTensor):
                spec = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)
            else:
                spec = tf.TensorSpec([None] * ids.shape.rank, tf.int32)
            return self._traced("detokenize", spec)(ids)
        return self.layer.detokenize(ids)

    def _traced(self, method: str, spec):
        """A ``tf.function`` of ``self.layer.<method>`` for inputs of ``spec``, made once."""
        cache = self.__dict__.setdefault("_traced_fns", {})
        key = (method, repr(spec))
        if key not in cache:
            cache[key] = tf.function(getattr(self.layer, method), input_signature=[spec])
        return cache[key]

    # -- eager path ----------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, fast and eager (same ids as ``tokenize``)."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        """The text of one sequence of token ids."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None if it is not in the vocabulary."""
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of an id; raises TokenizerError when out of range."""
        raise NotImplementedError

    @property
    def vocabulary_size(self) -> int:
        raise NotImplementedError

    # -- special tokens ------------------------------------------------------------------
    special_tokens: dict[str, str] = {}

    def _special_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self._special_id("pad")

    @property
    def eos_id(self) -> int | None:
        return self._special_id("eos")

    @property
    def unk_id(self) -> int | None:
        return self._special_id("unk")

    @property
    def cls_id(self) -> int | None:
        return self._special_id("cls")

    @property
    def sep_id(self) -> int | None:
        return self._special_id("sep")

    @property
    def mask_id(self) -> int | None:
        return self._special_id("mask")

    @property
    def added_tokens(self) -> list[str]:
        """Tokens kept whole when they appear in a text (an imported tokenizer's special
        tokens: ``encode`` / ``tokenize`` give their ids)."""
        return [token["content"] for token in self.options.get("added_tokens", [])]

    @property
    def special_ids(self) -> dict[str, int]:
        """Role -> id of every special token this tokenizer has (e.g. ``{"eos": 0}``)."""
        ids = {role: self._special_id(role) for role in SPECIAL_ROLES}
        return {role: i for role, i in ids.items() if i is not None}

    # -- persistence ---------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "options": self.options,
            "files": list(self.files),
            "vocabulary_size": self.vocabulary_size,
            "special_tokens": self.special_tokens,
        }

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the kind, options and asset bytes; stable across processes."""
        digest = hashlib.sha256()
        head = {"kind": self.kind, "options": self.options, "files": list(self.files)}
        digest.update(json.dumps(head, sort_keys=True).encode("utf-8"))
        for name in self.files:
            digest.update(name.encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(self.assets[name]).digest())
        return digest.hexdigest()

    def save(self, directory: str) -> str:
        """Writes the asset files and ``tokenizer.json`` to ``directory``; returns it."""
        os.makedirs(directory, exist_ok=True)
        for name in self.files:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(self.assets[name])
        with open(os.path.join(directory, META_FILENAME), "w", encoding="utf-8") as f:
            json.dump(self._meta(), f, indent=2, ensure_ascii=False, sort_keys=True)
        self.directory = directory
        return directory

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocabulary_size={self.vocabulary_size}, "
            f"options={self.options}, directory={self.directory!r})"
        )


def load_tokenizer(directory: str) -> Tokenizer:
    """Loads a tokenizer saved with ``Tokenizer.save``.

    Raises:
        TokenizerError: ``tokenizer.json`` or an asset file is missing or unreadable.
    """
    meta_path = os.path.join(directory, META_FILENAME)
    if not os.path.isfile(meta_path):
        raise TokenizerError(
            f"{meta_path} is missing, so {directory} is not a saved tokenizer; train one "
            "with `tflm tokenizer` or point config.data.tokenizer_dir at a directory "
            "written by Tokenizer.save"
        )
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        kind, files, options = meta["kind"], meta["files"], meta.get("options", {})
    except (ValueError, KeyError) as e:
        raise TokenizerError(
            f"{meta_path} is not a valid tokenizer meta file ({e!r}); re-save the "
            "tokenizer with Tokenizer.save"
        ) from e
    cls = tokenizer_class(kind)
    assets = {}
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise TokenizerError(
                f"tokenizer file {path} is missing ({META_FILENAME} lists {files}); "
                "copy the whole tokenizer directory or retrain it"
            )
        with open(path, "rb") as f:
            assets[name] = f.read()
    tokenizer = cls(assets, options)
    tokenizer.directory = directory
    return tokenizer


def check_vocabulary(tokenizer: Tokenizer, vocabulary_size: int) -> None:
    """Raises TokenizerError unless ``tokenizer`` has exactly ``vocabulary_size`` tokens."""
    n = tokenizer.vocabulary_size
    if n != vocabulary_size:
        where = tokenizer.directory or "memory"
        raise TokenizerError(
            f"tokenizer in {where} has {n} tokens but the model expects "
            f"{vocabulary_size}; retrain the tokenizer with --vocab_size={vocabulary_size} "
            f"or set config.model.backbone.vocabulary_size={n}"
        )
