"""Sharded token cache: many tiny shards, worker processes and killed builds all give the
ids (and pipeline batches) of building in one piece."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import types

import numpy as np
import pytest

from tests.data import test_recorded_batches as recorded
from tflm.data import token_cache
from tflm.data.token_cache import TMP_PREFIX, ShardedIds, build_token_cache, cache_path
from tflm.errors import DataError
from tflm.text import train_tokenizer

DOCS = [f"Document {i}: " + "word " * (i % 23) + ("" if i % 7 else "Ünïcödé 🎉") for i in range(90)]
DOCS[5] = DOCS[40] = ""


class Corpus:
    def __init__(self, docs, fingerprint="c1"):
        self.docs, self.fingerprint = docs, fingerprint

    def iter_documents(self, split):
        return iter(self.docs)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("bpe", DOCS * 3, 300)


def test_tiny_shards_hold_the_ids_of_one_shard(tokenizer, tmp_path):
    one = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path / "one"))
    many = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path / "many"),
                             shard_tokens=7, chunk_documents=4, workers=1)
    assert isinstance(one.ids, ShardedIds) and len(one.meta["shards"]) == 1
    assert isinstance(many.ids, ShardedIds) and len(many.meta["shards"]) > 20
    assert all(s["num_tokens"] == 7 for s in many.meta["shards"][:-1])
    np.testing.assert_array_equal(np.asarray(many.ids), one.ids)
    np.testing.assert_array_equal(many.offsets, one.offsets)
    for i in range(len(DOCS)):
        np.testing.assert_array_equal(many.document(i), one.document(i))
    positions = np.random.default_rng(0).integers(0, one.num_tokens, (5, 9))
    np.testing.assert_array_equal(many.ids[positions], one.ids[positions])
    assert many.ids[3] == one.ids[3] and many.ids[-1] == one.ids[-1]


def test_every_pipeline_reads_many_shards_exactly():
    cache = recorded.make_cache()
    cuts = list(range(0, len(cache.ids), 5)) + [len(cache.ids)]
    sharded = types.SimpleNamespace(
        ids=ShardedIds([cache.ids[a:b] for a, b in zip(cuts[:-1], cuts[1:])]),
        offsets=cache.offsets)
    expected = dict(np.load(recorded.FIXTURE))
    got = recorded.record(sharded)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_worker_processes_give_the_in_process_ids(tokenizer, tmp_path):
    alone = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path / "a"), workers=1)
    pooled = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path / "b"),
                               workers=2, chunk_documents=8, shard_tokens=50)
    np.testing.assert_array_equal(np.asarray(pooled.ids), alone.ids)
    np.testing.assert_array_equal(pooled.offsets, alone.offsets)


def test_a_killed_build_is_never_taken_for_a_cache(tokenizer, tmp_path):
    tok_dir = str(tmp_path / "tokenizer")
    tokenizer.save(tok_dir)
    script = textwrap.dedent(f"""
        import time
        from tflm.data.token_cache import build_token_cache
        from tflm.text import load_tokenizer
        from tests.data.test_token_cache_shards import Corpus, DOCS

        class Slow:
            def __init__(self, tokenizer):
                self.tokenizer, self.fingerprint = tokenizer, tokenizer.fingerprint
            def encode(self, texts):
                time.sleep(0.5)
                return self.tokenizer.encode(texts)

        build_token_cache(Corpus(DOCS), "train", Slow(load_tokenizer({tok_dir!r})),
                          {str(tmp_path)!r}, shard_tokens=5, chunk_documents=2)
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", script], cwd=root,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    final = cache_path(Corpus(DOCS), "train", tokenizer, str(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once it has written some shards
            tmp = [d for d in os.listdir(tmp_path) if d.startswith(TMP_PREFIX + "train")]
            if tmp and len(os.listdir(tmp_path / tmp[0])) >= 3:
                break
            assert child.poll() is None, "the build ended before it was killed"
            time.sleep(0.05)
        else:
            pytest.fail("the build wrote no shards in 120 s")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not os.path.exists(final)  # half a build never looks like a cache
    cache = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path))
    assert cache.path == final
    expected = tokenizer.encode(DOCS)
    for i, ids in enumerate(expected):
        assert cache.document(i).tolist() == ids


def test_ids_are_read_from_the_files_never_mapped(tokenizer, tmp_path):
    many = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path),
                             shard_tokens=11, chunk_documents=4, workers=1)
    whole = np.asarray(many.ids)
    rng = np.random.default_rng(1)
    # Runs of consecutive positions across shard borders, single positions, reversed.
    starts = rng.integers(0, len(whole) - 30, 20)
    runs = (starts[:, None] + np.arange(30)).reshape(-1)
    for positions in (runs, runs[::-1], rng.integers(0, len(whole), 50), runs[:0]):
        np.testing.assert_array_equal(many.ids[positions], whole[positions])
    np.testing.assert_array_equal(many.ids[5:100], whole[5:100])
    # The shards are never mapped (a mapping keeps the pages reads touch resident, so RSS
    # would grow with the corpus); only the small offsets file is.
    with open("/proc/self/maps", encoding="utf-8") as f:
        maps = f.read()
    assert all(s["file"] not in maps for s in many.meta["shards"]) and "offsets.npy" in maps
    with pytest.raises(IndexError):
        many.ids[np.array([len(whole)])]


def test_a_truncated_shard_is_a_clear_error(tokenizer, tmp_path):
    cache = build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path), workers=1)
    shard = os.path.join(cache.path, cache.meta["shards"][0]["file"])
    os.truncate(shard, os.path.getsize(shard) - 4)
    with pytest.raises(DataError, match="delete the directory"):
        build_token_cache(Corpus(DOCS), "train", tokenizer, str(tmp_path), workers=1)
    with pytest.raises(DataError, match="shorter than its index"):
        cache.ids[cache.num_tokens - 1]  # a cache opened before the file shrank


class GeneratedCorpus:
    """~`size` characters of documents made on the fly: nothing of it is held."""

    fingerprint = "generated"

    def __init__(self, size):
        self.size = size

    def iter_documents(self, split):
        made, i = 0, 0
        while made < self.size:
            words = np.random.default_rng(i).integers(0, 50, 150)
            document = " ".join(f"w{w}" for w in words)
            made, i = made + len(document), i + 1
            yield document


def test_a_build_in_a_small_budget_gives_the_ids_of_one_piece(tokenizer, tmp_path, monkeypatch):
    corpus = GeneratedCorpus(2**20)  # 1 MB of text
    whole = build_token_cache(corpus, "train", tokenizer, str(tmp_path / "whole"), workers=1,
                              chunk_documents=10**6)
    monkeypatch.setattr(token_cache, "CHUNK_CHARS", 2**13)  # 8 KB of text per chunk
    tracemalloc.start()
    try:
        small = build_token_cache(corpus, "train", tokenizer, str(tmp_path / "small"),
                                  workers=1, shard_tokens=50_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(small.meta["shards"]) > 10
    # Python's allocations peak at a few chunks (~0.2 MB measured), not the corpus: 1 MB
    # of text, ~1 MB of int32 ids, ~10 MB as the tokenizer's lists of ints.
    assert peak < 2**19, peak
    np.testing.assert_array_equal(np.asarray(small.ids), np.asarray(whole.ids))
    np.testing.assert_array_equal(small.offsets, whole.offsets)
