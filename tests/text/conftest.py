"""Real prose for the tokenizer tests: Python's own docs plus hand-written non-ASCII lines."""

import pydoc_data.topics

import pytest

NON_ASCII = [
    "Café, naïve résumé — “curly quotes” and a façade.",
    "Ünïcödé: straße, İstanbul, Ångström, œuvre, señor.",
    "日本語のテキストです。中文句子也可以。한국어 문장.",
    "Emoji too 🎉🚀 👍🏽 — and a family 👨‍👩‍👧.",
    "Tabs\tand  double  spaces, then a trailing space ",
    "Ελληνικά και русский текст, عربى, עברית.",
]


def _topics():
    return [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]


@pytest.fixture(scope="session")
def train_texts():
    """~150 KB of English documents (multi-line) plus the non-ASCII lines."""
    docs, size = [], 0
    for doc in _topics():
        docs.append(doc)
        size += len(doc)
        if size > 150_000:
            break
    return docs + NON_ASCII * 3


@pytest.fixture(scope="session")
def real_lines():
    """300 non-empty lines of held-out docs (not in train_texts) plus the non-ASCII lines."""
    lines = [line for doc in _topics()[-20:] for line in doc.splitlines() if line.strip()]
    return lines[:300] + NON_ASCII


@pytest.fixture(scope="session")
def trained(train_texts):
    """kind -> a tokenizer of 500 tokens trained on train_texts, shared by the tests (the
    in-graph BPE layer takes seconds to trace, so its traces are worth reusing)."""
    from tflm.text import train_tokenizer

    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = train_tokenizer(kind, train_texts, 500)
        return cache[kind]

    return get
