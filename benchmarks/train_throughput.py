"""Training tokens/s and peak RSS of tflm's training step against keras-hub's.

    python benchmarks/train_throughput.py [--case gpt|masked_lm|all] [--steps 3]
        [--reps 5] [--quality_steps 300]

Each case times tflm exactly as ``tflm.training.train`` fits it
(``trainer.compile_training_model``: ``TrainingModel`` with its grad norm, tflm's AdamW
with clipping, the task's loss and metrics, precision and XLA from ``resolve_precision``
/ ``resolve_jit_compile`` for this machine: on a CPU with AVX512_BF16 that is
``mixed_bfloat16`` without XLA) against the keras-hub task of the same shape compiled
with ``keras.optimizers.AdamW`` (same learning rate) and ``jit_compile=True`` (Keras'
``auto`` means no XLA for keras-hub models on TensorFlow), on the same synthetic batches
(Zipf-distributed ids), one ``train_on_batch`` per step. ``--case`` runs one case
(default ``all``: gpt, masked_lm, then electra: ``run_electra``). ``--case gpt_parts``
(not in ``all``) is a diagnostic of what bounds the gpt ratio: ``run_parts``.

``gpt``: ``configs/gpt_mini.py`` against ``GPT2CausalLM(GPT2Backbone(...),
preprocessor=None)`` at tflm's precision (float32 on a CPU without bf16 instructions,
``mixed_bfloat16`` for both where tflm picks it: the same arithmetic; vocab 8192, 4
layers, d 256, 4 heads, FFN 1024, seq 128, batch 16, no dropout; x = {token_ids,
padding_mask}, y, sample_weight). Extra row ``tflm_float32``: tflm forced to float32
(XLA by ``auto``); ``tflm_unfused``: tflm without the fused LM head + loss
(``train.fused_head_chunk=0``: full logits, Keras' compiled loss). The fast paths must
not change what is learned: ``--quality_steps`` (default 300, the demo's length; 0 skips
it) trains ``configs/gpt_mini.py`` on the built-in corpus with ``tflm train`` twice, as
configured and as the plain reference (float32, unfused), and prints the ratio of the
two final validation losses (target: within 1%, 2% where tflm trains in bf16).

``masked_lm``: ``configs/bert_mini.py`` (post-LN BERT, vocab 8192, 4 layers, d 256,
4 heads, FFN 1024, seq 128, 2 segments, dropout 0.1, batch 32) against
``BertMaskedLM(BertBackbone(...), preprocessor=None)`` of the same shape and dropout, at
tflm's precision (keras-hub runs ``mixed_bfloat16`` where tflm picks it, else float32).
Batches: segment A / B halves, ``config.data.max_predictions`` = 20 masked positions
per sequence (15% of 128 is 19), all with weight 1, their ids replaced by a [MASK] id.
keras-hub has no next-sentence head, so there are two tflm rows: ``tflm`` is bert_mini
as trained (MLM + NSP: pooler, 2-way head, its loss and accuracy; y = {mlm, pair}) and
``tflm_mlm_only`` the same with ``pair_task="none"``, the like-for-like row.

After one warm-up round, ``--reps`` rounds time ``--steps`` steps of every model in turn
(the order reversed every other round); figures are medians. Peak RSS (``VmHWM``, see
``peak_memory.py``) of
each compared model is measured in a fresh subprocess each. The model-FLOPs fraction
(MFU) is tokens/s x ``flops_per_token`` of the model's tflm task (keras-hub's: its
like-for-like tflm task) / the CPU's matmul FLOP/s in the model's compute dtype (float32
or bfloat16, ``tflm.training.mfu``, measured in every round; the best is the peak).
Prints one JSON line per comparison, ``{"bench", "baseline", "tflm", "unit", "ratio",
"target"}``, then a table, per case.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from peak_memory import own_peak_rss_mib  # benchmarks/ is on sys.path

from tflm.config import load_config
from tflm.model_dir import build_model
from tflm.training.mfu import measured_cpu_flops
from tflm.training.strategy import cpu_has_bf16, resolve_jit_compile, resolve_precision
from tflm.training.trainer import compile_training_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
CONFIG = os.path.join(CONFIGS, "gpt_mini.py")
TARGET_MEMORY = 1.0
TARGET_BF16_LOSS = 1.02
TARGET_LOSS = 1.01  # float32, fused head against unfused: the same arithmetic, reordered
MASK_ID = 1  # the synthetic [MASK]: any id costs the same


def synthetic_batches(config, count: int, seed: int = 0):
    """``count`` (x, y, sample_weight) causal-LM batches of Zipf-distributed ids."""
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


def masked_lm_batches(config, count: int, seed: int = 0, keras_hub_layout: bool = False):
    """``count`` (x, y, sample_weight) masked-LM batches (the same ids for every layout).

    tflm's layout (``masked_lm_pipeline``): y = {"mlm": (B, P), "pair": (B,)} and weights
    alike ("pair" only with a pair task); keras-hub's: y = mask ids (B, P), weights (B, P).
    """
    rng = np.random.default_rng(seed)
    vocab, batch = config.model.backbone.vocabulary_size, config.train.batch_size
    seq, predictions = config.data.seq_len, config.data.max_predictions
    segments = np.broadcast_to(np.arange(seq) >= seq // 2, (batch, seq)).astype("int32")
    batches = []
    for _ in range(count):
        ids = (rng.zipf(1.2, size=(batch, seq)) % vocab).astype("int32")  # (B, T)
        # P distinct positions per row, never [CLS] (0) or the last [SEP]: (B, P)
        positions = np.sort(np.argsort(rng.random((batch, seq - 2)), axis=1)[:, :predictions]
                            + 1, axis=1).astype("int32")
        labels = np.take_along_axis(ids, positions, axis=1)  # (B, P)
        np.put_along_axis(ids, positions, MASK_ID, axis=1)
        pair_labels = rng.integers(0, 2, size=batch).astype("int32")  # (B,)
        x = {"token_ids": tf.constant(ids), "padding_mask": tf.ones((batch, seq), "int32"),
             "segment_ids": tf.constant(segments),
             "mask_positions": tf.constant(positions)}
        weights = tf.ones((batch, predictions), "float32")
        if keras_hub_layout:
            batches.append((x, tf.constant(labels), weights))
            continue
        y, w = {"mlm": tf.constant(labels)}, {"mlm": weights}
        if config.model.pair_task != "none":
            y["pair"], w["pair"] = tf.constant(pair_labels), tf.ones((batch,), "float32")
        batches.append((x, y, w))
    return batches


def gpt2_causal_lm(m) -> keras.Model:
    """keras-hub's GPT-2 of backbone arguments ``m`` (no dropout, as gpt_mini)."""
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=m.vocabulary_size, num_layers=m.num_layers,
        num_heads=m.num_heads, hidden_dim=m.hidden_dim,
        intermediate_dim=m.intermediate_dim,
        max_sequence_length=m.max_sequence_length, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def bert_masked_lm(m) -> keras.Model:
    """keras-hub's BERT masked LM of backbone arguments ``m`` (same dropout)."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=m.vocabulary_size, num_layers=m.num_layers,
        num_heads=m.num_heads, hidden_dim=m.hidden_dim,
        intermediate_dim=m.intermediate_dim, dropout=m.dropout,
        max_sequence_length=m.max_sequence_length, num_segments=m.num_segments)
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison: a tflm config against a keras-hub task of the same shape.

    Attributes:
        config: the tflm config file.
        variants: the timed models in table order; "keras_hub" is the baseline.
        compared: the variants with a tokens/s JSON line against keras_hub.
        rss: the variants whose peak RSS is measured (keras_hub first).
        target_speed: the tokens/s ratio the issue asks for.
        overrides: {variant: {"section.key": value}} on its config (keras_hub's too:
            its like-for-like tflm config, for its FLOPs and batches).
        keras_hub: backbone arguments -> the keras-hub task model.
        batches: (config, count, keras_hub_layout) -> (x, y, sample_weight) batches.
        hub_float32: keras-hub in float32 whatever tflm's precision (else at tflm's).
        labels: {variant: what it trains}, before its setup in the table.
    """

    config: str
    variants: tuple[str, ...]
    compared: tuple[str, ...]
    rss: tuple[str, ...]
    target_speed: float
    overrides: dict
    keras_hub: Callable
    batches: Callable
    hub_float32: bool
    labels: dict

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.config))[0]


CASES = {
    "gpt": Case(
        config=CONFIG, variants=("keras_hub", "tflm", "tflm_float32", "tflm_unfused"),
        compared=("tflm", "tflm_float32", "tflm_unfused"), rss=("keras_hub", "tflm"),
        target_speed=1.25,
        overrides={"tflm_float32": {"train.precision": "float32"},
                   "tflm_unfused": {"train.fused_head_chunk": 0}},
        keras_hub=gpt2_causal_lm,
        batches=lambda config, count, hub: synthetic_batches(config, count),
        hub_float32=False, labels={}),
    "masked_lm": Case(
        config=os.path.join(CONFIGS, "bert_mini.py"),
        variants=("keras_hub", "tflm", "tflm_mlm_only"),
        compared=("tflm", "tflm_mlm_only"), rss=("keras_hub", "tflm", "tflm_mlm_only"),
        target_speed=1.15,
        overrides={"keras_hub": {"model.pair_task": "none"},
                   "tflm_mlm_only": {"model.pair_task": "none"}},
        keras_hub=bert_masked_lm,
        batches=lambda config, count, hub: masked_lm_batches(config, count,
                                                             keras_hub_layout=hub),
        hub_float32=False,
        labels={"keras_hub": "MLM", "tflm": "MLM+NSP", "tflm_mlm_only": "MLM"}),
}


def variant_config(case: Case, variant: str):
    """``case``'s config with ``variant``'s overrides."""
    config = load_config(case.config)
    for key, value in case.overrides.get(variant, {}).items():
        *sections, field = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[field] = value
    return config


def build(case: Case, variant: str):
    """(compiled model, description) of ``variant``."""
    config = variant_config(case, variant)
    strategy = tf.distribute.get_strategy()
    previous = keras.config.dtype_policy()
    keras.utils.set_random_seed(0)
    precision = resolve_precision(config.train, strategy)
    label = f"{case.labels[variant]}: " if variant in case.labels else ""
    try:
        if variant == "keras_hub":
            precision = "float32" if case.hub_float32 else precision
            keras.config.set_dtype_policy(precision)
            model = case.keras_hub(config.model.backbone)
            model.compile(optimizer=keras.optimizers.AdamW(config.train.learning_rate),
                          jit_compile=True)
            return model, f"{label}{type(model).__name__}, AdamW, {precision}, XLA"
        keras.config.set_dtype_policy(precision)
        with strategy.scope():
            _, model = compile_training_model(config, strategy)
        xla = "XLA" if resolve_jit_compile(config.train, strategy) else "no XLA"
        return model, f"{label}trainer's model, {precision}, {xla}"
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


def peak_rss_child(case: Case, variant: str) -> None:
    """In a fresh process: build, train 3 steps, print the peak RSS in MiB."""
    model, _ = build(case, variant)
    batches = case.batches(variant_config(case, variant), 4, variant == "keras_hub")
    runner(model, batches, 3)()
    print(json.dumps(own_peak_rss_mib()))


def peak_rss_mib(case_name: str, variants) -> dict:
    """{variant: peak RSS MiB}, each from its own subprocess, one after the other: run side
    by side they competed for memory and CPU (one masked_lm run reported 2612.1 MiB for
    all three models, the next 1942 / 2177 / 2153)."""
    out = {}
    for v in variants:
        proc = subprocess.run([sys.executable, __file__, "--case", case_name, "--rss_of", v],
                              stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise RuntimeError(f"the peak RSS subprocess of {case_name} {v} failed")
        out[v] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def validation_loss_ratio(steps: int) -> tuple[float, float, str]:
    """(default val loss, reference val loss, default precision) after ``steps``.

    Two real ``tflm train`` runs of ``configs/gpt_mini.py`` (built-in corpus, its own
    schedule, ``steps`` steps), one after the other, each in a temporary workdir: as
    configured, and the reference (float32, ``fused_head_chunk=0``).
    """
    losses, precisions = {}, {}
    reference = ["--config.train.precision=float32", "--config.train.fused_head_chunk=0"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("default", []), ("float32", reference)):
            workdir = os.path.join(tmp, name)
            cmd = [sys.executable, "-m", "tflm.cli", "train", f"--config={CONFIG}",
                   f"--workdir={workdir}", f"--config.train.steps={steps}", *extra]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
                summary = json.load(f)
            losses[name], precisions[name] = summary["validation_loss"], summary["precision"]
    return losses["default"], losses["float32"], precisions["default"]


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """The matmul-relevant flags of /proc/cpuinfo this CPU has (they decide the precision
    path: bf16 dot instructions make ``precision=auto`` pick ``mixed_bfloat16``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    return " ".join(flag for flag in CPU_FLAGS if flag in flags) or "none of " + str(CPU_FLAGS)


def model_matmuls(config) -> list[tuple[tuple[int, int], tuple[int, int], bool, bool]]:
    """The (a shape, b shape, transpose_a, transpose_b) of a training step's dense
    matmuls: per projection (QKV, attention output, MLP in, MLP out, LM head) the forward
    product, the input gradient and the weight gradient (attention's batched products,
    ~3% of gpt_mini's FLOPs, are left out). A masked LM's head (its transform and the
    table) sees only the ``max_predictions`` masked rows of each sequence."""
    b, d = config.model.backbone, config.data
    rows = config.train.batch_size * d.seq_len
    head_rows = rows
    shapes = [(rows, b.hidden_dim, 3 * b.hidden_dim), (rows, b.hidden_dim, b.hidden_dim),
              (rows, b.hidden_dim, b.intermediate_dim), (rows, b.intermediate_dim, b.hidden_dim)]
    if config.train.objective == "masked_lm":
        head_rows = config.train.batch_size * d.max_predictions
        shapes.append((head_rows, b.hidden_dim, b.hidden_dim))
    shapes.append((head_rows, b.hidden_dim, b.vocabulary_size))
    products = []
    for rows, k, m in shapes:
        products += [((rows, k), (k, m), False, False),  # forward
                     ((rows, m), (k, m), False, True),  # input gradient
                     ((rows, k), (rows, m), True, False)]  # weight gradient
    return products


def shape_peak_flops(config, dtype: str = "float32") -> dict:
    """XLA matmul FLOP/s of the model's own shapes (``model_matmuls``), each timed alone.

    Returns {"peak": FLOPs of all products / the sum of their best times (the step's
    matmul floor as a rate), "head": the LM head's three products' rate, "blocks": the
    other products' rate}.
    """
    flops_time = {"head": [0.0, 0.0], "blocks": [0.0, 0.0]}
    vocab = config.model.backbone.vocabulary_size
    for a_shape, b_shape, ta, tb in model_matmuls(config):
        a = tf.cast(tf.random.stateless_normal(a_shape, seed=(0, 1)), dtype)
        b = tf.cast(tf.random.stateless_normal(b_shape, seed=(0, 2)), dtype)
        fn = tf.function(functools.partial(_summed_matmul, a, b, ta, tb), jit_compile=True,
                         autograph=False)
        fn().numpy()
        best = min(_timed(fn) for _ in range(5))
        m, k = (a_shape[1], a_shape[0]) if ta else a_shape
        n = b_shape[0] if tb else b_shape[1]
        group = "head" if vocab in (a_shape[1], b_shape[0], b_shape[1]) else "blocks"
        flops_time[group][0] += 2 * m * k * n
        flops_time[group][1] += best
    total = [sum(v[i] for v in flops_time.values()) for i in (0, 1)]
    return {"peak": total[0] / total[1],
            **{group: f / t for group, (f, t) in flops_time.items()}}


def _summed_matmul(a, b, transpose_a, transpose_b):
    return tf.reduce_sum(tf.linalg.matmul(a, b, transpose_a=transpose_a,
                                          transpose_b=transpose_b))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn().numpy()
    return time.perf_counter() - start


def cpu_description() -> str:
    """The CPU's model name, core count and whether it has bf16 dot instructions."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    bf16 = "with" if cpu_has_bf16() else "no"
    return f"{name}, {os.cpu_count()} cores, {bf16} bf16 dot instructions"


def time_case(case: Case, args) -> dict:
    """Builds, warms up and times every variant of ``case``; returns the figures."""
    models, notes, runs = {}, {}, {}
    for v in case.variants:
        models[v], notes[v] = build(case, v)
        batches = case.batches(variant_config(case, v), 4, v == "keras_hub")
        runs[v] = runner(models[v], batches, args.steps)
        runs[v]()  # warm-up: tracing and XLA compilation
    seconds = {v: [] for v in case.variants}
    peaks = {"float32": [], "bfloat16": []}  # measured every round: the load varies
    for rep in range(args.reps):
        for dtype, values in peaks.items():
            values.append(measured_cpu_flops.__wrapped__(dtype=dtype))
        for v in case.variants if rep % 2 == 0 else case.variants[::-1]:
            start = time.perf_counter()
            runs[v]()
            seconds[v].append(time.perf_counter() - start)
    peak = {dtype: max(values) for dtype, values in peaks.items()}  # as tflm.training.mfu
    shapes = shape_peak_flops(variant_config(case, "tflm"))  # float32: the no-bf16 path
    return {"seconds": seconds, "notes": notes, "peak": peak, "shapes": shapes}


def run_case(case_name: str, args) -> None:
    """Measures one case and prints its JSON lines and table."""
    case = CASES[case_name]
    rss = peak_rss_mib(case_name, case.rss)
    base_config = load_config(case.config)
    seq, batch = base_config.data.seq_len, base_config.train.batch_size
    tokens_per_step = batch * seq
    fpt = {v: build_model(variant_config(case, v)).flops_per_token(base_config.data)
           for v in case.variants}
    timed = time_case(case, args)
    seconds, notes, peak, shapes = (timed[k] for k in ("seconds", "notes", "peak", "shapes"))
    dtype_of = {v: "bfloat16" if "bfloat16" in notes[v] else "float32"
                for v in case.variants}
    speed = {v: args.steps * tokens_per_step / statistics.median(s)
             for v, s in seconds.items()}
    fraction = {v: speed[v] * fpt[v] / peak[dtype_of[v]] for v in case.variants}

    rows = []
    for v in case.compared:
        rows.append({"bench": f"train_tokens_per_s/{case.name}/{v}_vs_keras_hub",
                     "baseline": round(speed["keras_hub"], 1), "tflm": round(speed[v], 1),
                     "unit": "tokens/s", "ratio": round(speed[v] / speed["keras_hub"], 3),
                     "target": case.target_speed})
    for v in case.rss[1:]:
        rows.append({"bench": f"train_peak_rss/{case.name}/{v}_vs_keras_hub",
                     "baseline": round(rss["keras_hub"], 1), "tflm": round(rss[v], 1),
                     "unit": "MiB", "ratio": round(rss["keras_hub"] / rss[v], 3),
                     "target": TARGET_MEMORY})
    for row in rows:
        print(json.dumps(row), flush=True)

    where = f"CPU ({cpu_description()}; flags {cpu_flags()})"
    masks = "" if case_name == "gpt" else (
        f", {base_config.data.max_predictions} masked positions a sequence")
    print(f"\n{case.name} training on {where}: batch {batch} x {seq} tokens{masks}, "
          f"{args.steps} steps x {args.reps} rounds (medians); measured matmul "
          f"{peak['float32'] / 1e9:.1f} GFLOP/s float32, {peak['bfloat16'] / 1e9:.1f} "
          f"bfloat16; {fpt['tflm'] / 1e6:.1f} MFLOP/token")
    print(f"XLA float32 matmuls of the model's own shapes (forward, input and weight "
          f"gradients): {shapes['peak'] / 1e9:.1f} GFLOP/s over all, LM head "
          f"{shapes['head'] / 1e9:.1f}, blocks {shapes['blocks'] / 1e9:.1f}; FLOPs frac "
          f"against it (float32 rows): "
          + ", ".join(f"{v} {speed[v] * fpt[v] / shapes['peak']:.3f}" for v in case.variants
                      if dtype_of[v] == "float32"))
    if case_name == "masked_lm":
        print("tflm is bert_mini as trained, masked LM + next-sentence prediction; "
              "keras-hub's BertMaskedLM has no NSP head: tflm_mlm_only (pair_task none) "
              "is the like-for-like row.")
    print("FLOPs frac: model FLOP/s over the measured matmul of the model's compute dtype")
    width = max(13, 2 + max(map(len, case.variants)))
    print(f"{'model':<{width}}{'tokens/s':>10}{'ms/step':>9}{'vs hub':>8}"
          f"{'FLOPs frac':>12}{'peak RSS':>10}  setup")
    for v in case.variants:
        ms = statistics.median(seconds[v]) / args.steps * 1e3
        mem = f"{rss[v]:.0f} MiB" if v in rss else "-"
        print(f"{v:<{width}}{speed[v]:>10.0f}{ms:>9.0f}{speed[v] / speed['keras_hub']:>8.2f}"
              f"{fraction[v]:>12.3f}{mem:>10}  {notes[v]}")
    if case_name != "gpt":
        return
    if args.quality_steps:
        default, fp32, precision = validation_loss_ratio(args.quality_steps)
        bf16 = "bfloat16" in precision
        print(json.dumps({"bench": f"validation_loss/gpt_mini_{args.quality_steps}_steps/"
                                   f"{precision}_fused_vs_float32_unfused",
                          "baseline": round(fp32, 4), "tflm": round(default, 4),
                          "unit": "nats", "ratio": round(default / fp32, 4),
                          "target": TARGET_BF16_LOSS if bf16 else TARGET_LOSS}), flush=True)
    else:
        print("tflm's validation loss was not checked against the plain float32 step "
              "(--quality_steps 0).")


def median_step_seconds(runs: dict, args) -> dict:
    """{name: median seconds a step} of ``runs`` ({name: ``runner``}) over ``args.reps``
    rounds of every run in turn, the order reversed every other round."""
    seconds = {name: [] for name in runs}
    for rep in range(args.reps):
        for name in runs if rep % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    return {name: statistics.median(s) for name, s in seconds.items()}


def run_electra(args) -> None:
    """ELECTRA's step time as a multiple of BERT's at the same size (no keras-hub baseline:
    keras-hub has no ELECTRA pre-training task).

    ``configs/electra_mini.py`` (bert_mini's discriminator plus a generator of 1/4 the
    width) against ``configs/bert_mini.py`` with ``pair_task="none"`` (masked LM alone,
    the same masking), each fed ``--steps`` real batches of its own objective's pipeline
    on the built-in corpus (the tokenizer and token cache are prepared first, and reused),
    timed interleaved as the other cases.
    """
    from tflm.models import get_objective
    from tflm.training import prepare

    configs = {"bert_mlm": load_config(os.path.join(CONFIGS, "bert_mini.py")),
               "electra": load_config(os.path.join(CONFIGS, "electra_mini.py"))}
    configs["bert_mlm"].model.pair_task = "none"
    runs, notes = {}, {}
    for name, config in configs.items():
        data = prepare(config)
        pipeline = get_objective(config.train.objective).resolve("pipeline")
        dataset = pipeline(caches=data.caches, tokenizer=data.tokenizer, config=config,
                           batch_size=config.train.batch_size, seed=0, split="train",
                           training=True)
        batches = list(dataset.take(4))
        strategy = tf.distribute.get_strategy()
        precision = resolve_precision(config.train, strategy)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(precision)
        try:
            keras.utils.set_random_seed(0)
            _, model = compile_training_model(config, strategy)
        finally:
            keras.config.set_dtype_policy(previous)

        run = runner(model, batches, args.steps)
        run()  # warm-up: tracing and XLA compilation
        runs[name], notes[name] = run, precision
    median = median_step_seconds(runs, args)
    print(json.dumps({"bench": "train_step_time/electra_mini_vs_bert_mini_mlm",
                      "baseline": round(median["bert_mlm"] * 1e3, 1),
                      "tflm": round(median["electra"] * 1e3, 1), "unit": "ms/step",
                      "ratio": round(median["electra"] / median["bert_mlm"], 3),
                      "target": None}), flush=True)
    print(f"\nELECTRA vs BERT on CPU ({cpu_description()}; flags {cpu_flags()}): batch "
          f"{configs['bert_mlm'].train.batch_size} x {configs['bert_mlm'].data.seq_len}, "
          f"real batches of each objective's pipeline, {args.steps} steps x {args.reps} "
          f"rounds (medians), precision {notes['electra']}: electra_mini "
          f"{median['electra'] * 1e3:.0f} ms/step, bert_mini masked LM only "
          f"{median['bert_mlm'] * 1e3:.0f} ms/step: "
          f"{median['electra'] / median['bert_mlm']:.2f}x BERT's step time.")


# gpt_parts: the block parts ``run_parts`` removes, one variant each, then all together.
PARTS = ("attention", "layer_norms", "gelu")


@contextlib.contextmanager
def without(parts):
    """tflm's blocks with ``parts`` (of ``PARTS``) replaced by pass-throughs while a model
    is traced: attention returns its values (the Q/K/V and output projections stay, and
    q and k stay in the graph), a layer norm returns its input, GELU its input. The
    matmuls, embeddings, LM head, loss and optimizer are unchanged."""
    import tflm.layers.attention as attention
    import tflm.layers.transformer as transformer

    saved = (attention.explicit_attention, transformer.gelu,
             keras.layers.LayerNormalization.call)
    if "attention" in parts:
        attention.explicit_attention = (
            lambda q, k, v, mask=None, dropout=None: v + 0 * (q + k))
    if "layer_norms" in parts:
        keras.layers.LayerNormalization.call = lambda self, x: x
    if "gelu" in parts:
        transformer.gelu = lambda x, approximate, training=None: x
    try:
        yield
    finally:
        (attention.explicit_attention, transformer.gelu,
         keras.layers.LayerNormalization.call) = saved


def run_parts(args) -> None:
    """What gpt_mini's step (at tflm's precision) would need for the gpt case's target.

    Times keras-hub's ``GPT2CausalLM`` and tflm (as the gpt case builds them: the same
    precision for both) against tflm with each of ``PARTS`` removed (``without``), then
    all three: the step that is left (matmuls, embeddings, the fused head and loss,
    optimizer) bounds what a faster attention, layer norm or GELU could give. Prints each
    variant's ms/step and its speed against keras-hub (JSON ``ratio``: keras-hub's step
    time over the variant's), and the share of the three parts' cost the target leaves.
    """
    case = CASES["gpt"]
    variants = {"keras_hub": (), "tflm": (),
                **{f"tflm_without_{part}": (part,) for part in PARTS},
                "tflm_without_all_three": PARTS}
    runs, notes = {}, {}
    for name, parts in variants.items():
        kind = "keras_hub" if name == "keras_hub" else "tflm"
        with without(parts):
            model, notes[name] = build(case, kind)
            batches = case.batches(variant_config(case, kind), 4, kind == "keras_hub")
            runs[name] = runner(model, batches, args.steps)
            runs[name]()  # warm-up: tracing (with the parts removed) and XLA compilation
            runs[name]()  # and every batch seen once more before the timed rounds
    step = median_step_seconds(runs, args)
    for name in list(variants)[1:]:
        print(json.dumps({"bench": f"train_step_time/gpt_mini_parts/{name}_vs_keras_hub",
                          "baseline": round(step["keras_hub"] * 1e3, 1),
                          "tflm": round(step[name] * 1e3, 1), "unit": "ms/step",
                          "ratio": round(step["keras_hub"] / step[name], 3),
                          "target": case.target_speed}), flush=True)
    config = variant_config(case, "tflm")
    print(f"\ngpt_mini's step with parts removed, CPU ({cpu_description()}; flags "
          f"{cpu_flags()}); tflm: {notes['tflm']}; keras-hub: {notes['keras_hub']}; batch "
          f"{config.train.batch_size} x {config.data.seq_len}, {args.steps} steps x "
          f"{args.reps} rounds (medians)")
    for name in variants:
        print(f"{name:<26}{step[name] * 1e3:>8.1f} ms/step{step['keras_hub'] / step[name]:>8.3f}x "
              "keras-hub")
    target = step["keras_hub"] / case.target_speed
    parts_cost = step["tflm"] - step["tflm_without_all_three"]
    left = target - step["tflm_without_all_three"]
    print(f"{case.target_speed}x keras-hub is a {target * 1e3:.0f} ms step; attention, layer "
          f"norms and GELU cost {parts_cost * 1e3:.0f} ms of tflm's {step['tflm'] * 1e3:.0f}: "
          f"the target leaves them {left * 1e3:.0f} ms, "
          f"{max(left, 0.0) / parts_cost:.0%} of their cost" if parts_cost > 0 else
          "removing the three parts did not shorten the step (noise: rerun with more --reps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=(*CASES, "electra", "gpt_parts", "all"),
                        default="all",
                        help="which comparison to run (all: gpt, masked_lm, electra; "
                             "gpt_parts: the gpt step with parts removed, run_parts)")
    parser.add_argument("--steps", type=int, default=3, help="train steps per timing")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--quality_steps", type=int, default=300,
                        help="gpt only: steps of the bf16-vs-float32 validation loss "
                             "check (0: skip)")
    parser.add_argument("--rss_of", choices=sorted({v for c in CASES.values() for v in c.variants}),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        peak_rss_child(CASES[args.case], args.rss_of)
        return
    for case_name in CASES if args.case == "all" else (args.case,):
        if case_name in CASES:
            run_case(case_name, args)
    if args.case in ("electra", "all"):
        run_electra(args)
    if args.case == "gpt_parts":
        run_parts(args)


if __name__ == "__main__":
    main()
