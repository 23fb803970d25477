"""Hugging Face BERT / RoBERTa / GPT-2 configs and tensors -> tflm models.

``plan_model`` reads ``config.json`` and the checkpoint's tensor names: the backbone's
arguments (``config.model.backbone``), the objective and head that fit the heads the
checkpoint has, and what is left out and why. ``ports`` maps every weight of the built
tflm task to the checkpoint tensors it comes from:

- Linear layers: Hugging Face stores ``(out, in)``, Keras kernels are ``(in, out)``;
  GPT-2's ``Conv1D`` already stores ``(in, out)``.
- Attention: tflm has one fused ``qkv`` projection laid out q | k | v (heads split by
  reshaping, ``tflm.layers.MultiHeadAttention``): BERT's query / key / value kernels are
  concatenated, GPT-2's ``c_attn`` is that layout already.
- BERT is post-LN (``norm_first=False``): ``attention.output.LayerNorm`` is the
  block's ``attention_norm``, ``output.LayerNorm`` its ``mlp_norm``, the embedding
  ``LayerNorm`` the backbone's ``embedding_norm``; token types are the segment embedding.
- RoBERTa's positions start at ``padding_idx + 1`` (its position ids count from there):
  the table's first rows are never used and are dropped. Its single token-type row is
  added to every position row (it is added to every token), so the backbone needs no
  segment input.
- Activations as the config says: ``gelu`` is the exact (erf) GELU, ``gelu_new`` /
  ``gelu_pytorch_tanh`` / ``gelu_fast`` the tanh approximation.
- Tied output embeddings (GPT-2's ``lm_head``, BERT's MLM decoder) are checked to equal
  the token table; an untied GPT-2 head becomes ``GPT(tie_embeddings=False)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tflm.convert.checkpoint import Checkpoint, CheckpointError

SUPPORTED = ("bert", "roberta", "gpt2")
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate",
               "gelu_pytorch_tanh": "gelu_approximate", "gelu_fast": "gelu_approximate"}
POOLINGS = ("auto", "first", "mean", "max", "last")


@dataclasses.dataclass
class Plan:
    """What a checkpoint becomes (see the module docstring)."""

    model_type: str
    objective: str
    backbone: dict
    head: dict
    prefix: str  # of the backbone's tensor names ("bert.", "roberta.", "transformer." or "")
    position_offset: int  # first row of the position table that position 0 reads
    position_rows: int  # rows of the stored position table
    heads: dict[str, bool]  # which heads the checkpoint has
    missing_heads: list[str]
    notes: list[str]
    ignored: set[str]  # tensors read by no port, on purpose (buffers, unused heads)
    checks: dict[str, str] = dataclasses.field(default_factory=dict)  # tied copies


@dataclasses.dataclass
class Port:
    """One tflm weight from checkpoint tensors."""

    target: object  # a keras.Variable
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # the stored shapes the config implies
    combine: Callable[[list[np.ndarray]], np.ndarray]


def _get(config: dict, key: str, path: str, default=None):
    if key in config:
        return config[key]
    if default is None:
        raise CheckpointError(f"{path} has no {key!r}, which a {config.get('model_type')} "
                              "config needs.")
    return default


def _activation(config: dict, key: str, path: str) -> str:
    name = _get(config, key, path)
    if name not in ACTIVATIONS:
        raise CheckpointError(f"{path}: {key}={name!r} is not supported; tflm imports "
                              f"{', '.join(map(repr, ACTIVATIONS))} (exact or tanh GELU).")
    return ACTIVATIONS[name]


def _refuse(config: dict, path: str, **allowed) -> None:
    """CheckpointError for a config value other than the one tflm's model has."""
    for key, value in allowed.items():
        if config.get(key, value) != value:
            raise CheckpointError(f"{path}: {key}={config[key]!r} is not supported (tflm's "
                                  f"model has {key}={value!r}).")


def plan_model(model_type: str, config: dict, checkpoint: Checkpoint, path: str,
               sentence: dict | None = None) -> Plan:
    """The tflm model a checkpoint becomes.

    Args:
        model_type: one of ``SUPPORTED``.
        config: the checkpoint's ``config.json``.
        checkpoint: its tensors (names and shapes are read).
        path: ``config.json``'s path, for messages.
        sentence: the sentence-transformers settings (``pooling``, ``max_seq_length``), or
            None.

    Raises:
        CheckpointError: a config value tflm's model cannot follow exactly (named).
    """
    sentence = sentence or {}
    if model_type == "gpt2":
        return _plan_gpt2(config, checkpoint, path, sentence)
    return _plan_encoder(model_type, config, checkpoint, path, sentence)


def _plan_encoder(model_type, config, checkpoint, path, sentence) -> Plan:
    _refuse(config, path, position_embedding_type="absolute", is_decoder=False,
            add_cross_attention=False)
    prefix = f"{model_type}." if f"{model_type}.embeddings.word_embeddings.weight" in \
        checkpoint else ""
    hidden = _get(config, "hidden_size", path)
    activation = _activation(config, "hidden_act", path)
    offset = 0
    if model_type == "roberta":
        offset = int(_get(config, "pad_token_id", path, 1)) + 1
    rows = int(_get(config, "max_position_embeddings", path))
    length = rows - offset
    notes, ignored, missing = [], set(), []
    if sentence.get("max_seq_length") and sentence["max_seq_length"] < length:
        length = int(sentence["max_seq_length"])
        notes.append(f"max_sequence_length {length} from sentence_bert_config.json (the "
                     f"sentence-transformers model reads at most that many tokens); position "
                     f"rows {offset + length}-{rows - 1} are not imported")
    types = int(_get(config, "type_vocab_size", path, 2))
    fold = model_type == "roberta" and types == 1
    if model_type == "bert":
        mlm_key, nsp_key = "cls.predictions.transform.dense.weight", "cls.seq_relationship.weight"
    else:
        mlm_key, nsp_key = "lm_head.dense.weight", None
    heads = {"mlm": mlm_key in checkpoint, "nsp": nsp_key in checkpoint,
             "pooler": f"{prefix}pooler.dense.weight" in checkpoint}
    pooling = sentence.get("pooling", "auto")
    if heads["mlm"]:
        if model_type == "roberta" and activation != "gelu":
            raise CheckpointError(f"{path}: hidden_act={config['hidden_act']!r}, but "
                                  "RoBERTa's LM head always uses the exact GELU and tflm's "
                                  "head uses the backbone's activation.")
        pair = "nsp" if heads["nsp"] else "none"
        if pair == "nsp" and not heads["pooler"]:
            raise CheckpointError(f"the checkpoint has the next-sentence head ({nsp_key}) "
                                  f"but no pooler ({prefix}pooler.dense.weight) it reads.")
        if pair == "nsp" and pooling not in ("auto", "first"):
            raise CheckpointError(f"sentence pooling {pooling!r} cannot be combined with the "
                                  "next-sentence head, which reads the first token.")
        objective, head = "masked_lm", {"pair_task": pair}
        if not heads["nsp"] and model_type == "bert":
            missing.append("next-sentence prediction (cls.seq_relationship)")
    else:
        objective, head = "simcse", {"projection": False}
        missing.append("masked-LM (cls.predictions)" if model_type == "bert"
                       else "masked-LM (lm_head)")
        if heads["nsp"]:
            missing.append("next-sentence prediction: the checkpoint has it but tflm's "
                           "pair head comes with the masked-LM head only")
            ignored |= {n for n in checkpoint.names() if n.startswith("cls.seq_relationship.")}
        notes.append("no masked-LM head: imported as a sentence encoder (objective 'simcse'"
                     ", no projection): tflm.load(...).embed and config.init_from use it")
    if heads["pooler"] and head.get("pair_task") != "nsp":
        ignored |= {f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias"}
        notes.append(f"the pooler ({prefix}pooler.dense) is not imported: tflm's encoders "
                     "pool without one (only the next-sentence head has a pooler)")
    ignored |= {n for n in checkpoint.names() if n.endswith(".position_ids")}
    dropout = float(config.get("hidden_dropout_prob", 0.1))
    if config.get("attention_probs_dropout_prob", dropout) != dropout:
        notes.append(f"dropout: tflm has one rate, hidden_dropout_prob={dropout} (attention "
                     f"{config['attention_probs_dropout_prob']})")
    backbone = {
        "vocabulary_size": int(_get(config, "vocab_size", path)),
        "num_layers": int(_get(config, "num_hidden_layers", path)),
        "hidden_dim": int(hidden),
        "num_heads": int(_get(config, "num_attention_heads", path)),
        "intermediate_dim": int(_get(config, "intermediate_size", path)),
        "max_sequence_length": length,
        "dropout": dropout,
        "causal": False,
        "norm_first": False,
        "activation": activation,
        "position_embedding": "learned",
        "layer_norm_epsilon": float(_get(config, "layer_norm_eps", path, 1e-12)),
        "use_bias": True,
        "num_segments": 0 if fold else types,
        "pooling": pooling,
    }
    checks = {}
    tied = {"bert": ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                     "cls.predictions.bias"),
            "roberta": ("lm_head.decoder.weight", "lm_head.decoder.bias", "lm_head.bias")}
    decoder, decoder_bias, bias = tied[model_type]
    if heads["mlm"]:
        for copy, original in ((decoder, f"{prefix}embeddings.word_embeddings.weight"),
                               (decoder_bias, bias)):
            if copy in checkpoint:
                checks[copy] = original
    return Plan(model_type, objective, backbone, head, prefix, offset, rows, heads, missing,
                notes, ignored, checks)


def _plan_gpt2(config, checkpoint, path, sentence) -> Plan:
    _refuse(config, path, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
            add_cross_attention=False)
    prefix = "transformer." if "transformer.wte.weight" in checkpoint else ""
    hidden = int(_get(config, "n_embd", path))
    notes, checks = [], {}
    tied = True
    if "lm_head.weight" in checkpoint:
        checks["lm_head.weight"] = f"{prefix}wte.weight"
    elif config.get("tie_word_embeddings", True) is False:
        raise CheckpointError(f"{path} says tie_word_embeddings=false but the checkpoint "
                              "has no lm_head.weight.")
    if sentence.get("pooling"):
        notes.append("sentence-transformers pooling of a causal model: "
                     f"{sentence['pooling']}")
    dropout = float(config.get("resid_pdrop", 0.1))
    backbone = {
        "vocabulary_size": int(_get(config, "vocab_size", path)),
        "num_layers": int(_get(config, "n_layer", path)),
        "hidden_dim": hidden,
        "num_heads": int(_get(config, "n_head", path)),
        "intermediate_dim": int(config.get("n_inner") or 4 * hidden),
        "max_sequence_length": int(_get(config, "n_positions", path)),
        "dropout": dropout,
        "causal": True,
        "norm_first": True,
        "activation": _activation(config, "activation_function", path),
        "position_embedding": "learned",
        "layer_norm_epsilon": float(_get(config, "layer_norm_epsilon", path, 1e-5)),
        "use_bias": True,
        "num_segments": 0,
        "pooling": sentence.get("pooling", "auto"),
    }
    ignored = {n for n in checkpoint.names()
               if n.endswith((".attn.bias", ".attn.masked_bias"))}
    return Plan("gpt2", "causal_lm", backbone, {"tie_embeddings": tied}, prefix, 0,
                backbone["max_sequence_length"], {"lm": True}, [], notes, ignored, checks)


def untie_if_needed(plan: Plan, checkpoint: Checkpoint) -> None:
    """GPT-2 with an ``lm_head.weight`` unlike ``wte``: an untied head (reads both)."""
    if plan.model_type != "gpt2" or "lm_head.weight" not in plan.checks:
        return
    if not np.array_equal(checkpoint.read("lm_head.weight"),
                          checkpoint.read(plan.checks["lm_head.weight"])):
        plan.head["tie_embeddings"] = False
        del plan.checks["lm_head.weight"]
        plan.notes.append("lm_head.weight differs from wte.weight: an untied LM head "
                          "(GPT(tie_embeddings=False))")


# -- ports ---------------------------------------------------------------------------------
def _first(arrays):
    return arrays[0]


def _transposed(arrays):
    return arrays[0].T


def _concat_transposed(arrays):
    return np.concatenate([a.T for a in arrays], axis=1)


def _concat(arrays):
    return np.concatenate(arrays)


class _Keys:
    """Checkpoint tensor names, with old TF-converted LayerNorm names (gamma / beta)."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def norm(self, name: str) -> tuple[str, str]:
        if f"{name}.gamma" in self.checkpoint and f"{name}.weight" not in self.checkpoint:
            return f"{name}.gamma", f"{name}.beta"
        return f"{name}.weight", f"{name}.bias"


def _norm_ports(layer, keys: tuple[str, str], hidden: int) -> list[Port]:
    return [Port(layer.gamma, (keys[0],), ((hidden,),), _first),
            Port(layer.beta, (keys[1],), ((hidden,),), _first)]


def _linear_ports(layer, name: str, shape: tuple[int, int]) -> list[Port]:
    """A torch Linear (weight (out, in)) -> a Dense."""
    return [Port(layer.kernel, (f"{name}.weight",), (shape,), _transposed),
            Port(layer.bias, (f"{name}.bias",), ((shape[0],),), _first)]


def _conv1d_ports(layer, name: str, shape: tuple[int, int]) -> list[Port]:
    """GPT-2's Conv1D (weight (in, out)) -> a Dense."""
    return [Port(layer.kernel, (f"{name}.weight",), (shape,), _first),
            Port(layer.bias, (f"{name}.bias",), ((shape[1],),), _first)]


def ports(plan: Plan, model, checkpoint: Checkpoint) -> list[Port]:
    """Every weight of ``model`` (the built tflm task of ``plan``) with its sources."""
    if plan.model_type == "gpt2":
        return _gpt2_ports(plan, model)
    return _encoder_ports(plan, model, _Keys(checkpoint))


def _positions(offset: int, length: int, token_type: bool):
    def combine(arrays):
        rows = arrays[0][offset:offset + length]
        return rows + arrays[1][0] if token_type else rows
    return combine


def _encoder_ports(plan: Plan, model, keys: _Keys) -> list[Port]:
    b, p = model.backbone, plan.prefix
    h, inner = b.hidden_dim, b.intermediate_dim
    arguments = plan.backbone
    fold = plan.model_type == "roberta" and not arguments["num_segments"]
    token_types = (f"{p}embeddings.token_type_embeddings.weight",)
    out = [
        Port(b.embedding.token_embeddings, (f"{p}embeddings.word_embeddings.weight",),
             ((b.vocabulary_size, h),), _first),
        Port(b.embedding.learned_positions.embeddings,
             (f"{p}embeddings.position_embeddings.weight",) + (token_types if fold else ()),
             ((plan.position_rows, h),) + (((1, h),) if fold else ()),
             _positions(plan.position_offset, arguments["max_sequence_length"], fold)),
    ]
    if b.segment_embedding is not None:
        out.append(Port(b.segment_embedding.embeddings, token_types,
                        ((b.num_segments, h),), _first))
    out += _norm_ports(b.embedding_norm, keys.norm(f"{p}embeddings.LayerNorm"), h)
    for i, block in enumerate(b.blocks):
        layer = f"{p}encoder.layer.{i}"
        qkv = tuple(f"{layer}.attention.self.{n}" for n in ("query", "key", "value"))
        out += [
            Port(block.attention.qkv_dense.kernel, tuple(f"{n}.weight" for n in qkv),
                 ((h, h),) * 3, _concat_transposed),
            Port(block.attention.qkv_dense.bias, tuple(f"{n}.bias" for n in qkv),
                 ((h,),) * 3, _concat),
            *_linear_ports(block.attention.output_dense, f"{layer}.attention.output.dense",
                           (h, h)),
            *_norm_ports(block.attention_norm, keys.norm(f"{layer}.attention.output.LayerNorm"),
                         h),
            *_linear_ports(block.mlp_in, f"{layer}.intermediate.dense", (inner, h)),
            *_linear_ports(block.mlp_out, f"{layer}.output.dense", (h, inner)),
            *_norm_ports(block.mlp_norm, keys.norm(f"{layer}.output.LayerNorm"), h),
        ]
    if plan.heads["mlm"]:
        head = model.mlm_head
        if plan.model_type == "bert":
            dense, norm, bias = ("cls.predictions.transform.dense",
                                 "cls.predictions.transform.LayerNorm", "cls.predictions.bias")
        else:
            dense, norm, bias = "lm_head.dense", "lm_head.layer_norm", "lm_head.bias"
        out += [*_linear_ports(head.dense, dense, (h, h)),
                *_norm_ports(head.norm, keys.norm(norm), h),
                Port(head.bias, (bias,), ((b.vocabulary_size,),), _first)]
    if getattr(model, "pair_head", None) is not None:
        out += [*_linear_ports(model.pooler, f"{p}pooler.dense", (h, h)),
                *_linear_ports(model.pair_head, "cls.seq_relationship", (2, h))]
    return out


def _gpt2_ports(plan: Plan, model) -> list[Port]:
    b, p = model.backbone, plan.prefix
    h, inner = b.hidden_dim, b.intermediate_dim
    out = [Port(b.embedding.token_embeddings, (f"{p}wte.weight",), ((b.vocabulary_size, h),),
                _first),
           Port(b.embedding.learned_positions.embeddings, (f"{p}wpe.weight",),
                ((b.max_sequence_length, h),), _first)]
    for i, block in enumerate(b.blocks):
        layer = f"{p}h.{i}"
        out += [
            *_norm_ports(block.attention_norm, (f"{layer}.ln_1.weight", f"{layer}.ln_1.bias"), h),
            *_conv1d_ports(block.attention.qkv_dense, f"{layer}.attn.c_attn", (h, 3 * h)),
            *_conv1d_ports(block.attention.output_dense, f"{layer}.attn.c_proj", (h, h)),
            *_norm_ports(block.mlp_norm, (f"{layer}.ln_2.weight", f"{layer}.ln_2.bias"), h),
            *_conv1d_ports(block.mlp_in, f"{layer}.mlp.c_fc", (h, inner)),
            *_conv1d_ports(block.mlp_out, f"{layer}.mlp.c_proj", (inner, h)),
        ]
    out += _norm_ports(b.final_norm, (f"{p}ln_f.weight", f"{p}ln_f.bias"), h)
    if model.lm_head is not None:
        out.append(Port(model.lm_head.kernel, ("lm_head.weight",),
                        ((b.vocabulary_size, h),), _transposed))
    return out
