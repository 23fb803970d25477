"""Call a tflm model served by TF Serving, over REST (port 8501) or gRPC (port 8500).

The request builders are plain functions, so they are testable without a server:

- ``rest_body(signature, inputs, row_format=False)``: the JSON of
  ``POST /v1/models/<name>[/versions/<v>]:predict`` (columnar ``"inputs"`` or row
  ``"instances"``).
- ``predict_request(model_name, signature, inputs, version=None)``: a
  ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``PredictionService.Predict``.

``inputs`` maps input names to values; ``signature_inputs`` fills the defaults of each
tflm signature (a causal LM's ``generate`` / ``score`` / ``logits``, a masked LM's
``fill_mask`` / ``encode``, an encoder's ``embed``, a fine-tuned model's ``classify`` /
``predict`` (with ``text_pair`` for a pair model) / ``tag``). Usage against a running
server::

    python export/client.py --rest=http://localhost:8501 --model=tflm --prompt="The"
    python export/client.py --grpc=localhost:8500 --model=tflm --signature=score \\
        --prompt="Some text to score."
    python export/client.py --rest=http://localhost:8501 --signature=fill_mask \\
        --prompt="The capital of France is [MASK]." --top_k=5
    python export/client.py --rest=http://localhost:8501 --model=sentiment \\
        --signature=classify --prompt="A fine film." --prompt="Dull."
    python export/client.py --rest=http://localhost:8501 --model=nli --signature=classify \\
        --prompt="A man sleeps." --text_pair="Nobody is awake."
"""

import argparse
import json
import urllib.request

# dtype of every input of the tflm signatures (SavedModel signature_def).
INPUT_DTYPES = {
    "prompt": "string", "text": "string", "text_pair": "string", "max_new_tokens": "int32",
    "temperature": "float32", "top_k": "int32", "top_p": "float32", "seed": "int32",
    "token_ids": "int32", "padding_mask": "int32",
}
GENERATE_DEFAULTS = {"max_new_tokens": 32, "temperature": 0.0, "top_k": 0, "top_p": 1.0,
                     "seed": 0}
FILL_MASK_TOP_K = 5
# Inputs that have a batch dimension (the rest are scalars).
BATCHED = {"prompt", "text", "text_pair", "token_ids", "padding_mask"}
# Signatures that take only {"text"}.
TEXT_ONLY = ("score", "encode", "embed", "tag")


def signature_inputs(signature, texts, **params):
    """The inputs of ``signature`` for ``texts`` (generate's scalars and fill_mask's
    ``top_k`` from ``params`` or the defaults). ``logits`` takes ``token_ids`` /
    ``padding_mask`` in ``params``; ``classify`` / ``predict`` of a model fine-tuned on
    pairs take the second texts as ``text_pair`` in ``params``. ``serving_default`` is a
    causal LM's (a masked LM's is ``encode``, a sentence encoder's ``embed``, a
    fine-tuned model's its head: call that by name)."""
    if signature == "serving_default":
        return {"prompt": list(texts)}
    if signature == "generate":
        return {"prompt": list(texts), **{k: params.get(k, v)
                                          for k, v in GENERATE_DEFAULTS.items()}}
    if signature in TEXT_ONLY:
        return {"text": list(texts)}
    if signature in ("classify", "predict"):
        pairs = params.get("text_pair")
        return {"text": list(texts), **({"text_pair": list(pairs)} if pairs else {})}
    if signature == "logits":
        return {"token_ids": params["token_ids"], "padding_mask": params["padding_mask"]}
    if signature == "fill_mask":
        return {"text": list(texts), "top_k": params.get("top_k", FILL_MASK_TOP_K)}
    raise ValueError(f"unknown signature {signature!r}; use serving_default, generate, "
                     "score, logits, fill_mask, encode, embed, classify, predict or tag")


def rest_body(signature, inputs, row_format=False):
    """The JSON body of a TF Serving REST predict call.

    Columnar (``"inputs"``) works for every signature. Row format (``"instances"``, one
    object per example) needs every input to have a batch dimension, so it suits
    ``serving_default``, ``score``, ``logits``, ``encode``, ``embed``, ``classify``,
    ``predict`` and ``tag`` but not the scalars of ``generate`` and ``fill_mask``.
    """
    if not row_format:
        return {"signature_name": signature, "inputs": dict(inputs)}
    scalars = sorted(set(inputs) - BATCHED)
    if scalars:
        raise ValueError(f"row format cannot carry the scalar inputs {scalars}; use the "
                         "columnar format (row_format=False)")
    names = list(inputs)
    rows = zip(*(inputs[n] for n in names))
    return {"signature_name": signature,
            "instances": [dict(zip(names, row)) for row in rows]}


def predict_request(model_name, signature, inputs, version=None):
    """A gRPC ``PredictRequest`` with one ``TensorProto`` per input."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        dtype = INPUT_DTYPES[name]
        if dtype == "string":
            value = [v.encode("utf-8") if isinstance(v, str) else v for v in value]
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return request


def send_rest(url, model_name, body, version=None, timeout=60.0):
    """POSTs ``body`` to ``url``/v1/models/<name>[/versions/<v>]:predict; returns the JSON."""
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    request = urllib.request.Request(
        url.rstrip("/") + path + ":predict", data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def send_grpc(target, request, timeout=60.0):
    """Calls ``PredictionService.Predict`` at ``target`` (host:port); returns numpy outputs."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501")
    parser.add_argument("--grpc", help="gRPC target, e.g. localhost:8500")
    parser.add_argument("--model", default="tflm", help="the model name in models.config")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--signature", default="generate",
                        choices=["serving_default", "generate", "score", "fill_mask",
                                 "encode", "embed", "classify", "predict", "tag"])
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt / text (repeat for a batch)")
    parser.add_argument("--text_pair", action="append", default=None,
                        help="classify / predict of a pair model: the second text of each "
                             "--prompt, in order")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top_k", type=int, default=None,
                        help="generate: 0 = off (default); fill_mask: default 5")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = {k: getattr(args, k) for k in (*GENERATE_DEFAULTS, "text_pair")
              if getattr(args, k) is not None}
    inputs = signature_inputs(args.signature, args.prompt or ["The"], **params)
    if not (args.rest or args.grpc):
        print(json.dumps(rest_body(args.signature, inputs), indent=2))
        print(predict_request(args.model, args.signature, inputs, args.version))
        return
    if args.rest:
        body = rest_body(args.signature, inputs)
        print(json.dumps(send_rest(args.rest, args.model, body, args.version), indent=2,
                         ensure_ascii=False))
    if args.grpc:
        outputs = send_grpc(args.grpc, predict_request(args.model, args.signature, inputs,
                                                       args.version))
        print({k: v.tolist() for k, v in outputs.items()})


if __name__ == "__main__":
    main()
