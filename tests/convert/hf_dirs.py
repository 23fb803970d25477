"""Tiny random Hugging Face checkpoints written in their real layout (config.json,
model.safetensors with the real tensor names, tokenizer files built with the
`tokenizers` library), and float64 numpy forwards of the same tensors.

The numpy forwards follow the Hugging Face modelling code line by line (BERT / RoBERTa:
embeddings + token types + LayerNorm, post-LN blocks, the MLM transform; GPT-2: pre-LN
blocks with Conv1D weights and the fused c_attn), so they are an independent reference
for the import.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "A quick brown fox jumps over the lazy dog!",
    "Café résumé naïve façade: accents everywhere, ÉLAN and Über.",
    "東京 は 日本 の 首都 です。 漢字 と かな。",
    "Numbers 12 345 and 6789; symbols like #, $, % and emoji 😀🎉.",
    "It's what they've said: we'll see, I'd say, you're right, I'm sure.",
    "Hello, world!  Repeated   spaces\tand\nnew lines\n\nhere.",
]
TEXTS = [
    "The cat sat on the mat.",
    "Café RÉSUMÉ naïve Über ÉLAN",
    "東京は日本の首都です。漢字!",
    "emoji 😀🎉 and 👨\u200d👩\u200d👧 family",
    "a   b    c\t\td\n\ne  ",
    "  leading spaces and trailing   ",
    "It's what THEY'VE said, I'd say!!! (really?)",
    "punctuation: ... — – ‘quoted’ «guillemets» ¿qué?",
    "UPPER lower MiXeD 12 345 ½ ²",
    "",
    "\u00a0non\u00a0breaking\u3000ideographic space",
    "zero\u200bwidth and soft\u00adhyphen",
]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _rng(seed):
    return np.random.default_rng(seed)


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)


# -- tokenizers ---------------------------------------------------------------------------
def wordpiece_vocab(lowercase: bool) -> list[str]:
    """A BERT-style vocabulary: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102,
    [MASK] 103, then single characters, "##" characters and words of the corpus."""
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    split = pre_tokenizers.BertPreTokenizer()
    words = [w for text in CORPUS for w, _ in split.pre_tokenize_str(
        normalizer.normalize_str(text))]
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + BERT_SPECIALS[1:]
    vocab += chars + ["##" + c for c in chars]
    vocab += sorted({w for w in words if len(w) > 1})
    vocab += ["##s", "##ed", "##ing", "the", "##at"]
    return list(dict.fromkeys(vocab))


def write_wordpiece_tokenizer(directory: str, lowercase: bool = True,
                              tokenizer_json: bool = True) -> list[str]:
    vocab = wordpiece_vocab(lowercase)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))
    _write_json(os.path.join(directory, "tokenizer_config.json"), {
        "do_lower_case": lowercase, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "model_max_length": 512})
    _write_json(os.path.join(directory, "special_tokens_map.json"), {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]"})
    if tokenizer_json:
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)},
                                         unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None,
            lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens([AddedToken(t, normalized=False) for t in BERT_SPECIALS])
        tok.save(os.path.join(directory, "tokenizer.json"))
    return vocab


def write_bpe_tokenizer(directory: str, kind: str, vocab_size: int = 420) -> dict:
    """GPT-2's (<|endoftext|> last) or RoBERTa's (<s> <pad> </s> <unk> first, <mask>
    last, lstrip) byte-level BPE, trained on the corpus; writes tokenizer.json,
    vocab.json, merges.txt, tokenizer_config.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    first = ["<s>", "<pad>", "</s>", "<unk>"] if kind == "roberta" else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=first,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    if kind == "roberta":
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False)])
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        config = {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>",
                  "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                  "unk_token": "<unk>", "pad_token": "<pad>",
                  "mask_token": {"content": "<mask>", "lstrip": True}}
    else:
        tok.add_special_tokens(["<|endoftext|>"])
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
                  "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    tok.save(os.path.join(directory, "tokenizer.json"))
    tok.model.save(directory)  # vocab.json + merges.txt (without the added tokens)
    vocab = tok.get_vocab()
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    _write_json(os.path.join(directory, "tokenizer_config.json"),
                {**config, "add_prefix_space": False, "model_max_length": 64})
    return vocab


# -- checkpoints ------------------------------------------------------------------------------
def _normal(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _norm(rng, tensors, name, hidden, gamma_beta=False):
    weight, bias = ("gamma", "beta") if gamma_beta else ("weight", "bias")
    tensors[f"{name}.{weight}"] = (1 + _normal(rng, (hidden,), 0.1))
    tensors[f"{name}.{bias}"] = _normal(rng, (hidden,), 0.1)


def _linear(rng, tensors, name, out, inp, scale=None):
    tensors[f"{name}.weight"] = _normal(rng, (out, inp), scale or 1 / math.sqrt(inp))
    tensors[f"{name}.bias"] = _normal(rng, (out,), 0.1)


def encoder_tensors(model_type: str, config: dict, seed: int = 0, mlm: bool = True,
                    nsp: bool = False, pooler: bool = True, prefix: str | None = None,
                    tied_decoder: bool = False, zero_token_types: bool = False) -> dict:
    """The tensors of a BertForPreTraining / BertForMaskedLM / BertModel (or RoBERTa)."""
    rng = _rng(seed)
    h, inner, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    p = f"{model_type}." if prefix is None else prefix
    t = {}
    t[f"{p}embeddings.word_embeddings.weight"] = _normal(rng, (v, h), 0.5)
    t[f"{p}embeddings.position_embeddings.weight"] = _normal(
        rng, (config["max_position_embeddings"], h), 0.5)
    types = _normal(rng, (config["type_vocab_size"], h), 0.5)
    t[f"{p}embeddings.token_type_embeddings.weight"] = types * (not zero_token_types)
    _norm(rng, t, f"{p}embeddings.LayerNorm", h)
    for i in range(config["num_hidden_layers"]):
        layer = f"{p}encoder.layer.{i}"
        for name in ("query", "key", "value"):
            _linear(rng, t, f"{layer}.attention.self.{name}", h, h)
        _linear(rng, t, f"{layer}.attention.output.dense", h, h)
        _norm(rng, t, f"{layer}.attention.output.LayerNorm", h)
        _linear(rng, t, f"{layer}.intermediate.dense", inner, h)
        _linear(rng, t, f"{layer}.output.dense", h, inner)
        _norm(rng, t, f"{layer}.output.LayerNorm", h)
    if pooler:
        _linear(rng, t, f"{p}pooler.dense", h, h)
    if mlm and model_type == "bert":
        _linear(rng, t, "cls.predictions.transform.dense", h, h)
        _norm(rng, t, "cls.predictions.transform.LayerNorm", h)
        t["cls.predictions.bias"] = _normal(rng, (v,), 0.5)
        if tied_decoder:
            t["cls.predictions.decoder.weight"] = t[f"{p}embeddings.word_embeddings.weight"]
            t["cls.predictions.decoder.bias"] = t["cls.predictions.bias"]
    if mlm and model_type == "roberta":
        _linear(rng, t, "lm_head.dense", h, h)
        _norm(rng, t, "lm_head.layer_norm", h)
        t["lm_head.bias"] = _normal(rng, (v,), 0.5)
        if tied_decoder:
            t["lm_head.decoder.weight"] = t[f"{p}embeddings.word_embeddings.weight"]
            t["lm_head.decoder.bias"] = t["lm_head.bias"]
    if nsp:
        _linear(rng, t, "cls.seq_relationship", 2, h)
    return t


def gpt2_tensors(config: dict, seed: int = 0, prefix: str = "", lm_head: bool = False,
                 buffers: bool = False) -> dict:
    """The tensors of a GPT2LMHeadModel (Conv1D weights stored (in, out))."""
    rng = _rng(seed)
    h, v = config["n_embd"], config["vocab_size"]
    inner = config.get("n_inner") or 4 * h
    t = {f"{prefix}wte.weight": _normal(rng, (v, h), 0.5),
         f"{prefix}wpe.weight": _normal(rng, (config["n_positions"], h), 0.5)}
    for i in range(config["n_layer"]):
        layer = f"{prefix}h.{i}"
        _norm(rng, t, f"{layer}.ln_1", h)
        t[f"{layer}.attn.c_attn.weight"] = _normal(rng, (h, 3 * h), 1 / math.sqrt(h))
        t[f"{layer}.attn.c_attn.bias"] = _normal(rng, (3 * h,), 0.1)
        t[f"{layer}.attn.c_proj.weight"] = _normal(rng, (h, h), 1 / math.sqrt(h))
        t[f"{layer}.attn.c_proj.bias"] = _normal(rng, (h,), 0.1)
        _norm(rng, t, f"{layer}.ln_2", h)
        t[f"{layer}.mlp.c_fc.weight"] = _normal(rng, (h, inner), 1 / math.sqrt(h))
        t[f"{layer}.mlp.c_fc.bias"] = _normal(rng, (inner,), 0.1)
        t[f"{layer}.mlp.c_proj.weight"] = _normal(rng, (inner, h), 1 / math.sqrt(inner))
        t[f"{layer}.mlp.c_proj.bias"] = _normal(rng, (h,), 0.1)
        if buffers:
            n = config["n_positions"]
            t[f"{layer}.attn.bias"] = np.tril(np.ones((n, n), np.float32))[None, None]
    _norm(rng, t, f"{prefix}ln_f", h)
    if lm_head:
        t["lm_head.weight"] = t[f"{prefix}wte.weight"]
    return t


def bert_config(vocab_size: int, **overrides) -> dict:
    return {"architectures": ["BertForPreTraining"], "model_type": "bert",
            "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "position_embedding_type": "absolute", **overrides}


def roberta_config(vocab_size: int, **overrides) -> dict:
    return {**bert_config(vocab_size), "architectures": ["RobertaForMaskedLM"],
            "model_type": "roberta", "max_position_embeddings": 66, "type_vocab_size": 1,
            "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2, **overrides}


def gpt2_config(vocab_size: int, **overrides) -> dict:
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": vocab_size, "n_embd": 32, "n_layer": 2, "n_head": 4,
            "n_positions": 64, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1,
            "attn_pdrop": 0.1, "bos_token_id": vocab_size - 1,
            "eos_token_id": vocab_size - 1, **overrides}


def write_checkpoint(directory: str, config: dict, tensors: dict) -> str:
    os.makedirs(directory, exist_ok=True)
    _write_json(os.path.join(directory, "config.json"), config)
    save_file(tensors, os.path.join(directory, "model.safetensors"),
              metadata={"format": "pt"})
    return directory


def bert_dir(directory: str, lowercase: bool = True, **tensor_options) -> str:
    os.makedirs(directory, exist_ok=True)
    vocab = write_wordpiece_tokenizer(directory, lowercase)
    config = bert_config(len(vocab))
    return write_checkpoint(directory, config, encoder_tensors("bert", config,
                                                               **tensor_options))


def roberta_dir(directory: str, **tensor_options) -> str:
    os.makedirs(directory, exist_ok=True)
    vocab = write_bpe_tokenizer(directory, "roberta")
    config = roberta_config(len(vocab))
    return write_checkpoint(directory, config, encoder_tensors("roberta", config,
                                                               **tensor_options))


def gpt2_dir(directory: str, config_overrides: dict | None = None, **tensor_options) -> str:
    os.makedirs(directory, exist_ok=True)
    vocab = write_bpe_tokenizer(directory, "gpt2")
    config = gpt2_config(len(vocab), **(config_overrides or {}))
    return write_checkpoint(directory, config, gpt2_tensors(config, **tensor_options))


def load_tensors(directory: str) -> dict:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in
            load_file(os.path.join(directory, "model.safetensors")).items()}


# -- float64 references ---------------------------------------------------------------------
_erf = np.vectorize(math.erf)


def gelu(x, approximate=False):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _linear_ref(x, t, name):
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


def _attention(q, k, v, heads, allowed):
    """q, k, v (B, T, H*D); allowed (B, T, T) bool."""
    b, n, width = q.shape
    d = width // heads
    split = lambda x: x.reshape(b, n, heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(d)  # (B, H, T, T)
    scores = np.where(allowed[:, None], scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    return (probs @ split(v)).transpose(0, 2, 1, 3).reshape(b, n, width)


def encoder_reference(t: dict, config: dict, ids, types=None, mask=None, prefix=None):
    """BertModel / RobertaModel's last hidden states (B, T, H), float64. RoBERTa position
    ids count real tokens from padding_idx + 1 (create_position_ids_from_input_ids)."""
    model_type = config["model_type"]
    p = f"{model_type}." if prefix is None else prefix
    ids = np.asarray(ids)
    mask = np.ones_like(ids) if mask is None else np.asarray(mask)
    types = np.zeros_like(ids) if types is None else np.asarray(types)
    if model_type == "roberta":
        pad = config["pad_token_id"]
        real = (ids != pad).astype(np.int64)
        positions = np.cumsum(real, axis=1) * real + pad
    else:
        positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    eps = config["layer_norm_eps"]
    approximate = config["hidden_act"] != "gelu"
    x = (t[f"{p}embeddings.word_embeddings.weight"][ids]
         + t[f"{p}embeddings.token_type_embeddings.weight"][types]
         + t[f"{p}embeddings.position_embeddings.weight"][positions])
    x = layer_norm(x, t[f"{p}embeddings.LayerNorm.weight"], t[f"{p}embeddings.LayerNorm.bias"],
                   eps)
    allowed = np.broadcast_to(mask[:, None, :] > 0, (ids.shape[0],) + ids.shape[1:] * 2)
    for i in range(config["num_hidden_layers"]):
        layer = f"{p}encoder.layer.{i}"
        q, k, v = (_linear_ref(x, t, f"{layer}.attention.self.{n}")
                   for n in ("query", "key", "value"))
        a = _linear_ref(_attention(q, k, v, config["num_attention_heads"], allowed), t,
                        f"{layer}.attention.output.dense")
        x = layer_norm(x + a, t[f"{layer}.attention.output.LayerNorm.weight"],
                       t[f"{layer}.attention.output.LayerNorm.bias"], eps)
        h = gelu(_linear_ref(x, t, f"{layer}.intermediate.dense"), approximate)
        h = _linear_ref(h, t, f"{layer}.output.dense")
        x = layer_norm(x + h, t[f"{layer}.output.LayerNorm.weight"],
                       t[f"{layer}.output.LayerNorm.bias"], eps)
    return x


def mlm_reference(t: dict, config: dict, hidden, prefix=None):
    """BertOnlyMLMHead / RobertaLMHead logits of hidden states (..., V)."""
    model_type = config["model_type"]
    p = f"{model_type}." if prefix is None else prefix
    eps = config["layer_norm_eps"]
    if model_type == "bert":
        h = gelu(_linear_ref(hidden, t, "cls.predictions.transform.dense"),
                 config["hidden_act"] != "gelu")
        h = layer_norm(h, t["cls.predictions.transform.LayerNorm.weight"],
                       t["cls.predictions.transform.LayerNorm.bias"], eps)
        bias = t["cls.predictions.bias"]
    else:  # RobertaLMHead: always the exact GELU
        h = gelu(_linear_ref(hidden, t, "lm_head.dense"))
        h = layer_norm(h, t["lm_head.layer_norm.weight"], t["lm_head.layer_norm.bias"], eps)
        bias = t["lm_head.bias"]
    return h @ t[f"{p}embeddings.word_embeddings.weight"].T + bias


def nsp_reference(t: dict, hidden, prefix="bert."):
    pooled = np.tanh(_linear_ref(hidden[:, 0], t, f"{prefix}pooler.dense"))
    return _linear_ref(pooled, t, "cls.seq_relationship")


def gpt2_reference(t: dict, config: dict, ids, prefix="", head=None):
    """GPT2LMHeadModel logits (B, T, V), float64 (no padding); ``head`` names an untied
    output matrix (default: the tied token table)."""
    ids = np.asarray(ids)
    h, eps = config["n_embd"], config["layer_norm_epsilon"]
    approximate = config["activation_function"] != "gelu"
    x = t[f"{prefix}wte.weight"][ids] + t[f"{prefix}wpe.weight"][np.arange(ids.shape[1])]
    n = ids.shape[1]
    allowed = np.broadcast_to(np.tril(np.ones((n, n), bool)), (ids.shape[0], n, n))
    for i in range(config["n_layer"]):
        layer = f"{prefix}h.{i}"
        a = layer_norm(x, t[f"{layer}.ln_1.weight"], t[f"{layer}.ln_1.bias"], eps)
        qkv = a @ t[f"{layer}.attn.c_attn.weight"] + t[f"{layer}.attn.c_attn.bias"]
        q, k, v = qkv[..., :h], qkv[..., h:2 * h], qkv[..., 2 * h:]
        a = _attention(q, k, v, config["n_head"], allowed)
        x = x + a @ t[f"{layer}.attn.c_proj.weight"] + t[f"{layer}.attn.c_proj.bias"]
        m = layer_norm(x, t[f"{layer}.ln_2.weight"], t[f"{layer}.ln_2.bias"], eps)
        m = gelu(m @ t[f"{layer}.mlp.c_fc.weight"] + t[f"{layer}.mlp.c_fc.bias"], approximate)
        x = x + m @ t[f"{layer}.mlp.c_proj.weight"] + t[f"{layer}.mlp.c_proj.bias"]
    x = layer_norm(x, t[f"{prefix}ln_f.weight"], t[f"{prefix}ln_f.bias"], eps)
    return x @ t[head or f"{prefix}wte.weight"].T
