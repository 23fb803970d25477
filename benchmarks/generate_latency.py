"""Generation speed: tflm's compiled KV-cache loop vs keras_hub.models.GPT2CausalLM.

Both models have the gpt_mini shape (vocab 8192, 4 layers, hidden 256, 4 heads, FFN 1024,
128 positions) and random weights. A 16-token prompt, 64 new tokens, greedy, no stop
token, so both produce exactly 64 tokens. keras-hub runs `generate` compiled with XLA
(`compile(sampler="greedy")`, jit_compile=True), tflm runs `generate_ids` (prefill + one
XLA while loop). Timings are interleaved in one process, medians of --reps runs after a
warm-up. Reported:

- new tokens/s at batch 1 and batch 8 (targets: tflm >= 3x and >= 2x keras-hub);
- the matmul floor at batch 1 and 8: an XLA while loop of only the model's matrix
  products (the same float32 weights: per layer hidden x 3*hidden, hidden x hidden,
  hidden x FFN, FFN x hidden, then the tied (vocab, hidden) table), no norms, attention
  or sampling; its tokens/s over keras-hub's bounds what any float32 XLA decoder of this
  shape can reach here, and tflm's share of it (target >= 0.9);
- the attention floors: the same loop plus each layer's KV-cache write and single-query
  attention, over the request's 80 slots (`matmul_floor_runner(attention="cache")`, what
  one compiled loop does) or over only the slots written so far (`attention="written"`,
  a loop per 8 steps), as shares of the matmul floor: what a decoder that reads its
  cache can reach at best;
- tflm's decode step against the matmul floor's step: (request - a 1-new-token request
  of the same batch) / 63, i.e. without the prompt's prefill and the call's overhead;
- first-token latency (a 1-new-token request, batch 1, milliseconds);
- peak memory at batch 8: the RSS high-water mark above the RSS before the call (MiB,
  sampled every millisecond by a thread), measured in a fresh subprocess per library so
  neither inherits the other's allocator pages: of the first call (trace + XLA compile +
  run) and of a warm call (the run alone: buffers, KV cache).

The CPU (model, the flags that decide the precision path) and the precision are printed
with the table: float32 and XLA for all of them.

One JSON line per measurement, {"bench", "baseline", "tflm", "unit", "ratio", "target"}
(ratio = tflm / baseline for throughput, baseline / tflm for latency and memory, so
above 1 is better), then a table.

    python benchmarks/generate_latency.py [--reps 7]
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import keras
import keras_hub
import numpy as np
from train_throughput import cpu_description, cpu_flags

from tflm.generation.decoder import Decoder
from tflm.models import GPT

SHAPE = {"vocabulary_size": 8192, "num_layers": 4, "hidden_dim": 256, "num_heads": 4,
         "intermediate_dim": 1024, "max_sequence_length": 128}
PROMPT, NEW = 16, 64
WINDOW_STEP = 8  # steps per loop of the written-slots attention floor


def tflm_runner(batch, new_tokens):
    """A callable generating `new_tokens` greedy tokens for `batch` prompts with tflm."""
    keras.utils.set_random_seed(0)
    model = GPT(backbone=SHAPE)
    decoder = Decoder(model)
    prompts = np.random.default_rng(1).integers(2, SHAPE["vocabulary_size"], (batch, PROMPT))

    def run():
        return decoder.generate(prompts.tolist(), max_new_tokens=new_tokens)

    return run


def keras_hub_runner(batch, new_tokens):
    """The same request to keras_hub's GPT2CausalLM (XLA-compiled generate)."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=SHAPE["vocabulary_size"], num_layers=SHAPE["num_layers"],
        num_heads=SHAPE["num_heads"], hidden_dim=SHAPE["hidden_dim"],
        intermediate_dim=SHAPE["intermediate_dim"],
        max_sequence_length=SHAPE["max_sequence_length"],
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    # jit_compile=True explicitly: Keras' default "auto" resolves to False here, and the
    # TF generate then runs as a graph (about half the tokens/s).
    lm.compile(sampler="greedy", jit_compile=True)
    prompts = np.random.default_rng(1).integers(2, SHAPE["vocabulary_size"], (batch, PROMPT))
    token_ids = np.zeros((batch, PROMPT + new_tokens), "int32")
    token_ids[:, :PROMPT] = prompts
    padding_mask = np.zeros_like(token_ids, dtype=bool)
    padding_mask[:, :PROMPT] = True
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}

    def run():
        return lm.generate(inputs, stop_token_ids=None)

    return run


def matmul_floor_runner(batch, new_tokens, attention=None):
    """`new_tokens` decode steps of only the gpt_mini-shaped float32 matmuls (XLA loop).

    With `attention` ("cache" or "written"), each layer also writes its step's keys and
    values into a KV cache of PROMPT + new_tokens slots and attends over them: the work
    any KV-cache decoder does besides its matmuls, and nothing else (no norms, biases,
    masks of padding, sampling).
    The cache is laid out (B, layers, 2, H, S, D) and attention is a multiply-and-reduce
    with a plain softmax over the written slots: of the four forms measured for one query
    at batch 8 over 80 slots ((B, S, H, D) or (B, H, S, D) cache, batched dot or
    multiply-and-reduce), the fastest (70 us per layer and step against 83-154).
    "cache" attends over all PROMPT + new_tokens slots (masking the unwritten ones, as a
    loop with one compiled body must), "written" runs one loop per WINDOW_STEP steps,
    each over only the slots written by its last step.
    """
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    rng = np.random.default_rng(0)
    hidden, ffn = SHAPE["hidden_dim"], SHAPE["intermediate_dim"]
    heads, slots = SHAPE["num_heads"], PROMPT + new_tokens
    dim = hidden // heads

    def weight(*shape):
        return tf.constant(rng.normal(0, 0.02, shape).astype("float32"))

    layers = [(weight(hidden, 3 * hidden), weight(hidden, hidden), weight(hidden, ffn),
               weight(ffn, hidden)) for _ in range(SHAPE["num_layers"])]
    table = weight(SHAPE["vocabulary_size"], hidden)

    def attend(layer, qkv, cache, slot, window):
        """(B, hidden) attention output over the slots <= `slot` among the first
        `window`, and the cache."""
        q, k, v = tf.unstack(tf.reshape(qkv, (batch, 3, heads, 1, dim)), axis=1)
        new = tf.stack([k, v], 1)[:, None]  # (B, 1, 2, H, 1, D)
        cache = xla.dynamic_update_slice(cache, new, tf.stack([0, layer, 0, 0, slot, 0]))
        keys, values = cache[:, layer, 0, :, :window], cache[:, layer, 1, :, :window]
        scores = tf.reduce_sum(q * keys, -1) / dim ** 0.5  # (B, H, window)
        scores = tf.where(tf.range(window) <= slot, scores, -1e30)
        probs = tf.nn.softmax(scores, axis=-1)
        return tf.reshape(tf.reduce_sum(probs[..., None] * values, 2), (batch, hidden)), cache

    def step(window, i, x, cache, out):
        for layer, (qkv, proj, up, down) in enumerate(layers):
            h = x @ qkv
            if attention:
                h, cache = attend(layer, h, cache, PROMPT + i, window)
            else:
                h = h[:, :hidden]
            x = x + h @ proj
            x = x + tf.nn.relu(x @ up) @ down
        logits = tf.matmul(x, table, transpose_b=True)  # (B, V), as the tied LM head
        return i + 1, x, cache, out + tf.reduce_max(logits)

    # Steps [start, end) of each loop attend over the first PROMPT + end slots.
    ends = [new_tokens]
    if attention == "written":
        ends = [*range(WINDOW_STEP, new_tokens, WINDOW_STEP), new_tokens]

    def loops(x, cache):
        state = (0, x, cache, tf.zeros(()))
        for end in ends:
            state = tf.while_loop(lambda i, x, cache, out, end=end: i < end,
                                  functools.partial(step, PROMPT + end), state)
        return state[-1]

    cache_shape = (batch, SHAPE["num_layers"], 2, heads, slots, dim) if attention else ()
    loop = tf.function(loops, jit_compile=True)
    x, cache = tf.ones((batch, hidden)), tf.zeros(cache_shape)
    return lambda: loop(x, cache).numpy()


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_delta(fn):
    """MiB above the RSS before `fn()`, at the highest RSS sampled while it runs."""
    before, peak, running = _rss_mib(), [0.0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    fn()
    running[0] = False
    thread.join()
    return max(peak[0], _rss_mib()) - before


def memory_in_subprocess(name):
    """(first-call, warm-call) peak RSS deltas in MiB of `name`'s batch-8 generate."""
    result = subprocess.run(
        [sys.executable, __file__, "--memory", name], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(runners, reps):
    """{name: median seconds} over `reps` rounds (one warm-up round first)."""
    for fn in runners.values():
        fn()
    times = {name: [] for name in runners}
    for _ in range(reps):
        for name, fn in runners.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--memory", choices=("tflm", "keras_hub"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:  # child process of memory_in_subprocess
        run = {"tflm": tflm_runner, "keras_hub": keras_hub_runner}[args.memory](8, NEW)
        print(json.dumps([peak_rss_delta(run), peak_rss_delta(run)]))
        return
    rows = []

    def report(bench, baseline, tflm, unit, ratio, target):
        row = {"bench": bench, "baseline": round(baseline, 2), "tflm": round(tflm, 2),
               "unit": unit, "ratio": round(ratio, 2), "target": target}
        print(json.dumps(row), flush=True)
        rows.append(row)

    for batch, target in ((1, 3.0), (8, 2.0)):
        runners = {"keras_hub": keras_hub_runner(batch, NEW), "tflm": tflm_runner(batch, NEW),
                   "tflm_prompt": tflm_runner(batch, 1),
                   "floor": matmul_floor_runner(batch, NEW),
                   "attention_floor": matmul_floor_runner(batch, NEW, attention="cache"),
                   "written_floor": matmul_floor_runner(batch, NEW, attention="written")}
        med = interleaved(runners, args.reps)
        hub, ours, floor, attention, written = (batch * NEW / med[name] for name in (
            "keras_hub", "tflm", "floor", "attention_floor", "written_floor"))
        report(f"generate_tokens_per_s_batch{batch}", hub, ours, "new tokens/s", ours / hub,
               target)
        report(f"matmul_floor_tokens_per_s_batch{batch}", hub, floor, "new tokens/s",
               floor / hub, None)
        report(f"tflm_share_of_matmul_floor_batch{batch}", floor, ours, "new tokens/s",
               ours / floor, 0.9)
        report(f"attention_floor_share_of_matmul_floor_batch{batch}", floor, attention,
               "new tokens/s", attention / floor, None)
        report(f"written_slots_attention_floor_share_of_matmul_floor_batch{batch}", floor,
               written, "new tokens/s", written / floor, None)
        # The decode loop alone: the request minus a 1-new-token request (prompt, first
        # token, call overhead), over the other NEW - 1 steps.
        step = (med["tflm"] - med["tflm_prompt"]) / (NEW - 1)
        report(f"tflm_decode_step_share_of_matmul_floor_batch{batch}", med["floor"] / NEW * 1e3,
               step * 1e3, "ms/step", med["floor"] / NEW / step, None)
    memory = {name: memory_in_subprocess(name) for name in ("keras_hub", "tflm")}
    for i, when in enumerate(("first_call", "warm")):
        hub, ours = memory["keras_hub"][i], memory["tflm"][i]
        report(f"peak_rss_delta_batch8_{when}", hub, ours, "MiB", hub / max(ours, 0.01), None)
    runners = {"keras_hub": keras_hub_runner(1, 1), "tflm": tflm_runner(1, 1)}
    med = interleaved(runners, args.reps)
    report("first_token_latency_batch1", med["keras_hub"] * 1e3, med["tflm"] * 1e3, "ms",
           med["keras_hub"] / med["tflm"], None)

    print(f"\nCPU: {cpu_description()}; flags: {cpu_flags()}. Precision: float32 for tflm, "
          "keras-hub and the floors, all XLA-compiled.")
    print(f"\n{'bench':50} {'keras_hub':>10} {'tflm':>10} {'unit':>13} {'ratio':>6} target")
    for r in rows:
        print(f"{r['bench']:50} {r['baseline']:>10} {r['tflm']:>10} {r['unit']:>13} "
              f"{r['ratio']:>6} {r['target'] if r['target'] is not None else '-'}")


if __name__ == "__main__":
    main()
