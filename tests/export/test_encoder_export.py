"""Masked-LM export: the SavedModel's fill_mask / encode equal ``tflm.load(dir)``'s and
answer in a tensorflow-only process; the TFLite encoder equals Keras with builtin ops."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tflm
from tflm.errors import ExportError
from tflm.export import export_model
from tflm.export.encoder import export_encoder_saved_model
from tflm.export.encoder_tflite import keras_outputs, masked_windows

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_K = 4


def _probes(documents):
    """Held-out texts with 1-3 ``[MASK]`` tokens, and one long text (cut to the window)."""
    words = [d.split() for d in documents[1][:4]]
    return [
        " ".join(["[MASK]", *words[0][1:6]]),
        " ".join([*words[1][:2], "[MASK]", words[1][3], "[MASK]", *words[1][5:7]]),
        " ".join([words[2][0], "[MASK]", "[MASK]", *words[2][3:5], "[MASK]"]),
        " ".join([words[3][0], "[MASK]", *words[3][2:]]),
    ]


@pytest.fixture(scope="module")
def exported(masked_lm_dir, tmp_path_factory):
    """``(out, report)`` of ``export_model(format="saved_model")``."""
    out = str(tmp_path_factory.mktemp("encoder_saved_model"))
    return out, export_model(masked_lm_dir, out, format="saved_model")


@pytest.fixture(scope="module")
def served(exported, documents, tmp_path_factory):
    """Outputs of the signatures, computed in a fresh tensorflow-only process."""
    _, report = exported
    probes = _probes(documents)
    requests = {
        "fill_mask:mixed": {"text": [*probes, "no mask in this one"], "top_k": TOP_K},
        "fill_mask:none": {"text": ["no mask", "none here either"], "top_k": TOP_K},
        "fill_mask:huge_k": {"text": probes[:1], "top_k": 100000},
        "encode": {"text": probes},
        "serving_default": {"text": probes},
    }
    tmp = tmp_path_factory.mktemp("encoder_serving_check")
    requests_path, out_path = tmp / "requests.json", tmp / "out.json"
    requests_path.write_text(json.dumps(requests))
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "serving_check.py"), report["path"],
         str(requests_path), str(out_path)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return probes, json.loads(out_path.read_text())


@pytest.fixture(scope="module")
def loaded(masked_lm_dir):
    return tflm.load(masked_lm_dir)


def test_layout_and_report(exported):
    out, report = exported
    path = report["path"]
    assert path == os.path.join(out, "tflm", "1")
    assert sorted(os.listdir(os.path.join(path, "assets"))) == ["tokenizer.json", "vocab.txt"]
    with open(os.path.join(out, "report.json")) as f:
        check = json.load(f)["verification"]
    assert check["fill_mask_ids_identical"] and check["within_1e-4"]
    assert check["encode_lengths_identical"]


def test_fresh_process_needs_only_tensorflow_and_tf_text(served):
    _, result = served
    assert result["foreign_modules"] == []
    assert result["signatures"] == ["embed", "encode", "fill_mask", "serving_default"]


def test_fill_mask_equals_loaded_model(served, loaded):
    probes, result = served
    out = result["outputs"]["fill_mask:mixed"]
    expected = loaded.fill_mask(probes, top_k=TOP_K)
    ids, scores = np.asarray(out["token_ids"]), np.asarray(out["scores"])
    assert ids.shape == (len(probes) + 1, 3, TOP_K)  # M = the most masks of a text
    assert out["mask_count"][:-1] == [len(masks) for masks in expected] == [1, 2, 3, 1]
    for row, masks in enumerate(expected):
        for slot, best in enumerate(masks):
            assert ids[row, slot].tolist() == [b["token_id"] for b in best]
            np.testing.assert_allclose(scores[row, slot], [b["score"] for b in best],
                                       atol=1e-4)
        assert (ids[row, len(masks):] == -1).all() and (scores[row, len(masks):] == 0).all()


def test_text_without_mask_gets_mask_count_zero(served):
    _, result = served
    mixed = result["outputs"]["fill_mask:mixed"]
    assert mixed["mask_count"][-1] == 0 and (np.asarray(mixed["token_ids"][-1]) == -1).all()
    none = result["outputs"]["fill_mask:none"]
    assert none["mask_count"] == [0, 0]
    assert none["token_ids"] == none["scores"] == [[], []]  # (2, 0, K) as JSON


def test_top_k_is_clipped_to_the_vocabulary(served, loaded):
    out = served[1]["outputs"]["fill_mask:huge_k"]
    vocabulary = loaded.tokenizer.vocabulary_size
    assert np.asarray(out["token_ids"]).shape == (1, 1, vocabulary)
    assert sum(out["scores"][0][0]) == pytest.approx(1.0, abs=1e-4)


def test_encode_equals_loaded_model(served, loaded):
    probes, result = served
    out = result["outputs"]["encode"]
    expected = loaded.encode(probes)
    assert out["lengths"] == [len(ids) for ids in expected.token_ids]
    assert out["lengths"][-1] == loaded.model.max_sequence_length  # the long text is cut
    sequence = np.asarray(out["sequence_output"], np.float32)
    for row, hidden in enumerate(expected.hidden_states):
        np.testing.assert_allclose(sequence[row, :len(hidden)], hidden, atol=1e-4)
        assert (sequence[row, len(hidden):] == 0).all()
    np.testing.assert_allclose(out["pooled"], expected.pooled, atol=1e-4)
    assert result["outputs"]["serving_default"] == out


def test_existing_version_is_not_overwritten(exported, masked_lm_model):
    out, _ = exported
    model, tokenizer, _ = masked_lm_model
    with pytest.raises(ExportError, match="already holds a SavedModel"):
        export_encoder_saved_model(model, tokenizer, out, name="tflm", version=1)


@pytest.fixture(scope="module")
def tflite_export(masked_lm_dir, tmp_path_factory):
    """``(out, report)`` of ``export_model(format="tflite", quantize="dynamic_int8")``."""
    out = str(tmp_path_factory.mktemp("encoder_tflite"))
    return out, export_model(masked_lm_dir, out, format="tflite", quantize="dynamic_int8")


def test_tflite_files_report_and_builtin_ops(tflite_export):
    out, report = tflite_export
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["variants"].keys() == {"none", "dynamic_int8"}
    assert os.path.isfile(os.path.join(out, "tokenizer", "vocab.txt"))
    for variant in report["variants"].values():
        assert os.path.isfile(os.path.join(out, variant["file"]))
        assert not [op for op in variant["ops"] if op.startswith("Flex") or not op.isupper()]
    fp32, int8 = report["variants"]["none"], report["variants"]["dynamic_int8"]
    assert fp32["within_1e-4"] and fp32["top1_agreement"] == 1.0
    assert int8["size_ratio_to_float32"] < 0.8 and int8["top1_agreement"] >= 0.8


def test_tflite_logits_match_keras(tflite_export, masked_lm_model, documents):
    from ai_edge_litert.interpreter import Interpreter

    out, report = tflite_export
    model, tokenizer, _ = masked_lm_model
    predictions = report["predictions"]
    windows = masked_windows(tokenizer, documents[1][5:], model.max_sequence_length,
                             predictions, num_windows=3, seed=7)
    logits, sequence, pooled = keras_outputs(model, windows)
    interpreter = Interpreter(model_path=os.path.join(out, "model.tflite"))
    mlm, encode = (interpreter.get_signature_runner(k) for k in ("mlm", "encode"))
    for i in range(len(logits)):
        x = {k: windows[k][i:i + 1] for k in ("token_ids", "padding_mask", "segment_ids")}
        got = mlm(**x, mask_positions=windows["mask_positions"][i:i + 1])["logits"]
        assert got.shape == (1, predictions, model.vocabulary_size)
        n = windows["num_masks"][i]
        np.testing.assert_allclose(got[0, :n], logits[i, :n], atol=1e-4)
        real = windows["padding_mask"][i].astype(bool)
        encoded = encode(**x)
        np.testing.assert_allclose(encoded["sequence_output"][0][real], sequence[i][real],
                                   atol=1e-4)
        np.testing.assert_allclose(encoded["pooled_output"][0], pooled[i], atol=1e-4)


@pytest.mark.parametrize("signature", ["fill_mask", "encode"])
def test_client_requests_reach_the_signature(exported, documents, signature):
    """export/client.py's REST body and gRPC request give the direct call's outputs."""
    import importlib.util

    import tensorflow as tf

    spec = importlib.util.spec_from_file_location(
        "tflm_client", os.path.join(HERE, "..", "..", "export", "client.py"))
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    fn = tf.saved_model.load(exported[1]["path"]).signatures[signature]
    dtypes = {k: s.dtype for k, s in fn.structured_input_signature[1].items()}

    def call(values):
        return {k: v.numpy() for k, v in fn(**{
            k: tf.constant(v, dtypes[k]) for k, v in values.items()}).items()}

    inputs = client.signature_inputs(signature, _probes(documents)[:2], top_k=3)
    expected = call(inputs)
    body = json.loads(json.dumps(client.rest_body(signature, inputs)))["inputs"]
    request = client.predict_request("tflm", signature, inputs)
    grpc = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    for values in (body, grpc):
        got = call(values)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
