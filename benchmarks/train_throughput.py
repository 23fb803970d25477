"""Training tokens/s and peak RSS of tflm's gpt_mini against keras-hub's GPT2CausalLM.

    python benchmarks/train_throughput.py [--steps 3] [--reps 5] [--quality_steps 300]

Same shape for both (vocab 8192, 4 layers, d 256, 4 heads, FFN 1024, seq 128, batch 16)
and the same synthetic batches (Zipf-distributed ids; x = {token_ids, padding_mask}, y,
sample_weight), one ``train_on_batch`` per step:

- ``tflm``: exactly what ``tflm.training.train`` fits for ``configs/gpt_mini.py``
  (``trainer.compile_training_model``: ``TrainingModel`` with its grad norm, tflm's
  AdamW with clipping, accuracy + perplexity metrics, precision and XLA from
  ``resolve_precision`` / ``resolve_jit_compile`` for this machine: on a CPU with
  AVX512_BF16 that is ``mixed_bfloat16`` without XLA);
- ``keras_hub``: ``GPT2CausalLM(GPT2Backbone(...), preprocessor=None)`` compiled with
  ``keras.optimizers.AdamW`` (same learning rate) and ``jit_compile=True``;
- extra row ``tflm_float32``: tflm forced to float32 (XLA by ``auto``).

Where the default precision is bf16, the issue allows it only if validation loss after
the same steps stays within 2% of float32: ``--quality_steps`` (default 300, the demo's
length; 0 skips it) trains ``configs/gpt_mini.py`` on the built-in corpus with ``tflm
train`` twice, default precision and float32, and prints the ratio of the two final
validation losses.

After one warm-up round, ``--reps`` rounds time ``--steps`` steps of every model in turn
(the order reversed every other round); figures are medians. Peak RSS (``ru_maxrss``) of
tflm and keras_hub is measured in a fresh subprocess each. The model-FLOPs fraction is
tokens/s x ``tflm.models.flops_per_token`` / the CPU's matmul FLOP/s in the model's
compute dtype (float32 or bfloat16, ``tflm.training.mfu``, measured in every round; the
best is the peak). Prints one JSON
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
import tempfile
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tflm.config import load_config
from tflm.model_dir import build_model
from tflm.training.mfu import measured_cpu_flops
from tflm.training.strategy import resolve_jit_compile, resolve_precision
from tflm.training.trainer import compile_training_model

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "gpt_mini.py")
TARGET_SPEED = 1.25
TARGET_MEMORY = 1.0
TARGET_BF16_LOSS = 1.02
VARIANTS = ("keras_hub", "tflm", "tflm_float32")


def synthetic_batches(config, count: int, seed: int = 0):
    """``count`` (x, y, sample_weight) batches of Zipf-distributed ids."""
    rng = np.random.default_rng(seed)
    vocab, batch = config.model.backbone.vocabulary_size, config.train.batch_size
    seq = config.data.seq_len
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
            m = config.model.backbone
            backbone = keras_hub.models.GPT2Backbone(
                vocabulary_size=m.vocabulary_size, num_layers=m.num_layers,
                num_heads=m.num_heads, hidden_dim=m.hidden_dim,
                intermediate_dim=m.intermediate_dim,
                max_sequence_length=m.max_sequence_length, dropout=0.0)
            model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
            model.compile(optimizer=keras.optimizers.AdamW(config.train.learning_rate),
                          jit_compile=True)
            return model, "GPT2CausalLM, AdamW, float32, XLA"
        if variant == "tflm_float32":
            config.train.precision = "float32"
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


def validation_loss_ratio(steps: int) -> tuple[float, float, str]:
    """(default-precision val loss, float32 val loss, default precision) after ``steps``.

    Two real ``tflm train`` runs of ``configs/gpt_mini.py`` (built-in corpus, its own
    schedule, ``steps`` steps), one after the other, each in a temporary workdir.
    """
    losses, precisions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("default", []), ("float32", ["--config.train.precision=float32"])):
            workdir = os.path.join(tmp, name)
            cmd = [sys.executable, "-m", "tflm.cli", "train", f"--config={CONFIG}",
                   f"--workdir={workdir}", f"--config.train.steps={steps}", *extra]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
                summary = json.load(f)
            losses[name], precisions[name] = summary["validation_loss"], summary["precision"]
    return losses["default"], losses["float32"], precisions["default"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="train steps per timing")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--quality_steps", type=int, default=300,
                        help="steps of the bf16-vs-float32 validation loss check (0: skip)")
    parser.add_argument("--rss_of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        peak_rss_child(args.rss_of)
        return

    rss = peak_rss_mib(("keras_hub", "tflm"))
    base_config = load_config(CONFIG)
    seq, batch = base_config.data.seq_len, base_config.train.batch_size
    tokens_per_step = batch * seq
    fpt = build_model(base_config).flops_per_token(base_config.data)
    batches = synthetic_batches(base_config, 4)
    models, notes, runs = {}, {}, {}
    for v in VARIANTS:
        models[v], notes[v] = build(v, load_config(CONFIG))
        runs[v] = runner(models[v], batches, args.steps)
        runs[v]()  # warm-up: tracing and XLA compilation
    seconds = {v: [] for v in VARIANTS}
    peaks = {"float32": [], "bfloat16": []}  # measured every round: the load varies
    for rep in range(args.reps):
        for dtype, values in peaks.items():
            values.append(measured_cpu_flops.__wrapped__(dtype=dtype))
        for v in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            start = time.perf_counter()
            runs[v]()
            seconds[v].append(time.perf_counter() - start)
    peak = {dtype: max(values) for dtype, values in peaks.items()}  # as tflm.training.mfu
    dtype_of = {v: "bfloat16" if "bfloat16" in notes[v] else "float32" for v in VARIANTS}
    speed = {v: args.steps * tokens_per_step / statistics.median(s) for v, s in seconds.items()}
    fraction = {v: speed[v] * fpt / peak[dtype_of[v]] for v in VARIANTS}

    rows = []
    for v in ("tflm", "tflm_float32"):
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
          f"{args.reps} rounds (medians); measured matmul {peak['float32'] / 1e9:.1f} "
          f"GFLOP/s float32, {peak['bfloat16'] / 1e9:.1f} bfloat16; "
          f"{fpt / 1e6:.1f} MFLOP/token")
    print("FLOPs frac: model FLOP/s over the measured matmul of the model's compute dtype")
    print(f"{'model':<13}{'tokens/s':>10}{'ms/step':>9}{'vs hub':>8}{'FLOPs frac':>12}"
          f"{'peak RSS':>10}  setup")
    for v in VARIANTS:
        ms = statistics.median(seconds[v]) / args.steps * 1e3
        mem = f"{rss[v]:.0f} MiB" if v in rss else "-"
        print(f"{v:<13}{speed[v]:>10.0f}{ms:>9.0f}{speed[v] / speed['keras_hub']:>8.2f}"
              f"{fraction[v]:>12.3f}{mem:>10}  {notes[v]}")
    if args.quality_steps and "bfloat16" in notes["tflm"]:
        default, fp32, precision = validation_loss_ratio(args.quality_steps)
        print(json.dumps({"bench": f"validation_loss/gpt_mini_{args.quality_steps}_steps/"
                                   f"{precision}_vs_float32",
                          "baseline": round(fp32, 4), "tflm": round(default, 4),
                          "unit": "nats", "ratio": round(default / fp32, 4),
                          "target": TARGET_BF16_LOSS}), flush=True)
    elif "bfloat16" in notes["tflm"]:
        print("tflm's bf16 loss was not checked against float32 (--quality_steps 0).")


if __name__ == "__main__":
    main()
