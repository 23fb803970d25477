"""GPT-2 imports: Conv1D weights and the fused c_attn, logits equal a float64 reference and
keras-hub's GPT2CausalLM, greedy generation is token-identical to keras-hub's, and the
import exports to TFLite with a passing parity report."""

import json
import os

import keras_hub
import numpy as np
import pytest

import tflm
from tests.convert import hf_dirs
from tflm.convert import import_hf
from tflm.export import export_model
from tflm.generation import generate_ids
from tflm.model_dir import load_model_dir

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def imported(root):
    # GPT2LMHeadModel as saved: "transformer." names, the tied lm_head.weight, the
    # attention-mask buffers of older checkpoints.
    source = hf_dirs.gpt2_dir(os.path.join(root, "hf"), prefix="transformer.", lm_head=True,
                              buffers=True)
    report = import_hf(source, os.path.join(root, "out"))
    return source, os.path.join(root, "out"), report


def _relative(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


def test_layout(imported):
    _, _, report = imported
    assert report["objective"] == "causal_lm" and report["head"] == {"tie_embeddings": True}
    b = report["backbone"]
    assert (b["activation"], b["norm_first"], b["causal"], b["intermediate_dim"]) == (
        "gelu_approximate", True, True, 128)
    assert report["tensors_not_imported"] == ["transformer.h.0.attn.bias",
                                              "transformer.h.1.attn.bias"]


def test_logits_match_reference_and_keras_hub(imported):
    source, out, _ = imported
    model, tokenizer, _ = load_model_dir(out)
    ids = np.array(tokenizer.encode(["The cat sat on the mat. It's 12 o'clock!"]))
    logits = np.asarray(model({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    tensors = hf_dirs.load_tensors(source)
    config = json.load(open(os.path.join(source, "config.json")))
    reference = hf_dirs.gpt2_reference(tensors, config, ids, prefix="transformer.")
    assert _relative(logits, reference) < TOLERANCE
    keras_hub_lm = keras_hub.models.GPT2CausalLM.from_preset(source, preprocessor=None)
    theirs = np.asarray(keras_hub_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    assert _relative(logits, theirs) < TOLERANCE


def test_greedy_generation_equals_keras_hub(imported):
    source, out, _ = imported
    lm = tflm.load(out)
    prompt = lm.tokenizer.encode(["The quick brown fox"])[0]
    steps = 16
    ours = np.asarray(generate_ids(lm.model, [prompt], max_new_tokens=steps,
                                   sampler="greedy"))[0]
    keras_hub_lm = keras_hub.models.GPT2CausalLM.from_preset(source, preprocessor=None)
    keras_hub_lm.compile(sampler="greedy")
    n = len(prompt)
    inputs = {"token_ids": np.zeros((1, n + steps), np.int32),
              "padding_mask": np.zeros((1, n + steps), np.int32)}
    inputs["token_ids"][0, :n], inputs["padding_mask"][0, :n] = prompt, 1
    theirs = keras_hub_lm.generate(inputs, stop_token_ids=None)["token_ids"][0, n:]
    assert list(ours) == list(theirs)
    assert len(set(ours)) > 1  # not a degenerate comparison
    assert isinstance(lm.generate(["The cat"], max_new_tokens=4)[0], str)


@pytest.mark.parametrize("overrides,lm_head", [({"activation_function": "gelu"}, False),
                                               ({"n_inner": 48}, "untied")])
def test_config_variants(root, overrides, lm_head):
    # GPT2Model names (no prefix); the exact GELU; an own n_inner; an untied LM head.
    name = "_".join(overrides)
    source = hf_dirs.gpt2_dir(os.path.join(root, name), overrides, seed=3,
                              lm_head=bool(lm_head))
    tensors = hf_dirs.load_tensors(source)
    if lm_head == "untied":
        from safetensors.numpy import save_file

        stored = {k: v.astype(np.float32) for k, v in tensors.items()}
        stored["lm_head.weight"] = stored["wte.weight"][::-1].copy()
        save_file(stored, os.path.join(source, "model.safetensors"))
        tensors = hf_dirs.load_tensors(source)
    report = import_hf(source, os.path.join(root, name + "_out"))
    assert report["head"] == {"tie_embeddings": lm_head != "untied"}
    model, tokenizer, _ = load_model_dir(os.path.join(root, name + "_out"))
    ids = np.array(tokenizer.encode(["A quick brown fox jumps"]))
    config = json.load(open(os.path.join(source, "config.json")))
    reference = hf_dirs.gpt2_reference(tensors, config, ids,
                                       head="lm_head.weight" if lm_head == "untied" else None)
    logits = model({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert _relative(logits, reference) < TOLERANCE


def test_tflite_export_parity(imported, root):
    _, out, _ = imported
    report = export_model(out, os.path.join(root, "tflite"), format="tflite")
    fp32 = report["variants"]["none"]
    assert fp32["logits_within_1e-4"] and fp32["greedy_token_identical"]
    assert fp32["top1_agreement"] == 1.0
