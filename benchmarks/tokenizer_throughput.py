"""Byte-level BPE throughput: keras-hub's in-graph ``BytePairTokenizer`` inside ``tf.data``
(what a pipeline tokenizing on the fly runs) against ``Tokenizer.encode`` (HF tokenizers,
what ``build_token_cache`` runs), on the same text and the same vocabulary; both give the
same ids. Measures keras-team/keras-hub#2056 ("BytePairTokenizer extremely slow"), the
reason training reads a token cache.

Text: Python's own documentation (``pydoc_data.topics``) repeated to ``--megabytes``.
keras-hub caches the merges of every word it has seen, so the in-graph path is timed two
ways: on a fresh layer (cold cache: one pass over a corpus; the text repeats every
~0.5 MB, so even this pass is partly warm) and on a layer that has seen the text (warm:
its best case). Each repetition runs fresh, warm and encode, interleaved; medians after a
warm-up pass; tf.data tracing is outside the timed region. One JSON line per comparison.

    python benchmarks/tokenizer_throughput.py --megabytes=2 --reps=5
"""

import json
import pydoc_data.topics
import statistics
import time

import tensorflow as tf
from absl import app, flags

from tflm.text import train_tokenizer

FLAGS = flags.FLAGS
flags.DEFINE_float("megabytes", 2.0, "Size of the text to tokenize.")
flags.DEFINE_integer("reps", 5, "Timed repetitions per path (after one warm-up).")
flags.DEFINE_integer("batch_size", 1024, "Lines per tf.data batch / encode call.")
flags.DEFINE_integer("vocab_size", 8192, "BPE vocabulary size.")
TARGET_RATIO = 10.0  # the token cache is worth it when encode is >= 10x faster


def make_lines(megabytes: float) -> list[str]:
    """Non-empty lines of the stdlib topic docs, repeated to ``megabytes`` of UTF-8."""
    docs = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    base = [line for doc in docs for line in doc.splitlines() if line.strip()]
    lines, size = [], 0
    while size < megabytes * 1e6:
        for line in base:
            lines.append(line)
            size += len(line.encode("utf-8")) + 1
            if size >= megabytes * 1e6:
                break
    return lines


def in_graph(tokenizer, lines, batch_size) -> tuple[float, int]:
    """Seconds and tokens for tf.data batches mapped through ``tokenizer.tokenize``."""
    ds = tf.data.Dataset.from_tensor_slices(lines).batch(batch_size)
    ds = ds.map(lambda x: tokenizer.tokenize(x).row_lengths())
    start = time.perf_counter()
    tokens = sum(int(tf.reduce_sum(n)) for n in ds)
    return time.perf_counter() - start, tokens


def fast(tokenizer, lines, batch_size) -> tuple[float, int]:
    """Seconds and tokens for ``tokenizer.encode`` in batches, as the token cache does."""
    start = time.perf_counter()
    tokens = sum(
        len(ids)
        for i in range(0, len(lines), batch_size)
        for ids in tokenizer.encode(lines[i : i + batch_size])
    )
    return time.perf_counter() - start, tokens


def main(argv):
    del argv
    lines = make_lines(FLAGS.megabytes)
    megabytes = sum(len(line.encode("utf-8")) + 1 for line in lines) / 1e6
    tokenizer = train_tokenizer("bpe", lines, FLAGS.vocab_size)
    _, n_graph = in_graph(tokenizer, lines, FLAGS.batch_size)  # warm-up, fills its cache
    _, n_fast = fast(tokenizer, lines, FLAGS.batch_size)
    if n_graph != n_fast:
        raise SystemExit(f"token counts differ: in-graph {n_graph}, encode {n_fast}")
    times = {"fresh": [], "warm": [], "encode": []}
    for _ in range(FLAGS.reps):
        fresh = type(tokenizer)(tokenizer.assets, tokenizer.options)  # new layer and cache
        times["fresh"].append(in_graph(fresh, lines, FLAGS.batch_size)[0])
        times["warm"].append(in_graph(tokenizer, lines, FLAGS.batch_size)[0])
        times["encode"].append(fast(tokenizer, lines, FLAGS.batch_size)[0])
    rate = {k: n_fast / statistics.median(v) for k, v in times.items()}
    for baseline in ("fresh", "warm"):
        line = {
            "bench": f"bpe_tokens_per_s_in_graph_{baseline}_vs_encode",
            "baseline": round(rate[baseline]),
            "tflm": round(rate["encode"]),
            "unit": "tokens/s",
            "ratio": round(rate["encode"] / rate[baseline], 2),
            "target": TARGET_RATIO,
        }
        print(json.dumps(line))
    names = {
        "fresh": "keras-hub BytePairTokenizer in tf.data, fresh",
        "warm": "keras-hub BytePairTokenizer in tf.data, warm",
        "encode": "tflm Tokenizer.encode (HF tokenizers)",
    }
    rows = [(names[k], statistics.median(times[k]), rate[k]) for k in times]
    print(f"\n{megabytes:.2f} MB, {len(lines)} lines, {n_fast} tokens, vocab {FLAGS.vocab_size}")
    print(f"{'path':<48}{'seconds':>10}{'tokens/s':>14}")
    for name, seconds, rate in rows:
        print(f"{name:<48}{seconds:>10.2f}{rate:>14,.0f}")


if __name__ == "__main__":
    app.run(main)
