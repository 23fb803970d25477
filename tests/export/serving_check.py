"""Loads an exported SavedModel the way TF Serving does: only tensorflow + tensorflow_text.

Run by tests/export/test_saved_model.py in a fresh subprocess:

    python serving_check.py SAVED_MODEL_DIR REQUESTS_JSON OUT_JSON

REQUESTS_JSON maps a signature name to its inputs ({name: list}); OUT_JSON receives each
signature's outputs as lists (strings as latin-1 so any byte survives), plus the
signature input specs and which tflm / keras_hub modules got imported (must be none).
"""

import json
import sys

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tf-text ops the tokenizer may use)

DTYPES = {"prompt": tf.string, "text": tf.string, "text_pair": tf.string,
          "max_new_tokens": tf.int32,
          "temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32,
          "seed": tf.int32, "token_ids": tf.int32, "padding_mask": tf.int32}


def to_json(value):
    array = value.numpy()
    if array.dtype == object:
        return [b.decode("latin-1") for b in array.reshape(-1).tolist()]
    return array.tolist()


def main(path, requests_path, out_path):
    loaded = tf.saved_model.load(path)
    with open(requests_path, encoding="utf-8") as f:
        requests = json.load(f)
    results = {"signatures": sorted(loaded.signatures.keys()), "outputs": {}}
    for key, inputs in requests.items():
        name = key.split(":")[0]
        tensors = {
            k: tf.constant([s.encode("latin-1") for s in v] if DTYPES[k] == tf.string
                           else v, DTYPES[k])
            for k, v in inputs.items()
        }
        outputs = loaded.signatures[name](**tensors)
        results["outputs"][key] = {k: to_json(v) for k, v in outputs.items()}
    results["foreign_modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("tflm", "keras_hub", "keras_nlp")
    )
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
