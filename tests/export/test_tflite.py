"""TFLite / LiteRT export: built-in ops only, prefill + decode with an explicit KV cache,
float32 equal to Keras, quantized variants close to it, and the deploy-kit runner."""

import json
import os
import subprocess
import sys

import pytest

from tflm.export import export_model, export_tflite, reference
from tflm.export.tflite_verify import TFLiteLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = ("none", "float16", "dynamic_int8", "int8")


@pytest.fixture(scope="module")
def exported(keras_model, documents, tmp_path_factory):
    """One conversion of every variant (conversion is the slow part)."""
    model, tokenizer, _ = keras_model
    train, held_out = documents
    out = tmp_path_factory.mktemp("tflite_out")
    report = export_tflite(model, tokenizer, str(out), quantize=VARIANTS[1:],
                           calibration_texts=train[:100], eval_texts=held_out,
                           representative_samples=16)
    return str(out), report


def test_files_and_report(exported):
    out, report = exported
    for q in VARIANTS:
        assert os.path.isfile(os.path.join(out, report["variants"][q]["file"]))
    assert os.path.isfile(os.path.join(out, "tokenizer", "vocab.json"))
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["variants"].keys() == set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_ops_only(exported, variant):
    ops = exported[1]["variants"][variant]["ops"]
    assert not [op for op in ops if op.startswith("Flex") or not op.isupper()], ops
    # The KV-cache write and the GPT activation have builtin kernels.
    assert "DYNAMIC_UPDATE_SLICE" in ops and "GELU" in ops


def test_prefill_decode_signatures_have_fixed_shapes(exported, keras_model):
    model, _, _ = keras_model
    lm = TFLiteLM(os.path.join(exported[0], "model.tflite"))
    window = model.max_sequence_length
    backbone = model.backbone
    head_dim = backbone.hidden_dim // backbone.num_heads
    cache_shape = [1, 2, window, backbone.num_heads, head_dim]
    names = {f"cache_{i}" for i in range(backbone.num_layers)}
    prefill = lm.interpreter.get_signature_runner("prefill")
    decode = lm.interpreter.get_signature_runner("decode")
    assert list(prefill.get_input_details()["token_ids"]["shape"]) == [1, window]
    assert set(prefill.get_output_details()) == names | {"logits"}
    assert set(decode.get_input_details()) == names | {"token_id", "index"}
    assert set(decode.get_output_details()) == names | {"logits"}
    for name in names:
        assert list(decode.get_input_details()[name]["shape"]) == cache_shape
        assert list(decode.get_output_details()[name]["shape"]) == cache_shape
    assert list(decode.get_output_details()["logits"]["shape"]) == [1, model.vocabulary_size]


def test_float32_matches_keras(exported, keras_model):
    model, tokenizer, _ = keras_model
    fp32 = exported[1]["variants"]["none"]
    assert fp32["logits_max_abs_diff"] <= 1e-4
    assert fp32["greedy_token_identical"] and fp32["top1_agreement"] == 1.0
    # Independently: cached decode on device == full recompute in Keras, 12 tokens.
    lm = TFLiteLM(os.path.join(exported[0], "model.tflite"))
    prompt = "Return a new list containing"
    ids = reference.prompt_ids(tokenizer, prompt, model.max_sequence_length - 12)
    assert lm.greedy(ids, 12, tokenizer.eos_id) == reference.keras_greedy(
        model, tokenizer, prompt, 12)


def test_quantized_variants_agree_with_keras(exported):
    variants = exported[1]["variants"]
    assert variants["float16"]["top1_agreement"] >= 0.995
    assert variants["dynamic_int8"]["top1_agreement"] >= 0.97
    assert variants["dynamic_int8"]["perplexity_change"] <= 0.03
    # Full int8 also quantizes activations (layer norm, softmax): no target in the issue;
    # 93% / +0.4% on this toy once attention masks by selection (it was 18-57% with a
    # -1e9 additive mask in the calibrated ranges), so a floor well above that.
    assert variants["int8"]["top1_agreement"] >= 0.85
    assert variants["int8"]["perplexity_change"] <= 0.05
    for q in VARIANTS:
        assert variants[q]["positions"] >= 200
        assert variants[q]["decode_ms_per_token"] > 0
    assert variants["dynamic_int8"]["size_bytes"] < variants["none"]["size_bytes"]
    assert variants["float16"]["size_bytes"] < variants["none"]["size_bytes"]


def test_run_tflite_script_generates_like_keras(exported, keras_model):
    model, tokenizer, _ = keras_model
    out, _ = exported
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "export", "run_tflite.py"),
         f"--model={os.path.join(out, 'model.tflite')}", "--prompt=The value of",
         "--max_new_tokens=8"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = reference.keras_greedy(model, tokenizer, "The value of", 8)
    assert result["token_ids"] == expected
    assert result["text"] == tokenizer.decode([t for t in expected if t != tokenizer.eos_id])


def test_export_model_tflite_writes_report(model_dir, tmp_path):
    report = export_model(model_dir, str(tmp_path), format="tflite", quantize="float16")
    assert set(report["variants"]) == {"none", "float16"}
    assert os.path.isfile(tmp_path / "model_float16.tflite")
    assert json.loads((tmp_path / "report.json").read_text())["format"] == "tflite"
