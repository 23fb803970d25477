"""Text / JSONL corpora: reading, splitting, fingerprints and bad input."""

import gzip
import json
import os

import pytest

from tflm import config
from tflm.data import corpus as corpus_lib
from tflm.data.corpus import SPLITS, load_corpus, split_of
from tflm.errors import DataError

# 100 documents: enough that every ~5% split holds some (checked by the tests).
DOCS = [f"Paragraph {i} talks about topic {i * 7 % 13}.\nIt has a second line." for i in
        range(100)]


def load(corpus, **options):
    return load_corpus({"corpus": str(corpus), **options})


def by_split(corpus):
    return {split: corpus.documents(split) for split in SPLITS}


def write(path, data):
    """Writes bytes as they are, str as UTF-8 (gzipped for a .gz name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
        if path.name.endswith(".gz"):
            data = gzip.compress(data)
    path.write_bytes(data)
    return path


def assert_hash_split(splits, expected):
    """Every expected document in exactly one split, the one split_of names."""
    seen = [d for docs in splits.values() for d in docs]
    assert sorted(seen) == sorted(expected)
    for split, docs in splits.items():
        assert all(split_of(d) == split for d in docs)


def test_blank_line_blocks_are_documents(tmp_path):
    # Blank lines, whitespace-only lines and \r\n all separate blocks.
    text = "\n\n \n".join(DOCS[:50]) + "\r\n\r\n" + "\n\n\n".join(DOCS[50:]) + "\n"
    path = write(tmp_path / "corpus.txt", text)
    assert_hash_split(by_split(load(path)), DOCS)


def test_document_split_file_makes_one_document_per_file(tmp_path):
    for i in range(0, 100, 2):
        write(tmp_path / "docs" / f"{i:03d}.txt", DOCS[i] + "\n\n" + DOCS[i + 1])
    files_docs = [DOCS[i] + "\n\n" + DOCS[i + 1] for i in range(0, 100, 2)]
    splits = by_split(load(tmp_path / "docs", document_split="file"))
    assert_hash_split(splits, files_docs)


def test_gzip_and_plain_text_read_the_same(tmp_path):
    plain = load(write(tmp_path / "a.txt", "\n\n".join(DOCS)))
    gz = load(write(tmp_path / "a.txt.gz", "\n\n".join(DOCS)))
    assert by_split(plain) == by_split(gz)


def test_jsonl_reads_the_text_field(tmp_path):
    lines = [json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)]
    path = write(tmp_path / "c.jsonl", "\n".join(lines[:50]) + "\n\n" + "\n".join(lines[50:]))
    assert_hash_split(by_split(load(path, text_field="body")), DOCS)
    with pytest.raises(DataError, match=r"line 1: no 'text' field \(keys: 'body', 'id'\)"):
        load(path).documents("train")


def test_jsonl_missing_field_names_the_line(tmp_path):
    path = write(tmp_path / "c.jsonl.gz",
                 '{"text": "one"}\n{"text": "two"}\n{"other": "three"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl\.gz, line 3: no 'text' field"):
        load(path).documents("train")
    bad = write(tmp_path / "d.jsonl", '{"text": "one"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load(bad).documents("train")


def test_glob_reads_matching_files_only(tmp_path):
    for i in range(0, 100, 10):
        write(tmp_path / f"part{i:03d}.txt", "\n\n".join(DOCS[i:i + 10]))
    write(tmp_path / "notes.md", "Not part of the corpus.")
    assert_hash_split(by_split(load(tmp_path / "part*.txt")), DOCS)
    with pytest.raises(DataError, match=r"pattern '.*nothing\*\.txt'.* matches no files"):
        load(tmp_path / "nothing*.txt")


def test_split_is_deterministic_disjoint_and_about_90_5_5(tmp_path):
    path = write(tmp_path / "c.txt", "\n\n".join(DOCS))
    first, second = by_split(load(path)), by_split(load(path))
    assert first == second
    sizes = {split: len(docs) for split, docs in first.items()}
    assert sum(sizes.values()) == 100 and sizes["train"] >= 80
    assert sizes["validation"] > 0 and sizes["test"] > 0
    # Identical documents always land in the same split.
    doubled = by_split(load(write(tmp_path / "d.txt", "\n\n".join(DOCS + DOCS))))
    assert {s: sorted(set(d)) for s, d in doubled.items()} == {
        s: sorted(d) for s, d in first.items()}


def test_explicit_split_files_are_used(tmp_path):
    write(tmp_path / "train.txt", "\n\n".join(DOCS[:80]))
    write(tmp_path / "valid.txt.gz", "\n\n".join(DOCS[80:90]))
    write(tmp_path / "test.txt", "\n\n".join(DOCS[90:]))
    splits = by_split(load(tmp_path))
    assert splits == {"train": DOCS[:80], "validation": DOCS[80:90], "test": DOCS[90:]}
    os.remove(tmp_path / "test.txt")
    corpus = load(tmp_path)
    assert corpus.documents("validation") == DOCS[80:90]
    with pytest.raises(DataError, match=r"no test\.\* file"):
        corpus.documents("test")


def test_fingerprint_is_stable_and_follows_files_and_options(tmp_path):
    path = write(tmp_path / "c.txt", "\n\n".join(DOCS))
    fingerprint = load(path).fingerprint
    assert fingerprint == load(path).fingerprint and len(fingerprint) == 64
    assert load(path, document_split="file").fingerprint != fingerprint
    write(path, "\n\n".join(DOCS[1:]))
    assert load(path).fingerprint != fingerprint


def test_dataset_yields_the_documents(tmp_path):
    corpus = load(write(tmp_path / "c.txt", "\n\n".join(DOCS)))
    strings = [s.decode("utf-8") for s in corpus.dataset("test").as_numpy_iterator()]
    assert strings == corpus.documents("test")


def test_unknown_split_names_the_valid_ones(tmp_path):
    corpus = load(write(tmp_path / "c.txt", "\n\n".join(DOCS)))
    with pytest.raises(DataError, match="train, validation, test"):
        corpus.documents("dev")


def test_missing_path_and_empty_inputs_fail(tmp_path):
    with pytest.raises(DataError, match="nor an existing file, directory or glob"):
        load(tmp_path / "missing.txt")
    empty = write(tmp_path / "empty.txt", "\n \n\n")
    with pytest.raises(DataError, match="No documents found in .*empty.txt"):
        load(empty).documents("train")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"holds no \.txt"):
        load(tmp_path / "nothing")


def test_invalid_utf8_is_replaced_with_a_warning_or_fails_strict(tmp_path, monkeypatch):
    data = ("\n\n".join(DOCS[:50]) + "\n\ncaf\xe9 au lait \xff").encode("latin-1")
    path = write(tmp_path / "latin1.txt", data)
    warnings = []
    monkeypatch.setattr(corpus_lib.logging, "warning", lambda *a: warnings.append(a))
    splits = by_split(load(path))
    assert "caf\ufffd au lait \ufffd" in [d for docs in splits.values() for d in docs]
    assert len(warnings) == 1 and warnings[0][2] == 2  # (message, path, count, ...)
    offset = data.index(b"\xe9")
    with pytest.raises(DataError, match=rf"latin1\.txt is not valid UTF-8: byte offset "
                                        rf"{offset}"):
        load(path, invalid_utf8="strict").documents("train")


def test_truncated_gzip_says_the_file_is_cut_off(tmp_path):
    whole = gzip.compress("\n\n".join(DOCS).encode("utf-8"))
    path = write(tmp_path / "c.txt.gz", whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"c\.txt\.gz.*the file is cut off"):
        load(path).documents("train")
    not_gzip = write(tmp_path / "d.txt.gz", b"plain text")
    with pytest.raises(DataError, match="not a valid gzip file"):
        load(not_gzip).documents("train")


def test_config_data_section_is_accepted_and_options_checked(tmp_path):
    path = write(tmp_path / "c.txt", "\n\n".join(DOCS))
    data = config.base_config().data
    data.corpus, data.cache_dir = str(path), str(tmp_path / "cache")
    assert by_split(load_corpus(data)) == by_split(load(path))
    with pytest.raises(DataError, match="document_split = 'para' is not one of"):
        load(path, document_split="para")
    with pytest.raises(DataError, match="corpus_format is 'wikitext' but"):
        load(path, corpus_format="wikitext")


def test_streamed_documents_equal_the_listed_ones(tmp_path):
    from tflm.data.corpus import load_corpus as load

    for i in range(4):
        (tmp_path / f"part{i}.txt").write_text(
            "\n\n".join(f"Doc {i}.{j} " + "text " * j for j in range(40)))
    corpus = load({"corpus": str(tmp_path)})
    streamed = {split: list(load({"corpus": str(tmp_path)}).iter_documents(split))
                for split in ("train", "validation", "test")}
    for split, documents in streamed.items():
        assert documents == corpus.documents(split) and documents
        assert list(corpus.iter_documents(split)) == documents  # after documents() too


def test_tokenizer_sample_is_bounded_deterministic_and_whole_when_it_fits():
    from tflm.data.corpus import sample_documents

    documents = [f"document {i} " + "x" * (i % 17) for i in range(500)]
    assert sample_documents(iter(documents), 10**9) == documents
    size = sum(len(d.encode()) for d in documents)
    sample = sample_documents(iter(documents), size // 4)
    assert sum(len(d.encode()) for d in sample) <= size // 4
    assert len(sample) > 80 and sample == sample_documents(documents, size // 4)
    assert sample == [d for d in documents if d in set(sample)]  # corpus order
