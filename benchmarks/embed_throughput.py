"""Sentence-embedding throughput: ``tflm embed`` against keras-hub's BertBackbone.

    python benchmarks/embed_throughput.py [--sentences 2000] [--batch 64] [--reps 7]

Both models have the bert_mini shape (``configs/bert_mini.py``: post-LN BERT, vocab 8192,
4 layers, d 256, 4 heads, FFN 1024, 128 positions, 2 segments) with random weights, in
float32 (``tflm embed`` loads model directories in float32; keras-hub runs float32 too),
XLA for both. The sentences: ``--sentences`` sentences of 5-60 words cut from the built-in
corpus (pydoc topics + stdlib docstrings: mixed lengths, as real files are), tokenized by
one WordPiece tokenizer of 8192 ids trained on the same corpus.

- tflm: ``SentenceEncoder.embed(sentences, batch_size)``, what ``tflm embed`` runs on a
  file after loading the model directory: tokenize (``tokenizer.encode``), sort by length
  (longest first), pad each batch to its bucket (8, 16, 32, 64, 128; ``batch_plan``:
  buckets over 32 tokens hold proportionally fewer rows), one XLA function per bucket
  (encoder + mean pooling + L2 normalisation).
- keras-hub: the same ``tokenizer.encode`` ids laid out ``[CLS] ids [SEP]`` padded to 128
  (its BertTextClassifierPreprocessor's layout), batches of ``--batch`` in file order, a
  ``tf.function(jit_compile=True)`` of ``BertBackbone`` + mean pooling over real tokens +
  L2 normalisation (keras-hub's best setting: Keras' ``auto`` would not use XLA).

After one warm-up pass each (every XLA compilation; its time is reported as the first
pass), ``--reps`` passes over all sentences alternate between the two (order reversed
every other round); sentences/s are medians. Peak RSS (``VmHWM``, see ``peak_memory.py``)
is measured in a
fresh subprocess per side: tflm runs ``tflm.generation.embedding.embed_file`` (the whole
``tflm embed``: read the file, load the model directory, embed, write the .npy),
keras-hub builds its backbone and embeds the same file. Prints one JSON line per result,
``{"bench", "baseline", "tflm", "unit", "ratio", "target"}``, then a table. Timings on a
shared machine are noisy: compare the ratio, not the absolute figures.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import logging
from peak_memory import own_peak_rss_mib  # benchmarks/ is on sys.path
from train_throughput import cpu_description, cpu_flags

from tflm.config import load_config
from tflm.data.builtin import builtin_documents
from tflm.generation.embedding import SentenceEncoder, batch_plan, embed_file, read_sentences
from tflm.model_dir import build_model, save_model_dir
from tflm.text import load_tokenizer, train_tokenizer

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "bert_mini.py")
TARGET = 1.5


def corpus_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences of 5-60 words from the built-in corpus, in shuffled order."""
    sentences = []
    for document in builtin_documents(None):
        for piece in re.split(r"(?<=[.!?])\s+|\n\s*\n", document):
            text = " ".join(piece.split())
            if 5 <= len(text.split()) <= 60:
                sentences.append(text)
    order = np.random.default_rng(seed).permutation(len(sentences))[:count]
    return [sentences[i] for i in order]


def prepare(root: str, count: int) -> tuple[str, str]:
    """Writes ``root/sentences.txt`` and a bert_mini model directory ``root/model`` (random
    weights, a WordPiece tokenizer of 8192 ids trained on the built-in corpus)."""
    config = load_config(CONFIG)
    documents = builtin_documents(None)
    tokenizer = train_tokenizer("wordpiece", documents, config.model.backbone.vocabulary_size,
                                lowercase=True)
    config.unlock()
    config.model.backbone.vocabulary_size = tokenizer.vocabulary_size
    keras.utils.set_random_seed(0)
    model_dir = save_model_dir(os.path.join(root, "model"), build_model(config), tokenizer,
                               config)
    path = os.path.join(root, "sentences.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(corpus_sentences(count)) + "\n")
    return model_dir, path


def tflm_runner(model_dir: str, sentences: list[str], batch: int):
    """``SentenceEncoder.embed`` of the model directory (what ``tflm embed`` runs)."""
    encoder = SentenceEncoder.from_model_dir(model_dir)
    return lambda: encoder.embed(sentences, batch_size=batch), encoder


def keras_hub_runner(model_dir: str, sentences: list[str], batch: int):
    """keras-hub's BertBackbone of the same shape on the same ids padded to 128."""
    config = load_config(CONFIG)
    m = config.model.backbone
    tokenizer = load_tokenizer(os.path.join(model_dir, "tokenizer"))
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=m.num_layers,
        num_heads=m.num_heads, hidden_dim=m.hidden_dim, intermediate_dim=m.intermediate_dim,
        dropout=0.0, max_sequence_length=m.max_sequence_length, num_segments=m.num_segments)
    window = m.max_sequence_length

    @tf.function(jit_compile=True)
    def embed(token_ids, padding_mask):
        out = backbone({"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids),
                        "padding_mask": padding_mask}, training=False)
        mask = tf.cast(padding_mask, tf.float32)[:, :, None]  # (B, T, 1)
        pooled = tf.reduce_sum(out["sequence_output"] * mask, 1) / tf.maximum(
            tf.reduce_sum(mask, 1), 1.0)  # (B, H)
        return tf.math.l2_normalize(pooled, axis=-1)

    def run():
        ids = tokenizer.encode(sentences)
        tokens = np.zeros((len(ids), window), np.int32)  # (N, 128), pad id 0
        mask = np.zeros((len(ids), window), np.int32)
        for row, seq in enumerate(ids):
            seq = [tokenizer.cls_id, *seq[:window - 2], tokenizer.sep_id]
            tokens[row, :len(seq)], mask[row, :len(seq)] = seq, 1
        return np.concatenate([embed(tokens[i:i + batch], mask[i:i + batch]).numpy()
                               for i in range(0, len(ids), batch)])

    return run


def peak_rss_child(side: str, model_dir: str, path: str, batch: int) -> None:
    """In a fresh process: one whole embedding of the file; prints the peak RSS in MiB."""
    if side == "tflm":
        with tempfile.TemporaryDirectory() as tmp:
            embed_file(model_dir, path, os.path.join(tmp, "out.npy"), batch_size=batch)
    else:
        sentences, _ = read_sentences(path)
        keras_hub_runner(model_dir, sentences, batch)()
    print(json.dumps(own_peak_rss_mib()))


def peak_rss_mib(model_dir: str, path: str, batch: int) -> dict:
    """{side: peak RSS MiB}, each from its own subprocess, one after the other."""
    out = {}
    for side in ("keras_hub", "tflm"):
        proc = subprocess.run([sys.executable, __file__, "--rss_of", side, "--model_dir",
                               model_dir, "--input", path, "--batch", str(batch)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"the peak RSS subprocess of {side} failed: "
                               f"{proc.stderr[-2000:]}")
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def padded_slots(lengths: np.ndarray, batch: int, window: int) -> dict:
    """Token slots each side computes for sequences of ``lengths``: tflm's batches of
    ``batch_plan`` (what ``SentenceEncoder.embed`` runs), keras-hub's every row at 128."""
    tflm = sum(rows * length for _, rows, length in batch_plan(lengths.tolist(), batch, window))
    return {"tflm": tflm, "keras_hub": len(lengths) * window}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7, help="timed passes each (medians)")
    parser.add_argument("--rss_of", choices=("tflm", "keras_hub"), help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        peak_rss_child(args.rss_of, args.model_dir, args.input, args.batch)
        return
    with tempfile.TemporaryDirectory(prefix="tflm_embed_bench_") as root:
        model_dir, path = prepare(root, args.sentences)
        sentences, _ = read_sentences(path)
        rss = peak_rss_mib(model_dir, path, args.batch)
        tflm_run, encoder = tflm_runner(model_dir, sentences, args.batch)
        runs = {"keras_hub": keras_hub_runner(model_dir, sentences, args.batch),
                "tflm": tflm_run}
        first = {name: timed(run) for name, run in runs.items()}  # warm-up: XLA compiles
        logging.set_verbosity(logging.ERROR)  # the cut-texts warning was shown once
        seconds = {name: [] for name in runs}
        for rep in range(args.reps):
            for name in list(runs) if rep % 2 == 0 else list(runs)[::-1]:
                seconds[name].append(timed(runs[name]))
        lengths = np.asarray([len(ids) for ids in encoder.token_ids(sentences)])

    speed = {name: len(sentences) / statistics.median(s) for name, s in seconds.items()}
    precision = "float32 (both)"
    rows = [
        {"bench": f"embed_sentences_per_s/bert_mini/batch{args.batch}",
         "baseline": round(speed["keras_hub"], 1), "tflm": round(speed["tflm"], 1),
         "unit": "sentences/s", "ratio": round(speed["tflm"] / speed["keras_hub"], 3),
         "target": TARGET, "precision": precision, "sentences": len(sentences)},
        {"bench": "embed_first_pass_s/bert_mini", "baseline": round(first["keras_hub"], 2),
         "tflm": round(first["tflm"], 2), "unit": "s (incl. XLA compilation)",
         "ratio": round(first["keras_hub"] / first["tflm"], 3), "target": None},
        {"bench": "embed_peak_rss/bert_mini", "baseline": round(rss["keras_hub"], 1),
         "tflm": round(rss["tflm"], 1), "unit": "MiB",
         "ratio": round(rss["keras_hub"] / rss["tflm"], 3), "target": None},
    ]
    for row in rows:
        print(json.dumps(row), flush=True)

    buckets = [8, 16, 32, 64, 128]
    counts = np.histogram(lengths, bins=[0, *buckets])[0]
    slots = padded_slots(lengths, args.batch, buckets[-1])
    print(f"\nEmbedding {len(sentences)} built-in-corpus sentences (5-60 words; "
          f"{lengths.mean():.1f} tokens on average with [CLS]/[SEP], median "
          f"{np.median(lengths):.0f}, max {lengths.max()}; up to 8/16/32/64/128 tokens: "
          f"{'/'.join(map(str, counts))}), batch {args.batch}, {args.reps} passes each "
          "(medians), interleaved. Token slots computed per real token: tflm "
          f"{slots['tflm'] / lengths.sum():.2f}, keras-hub "
          f"{slots['keras_hub'] / lengths.sum():.2f}.")
    print(f"CPU: {cpu_description()}; flags: {cpu_flags()}. Precision: {precision} "
          "(tflm embed loads model directories in float32; keras-hub float32), XLA both.")
    print("tflm: tokenize + sort by length + bucket padding + compiled encoder + mean "
          "pooling + L2 normalise (SentenceEncoder.embed, what `tflm embed` runs).")
    print("keras-hub: tokenize with the same tokenizer + pad to 128 + jit-compiled "
          "BertBackbone + mean pooling + L2 normalise.")
    print("Peak RSS: a whole `tflm embed` of the file (embed_file) vs keras-hub building "
          "and embedding the same file, each in a fresh process. Shared machine: timings "
          "are noisy.")
    print(f"\n{'side':<11}{'sentences/s':>13}{'s/pass':>9}{'first pass s':>14}"
          f"{'peak RSS':>11}")
    for name in ("keras_hub", "tflm"):
        print(f"{name:<11}{speed[name]:>13.0f}{statistics.median(seconds[name]):>9.2f}"
              f"{first[name]:>14.1f}{rss[name]:>8.0f} MiB")


if __name__ == "__main__":
    main()
