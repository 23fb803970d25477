"""Attention kernel: keras.ops.dot_product_attention vs tflm's explicit einsum/softmax path.

Shape of gpt_mini (batch 16, seq 128, 4 heads, head_dim 64), causal mask, float32, on
whatever device TensorFlow sees. Both paths are timed interleaved in one process, compiled
the way training runs them (tf.function with XLA; also plain tf.function and eager for the
table), forward + backward. Prints one JSON line
    {"bench", "baseline", "tflm", "unit", "ratio", "target"}
(baseline = keras.ops.dot_product_attention, tflm = the explicit path MultiHeadAttention
uses, ratio = baseline / tflm: at least 1 means the layer's choice is not slower), then a
short table.

    python benchmarks/attention.py [--reps 7]
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tflm.layers.attention import explicit_attention

B, T, H, D = 16, 128, 4, 64


def _causal_mask():
    return ops.tril(ops.ones((T, T), dtype="bool"))[None]  # (1, T, T)


def explicit(q, k, v):
    return explicit_attention(q, k, v, _causal_mask())


def fused(q, k, v):
    return ops.dot_product_attention(q, k, v, mask=_causal_mask()[:, None])


def _forward_backward(fn):
    def run(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(fn(q, k, v))
        return tape.gradient(loss, [q, k, v])

    return run


def _time_ms(fn, args):
    start = time.perf_counter()
    out = fn(*args)
    np.asarray(tf.nest.flatten(out)[0])  # wait for the result
    return (time.perf_counter() - start) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    qkv = [tf.constant(rng.normal(size=(B, T, H, D)).astype("float32")) for _ in range(3)]
    a, b = explicit(*qkv), fused(*qkv)
    max_diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())

    modes = {
        "xla fwd+bwd": lambda f: tf.function(_forward_backward(f), jit_compile=True),
        "graph fwd+bwd": lambda f: tf.function(_forward_backward(f)),
        "xla fwd": lambda f: tf.function(f, jit_compile=True),
        "eager fwd": lambda f: f,
    }
    results = {}
    for mode, wrap in modes.items():
        fns = {"explicit": wrap(explicit), "dot_product_attention": wrap(fused)}
        for fn in fns.values():  # warm-up: trace and compile
            _time_ms(fn, qkv)
            _time_ms(fn, qkv)
        times = {name: [] for name in fns}
        for _ in range(args.reps):  # interleaved A/B
            for name, fn in fns.items():
                times[name].append(_time_ms(fn, qkv))
        results[mode] = {name: statistics.median(t) for name, t in times.items()}

    main_mode = results["xla fwd+bwd"]
    print(json.dumps({
        "bench": f"attention B{B} T{T} H{H} D{D} causal fp32 xla fwd+bwd "
        f"({keras.backend.backend()})",
        "baseline": round(main_mode["dot_product_attention"], 3),
        "tflm": round(main_mode["explicit"], 3),
        "unit": "ms",
        "ratio": round(main_mode["dot_product_attention"] / main_mode["explicit"], 3),
        "target": 1.0,
    }))
    print(f"\nmedian of {args.reps} reps after warm-up; max |diff| of outputs {max_diff:.2e}")
    print(f"{'mode':<16}{'dot_product_attention ms':>26}{'explicit (tflm) ms':>20}{'ratio':>8}")
    for mode, r in results.items():
        ratio = r["dot_product_attention"] / r["explicit"]
        print(f"{mode:<16}{r['dot_product_attention']:>26.2f}{r['explicit']:>20.2f}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
