"""The built-in corpus: content, determinism across processes, the cache file."""

import os

import pytest

from tflm.data import builtin
from tflm.data.corpus import SPLITS, load_corpus, split_of


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(documents built without a cache, cache_dir holding the cache of a second build)."""
    cache_dir = str(tmp_path_factory.mktemp("cache"))
    uncached = builtin.builtin_documents(None)
    assert builtin.builtin_documents(cache_dir) == uncached  # a second fresh process
    return uncached, cache_dir


def test_documents_are_python_prose_sorted_and_unique(built):
    documents, _ = built
    size = sum(len(d.encode("utf-8")) for d in documents)
    assert 500_000 < size < 5_000_000  # 1,324,470 bytes on CPython 3.11.7
    assert documents == sorted(set(documents))
    assert all(len(d) >= builtin.MIN_CHARS for d in documents)
    joined = "\n".join(documents)
    assert "statement is used for conditional execution" in joined  # pydoc topic "if"
    assert "Return a new list containing all items from the iterable" in joined  # sorted()
    assert "Antigravity" not in joined


def test_later_loads_read_the_cache_file(built, monkeypatch):
    documents, cache_dir = built
    path = builtin.cache_path(cache_dir)
    assert os.path.isfile(path) and not [
        f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]

    def no_build():
        raise AssertionError("the cache file was not used")

    monkeypatch.setattr(builtin, "_collect_in_subprocess", no_build)
    assert builtin.builtin_documents(cache_dir) == documents


def test_an_unreadable_cache_is_rebuilt(built, tmp_path):
    documents, _ = built
    path = builtin.cache_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b garbage")
    assert builtin.builtin_documents(str(tmp_path)) == documents
    assert builtin.builtin_documents(str(tmp_path)) == documents  # now a valid cache


def test_builtin_corpus_splits_by_hash(built):
    documents, cache_dir = built
    corpus = load_corpus({"corpus": "builtin", "cache_dir": cache_dir})
    splits = {split: corpus.documents(split) for split in SPLITS}
    assert sorted(d for docs in splits.values() for d in docs) == documents
    assert all(split_of(d) == s for s, docs in splits.items() for d in docs)
    assert 0.85 < len(splits["train"]) / len(documents) < 0.95
    again = load_corpus({"corpus": "builtin", "cache_dir": cache_dir})
    assert again.name == "builtin" and again.fingerprint == corpus.fingerprint
