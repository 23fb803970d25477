"""Corpora larger than memory: token cache build and input pipelines at two corpus sizes.

    python benchmarks/data_scale.py --sizes_mb=100,1000

Writes a synthetic text corpus per size (Zipf-distributed made-up words, blank-line
separated documents of ~200 words, 64 MB files) in a temporary directory, then, each in
its own process so peak RSS is its own: trains a BPE tokenizer on a 20 MB sample, builds
the train split's token cache (time, MB/s of text, peak RSS; target peak RSS < 1.5 GB),
and runs the causal LM, masked LM and masked LM + NSP pipelines at batch 16 x 128
(tokens/s; peak RSS, and at the end the process' own (anonymous) memory and its mapped
file pages: none of them may grow with the corpus). Prints one JSON line per figure
(`{"bench", "baseline", "tflm", "unit", "ratio", "target"}`; the baseline is the
smallest size's figure, or --train_tokens_per_s for pipeline rates; a memory target is
the largest ratio allowed, a rate target the smallest), then a table, and deletes the
generated files.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from peak_memory import own_peak_rss_mib, status_mib  # benchmarks/ is on sys.path
from train_throughput import cpu_description

FILE_MB = 64
PIPELINES = ("causal_lm", "masked_lm", "nsp")


def write_corpus(directory: str, size_mb: int, seed: int = 0) -> None:
    """~size_mb MB of text in FILE_MB files."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(20000)]
    written, index = 0, 0
    while written < size_mb * 2**20:
        parts, size = [], 0
        while size < min(FILE_MB, size_mb) * 2**20:
            ranks = np.minimum(rng.zipf(1.3, size=int(rng.integers(50, 350))), len(words)) - 1
            document = " ".join(words[r] for r in ranks) + ".\n\n"
            parts.append(document)
            size += len(document)
        with open(os.path.join(directory, f"part-{index:04d}.txt"), "w") as f:
            f.write("".join(parts))
        written, index = written + size, index + 1


def child(args) -> dict:
    """One measured phase in this process: "build" or a pipeline name."""
    import tensorflow as tf  # noqa: F401 (imported before timing)

    from tflm.data import pipelines
    from tflm.data.corpus import load_corpus, sample_documents
    from tflm.data.token_cache import build_token_cache
    from tflm.text import load_tokenizer, train_tokenizer

    corpus = load_corpus({"corpus": args.corpus, "cache_dir": args.work})
    tok_dir = os.path.join(args.work, "tokenizer")
    if not os.path.isdir(tok_dir):
        sample = sample_documents(corpus.iter_documents("train"), 20 * 2**20)
        train_tokenizer("bpe", sample, 8192).save(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    start = time.perf_counter()
    cache = build_token_cache(corpus, "train", tokenizer, os.path.join(args.work, "tokens"))
    result = {"build_s": time.perf_counter() - start, "tokens": cache.num_tokens}
    if args.phase != "build":
        masking = pipelines.MaskingSpec(tokenizer.mask_id or 3, tokenizer.vocabulary_size,
                                        tokenizer.special_ids)
        eos = tokenizer.eos_id
        dataset = {
            "causal_lm": lambda: pipelines.causal_lm_dataset(cache, 128, 16, 0, eos_id=eos),
            "masked_lm": lambda: pipelines.masked_lm_dataset(cache, 128, 16, 0, masking,
                                                             eos, eos),
            "nsp": lambda: pipelines.sentence_pair_dataset(cache, 128, 16, 0, "nsp", eos, eos,
                                                           masking=masking),
        }[args.phase]()
        iterator = iter(dataset)
        for _ in range(20):
            next(iterator)
        rates = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(100):
                next(iterator)
            rates.append(100 * 16 * 128 / (time.perf_counter() - start))
        result["tokens_per_s"] = float(np.median(rates))
    result["peak_rss_mb"] = own_peak_rss_mib()
    result.update(rss_parts())
    return result


def rss_parts() -> dict:
    """This process' resident memory now, split (MB): ``anon_mb`` its own allocations,
    ``file_mb`` mapped file pages (libraries, the cache's memory-mapped offsets; the
    shards are read, not mapped)."""
    parts = status_mib("RssAnon", "RssFile")
    return {"anon_mb": parts["RssAnon"], "file_mb": parts["RssFile"]}


def run_child(phase: str, corpus: str, work: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--corpus", corpus, "--work", work],
        check=True, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes_mb", default="100,1000")
    parser.add_argument("--train_tokens_per_s", type=float, default=3000.0)
    parser.add_argument("--phase", default="")
    parser.add_argument("--corpus", default="")
    parser.add_argument("--work", default="")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(child(args)))
        return
    rows = []
    for size_mb in map(int, args.sizes_mb.split(",")):
        root = tempfile.mkdtemp(prefix="tflm-data-scale-")
        try:
            corpus, work = os.path.join(root, "corpus"), os.path.join(root, "work")
            os.makedirs(corpus)
            write_corpus(corpus, size_mb)
            mb = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 2**20
            build = run_child("build", corpus, work)
            row = {"size_mb": round(mb), "tokens": build["tokens"],
                   "build_s": build["build_s"], "build_mb_s": mb / build["build_s"],
                   "build_rss_mb": build["peak_rss_mb"]}
            for name in PIPELINES:
                measured = run_child(name, corpus, work)
                row[f"{name}_tokens_s"] = measured["tokens_per_s"]
                row[f"{name}_rss_mb"] = measured["peak_rss_mb"]
                row[f"{name}_anon_mb"] = measured.get("anon_mb", float("nan"))
                row[f"{name}_file_mb"] = measured.get("file_mb", float("nan"))
            rows.append(row)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    base = rows[0]
    for row in rows:
        figures = [("build_mb_s", "MB/s", None, base["build_mb_s"]),
                   ("build_rss_mb", "MB", 1536, base["build_rss_mb"])]
        for name in PIPELINES:
            figures += [(f"{name}_tokens_s", "tokens/s", 10.0, args.train_tokens_per_s),
                        (f"{name}_rss_mb", "MB", 1.05, base[f"{name}_rss_mb"]),
                        (f"{name}_anon_mb", "MB", 1.05, base[f"{name}_anon_mb"]),
                        (f"{name}_file_mb", "MB", 1.05, base[f"{name}_file_mb"])]
        for key, unit, target, baseline in figures:
            print(json.dumps({"bench": f"data_scale/{row['size_mb']}MB/{key}",
                              "baseline": round(baseline, 1), "tflm": round(row[key], 1),
                              "unit": unit, "ratio": round(row[key] / baseline, 2),
                              "target": target}))
    print(f"\nCPU: {cpu_description()}; {os.cpu_count()} cores for the cache build. "
          "Precision: not applicable (int32 token ids, no model arithmetic).")
    print("Pipeline memory: peak RSS (VmHWM), and at the end of the run the process' "
          "own (anonymous) memory and its mapped file pages. Memory ratios are against "
          "the smallest corpus: the 'does not grow with the corpus' check.")
    print(f"\n{'corpus MB':>10}{'tokens':>12}{'build s':>9}{'MB/s':>7}{'build RSS':>10}"
          + "".join(f"{name + ' tok/s':>16}{'RSS':>7}{'anon':>6}{'file':>6}"
                    for name in PIPELINES))
    for r in rows:
        print(f"{r['size_mb']:>10}{r['tokens']:>12}{r['build_s']:>9.1f}{r['build_mb_s']:>7.2f}"
              f"{r['build_rss_mb']:>10.0f}"
              + "".join(f"{r[n + '_tokens_s']:>16.0f}{r[n + '_rss_mb']:>7.0f}"
                        f"{r[n + '_anon_mb']:>6.0f}{r[n + '_file_mb']:>6.0f}"
                        for n in PIPELINES))


if __name__ == "__main__":
    main()
