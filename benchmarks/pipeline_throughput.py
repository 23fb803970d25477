"""Tokens per second each input pipeline delivers, against what training consumes.

    python benchmarks/pipeline_throughput.py --train_tokens_per_s=12000

Runs the causal LM, masked LM and NSP pipelines over ~1M synthetic tokens (Zipf-distributed
ids, log-normal document lengths; or a built token cache with --token_cache) and prints one
JSON line per pipeline, `{"bench", "baseline", "tflm", "unit", "ratio", "target"}`, where
baseline is the training consumption of gpt_mini in tokens/s (--train_tokens_per_s) and the
target ratio is 10 (the input pipeline must never be what training waits for), then a table.
Each figure is the median of --reps timed runs of --batches batches after a warm-up.
"""

import argparse
import json
import statistics
import time
import types

import numpy as np

from tflm.data import pipelines

PAD, CLS, SEP, MASK, EOS = 0, 1, 2, 3, 4
TARGET = 10.0


def synthetic_cache(num_tokens: int, vocabulary_size: int, seed: int = 0):
    """~num_tokens Zipf-distributed ids in documents of log-normal length (median ~250)."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(rng.lognormal(np.log(250), 0.8, size=num_tokens // 100), 1).astype(int)
    lengths = lengths[np.cumsum(lengths) <= num_tokens]
    ranks = rng.zipf(1.2, size=lengths.sum()) % (vocabulary_size - 5)
    ids = (ranks + 5).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


def tokens_per_second(dataset, tokens_per_batch: int, batches: int, reps: int) -> float:
    """Median tokens/s of `reps` runs of `batches` batches, after one warm-up run."""
    iterator = iter(dataset)
    rates = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        if rep:  # rep 0 is the warm-up (tracing, prefetch filling)
            rates.append(batches * tokens_per_batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--train_tokens_per_s",
        type=float,
        default=None,
        help="gpt_mini training consumption (tokens/s) measured by the trainer",
    )
    parser.add_argument("--token_cache", default="", help="a built token cache directory")
    parser.add_argument("--num_tokens", type=int, default=1_000_000)
    parser.add_argument("--vocabulary_size", type=int, default=8192)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    if args.token_cache:
        from tflm.data.token_cache import TokenCache

        cache = TokenCache(args.token_cache)
        source = args.token_cache
    else:
        cache = synthetic_cache(args.num_tokens, args.vocabulary_size)
        source = f"synthetic {len(cache.ids)} tokens"
    vocab = max(args.vocabulary_size, int(cache.ids.max()) + 1)
    seq_len, batch = args.seq_len, args.batch_size
    masking = pipelines.MaskingSpec(MASK, vocab, (PAD, CLS, SEP, EOS))
    datasets = {
        "causal_lm": pipelines.causal_lm_dataset(cache, seq_len, batch, seed=0, eos_id=EOS),
        "masked_lm": pipelines.masked_lm_dataset(
            cache, seq_len, batch, 0, masking, cls_id=CLS, sep_id=SEP
        ),
        "nsp": pipelines.sentence_pair_dataset(
            cache, seq_len, batch, 0, task="nsp", cls_id=CLS, sep_id=SEP, masking=masking
        ),
    }
    rows = []
    for name, dataset in datasets.items():
        rate = tokens_per_second(dataset, batch * seq_len, args.batches, args.reps)
        baseline = args.train_tokens_per_s
        record = {
            "bench": f"pipeline_throughput/{name}",
            "baseline": baseline,
            "tflm": round(rate, 1),
            "unit": "tokens/s",
            "ratio": round(rate / baseline, 2) if baseline else None,
            "target": TARGET,
        }
        print(json.dumps(record), flush=True)
        rows.append(record)

    print(f"\ninput pipelines, {source}, seq_len {seq_len}, batch {batch}")
    print(f"{'pipeline':<12}{'tokens/s':>12}{'train tokens/s':>16}{'ratio':>8}{'target':>8}")
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1f}"
        baseline = "n/a" if r["baseline"] is None else f"{r['baseline']:.0f}"
        name = r["bench"].split("/")[1]
        print(f"{name:<12}{r['tflm']:>12.0f}{baseline:>16}{ratio:>8}{r['target']:>8.0f}")


if __name__ == "__main__":
    main()
