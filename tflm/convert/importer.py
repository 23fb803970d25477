"""``import_hf``: a Hugging Face model directory -> a tflm model directory."""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging

from tflm import config as config_lib
from tflm.convert import architectures
from tflm.convert.checkpoint import Checkpoint, CheckpointError
from tflm.convert.sentence import sentence_settings
from tflm.convert.tokenizer import import_tokenizer

CONFIG_FILE = "config.json"
REPORT_FILE = "import.json"


def _read_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        where = directory if os.path.isdir(directory) else f"{directory} (not a directory)"
        raise CheckpointError(f"{where} has no {CONFIG_FILE}; pass a Hugging Face model "
                              "directory (config.json, model.safetensors, tokenizer files).")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from e
    model_type = config.get("model_type")
    if model_type not in architectures.SUPPORTED:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not supported; tflm "
                              f"imports {', '.join(architectures.SUPPORTED)} checkpoints.")
    return config


def _tflm_config(plan: architectures.Plan, kind: str, out: str):
    """The validated config of the imported model directory."""
    config = config_lib.base_config(plan.objective)
    config.model.backbone.update(plan.backbone)
    config.model.update(plan.head)
    config.data.tokenizer = kind
    # The directory's own tokenizer: the objective's special tokens are checked on it
    # (RoBERTa's masked LM has <mask> / <s> / </s> where tflm's bpe kind has none).
    config.data.tokenizer_dir = os.path.join(out, "tokenizer")
    config.data.seq_len = min(config.data.seq_len, plan.backbone["max_sequence_length"])
    return config_lib.validate(config)


def _check_tensors(ports, checkpoint: Checkpoint, plan: architectures.Plan) -> None:
    """Every tensor a port reads exists with the config's shape, and every tensor is
    read or deliberately left out.

    Raises:
        CheckpointError: naming the missing, unexpected or misshapen tensors.
    """
    expected = {}
    for port in ports:
        for key, shape in zip(port.keys, port.shapes):
            expected[key] = shape
    missing = sorted(k for k in expected if k not in checkpoint)
    if missing:
        raise CheckpointError(
            f"the checkpoint in {checkpoint.directory} lacks {len(missing)} tensor(s) a "
            f"{plan.model_type} with this config.json has: {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''}; the weights and config.json do not "
            "belong together, or the file is incomplete.")
    for key, shape in expected.items():
        if checkpoint.shape(key) != tuple(shape):
            raise CheckpointError(
                f"tensor {key!r} has shape {list(checkpoint.shape(key))} but config.json "
                f"implies {list(shape)}; the weights and config.json do not belong together.")
    for copy, original in plan.checks.items():
        if checkpoint.shape(copy) != checkpoint.shape(original):
            raise CheckpointError(f"tensor {copy!r} has shape {list(checkpoint.shape(copy))}"
                                  f", not that of {original!r} which it must equal.")
    known = set(expected) | plan.ignored | set(plan.checks)
    unexpected = [k for k in checkpoint.names() if k not in known]
    if unexpected:
        raise CheckpointError(
            f"the checkpoint in {checkpoint.directory} has {len(unexpected)} tensor(s) a "
            f"{plan.model_type} imported as '{plan.objective}' has no place for: "
            f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''} (a head "
            "tflm does not import, e.g. a fine-tuned classifier's); import the base model.")


def _load(ports, checkpoint: Checkpoint, plan: architectures.Plan, model) -> int:
    """Streams every tensor into its weight (one at a time); checks tied copies; returns
    the number of parameters assigned."""
    assigned, count = set(), 0
    for port in ports:
        value = port.combine([checkpoint.read(key) for key in port.keys])
        port.target.assign(value)
        assigned.add(id(port.target))
        count += int(np.prod(value.shape))
        del value
    for copy, original in plan.checks.items():
        if not np.array_equal(checkpoint.read(copy), checkpoint.read(original)):
            raise CheckpointError(f"tensor {copy!r} differs from {original!r}: an untied "
                                  "output layer, which tflm's masked-LM head cannot hold.")
    left = [w.path for w in model.weights if id(w) not in assigned]
    if left:
        raise CheckpointError(f"internal: weights {left} of the tflm model have no source "
                              "tensor; please report this checkpoint.")
    return count


def import_hf(path: str, out: str, tokenizer: str | None = None) -> dict:
    """Imports a Hugging Face BERT / RoBERTa / GPT-2 directory as a tflm model directory.

    The weights are the checkpoint's, exactly (float32; float16 / bfloat16 stored
    weights widened), in the tflm model its ``config.json`` describes: GPT-2 becomes a
    ``causal_lm`` model (``tflm.models.GPT``, tied embeddings), a BERT / RoBERTa with its
    masked-LM head a ``masked_lm`` model (``BertPretrainer``, ``pair_task="nsp"`` when it
    has BERT's next-sentence head), one without it a sentence encoder (``simcse``, no
    projection), whose missing heads the report lists. A sentence-transformers directory
    keeps its pooling (``config.model.backbone.pooling``) and maximum length. The
    tokenizer gives the checkpoint's ids (``tflm.text.hf``).

    Args:
        path: the Hugging Face directory (``config.json``, ``model.safetensors`` or
            ``model.safetensors.index.json`` + shards, tokenizer files), or a
            sentence-transformers directory.
        out: the model directory to write (replaced if it exists).
        tokenizer: a directory with the tokenizer files, when ``path`` has none.

    Returns:
        The import report (also written to ``out/import.json``): source, objective,
        heads found and missing, notes, tensors, parameters, stored dtypes, tokenizer.

    Raises:
        CheckpointError: an unsupported model type or setting, no safetensors weights
            (e.g. only ``pytorch_model.bin``), a missing / unexpected / misshapen tensor,
            no tokenizer files without ``tokenizer``; each names the file or tensor.
    """
    from tflm.model_dir import build_model, save_model_dir

    start = time.perf_counter()
    path = os.path.abspath(os.path.expanduser(path))
    out = os.path.abspath(os.path.expanduser(out))
    directory, sentence = sentence_settings(path) if os.path.isdir(path) else (path, None)
    hf_config = _read_config(directory)
    model_type = hf_config["model_type"]
    checkpoint = Checkpoint(directory)
    plan = architectures.plan_model(model_type, hf_config, checkpoint,
                                    os.path.join(directory, CONFIG_FILE), sentence)
    architectures.untie_if_needed(plan, checkpoint)
    source = os.path.abspath(os.path.expanduser(tokenizer)) if tokenizer else directory
    tok, tokenizer_report = import_tokenizer(source, model_type,
                                             plan.backbone["vocabulary_size"])
    if sentence and sentence.get("do_lower_case") and not tok.options.get("lowercase"):
        raise CheckpointError(f"{path}: sentence_bert_config.json lower-cases texts before a "
                              "cased tokenizer, which tflm's tokenizers do not do.")
    if sentence and plan.objective == "simcse":  # the sentence vectors' lengths as trained
        plan.head["normalize"] = bool(sentence["normalize"])
    config = _tflm_config(plan, tok.kind, out)
    model = build_model(config)
    ports = architectures.ports(plan, model, checkpoint)
    _check_tensors(ports, checkpoint, plan)
    logging.info("Importing %d tensors of %s.", len(checkpoint.names()), directory)
    parameters = _load(ports, checkpoint, plan, model)
    save_model_dir(out, model, tok, config)
    if sentence and not sentence["normalize"]:
        plan.notes.append(
            "the sentence-transformers model does not normalise its embeddings: "
            "tflm.load(...).embed keeps their lengths (config.model.normalize=False)"
            if plan.objective == "simcse" else
            "the sentence-transformers model does not normalise its embeddings; this "
            f"{plan.objective} model's embed L2-normalises them (the same directions)")
    report = {
        "source": path,
        "out": out,
        "model_type": model_type,
        "architectures": hf_config.get("architectures"),
        "objective": plan.objective,
        "heads": plan.heads,
        "missing_heads": plan.missing_heads,
        "notes": plan.notes,
        "backbone": plan.backbone,
        "head": plan.head,
        "tensors": len(checkpoint.names()),
        "tensors_not_imported": sorted(plan.ignored),
        "parameters": parameters,
        "stored_dtypes": checkpoint.dtypes(),
        "checkpoint_bytes": checkpoint.nbytes,
        "tokenizer": tokenizer_report,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if sentence:
        report["sentence_transformers"] = sentence
    with open(os.path.join(out, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report
