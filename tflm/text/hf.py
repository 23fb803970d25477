"""Tokenizers of Hugging Face checkpoints: the ids of the checkpoint's own ``tokenizer.json``
on both tflm paths.

A tokenizer imported from a Hugging Face directory (``tflm.convert``) is a ``wordpiece``
or ``bpe`` tokenizer whose options carry ``"huggingface": True`` and the checkpoint's
settings (``HF_OPTIONS``). Such a tokenizer follows the `tokenizers` library's rules, not
tflm's own:

- the eager path (``encode`` / ``decode``) *is* a `tokenizers.Tokenizer` built from the
  assets and options (BertNormalizer + BertPreTokenizer + WordPiece, or byte-level BPE
  with GPT-2's split), so it gives the checkpoint's ids by construction;
- the in-graph path (``tokenize``; SavedModels, ``tf.data``) reproduces those rules with
  TensorFlow ops (``bert_words``, ``byte_level_words``) in front of keras-hub's
  WordPiece / BPE merge layers (``WordPieceLayer``, ``BytePairLayer``).

Exactness of the in-graph path: TensorFlow's RE2 and ICU tables are not the Unicode
version of the `tokenizers` library (its punctuation, accent and letter classes are
older or newer by hundreds of code points, its lower-casing differs on ~100), so every
character class and the per-character lower-casing / accent stripping are read from the
installed `tokenizers` itself (``_bert_classes``, ``_bert_char_map``,
``_byte_level_classes``: a pass over all code points, 1-4 s, once per process, when an
imported tokenizer is first used in-graph). One difference remains: accents are
stripped per character, so NFD's canonical reordering of combining marks across
characters is not done; it matters only for two or more adjacent marks that are kept
(not non-spacing: e.g. the musical symbols' spacing marks) in non-canonical order.

Added tokens (the checkpoint's special tokens: ``[MASK]``, ``<s>``, ``<|endoftext|>``,
...) are matched in the raw text first, longest first, as the `tokenizers` library does;
``lstrip`` / ``rstrip`` tokens (RoBERTa's ``<mask>``) take the white space beside them.
"""

from __future__ import annotations

import functools
import re

import keras_hub
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from tflm.errors import TokenizerError

# Options of an imported tokenizer, beside "huggingface": True and "special_tokens".
HF_OPTIONS = {
    "wordpiece": {"lowercase": False, "strip_accents": False, "clean_text": True,
                  "handle_chinese_chars": True, "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "added_tokens": []},
    "bpe": {"add_prefix_space": False, "use_regex": True, "added_tokens": []},
}
# Private-use code point that no lower-casing or accent stripping produces: "not mapped".
_UNMAPPED = "\U0010fffd"
_SEPARATOR = "|"  # ASCII punctuation: unchanged by every normalizer step


def is_huggingface(options: dict) -> bool:
    """Whether tokenizer ``options`` are those of an imported Hugging Face tokenizer."""
    return bool(options.get("huggingface"))


def check_options(kind: str, options: dict) -> dict:
    """``options`` with the defaults of ``HF_OPTIONS[kind]`` filled in.

    Raises:
        TokenizerError: an unknown option or a malformed added token.
    """
    known = {"huggingface", "special_tokens", *HF_OPTIONS[kind]}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TokenizerError(f"unknown options {unknown} of an imported {kind} tokenizer; "
                             f"it takes {sorted(known)}")
    merged = {**HF_OPTIONS[kind], **options}
    for token in merged["added_tokens"]:
        if not isinstance(token, dict) or not isinstance(token.get("content"), str):
            raise TokenizerError(f"added token {token!r} must be {{'content': str, "
                                 "'lstrip': bool, 'rstrip': bool, 'special': bool}}")
    return merged


def _added(options: dict) -> list[AddedToken]:
    return [AddedToken(t["content"], single_word=False, lstrip=bool(t.get("lstrip")),
                       rstrip=bool(t.get("rstrip")), normalized=False,
                       special=bool(t.get("special", True)))
            for t in options["added_tokens"]]


# -- eager path: the `tokenizers` library itself -------------------------------------------
def _bert_normalizer(options: dict) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=options["clean_text"], handle_chinese_chars=options["handle_chinese_chars"],
        strip_accents=options["strip_accents"], lowercase=options["lowercase"])


def wordpiece_fast(vocabulary: list[str], options: dict) -> HFTokenizer:
    """The `tokenizers` WordPiece tokenizer of a checkpoint (no post-processor: no
    [CLS] / [SEP] added)."""
    fast = HFTokenizer(models.WordPiece(
        {token: i for i, token in enumerate(vocabulary)}, unk_token=options["unk_token"],
        max_input_chars_per_word=options["max_input_chars_per_word"],
        continuing_subword_prefix=options["continuing_subword_prefix"]))
    fast.normalizer = _bert_normalizer(options)
    fast.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast.decoder = decoders.WordPiece(prefix=options["continuing_subword_prefix"])
    fast.add_tokens(_added(options))
    return fast


def bpe_fast(vocabulary: dict[str, int], merges: list[tuple[str, str]],
             options: dict) -> HFTokenizer:
    """The `tokenizers` byte-level BPE tokenizer of a checkpoint (GPT-2's split)."""
    fast = HFTokenizer(models.BPE(vocab=vocabulary, merges=merges))
    fast.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=options["add_prefix_space"], use_regex=options["use_regex"])
    fast.decoder = decoders.ByteLevel()
    fast.add_tokens(_added(options))
    return fast


# -- character classes read from the `tokenizers` library ----------------------------------
def _code_points() -> tuple[str, ...]:
    """Every Unicode scalar value but NUL, the surrogates, the separator and planes 4-13
    (nothing is assigned there, so every library treats them alike: as unassigned,
    which is how the derived classes treat a code point they do not list)."""
    return tuple(chr(c) for c in range(1, 0x110000)
                 if not (0xD800 <= c < 0xE000 or 0x40000 <= c < 0xE0000)
                 and chr(c) != _SEPARATOR)


def _each(normalizer: normalizers.Normalizer) -> list[str]:
    """What ``normalizer`` makes of each code point on its own."""
    out = normalizer.normalize_str(_SEPARATOR.join(_code_points())).split(_SEPARATOR)
    if len(out) != len(_code_points()):
        raise TokenizerError("the tokenizers library normalised the separator '|'; this "
                             "tokenizers version is not supported for in-graph tokenizing")
    return out


def _char_class(chars) -> str:
    """An RE2 character class (``[...]``) of ``chars``, as ranges."""
    codes = sorted(ord(c) for c in chars)
    parts, start = [], None
    for i, code in enumerate(codes):
        if start is None:
            start = code
        if i + 1 == len(codes) or codes[i + 1] != code + 1:
            parts.append(f"\\x{{{start:X}}}" + (f"-\\x{{{code:X}}}" if code > start else ""))
            start = None
    return "[" + "".join(parts) + "]" if parts else "[^\\x{0}-\\x{10FFFF}]"


@functools.cache
def _bert_removed() -> frozenset[str]:
    """The characters BertNormalizer's clean_text removes (controls, formats, private
    use, U+FFFD)."""
    clean = _each(normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False))
    return frozenset({"\0"} | {c for c, o in zip(_code_points(), clean) if o == ""})


@functools.cache
def _bert_classes() -> dict[str, str]:
    """BertNormalizer's removed and Chinese characters and BertPreTokenizer's white space
    and punctuation, as RE2 classes."""
    points, removed = _code_points(), _bert_removed()
    chinese = _each(normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False))
    # A run of all code points splits at every punctuation character and loses the
    # white space; the one-character pieces are confirmed one at a time.
    kept = [c for c in points if c not in removed]
    split = pre_tokenizers.BertPreTokenizer()
    pieces = split.pre_tokenize_str("".join(kept))
    seen = {c for piece, _ in pieces for c in piece}
    punctuation = [p for p, _ in pieces
                   if len(p) == 1 and len(split.pre_tokenize_str(f"a{p}a")) == 3]
    return {"removed": _char_class(removed),
            "cjk": _char_class(c for c, o in zip(points, chinese) if o == f" {c} "),
            "space": _char_class(c for c in kept if c not in seen),
            "punctuation": _char_class([*punctuation, _SEPARATOR])}


@functools.cache
def _bert_char_map(strip_accents: bool, lowercase: bool) -> dict[str, str]:
    """BertNormalizer per character, removed characters aside: white space -> " ", then
    accents stripped, then lower-cased (only the characters it changes)."""
    mapped = _each(normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=strip_accents,
        lowercase=lowercase))
    removed = _bert_removed()
    return {c: o for c, o in zip(_code_points(), mapped) if o != c and c not in removed}


@functools.cache
def _byte_level_classes() -> dict:
    """GPT-2's split classes as the `tokenizers` regex engine has them (\\p{L}, \\p{N},
    \\s), as RE2 classes."""
    points = [*_code_points(), _SEPARATOR]
    text = "".join(points)
    classes = {}
    for name, pattern in (("letter", r"\p{L}"), ("number", r"\p{N}"), ("space", r"\s")):
        split = pre_tokenizers.Split(Regex(pattern), behavior="removed")
        covered = np.zeros(len(points) + 1, np.int32)
        for _, (start, end) in split.pre_tokenize_str(text):
            covered[start] += 1
            covered[end] -= 1
        inside = np.cumsum(covered[:-1]) > 0
        classes[name] = _char_class(c for c, kept in zip(points, inside) if not kept)
    return classes


# -- in-graph path ---------------------------------------------------------------------------
_SPACE = ("\\t\\n\\x{B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
          "\\x{202F}\\x{205F}\\x{3000}")  # Unicode White_Space: what lstrip / rstrip take


def _added_pattern(added: list[dict]) -> str | None:
    """RE2 alternation matching the added tokens (longest first, with the white space
    that ``lstrip`` / ``rstrip`` tokens absorb)."""
    if not added:
        return None
    alternatives = []
    for token in sorted(added, key=lambda t: -len(t["content"])):
        pattern = re.escape(token["content"])
        if token.get("lstrip"):
            pattern = f"[{_SPACE}]*" + pattern
        if token.get("rstrip"):
            pattern += f"[{_SPACE}]*"
        alternatives.append(f"(?:{pattern})")
    return "|".join(alternatives)


def _regex_split(texts: tf.Tensor, delimiter: str, keep: str) -> tf.RaggedTensor:
    """``tf_text.regex_split`` of flat strings (N,) -> ragged (N, W), also for texts with
    NUL characters (where it stops): NUL is split as its 1-byte neighbour \\x01 (the same
    class in every pattern here) and the pieces are cut from the original bytes."""
    probe = tf.strings.regex_replace(texts, "\\x00", "\x01")
    _, starts, ends = tf_text.regex_split_with_offsets(probe, delimiter, keep)
    rows = starts.value_rowids()
    pieces = tf.strings.substr(tf.gather(texts, rows), starts.flat_values,
                               ends.flat_values - starts.flat_values)
    return starts.with_flat_values(pieces)


def split_added_tokens(texts: tf.Tensor, added: list[dict]):
    """Texts (B,) -> ``(segments, is_added)``: ragged (B, S) strings, the added tokens
    (white space of lstrip / rstrip tokens removed) and the text between them, and a
    flat bool (total S,) that marks the added tokens."""
    pattern = _added_pattern(added)
    if pattern is None:
        segments = tf.RaggedTensor.from_row_lengths(texts, tf.ones_like(texts, tf.int64))
        segments = tf.ragged.boolean_mask(segments, segments != "")
        return segments, tf.zeros_like(segments.flat_values, tf.bool)
    segments = _regex_split(texts, pattern, pattern)  # (B, S)
    flat = segments.flat_values
    is_added = tf.strings.regex_full_match(flat, pattern)
    stripped = tf.strings.regex_replace(flat, f"^[{_SPACE}]+|[{_SPACE}]+$", "")
    flat = tf.where(is_added, stripped, flat)
    return segments.with_flat_values(flat), is_added


def _replace_rows(words: tf.RaggedTensor, is_added, segments: tf.Tensor):
    """Words per segment (S, W) with the rows of added tokens replaced by the token."""
    keep = words.with_flat_values(tf.gather(tf.logical_not(is_added), words.value_rowids()))
    kept = tf.ragged.boolean_mask(words, keep)
    tokens = tf.ragged.boolean_mask(segments[:, None], is_added[:, None])  # (S, 0 or 1)
    return tf.concat([kept, tokens], axis=1)


def char_table(options: dict) -> tf.lookup.StaticHashTable | None:
    """The per-character map of a WordPiece tokenizer's normaliser (white space -> " ",
    accents stripped, lower-cased) as a string -> string table; None when it maps
    nothing. Create it where it is owned (a layer), so SavedModels keep it."""
    char_map = _bert_char_map(bool(options["strip_accents"]), bool(options["lowercase"]))
    if not char_map:
        return None
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(list(char_map), list(char_map.values())),
        default_value=_UNMAPPED)


def bert_words(texts: tf.Tensor, options: dict, table) -> tf.RaggedTensor:
    """The words WordPiece splits, in-graph: strings (B,) -> ragged (B, W).

    BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase) then
    BertPreTokenizer (white space dropped, punctuation isolated), on the text between
    added tokens; an added token is one word. A word longer than
    ``max_input_chars_per_word`` characters becomes the unknown token. ``table`` is
    ``char_table(options)``.
    """
    tables = _bert_classes()
    segments, is_added = split_added_tokens(texts, options["added_tokens"])
    flat = segments.flat_values
    text = flat
    if options["clean_text"]:
        text = tf.strings.regex_replace(text, tables["removed"], "")
    if options["handle_chinese_chars"]:
        text = tf.strings.regex_replace(text, tables["cjk"], r" \0 ")
    if table is not None:
        chars = tf.strings.unicode_split(text, "UTF-8")  # (S, C)
        looked = table.lookup(chars.flat_values)
        mapped = tf.where(looked == _UNMAPPED, chars.flat_values, looked)
        text = tf.strings.reduce_join(chars.with_flat_values(mapped), axis=-1)
    words = _regex_split(text, f"{tables['space']}|{tables['punctuation']}",
                         tables["punctuation"])  # (S, W)
    long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > int(
        options["max_input_chars_per_word"])
    words = words.with_flat_values(tf.where(long, options["unk_token"], words.flat_values))
    words = _replace_rows(words, is_added, flat)
    return tf.RaggedTensor.from_row_splits(words, segments.row_splits).merge_dims(1, 2)


def byte_level_words(texts: tf.Tensor, options: dict) -> tf.RaggedTensor:
    """GPT-2's pre-tokenization in-graph: strings (B,) -> ragged (B, W) words (not yet
    byte-mapped), added tokens kept whole.

    GPT-2's regex ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|
    \\s+(?!\\S)|\\s+`` needs a look-ahead, which RE2 lacks. Its effect on a run of white
    space followed by a word: the run but its last character is one word, and that last
    character joins the word when it is a space (else it is a word alone). So the text
    is cut into white-space runs and the rest, the runs are cut that way, and each piece
    is split with the regex without the look-ahead.
    """
    c = _byte_level_classes()
    space, letter, number = c["space"], c["letter"], c["number"]
    segments, is_added = split_added_tokens(texts, options["added_tokens"])
    flat = segments.flat_values
    text = flat
    if options["add_prefix_space"]:
        text = tf.where(tf.strings.substr(text, 0, 1) == " ", text,
                        tf.strings.join([" ", text]))
    if not options["use_regex"]:
        words = tf.RaggedTensor.from_row_lengths(text, tf.ones_like(text, tf.int64))
    else:
        runs = f"{space}+"
        pieces = _regex_split(text, runs, runs)  # (S, P): runs and the rest
        values = pieces.flat_values
        rows = pieces.value_rowids()
        is_last = tf.equal(tf.range(tf.shape(rows, out_type=tf.int64)[0]),
                           tf.gather(pieces.row_limits(), rows) - 1)
        length = tf.strings.length(values, unit="UTF8_CHAR")
        cut = tf.strings.regex_full_match(values, runs) & tf.logical_not(is_last)
        head = tf.strings.substr(values, tf.zeros_like(length), tf.maximum(length - 1, 0),
                                unit="UTF8_CHAR")
        tail = tf.strings.substr(values, tf.maximum(length - 1, 0), tf.ones_like(length),
                                unit="UTF8_CHAR")
        gives_space = cut & tf.equal(tail, " ")
        takes_space = tf.concat([[False], gives_space[:-1]], axis=0)
        first = tf.where(cut, head, values)
        first = tf.where(takes_space, tf.strings.join([" ", first]), first)
        second = tf.where(cut & tf.logical_not(gives_space), tail, "")
        both = tf.reshape(tf.stack([first, second], axis=1), [-1])
        pieces = tf.RaggedTensor.from_row_splits(both, pieces.row_splits * 2)
        pieces = tf.ragged.boolean_mask(pieces, pieces != "")
        other = f"[^{space[1:-1]}{letter[1:-1]}{number[1:-1]}]"
        pattern = (f"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?{other}+|{space}+")
        words = _regex_split(pieces.flat_values, pattern, pattern)  # (pieces, W)
        words = tf.RaggedTensor.from_row_splits(words, pieces.row_splits).merge_dims(1, 2)
    words = _replace_rows(words, is_added, flat)
    return tf.RaggedTensor.from_row_splits(words, segments.row_splits).merge_dims(1, 2)


class WordPieceLayer(keras_hub.tokenizers.WordPieceTokenizer):
    """keras-hub's WordPiece (tensorflow-text FastWordpiece) behind ``bert_words``.

    Args:
        vocabulary: the tokens in id order.
        options: the imported tokenizer's options (``check_options``).
    """

    def __init__(self, vocabulary: list[str], options: dict, **kwargs):
        self.options = options
        super().__init__(
            vocabulary=vocabulary, lowercase=False, strip_accents=False, split=False,
            suffix_indicator=options["continuing_subword_prefix"],
            oov_token=options["unk_token"], _allow_python_workflow=False, **kwargs)
        self._char_table = char_table(options)

    def _set_vocabulary_tf(self):
        # `tokenizers` limits words in characters, FastWordpiece in bytes (<= 4 a char);
        # longer words are replaced by the unknown token in `bert_words`.
        self._fast_word_piece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary, token_out_type=self.compute_dtype,
            suffix_indicator=self.suffix_indicator, unknown_token=self.oov_token,
            max_bytes_per_word=4 * int(self.options["max_input_chars_per_word"]),
            no_pretokenization=True, support_detokenization=True)

    def _tokenize_tf(self, inputs):
        self._maybe_initialized_tf()
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = inputs[None]
        words = bert_words(inputs, self.options, self._char_table)  # (B, W)
        tokens = self._fast_word_piece.tokenize(words).merge_dims(-2, -1)  # (B, T)
        return tokens[0] if unbatched else tokens


class BytePairLayer(keras_hub.tokenizers.BytePairTokenizer):
    """keras-hub's in-graph BPE merges behind ``byte_level_words``.

    Args:
        vocabulary: token -> id.
        merges: the merge rules ("a b"), in rank order.
        options: the imported tokenizer's options (``check_options``).
    """

    def __init__(self, vocabulary: dict[str, int], merges: list[str], options: dict,
                 **kwargs):
        self.options = options
        super().__init__(
            vocabulary=vocabulary, merges=merges,
            unsplittable_tokens=[t["content"] for t in options["added_tokens"]],
            _allow_python_workflow=False, **kwargs)

    def _tokenize_tf(self, inputs):
        # keras-hub's `_tokenize_tf` with GPT-2's own split in place of keras-hub's.
        self._maybe_initialized_tf()
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = inputs[None]
        raw_tokens = byte_level_words(inputs, self.options)  # (B, W)
        flat_tokens = raw_tokens.flat_values
        cache_lookup = self.cache.lookup(flat_tokens)
        unseen = cache_lookup == ""

        def process_unseen_tokens():
            self._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat_tokens, unseen))
            return self.cache.lookup(flat_tokens)

        merged = tf.cond(tf.reduce_any(unseen), process_unseen_tokens, lambda: cache_lookup)
        tokens = tf.strings.split(merged, sep=" ")  # (words, pieces)
        ids = self.token_to_id_map.lookup(tokens)
        ids = tf.RaggedTensor.from_row_splits(
            ids.flat_values, tf.gather(ids.row_splits, raw_tokens.row_splits))
        return ids[0] if unbatched else ids
