"""The SavedModel for TF Serving: layout, signatures, a fresh process with only tensorflow +
tensorflow_text, equality with the Keras model, and bad input at serving time."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tflm.errors import ExportError
from tflm.export import export_model, export_saved_model, reference

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_NEW = 6
INVALID_UTF8 = b"caf\xc3\xa9 \xff\xfe def".decode("latin-1")  # latin-1 keeps raw bytes


def _long_text(documents):
    return " ".join(documents[1])  # many times the window


@pytest.fixture(scope="module")
def served(saved_model_export, documents, tmp_path_factory):
    """Outputs of every signature, computed in a fresh tensorflow-only process."""
    path, _ = saved_model_export
    held_out = documents[1]
    prompts = ["The", "Return the value of the", "", _long_text(documents), INVALID_UTF8]
    window_ids = [[0] + list(range(5, 5 + 20)) + [0] * 11]
    sampled = {"prompt": prompts[:2], "max_new_tokens": MAX_NEW, "temperature": 0.8,
               "top_k": 20, "top_p": 0.9, "seed": 1}
    requests = {
        "generate:greedy": {"prompt": prompts, "max_new_tokens": MAX_NEW,
                            "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0},
        "generate:seed1": sampled,
        "generate:seed1_again": sampled,
        "serving_default": {"prompt": ["Hello", ""]},
        "score": {"text": ["", held_out[0], _long_text(documents), INVALID_UTF8]},
        "logits": {"token_ids": window_ids,
                   "padding_mask": [[1] * 21 + [0] * 11]},
    }
    tmp = tmp_path_factory.mktemp("serving_check")
    requests_path, out_path = tmp / "requests.json", tmp / "out.json"
    requests_path.write_text(json.dumps(requests))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "serving_check.py"), path, str(requests_path),
         str(out_path)], capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return prompts, requests, json.loads(out_path.read_text())


def test_tf_serving_layout_with_tokenizer_assets(saved_model_export):
    path, report = saved_model_export
    assert path.endswith(os.path.join("tflm", "1"))
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))
    assets = sorted(os.listdir(os.path.join(path, "assets")))
    assert assets == ["merges.txt", "tokenizer.json", "vocab.json"]
    check = report["verification"]
    assert check["logits_within_1e-4"] and check["greedy_token_identical"]
    out_dir = os.path.dirname(os.path.dirname(path))
    with open(os.path.join(out_dir, "report.json")) as f:
        assert json.load(f)["verification"]["greedy_token_identical"]


def test_fresh_process_needs_only_tensorflow_and_tf_text(served):
    _, _, result = served
    assert result["foreign_modules"] == []
    assert result["signatures"] == ["generate", "logits", "score", "serving_default"]


def test_greedy_generate_matches_keras_token_for_token(served, keras_model):
    model, tokenizer, _ = keras_model
    prompts, _, result = served
    out = result["outputs"]["generate:greedy"]
    assert np.asarray(out["token_ids"]).shape == (len(prompts), MAX_NEW)
    for prompt, tokens, text in zip(prompts, out["token_ids"], out["text"]):
        prompt = prompt.encode("latin-1").decode("utf-8", errors="replace")
        expected = reference.keras_greedy(model, tokenizer, prompt, MAX_NEW)
        assert reference.strip_after_eos(tokens, tokenizer.eos_id) == expected, prompt[:40]
        text_ids = [t for t in expected if t != tokenizer.eos_id]
        assert text.encode("latin-1").decode("utf-8") == tokenizer.decode(text_ids)


def test_greedy_generate_matches_the_projects_decode_loop(served, keras_model):
    """Same tokens as tflm.generation's compiled KV-cache loop (a batch of two lengths)."""
    from tflm.generation import generate_ids

    model, tokenizer, _ = keras_model
    prompts, _, result = served
    ids = [tokenizer.encode([p])[0] for p in prompts[:2]]
    expected = generate_ids(model, ids, MAX_NEW, stop_tokens=[tokenizer.eos_id],
                            pad_id=tokenizer.pad_id)
    served_ids = result["outputs"]["generate:greedy"]["token_ids"][:2]
    assert served_ids == expected.tolist()


def test_sampling_is_reproducible_per_seed(served):
    _, _, result = served
    first = result["outputs"]["generate:seed1"]["token_ids"]
    assert first == result["outputs"]["generate:seed1_again"]["token_ids"]
    assert np.asarray(first).shape == (2, MAX_NEW)


def test_serving_default_uses_export_defaults(served, keras_model):
    _, _, config = keras_model
    out = served[2]["outputs"]["serving_default"]
    assert np.asarray(out["token_ids"]).shape == (2, config.export.max_new_tokens)
    assert len(out["text"]) == 2


def test_score_matches_keras_and_survives_bad_input(served, keras_model):
    model, tokenizer, _ = keras_model
    _, requests, result = served
    out = result["outputs"]["score"]
    texts = [t.encode("latin-1").decode("utf-8", errors="replace")
             for t in requests["score"]["text"]]
    assert out["num_tokens"][0] == 0 and out["log_likelihood"][0] == 0.0
    assert out["perplexity"][0] == pytest.approx(1.0)
    window = model.max_sequence_length
    for i, text in enumerate(texts[1:], start=1):
        ids = reference.score_ids(tokenizer, text, window)
        x = np.asarray([ids], np.int32)
        logits = np.asarray(model({"token_ids": x, "padding_mask": np.ones_like(x)}))[0]
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = sum(log_probs[t, ids[t + 1]] for t in range(len(ids) - 1))
        assert out["num_tokens"][i] == len(ids) - 1
        assert out["log_likelihood"][i] == pytest.approx(expected, rel=1e-4, abs=1e-3)
        assert np.isfinite(out["perplexity"][i]) and out["perplexity"][i] > 1.0


def test_logits_signature_matches_keras(served, keras_model):
    model, _, _ = keras_model
    _, requests, result = served
    ids = np.asarray(requests["logits"]["token_ids"], np.int32)
    mask = np.asarray(requests["logits"]["padding_mask"], np.int32)
    expected = reference.keras_logits(model, ids, mask)
    got = np.asarray(result["outputs"]["logits"]["logits"], np.float32)
    assert got.shape == expected.shape
    real = mask.astype(bool)
    assert np.max(np.abs(got - expected)[real]) <= 1e-4


def test_existing_version_is_not_overwritten(saved_model_export, keras_model):
    model, tokenizer, _ = keras_model
    path, _ = saved_model_export
    out = os.path.dirname(os.path.dirname(path))
    with pytest.raises(ExportError, match="already holds a SavedModel"):
        export_saved_model(model, tokenizer, out, name="tflm", version=1)


def test_bad_format_and_quantize_are_export_errors(model_dir, tmp_path):
    with pytest.raises(ExportError, match="format"):
        export_model(model_dir, str(tmp_path), format="onnx")
    with pytest.raises(ExportError, match="TFLite only"):
        export_model(model_dir, str(tmp_path), format="saved_model", quantize="float16")
