"""Import time and peak memory of ``tflm import`` on a BERT-base-shaped checkpoint.

    python benchmarks/import_memory.py [--reps 5] [--dtype F32|BF16]

The benchmark writes a random BertForPreTraining checkpoint of bert-base-uncased's shape
itself (vocab 30522, 12 layers, d 768, 12 heads, FFN 3072, 512 positions, 2 token types,
MLM + NSP heads and pooler: 110M parameters, 438 MB as float32) in the Hugging Face
layout (config.json, model.safetensors, vocab.txt + tokenizer_config.json), then imports
it ``--reps`` times, each in a fresh subprocess (``tflm.convert.import_hf``, what ``tflm
import`` runs), and deletes everything.

Peak RSS is the child's own high-water mark (``VmHWM``, see ``peak_memory.py``). It
includes the TensorFlow / Keras / keras-hub
runtime the child has loaded before reading a byte of the checkpoint (measured as the
RSS after those imports), so two ratios are reported against the checkpoint's size:
the whole process' peak (``import_peak_rss``) and what the import itself adds on top
of the runtime (``import_rss_growth``, the target: <= 2.5x, i.e. the float32 model plus
one tensor in flight, no second copy of the checkpoint and no float64). Import time is
the median over the runs. Prints one JSON line per result, ``{"bench", "baseline",
"tflm", "unit", "ratio", "target"}``, then a table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from peak_memory import own_peak_rss_mib  # benchmarks/ is on sys.path
from train_throughput import cpu_description

SHAPE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
         "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
         "type_vocab_size": 2}
TARGET = 2.5


def write_checkpoint(directory: str, dtype: str) -> int:
    """A random bert-base-shaped BertForPreTraining directory; returns the weights' bytes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    h, inner, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    shapes = {"bert.embeddings.word_embeddings.weight": (v, h),
              "bert.embeddings.position_embeddings.weight": (SHAPE["max_position_embeddings"], h),
              "bert.embeddings.token_type_embeddings.weight": (2, h),
              "bert.embeddings.LayerNorm.weight": (h,), "bert.embeddings.LayerNorm.bias": (h,)}
    for i in range(SHAPE["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}"
        for name, out, inp in (("attention.self.query", h, h), ("attention.self.key", h, h),
                               ("attention.self.value", h, h),
                               ("attention.output.dense", h, h),
                               ("intermediate.dense", inner, h), ("output.dense", h, inner)):
            shapes[f"{p}.{name}.weight"], shapes[f"{p}.{name}.bias"] = (out, inp), (out,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}.{name}.weight"] = shapes[f"{p}.{name}.bias"] = (h,)
    shapes.update({"bert.pooler.dense.weight": (h, h), "bert.pooler.dense.bias": (h,),
                   "cls.predictions.transform.dense.weight": (h, h),
                   "cls.predictions.transform.dense.bias": (h,),
                   "cls.predictions.transform.LayerNorm.weight": (h,),
                   "cls.predictions.transform.LayerNorm.bias": (h,),
                   "cls.predictions.bias": (v,), "cls.seq_relationship.weight": (2, h),
                   "cls.seq_relationship.bias": (2,)})
    tensors = {name: (rng.standard_normal(shape, np.float32) * 0.02) for name, shape in
               shapes.items()}
    path = os.path.join(directory, "model.safetensors")
    if dtype == "BF16":
        _save_bf16(path, tensors)
    else:
        save_file(tensors, path, metadata={"format": "pt"})
    del tensors
    config = {"architectures": ["BertForPreTraining"], "model_type": "bert",
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "pad_token_id": 0,
              "position_embedding_type": "absolute", **SHAPE}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]",
                "[MASK]"]
    vocab = specials + [f"tok{i}" for i in range(v - len(specials))]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("".join(t + "\n" for t in vocab))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
    return sum(int(np.prod(s)) for s in shapes.values()) * (2 if dtype == "BF16" else 4)


def _save_bf16(path: str, tensors: dict) -> None:
    """safetensors with BF16 data (numpy has no bfloat16: the upper halves)."""
    import struct

    header, offset = {}, 0
    for name, value in tensors.items():
        nbytes = value.size * 2
        header[name] = {"dtype": "BF16", "shape": list(value.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for value in tensors.values():
            f.write((value.view(np.uint32) >> 16).astype("<u2").tobytes())


def child(source: str, out: str) -> None:
    """In a fresh process: import the runtime, then the checkpoint; prints the numbers."""
    import psutil

    import tflm.convert  # noqa: F401  (TensorFlow, Keras, keras-hub, tflm)
    import tflm.model_dir  # noqa: F401

    runtime = psutil.Process().memory_info().rss
    start = time.perf_counter()
    report = tflm.convert.import_hf(source, out)
    seconds = time.perf_counter() - start
    print(json.dumps({"runtime_rss": runtime,
                      "peak_rss": own_peak_rss_mib() * 2**20,
                      "seconds": seconds, "parameters": report["parameters"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="imports (fresh processes)")
    parser.add_argument("--dtype", choices=("F32", "BF16"), default="F32",
                        help="how the checkpoint stores its weights")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="tflm_import_bench_") as root:
        source = os.path.join(root, "hf")
        os.makedirs(source)
        size = write_checkpoint(source, args.dtype)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        for rep in range(args.reps):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", source, os.path.join(root, "out")],
                capture_output=True, text=True, env=env)
            if proc.returncode:
                raise RuntimeError(f"import run {rep} failed: {proc.stderr[-3000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    mib = 2 ** 20
    peak = statistics.median(r["peak_rss"] for r in runs)
    runtime = statistics.median(r["runtime_rss"] for r in runs)
    growth = statistics.median(r["peak_rss"] - r["runtime_rss"] for r in runs)
    seconds = statistics.median(r["seconds"] for r in runs)
    name = f"bert_base_{args.dtype.lower()}"
    rows = [
        {"bench": f"import_rss_growth/{name}", "baseline": round(size / mib, 1),
         "tflm": round(growth / mib, 1), "unit": "MiB (peak RSS - RSS after imports) vs "
         "checkpoint", "ratio": round(growth / size, 3), "target": TARGET},
        {"bench": f"import_peak_rss/{name}", "baseline": round(size / mib, 1),
         "tflm": round(peak / mib, 1), "unit": "MiB (whole process) vs checkpoint",
         "ratio": round(peak / size, 3), "target": None},
        {"bench": f"import_seconds/{name}", "baseline": None, "tflm": round(seconds, 2),
         "unit": "s", "ratio": None, "target": None},
    ]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(f"\nCPU: {cpu_description()}. Precision: the weights are imported as float32 "
          "(no model arithmetic is timed).")
    print(f"\n{runs[0]['parameters'] / 1e6:.1f}M parameters, checkpoint "
          f"{size / mib:.0f} MiB ({args.dtype}); {len(runs)} imports in fresh processes "
          "(medians).")
    print(f"{'runtime RSS (TF + Keras + keras-hub + tflm)':<46}{runtime / mib:>9.0f} MiB")
    print(f"{'peak RSS':<46}{peak / mib:>9.0f} MiB  ({peak / size:.2f}x checkpoint)")
    print(f"{'added by the import':<46}{growth / mib:>9.0f} MiB  ({growth / size:.2f}x "
          f"checkpoint, target <= {TARGET}x)")
    print(f"{'import time':<46}{seconds:>9.1f} s")


if __name__ == "__main__":
    main()
