"""Token cache: exact contents, reuse, rebuild on a new fingerprint, crash safety."""

import os

import numpy as np
import pytest

from tflm.data.token_cache import TMP_PREFIX, build_token_cache, cache_path
from tflm.errors import DataError
from tflm.text import train_tokenizer

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Ünïcödé and emoji 🎉 are bytes too.\nSecond line.",
    "Short.",
] * 30


class Corpus:
    def __init__(self, docs, fingerprint):
        self.docs, self.fingerprint = docs, fingerprint

    def documents(self, split):
        return self.docs if split == "train" else []


class Counting:
    """Wraps a tokenizer, counting encode calls."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0
        self.fingerprint = tokenizer.fingerprint

    def encode(self, texts):
        self.calls += 1
        return self.tokenizer.encode(texts)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("bpe", DOCS * 3, 300)


def test_ids_and_offsets_match_per_document_encodes(tokenizer, tmp_path):
    cache = build_token_cache(Corpus(DOCS, "c1"), "train", tokenizer, str(tmp_path))
    assert cache.ids.dtype == np.int32 and cache.ids.lazy_view
    assert cache.offsets.dtype == np.int64 and len(cache.offsets) == len(DOCS) + 1
    assert cache.num_documents == len(DOCS)
    expected = tokenizer.encode(DOCS)
    assert cache.num_tokens == sum(map(len, expected))
    for i, ids in enumerate(expected):
        assert cache.document(i).tolist() == ids
    assert cache.meta["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert cache.meta["corpus_fingerprint"] == "c1"


def test_reused_then_rebuilt_when_a_fingerprint_changes(tokenizer, tmp_path):
    counting = Counting(tokenizer)
    first = build_token_cache(Corpus(DOCS, "c1"), "train", counting, str(tmp_path))
    built = counting.calls
    again = build_token_cache(Corpus(DOCS, "c1"), "train", counting, str(tmp_path))
    assert counting.calls == built and again.path == first.path

    changed = build_token_cache(Corpus(DOCS[:5], "c2"), "train", counting, str(tmp_path))
    assert counting.calls > built and changed.path != first.path
    assert changed.num_documents == 5

    other = train_tokenizer("bpe", DOCS, 280)
    third = build_token_cache(Corpus(DOCS, "c1"), "train", other, str(tmp_path))
    assert third.path not in (first.path, changed.path)
    assert third.document(0).tolist() == other.encode(DOCS[:1])[0]


def test_leftover_temp_dir_of_a_killed_build_is_ignored(tokenizer, tmp_path):
    corpus = Corpus(DOCS, "c1")
    final = cache_path(corpus, "train", tokenizer, str(tmp_path))
    killed = os.path.join(str(tmp_path), TMP_PREFIX + os.path.basename(final) + "-dead")
    os.makedirs(killed)
    with open(os.path.join(killed, "ids.bin"), "wb") as f:
        f.write(b"\0" * 12)  # a half-written shard
    cache = build_token_cache(corpus, "train", tokenizer, str(tmp_path))
    assert cache.path == final
    assert cache.document(0).tolist() == tokenizer.encode(DOCS[:1])[0]
    # Only complete caches appear: nothing but the final directory and the leftover.
    assert sorted(os.listdir(tmp_path)) == sorted(map(os.path.basename, [final, killed]))


def test_loser_of_a_concurrent_build_reuses_the_winner(tokenizer, tmp_path):
    corpus = Corpus(DOCS, "c1")

    class Racing(Counting):
        """Another worker finishes the same cache while this one is encoding."""

        def encode(self, texts):
            if self.calls == 0:
                self.calls += 1
                build_token_cache(corpus, "train", self.tokenizer, str(tmp_path))
            return self.tokenizer.encode(texts)

    cache = build_token_cache(corpus, "train", Racing(tokenizer), str(tmp_path))
    assert cache.document(2).tolist() == tokenizer.encode(DOCS[2:3])[0]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TMP_PREFIX)]


def test_empty_split_raises(tokenizer, tmp_path):
    with pytest.raises(DataError, match="'validation' has no documents"):
        build_token_cache(Corpus(DOCS, "c1"), "validation", tokenizer, str(tmp_path))
