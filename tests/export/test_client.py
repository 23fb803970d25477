"""export/client.py: what its REST JSON and gRPC PredictRequest carry, fed to the loaded
SavedModel's signatures, gives the same outputs as calling the signatures directly."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["The", "Return the value of", ""]


@pytest.fixture(scope="module")
def client():
    spec = importlib.util.spec_from_file_location(
        "tflm_client", os.path.join(ROOT, "export", "client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(saved_model_export):
    return tf.saved_model.load(saved_model_export[0])


def _call(loaded, signature, values):
    """Calls a signature with numpy / list values cast to its input dtypes."""
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    return {k: v.numpy() for k, v in fn(**{
        name: tf.constant(values[name], specs[name].dtype) for name in specs}).items()}


def _rest_columnar(body):
    """What TF Serving decodes from a columnar REST body (JSON round trip included)."""
    return json.loads(json.dumps(body))["inputs"]


def _rest_rows(body):
    rows = json.loads(json.dumps(body))["instances"]
    return {name: [row[name] for row in rows] for name in rows[0]}


def _grpc(request):
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


@pytest.mark.parametrize("signature", ["serving_default", "generate", "score"])
def test_rest_and_grpc_requests_reach_the_signature(client, loaded, signature):
    params = {"max_new_tokens": 5, "temperature": 0.7, "top_k": 10, "top_p": 0.9,
              "seed": 3}
    inputs = client.signature_inputs(signature, PROMPTS, **params)
    expected = _call(loaded, signature, inputs)
    body = client.rest_body(signature, inputs)
    assert body["signature_name"] == signature
    request = client.predict_request("tflm", signature, inputs, version=1)
    assert request.model_spec.name == "tflm" and request.model_spec.version.value == 1
    assert request.model_spec.signature_name == signature
    decoded = [_rest_columnar(body), _grpc(request)]
    if signature != "generate":
        decoded.append(_rest_rows(client.rest_body(signature, inputs, row_format=True)))
    for values in decoded:
        got = _call(loaded, signature, values)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


def test_logits_request(client, loaded):
    ids = [[0, 5, 6, 7, 8, 0, 0, 0]]
    inputs = client.signature_inputs("logits", [], token_ids=ids,
                                     padding_mask=[[1, 1, 1, 1, 1, 0, 0, 0]])
    request = client.predict_request("tflm", "logits", inputs)
    assert request.inputs["token_ids"].dtype == tf.int32.as_datatype_enum
    got = _call(loaded, "logits", _grpc(request))["logits"]
    assert got.shape[:2] == (1, 8)


def test_row_format_rejects_scalars(client):
    inputs = client.signature_inputs("generate", PROMPTS)
    with pytest.raises(ValueError, match="columnar"):
        client.rest_body("generate", inputs, row_format=True)
