"""A Hugging Face checkpoint's tokenizer files -> a tflm tokenizer with the same ids.

WordPiece (BERT) comes from ``tokenizer.json`` (BertNormalizer + BertPreTokenizer +
WordPiece) or, without it, ``vocab.txt`` + ``tokenizer_config.json`` (``do_lower_case``,
``strip_accents``, ``tokenize_chinese_chars``); byte-level BPE (GPT-2, RoBERTa) from
``tokenizer.json`` (ByteLevel + BPE) or ``vocab.json`` + ``merges.txt``. The result is a
tflm ``wordpiece`` / ``bpe`` tokenizer whose options hold the checkpoint's settings,
special tokens and ids (``tflm.text.hf``); a setting tflm cannot follow exactly is a
``CheckpointError`` naming the file and the setting.
"""

from __future__ import annotations

import json
import os

from tflm.convert.checkpoint import CheckpointError
from tflm.text import Tokenizer
from tflm.text.bpe import BPETokenizer
from tflm.text.wordpiece import WordPieceTokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
KINDS = {"bert": "wordpiece", "roberta": "bpe", "gpt2": "bpe"}
# Role -> the tokenizer_config.json key of its token, and the defaults of each type.
ROLE_KEYS = {"pad": "pad_token", "unk": "unk_token", "cls": "cls_token", "sep": "sep_token",
             "mask": "mask_token", "eos": "eos_token"}
DEFAULT_TOKENS = {
    "bert": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "roberta": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>",
                "eos": "</s>"},
    "gpt2": {"eos": "<|endoftext|>"},
}
# Padding tokens appended when the model's embedding has more rows than the vocabulary:
# no text produces them (WordPiece splits "[", BPE never merges into them).
PADDING_TOKEN = "[tflm_unused_{}]"


def tokenizer_files(directory: str) -> list[str]:
    """The tokenizer files of a Hugging Face directory that tflm reads."""
    names = (TOKENIZER_JSON, "vocab.txt", "vocab.json", "merges.txt")
    return [n for n in names if os.path.isfile(os.path.join(directory, n))]


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download it again.") from e


def _content(value) -> str | None:
    """A token of tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _roles(directory: str, model_type: str, vocab) -> dict[str, str]:
    """Role -> token: tokenizer_config.json / special_tokens_map.json, else the type's
    defaults; roles whose token is not in the vocabulary are left out."""
    config = {}
    for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            config.update(_load_json(path))
    roles = {}
    for role, key in ROLE_KEYS.items():
        token = _content(config[key]) if key in config else DEFAULT_TOKENS[model_type].get(role)
        if token is not None and token in vocab:
            roles[role] = token
    return roles


def _added_tokens(entries: list[dict], path: str, normalizer) -> list[dict]:
    """tokenizer.json's added_tokens as tflm options (content, lstrip, rstrip, special)."""
    added = []
    for entry in entries:
        content = entry["content"]
        if entry.get("single_word"):
            raise CheckpointError(f"{path}: added token {content!r} is single_word, which "
                                  "tflm's tokenizers do not support.")
        if (entry.get("normalized") and normalizer is not None
                and normalizer.normalize_str(content) != content):
            raise CheckpointError(f"{path}: added token {content!r} is matched after "
                                  "normalisation, which tflm's tokenizers do not support.")
        added.append({"content": content, "lstrip": bool(entry.get("lstrip")),
                      "rstrip": bool(entry.get("rstrip")),
                      "special": bool(entry.get("special", True))})
    return added


def _vocab_list(vocab: dict[str, int], path: str) -> list[str]:
    """Tokens in id order; ids must be 0..n-1, each once."""
    tokens = [None] * len(vocab)
    for token, i in vocab.items():
        if not 0 <= i < len(vocab) or tokens[i] is not None:
            raise CheckpointError(f"{path}: token ids are not 0..{len(vocab) - 1}, each "
                                  f"once (token {token!r} has id {i}).")
        tokens[i] = token
    return tokens


def _with_added(vocab: dict[str, int], entries: list[dict]) -> dict[str, int]:
    """The model's vocabulary plus the added tokens at their ids."""
    vocab = dict(vocab)
    for entry in entries:
        if vocab.get(entry["content"], entry["id"]) != entry["id"]:
            raise CheckpointError(f"added token {entry['content']!r} has id {entry['id']} "
                                  f"but the vocabulary gives it {vocab[entry['content']]}.")
        vocab[entry["content"]] = entry["id"]
    return vocab


def _check_component(path: str, name: str, value, allowed: tuple) -> None:
    kind = None if value is None else value.get("type")
    if kind not in allowed:
        raise CheckpointError(f"{path}: the {name} is {kind!r}; tflm imports "
                              f"{' or '.join(map(repr, allowed))} here (BERT WordPiece or "
                              "byte-level BPE as GPT-2 / RoBERTa save them).")


def _wordpiece(directory: str, model_type: str) -> Tokenizer:
    from tokenizers import normalizers

    path = os.path.join(directory, TOKENIZER_JSON)
    if os.path.isfile(path):
        spec = _load_json(path)
        model = spec.get("model") or {}
        _check_component(path, "model", model, ("WordPiece",))
        _check_component(path, "normalizer", spec.get("normalizer"), ("BertNormalizer", None))
        _check_component(path, "pre_tokenizer", spec.get("pre_tokenizer"),
                         ("BertPreTokenizer",))
        norm = spec.get("normalizer") or {"clean_text": False, "handle_chinese_chars": False,
                                          "strip_accents": False, "lowercase": False}
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        options = {
            "lowercase": lowercase,
            "strip_accents": lowercase if strip is None else bool(strip),
            "clean_text": bool(norm.get("clean_text", True)),
            "handle_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
            "unk_token": model.get("unk_token", "[UNK]"),
            "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
            "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        }
        normalizer = normalizers.BertNormalizer(
            clean_text=options["clean_text"], strip_accents=options["strip_accents"],
            handle_chinese_chars=options["handle_chinese_chars"], lowercase=lowercase,
        ) if spec.get("normalizer") else None
        entries = spec.get("added_tokens") or []
        options["added_tokens"] = _added_tokens(entries, path, normalizer)
        vocab = _vocab_list(_with_added(model.get("vocab") or {}, entries), path)
    else:
        path = os.path.join(directory, "vocab.txt")
        with open(path, encoding="utf-8") as f:
            # As transformers' load_vocab: one token per line, the line end removed.
            vocab = [line.rstrip("\n") for line in f]
        config_path = os.path.join(directory, TOKENIZER_CONFIG)
        config = _load_json(config_path) if os.path.isfile(config_path) else {}
        lowercase = bool(config.get("do_lower_case", True))
        strip = config.get("strip_accents")
        unk = _content(config.get("unk_token")) or "[UNK]"
        options = {"lowercase": lowercase,
                   "strip_accents": lowercase if strip is None else bool(strip),
                   "clean_text": True,
                   "handle_chinese_chars": bool(config.get("tokenize_chinese_chars", True)),
                   "unk_token": unk, "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 100}
    roles = _roles(directory, model_type, set(vocab))
    if "added_tokens" not in options:
        options["added_tokens"] = [{"content": t, "lstrip": False, "rstrip": False,
                                    "special": True} for t in dict.fromkeys(roles.values())]
    for token in vocab:
        if "\n" in token:
            raise CheckpointError(f"{path}: token {token!r} holds a line break, which a "
                                  "vocab.txt cannot store.")
    if options["unk_token"] not in vocab:
        raise CheckpointError(f"{path}: the unknown token {options['unk_token']!r} is not "
                              "in the vocabulary.")
    return vocab, {"huggingface": True, **options, "special_tokens": roles}


def _bpe(directory: str, model_type: str):
    path = os.path.join(directory, TOKENIZER_JSON)
    if os.path.isfile(path):
        spec = _load_json(path)
        model = spec.get("model") or {}
        _check_component(path, "model", model, ("BPE",))
        _check_component(path, "normalizer", spec.get("normalizer"), (None,))
        _check_component(path, "pre_tokenizer", spec.get("pre_tokenizer"), ("ByteLevel",))
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise CheckpointError(f"{path}: BPE {key}={model[key]!r} is not supported "
                                      "(GPT-2 / RoBERTa byte-level BPE has none).")
        for key in ("byte_fallback", "ignore_merges", "fuse_unk"):
            if model.get(key):
                raise CheckpointError(f"{path}: BPE {key}=true is not supported (GPT-2 / "
                                      "RoBERTa byte-level BPE has it false).")
        pre = spec["pre_tokenizer"]
        options = {"add_prefix_space": bool(pre.get("add_prefix_space", False)),
                   "use_regex": bool(pre.get("use_regex", True))}
        entries = spec.get("added_tokens") or []
        options["added_tokens"] = _added_tokens(entries, path, None)
        vocab = _with_added(model.get("vocab") or {}, entries)
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    else:
        path = os.path.join(directory, "vocab.json")
        merges_path = os.path.join(directory, "merges.txt")
        if not os.path.isfile(merges_path):
            raise CheckpointError(f"{directory} has vocab.json but no merges.txt; byte-level "
                                  "BPE needs both (or a tokenizer.json).")
        vocab = _load_json(path)
        with open(merges_path, encoding="utf-8") as f:
            merges = [line.rstrip("\n") for line in f]
        merges = [m for m in merges if m and not m.startswith("#version")]
        config_path = os.path.join(directory, TOKENIZER_CONFIG)
        config = _load_json(config_path) if os.path.isfile(config_path) else {}
        options = {"add_prefix_space": bool(config.get("add_prefix_space", False)),
                   "use_regex": True}
    roles = _roles(directory, model_type, vocab)
    if "added_tokens" not in options:
        # RobertaTokenizer's <mask> takes the space before it (lstrip).
        options["added_tokens"] = [
            {"content": t, "lstrip": model_type == "roberta" and t == roles.get("mask"),
             "rstrip": False, "special": True} for t in dict.fromkeys(roles.values())]
    _vocab_list(vocab, path)
    return vocab, merges, {"huggingface": True, **options, "special_tokens": roles}


def import_tokenizer(directory: str, model_type: str, vocabulary_size: int) -> tuple[
        Tokenizer, dict]:
    """The tokenizer of a Hugging Face directory as a tflm tokenizer.

    Args:
        directory: holds ``tokenizer.json`` and/or ``vocab.txt`` (WordPiece) or
            ``vocab.json`` + ``merges.txt`` (BPE), and optionally
            ``tokenizer_config.json`` / ``special_tokens_map.json``.
        model_type: ``bert``, ``roberta`` or ``gpt2``.
        vocabulary_size: rows of the model's token embedding; a smaller vocabulary is
            padded with tokens no text produces (``PADDING_TOKEN``).

    Returns:
        ``(tokenizer, report)``; the report names the source files, the special tokens
        and ids, the settings, and any padding.

    Raises:
        CheckpointError: no tokenizer files (the message says to pass
            ``--tokenizer=PATH``), a component or setting tflm cannot follow, a
            vocabulary larger than the model's.
    """
    kind = KINDS[model_type]
    wanted = ("tokenizer.json or vocab.txt" if kind == "wordpiece"
              else "tokenizer.json or vocab.json + merges.txt")
    files = tokenizer_files(directory)
    if not [f for f in files if f != "merges.txt"]:
        raise CheckpointError(
            f"{directory} has no tokenizer files ({wanted}); pass the directory that has "
            "them with --tokenizer=PATH (tflm.convert.import_hf(..., tokenizer=PATH)).")
    if kind == "wordpiece":
        vocab, options = _wordpiece(directory, model_type)
        size = len(vocab)
        padding = [PADDING_TOKEN.format(i) for i in range(max(0, vocabulary_size - size))]
        vocab = vocab + padding
        assets = {"vocab.txt": "".join(t + "\n" for t in vocab).encode("utf-8")}
        tokenizer = WordPieceTokenizer(assets, options)
    else:
        vocab, merges, options = _bpe(directory, model_type)
        size = len(vocab)
        padding = [PADDING_TOKEN.format(i) for i in range(max(0, vocabulary_size - size))]
        vocab = {**vocab, **{t: size + i for i, t in enumerate(padding)}}
        assets = {"vocab.json": json.dumps(vocab, ensure_ascii=False).encode("utf-8"),
                  "merges.txt": "".join(m + "\n" for m in merges).encode("utf-8")}
        tokenizer = BPETokenizer(assets, options)
    if size > vocabulary_size:
        raise CheckpointError(f"the tokenizer in {directory} has {size} tokens but the "
                              f"model's token embedding only {vocabulary_size} rows; the "
                              "tokenizer belongs to another model.")
    report = {"directory": os.path.abspath(directory), "files": files, "kind": kind,
              "vocabulary_size": size, "padding_tokens": len(padding),
              "special_tokens": {role: {"token": token, "id": tokenizer.token_to_id(token)}
                                 for role, token in options["special_tokens"].items()},
              "options": {k: v for k, v in options.items()
                          if k not in ("huggingface", "special_tokens", "added_tokens")}}
    return tokenizer, report
