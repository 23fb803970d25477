"""Per-token decode latency and file size of the exported gpt_mini: TFLite (float32,
dynamic-range int8, full int8) ``decode`` signature vs the SavedModel ``generate``
signature vs the Keras model (``tflm.generation.generate_ids``, XLA-compiled).

The model has the shape of configs/gpt_mini.py, fitted for 40 steps on the built-in corpus
(latency and size do not depend on training; agreement needs non-flat logits); the
tokenizer is a BPE trained on the same text. Per-
token latency of a compiled loop is (t(prompt + 1 + N tokens) - t(prompt + 1 token)) / N,
batch 1; TFLite's is the median ``decode`` call. Variants are measured interleaved, median
of REPS rounds after a warm-up.

    python benchmarks/export_latency.py [--reps=7] [--new_tokens=32]

Prints JSON lines {"bench", "baseline", "tflm", "unit", "ratio", "target"}, then a table.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import gpt_mini  # noqa: E402
from tflm.data.builtin import builtin_documents  # noqa: E402
from tflm.export import (  # noqa: E402
    export_saved_model,
    export_tflite,
    reference,  # noqa: E402
)
from tflm.export.tflite_verify import TFLiteLM  # noqa: E402
from tflm.generation import generate_ids  # noqa: E402
from tflm.models import GPT  # noqa: E402
from tflm.text import train_tokenizer  # noqa: E402

PROMPT = "Return the number of items in"


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_token(run, new_tokens):
    """``run(n)`` generates n tokens; returns a function timing one per-token estimate."""
    return lambda: (timed(lambda: run(new_tokens + 1)) - timed(lambda: run(1))) / new_tokens


def fit_briefly(model, tokenizer, texts, window, steps=40, batch=16):
    """A few dozen Adam steps, so logits are not flat (agreement numbers mean something)."""
    stream = reference.token_stream(tokenizer, texts)
    n = min((len(stream) - 1) // window, steps * batch)
    x = stream[:n * window].reshape(n, window)
    y = stream[1:n * window + 1].reshape(n, window)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=GPT.default_loss())
    model.fit({"token_ids": x, "padding_mask": np.ones_like(x)}, y, batch_size=batch,
              epochs=1, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--new_tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tflm_bench_") as tmp:
        bench(args, tmp)


def bench(args, tmp):
    """Exports gpt_mini to ``tmp``, measures, prints the JSON lines and the table."""
    config = gpt_mini.get_config()
    documents = builtin_documents(None)
    backbone = config.model.backbone
    tokenizer = train_tokenizer("bpe", documents[:1500], backbone.vocabulary_size)
    backbone.vocabulary_size = tokenizer.vocabulary_size
    keras.utils.set_random_seed(0)
    model = GPT(**config.model)
    fit_briefly(model, tokenizer, documents[:1500], window=backbone.max_sequence_length)
    saved = tf.saved_model.load(export_saved_model(model, tokenizer, tmp))
    report = export_tflite(model, tokenizer, os.path.join(tmp, "tflite"),
                           quantize=("dynamic_int8", "int8"), calibration_texts=documents[:200],
                           eval_texts=documents[-50:], representative_samples=16)
    sizes = {q: v["size_bytes"] for q, v in report["variants"].items()}
    window = model.max_sequence_length
    ids = reference.prompt_ids(tokenizer, PROMPT, window - args.new_tokens - 1)

    def saved_run(n):
        saved.signatures["generate"](
            prompt=tf.constant([PROMPT]), max_new_tokens=tf.constant(n),
            temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
            seed=tf.constant(0))

    def keras_run(n):
        generate_ids(model, [ids], n)

    lms = {q: TFLiteLM(os.path.join(tmp, "tflite", v["file"]))
           for q, v in report["variants"].items()}

    def tflite_step(lm):
        return lambda: lm.decode_latency_ms(ids, steps=args.new_tokens)[
            "decode_ms_per_token"] / 1e3

    candidates = {
        "keras": per_token(keras_run, args.new_tokens),
        "saved_model": per_token(saved_run, args.new_tokens),
        **{f"tflite_{q}": tflite_step(lm) for q, lm in lms.items()},
    }
    for fn in candidates.values():  # warm-up: XLA compilation, interpreter allocation
        fn()
    samples = {name: [] for name in candidates}
    for _ in range(args.reps):
        for name, fn in candidates.items():  # interleaved A/B/C
            samples[name].append(fn())
    ms = {name: 1e3 * float(np.median(v)) for name, v in samples.items()}
    rows = [
        ("decode_per_token_tflite_dynamic_int8_vs_saved_model", "saved_model",
         "tflite_dynamic_int8", ">= 2.0"),
        ("decode_per_token_tflite_int8_vs_saved_model", "saved_model", "tflite_int8",
         ">= 2.0"),
        ("decode_per_token_tflite_float32_vs_saved_model", "saved_model", "tflite_none",
         None),
        ("decode_per_token_saved_model_vs_keras", "keras", "saved_model", None),
    ]
    lines = []
    for bench, base, ours, target in rows:
        lines.append({"bench": bench, "baseline": ms[base], "tflm": ms[ours],
                      "unit": "ms/token", "ratio": ms[base] / ms[ours], "target": target})
    for q in ("float16", "dynamic_int8", "int8"):
        if q in sizes:
            lines.append({"bench": f"file_size_{q}_vs_float32", "baseline": sizes["none"],
                          "tflm": sizes[q], "unit": "bytes",
                          "ratio": sizes[q] / sizes["none"],
                          "target": "<= 0.30" if q == "dynamic_int8" else None})
    for line in lines:
        print(json.dumps(line))
    print(f"\ngpt_mini shape, batch 1, {args.new_tokens} new tokens, median of {args.reps}")
    print(f"{'variant':<24}{'ms/token':>10}{'file MB':>10}")
    for name, value in ms.items():
        q = name.replace("tflite_", "")
        size = f"{sizes[q] / 1e6:.2f}" if name.startswith("tflite_") else "-"
        print(f"{name:<24}{value:>10.3f}{size:>10}")
    for q, v in report["variants"].items():
        print(f"tflite_{q}: top-1 agreement {v['top1_agreement']:.4f}, perplexity change "
              f"{100 * v['perplexity_change']:+.2f}% (40 training steps)")


if __name__ == "__main__":
    main()
