"""Training tokens/s and peak RSS of tflm's gpt_mini against keras-hub's GPT2CausalLM.

    python benchmarks/train_throughput.py [--steps 3] [--reps 5]

Same shape for both (vocab 8192, 4 layers, d 256, 4 heads, FFN 1024, seq 128, batch 16)
and the same synthetic batches (Zipf-distributed ids; x = {token_ids, padding_mask}, y,
sample_weight), one ``train_on_batch`` per step:

- ``tflm``: exactly what ``tflm.training.train`` fits for ``configs/gpt_mini.py``
  (``trainer.compile_training_model``: ``TrainingModel`` with its grad norm, tflm's
  AdamW with clipping, accuracy + perplexity metrics, precision and XLA from
  ``resolve_precision`` / ``resolve_jit_compile`` for this machine);
- ``keras_hub``: ``GPT2CausalLM(GPT2Backbone(...), preprocessor=None)`` compiled with
  ``keras.optimizers.AdamW`` (same learning rate) and ``jit_compile=True``;
- extra rows: tflm with ``jit_compile`` forced on, and with ``mixed_bfloat16`` (speed
  only: the "validation loss within 2% of float32" check is not done here).

After one warm-up round, ``--reps`` rounds time ``--steps`` steps of every model in turn
(the order reversed every other round); figures are medians. Peak RSS (``ru_maxrss``) of
tflm and keras_hub is measured in a fresh subprocess each. The model-FLOPs fraction is
tokens/s x ``tflm.models.flops_per_token`` / the CPU's float32 matmul FLOP/s
(``tflm.training.mfu``, measured in every round; the best is the peak). Prints one JSON
line per comparison, ``{"bench", "baseline", "tflm", "unit", "ratio", "target"}``, then a
table.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tflm.config import load_config
from tflm.models import flops_per_token
from tflm.training.mfu import measured_cpu_flops
from tflm.training.strategy import resolve_jit_compile, resolve_precision
from tflm.training.trainer import compile_training_model

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "gpt_mini.py")
TARGET_SPEED = 1.25
TARGET_MEMORY = 1.0
VARIANTS = ("keras_hub", "tflm", "tflm_xla", "tflm_bf16")


def synthetic_batches(config, count: int, seed: int = 0):
    """``count`` (x, y, sample_weight) batches of Zipf-distributed ids."""
    rng = np.random.default_rng(seed)
    vocab, batch, seq = config.model.vocabulary_size, config.train.batch_size, config.data.seq_len
    batches = []
    for _ in range(count):
        ids = (rng.zipf(1.2, size=(batch, seq + 1)) % vocab).astype("int32")
        x = {"token_ids": tf.constant(ids[:, :-1]),
             "padding_mask": tf.ones((batch, seq), "int32")}
        batches.append((x, tf.constant(ids[:, 1:]), tf.ones((batch, seq), "float32")))
    return batches


def build(variant: str, config):
    """(compiled model, description) of ``variant``, float32 unless it says bf16."""
    strategy = tf.distribute.get_strategy()
    previous = keras.config.dtype_policy()
    keras.utils.set_random_seed(0)
    try:
        if variant == "keras_hub":
            keras.config.set_dtype_policy("float32")
            m = config.model
            backbone = keras_hub.models.GPT2Backbone(
                vocabulary_size=m.vocabulary_size, num_layers=m.num_layers,
                num_heads=m.num_heads, hidden_dim=m.hidden_dim,
                intermediate_dim=m.intermediate_dim,
                max_sequence_length=m.max_sequence_length, dropout=0.0)
            model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
            model.compile(optimizer=keras.optimizers.AdamW(config.train.learning_rate),
                          jit_compile=True)
            return model, "GPT2CausalLM, AdamW, float32, XLA"
        if variant == "tflm_xla":
            config.train.jit_compile = "on"
        if variant == "tflm_bf16":
            config.train.precision = "mixed_bfloat16"
        precision = resolve_precision(config.train, strategy)
        keras.config.set_dtype_policy(precision)
        with strategy.scope():
            _, model = compile_training_model(config, strategy)
        xla = "XLA" if resolve_jit_compile(config.train, strategy) else "no XLA"
        return model, f"trainer's model, {precision}, {xla}"
    finally:
        keras.config.set_dtype_policy(previous)


def runner(model, batches, steps: int):
    """A function running ``steps`` train steps over ``batches`` (synced at the end)."""
    position = [0]

    def run():
        for _ in range(steps):
            x, y, w = batches[position[0] % len(batches)]
            position[0] += 1
            logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
        return logs

    return run


def peak_rss_child(variant: str) -> None:
    """In a fresh process: build, train 3 steps, print the peak RSS in MiB."""
    config = load_config(CONFIG)
    model, _ = build(variant, config)
    runner(model, synthetic_batches(config, 4), 3)()
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def peak_rss_mib(variants) -> dict:
    """{variant: peak RSS MiB}, each from its own subprocess (run side by side)."""
    procs = {v: subprocess.Popen([sys.executable, __file__, "--rss_of", v],
                                 stdout=subprocess.PIPE, text=True)
             for v in variants}
    out = {}
    for v, proc in procs.items():
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the peak RSS subprocess of {v} failed")
        out[v] = json.loads(stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="train steps per timing")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--rss_of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        peak_rss_child(args.rss_of)
        return

    rss = peak_rss_mib(("keras_hub", "tflm"))
    base_config = load_config(CONFIG)
    m, seq, batch = base_config.model, base_config.data.seq_len, base_config.train.batch_size
    tokens_per_step = batch * seq
    fpt = flops_per_token(m.num_layers, m.hidden_dim, m.intermediate_dim, seq,
                          m.vocabulary_size)
    batches = synthetic_batches(base_config, 4)
    models, notes, runs = {}, {}, {}
    for v in VARIANTS:
        models[v], notes[v] = build(v, load_config(CONFIG))
        runs[v] = runner(models[v], batches, args.steps)
        runs[v]()  # warm-up: tracing and XLA compilation
    seconds = {v: [] for v in VARIANTS}
    peaks = []  # the matmul peak, measured every round too: the machine's load varies
    for rep in range(args.reps):
        peaks.append(measured_cpu_flops.__wrapped__())
        for v in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            start = time.perf_counter()
            runs[v]()
            seconds[v].append(time.perf_counter() - start)
    peak = max(peaks)  # the best matmul seen, as tflm.training.mfu defines the peak
    speed = {v: args.steps * tokens_per_step / statistics.median(s) for v, s in seconds.items()}
    fraction = {v: speed[v] * fpt / peak for v in VARIANTS}

    rows = []
    for v in ("tflm", "tflm_xla", "tflm_bf16"):
        rows.append({"bench": f"train_tokens_per_s/gpt_mini/{v}_vs_keras_hub",
                     "baseline": round(speed["keras_hub"], 1), "tflm": round(speed[v], 1),
                     "unit": "tokens/s", "ratio": round(speed[v] / speed["keras_hub"], 3),
                     "target": TARGET_SPEED})
    rows.append({"bench": "train_peak_rss/gpt_mini/tflm_vs_keras_hub",
                 "baseline": round(rss["keras_hub"], 1), "tflm": round(rss["tflm"], 1),
                 "unit": "MiB", "ratio": round(rss["keras_hub"] / rss["tflm"], 3),
                 "target": TARGET_MEMORY})
    for row in rows:
        print(json.dumps(row), flush=True)

    print(f"\ngpt_mini training on CPU: batch {batch} x {seq} tokens, {args.steps} steps x "
          f"{args.reps} rounds (medians); measured matmul {peak / 1e9:.1f} GFLOP/s, "
          f"{fpt / 1e6:.1f} MFLOP/token")
    print(f"{'model':<11}{'tokens/s':>10}{'ms/step':>9}{'vs hub':>8}{'FLOPs frac':>12}"
          f"{'peak RSS':>10}  setup")
    for v in VARIANTS:
        ms = statistics.median(seconds[v]) / args.steps * 1e3
        mem = f"{rss[v]:.0f} MiB" if v in rss else "-"
        print(f"{v:<11}{speed[v]:>10.0f}{ms:>9.0f}{speed[v] / speed['keras_hub']:>8.2f}"
              f"{fraction[v]:>12.3f}{mem:>10}  {notes[v]}")
    print("tflm_bf16: speed only; its loss was not checked against float32 here.")


if __name__ == "__main__":
    main()
