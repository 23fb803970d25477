"""Files read a chunk at a time give exactly what one whole-file read gives (#16)."""

import gzip
import json
import re
import tracemalloc

import pytest

from tflm.data import readers
from tflm.data.corpus import SPLITS, load_corpus, split_of
from tflm.data.readers import iter_jsonl, iter_text_blocks, read_text
from tflm.errors import DataError

# Read sizes that put chunk boundaries everywhere, inside every multi-byte sequence.
SIZES = [1, 2, 3, 5, 7, 64]
SUFFIXES = [".txt", ".txt.gz"]
# A BOM, \r\n, lone \r, whitespace-only lines (\x0c, U+2028 are whitespace too), 2-4 byte
# characters, invalid bytes (a lone \xff, a cut-off euro sign), a genuine U+FFFD.
TRICKY = (
    "\ufeffFirst café block\r\nsecond line\r\n\r\n€uro 😀 block\rline two\r\r"
    " \t\n\x0c\n\u2028\nthird\u2028still third\n\n\n  fourth  ").encode() + (
    b"\xff\xe2\x82 after invalid\r\n \r\nlast \xef\xbf\xbd real U+FFFD\r")


def write(path, data: bytes):
    """Writes ``data`` (gzipped for a .gz name)."""
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


def whole_text(data: bytes) -> str:
    """The text by the rules of a whole-file read: one decode, BOM off, newlines \\n."""
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def whole_blocks(data: bytes) -> list[str]:
    """The blocks by the rules of a whole-file read: split at blank lines by one regex."""
    return [b.strip() for b in re.split(r"\n\s*\n", whole_text(data)) if b.strip()]


@pytest.fixture
def warnings(monkeypatch):
    logged = []
    monkeypatch.setattr(readers.logging, "warning", lambda *a: logged.append(a))
    return logged


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("size", SIZES)
def test_text_blocks_streamed_equal_the_whole_file_ones(tmp_path, suffix, size, warnings):
    path = write(tmp_path / f"c{suffix}", TRICKY)
    blocks = list(iter_text_blocks(path, read_bytes=size))
    assert blocks == whole_blocks(TRICKY)
    assert blocks[0] == "First café block\nsecond line" and len(blocks) == 5
    assert blocks[3] == "fourth  \ufffd\ufffd after invalid"
    assert [w[2] for w in warnings] == [2]  # (message, path, count, where, offset): once


@pytest.mark.parametrize("size", SIZES)
def test_read_text_is_the_whole_file_text_at_any_read_size(tmp_path, size, monkeypatch,
                                                           warnings):
    monkeypatch.setattr(readers, "READ_BYTES", size)
    path = write(tmp_path / "c.txt", TRICKY)
    assert read_text(path) == whole_text(TRICKY)
    where, offset = warnings[0][3:]
    assert (where, offset) == ("byte", TRICKY.index(b"\xff"))


def test_pairs_and_sequences_split_at_a_chunk_boundary(tmp_path, monkeypatch):
    # 7-byte reads: "\r|\n", "\xe2\x82|\xac" (a euro sign), "\xe2\x82|x" (cut off).
    cases = {b"abcdef\r\nghi": "abcdef\nghi", b"abcde\xe2\x82\xac!": "abcde€!",
             b"abcde\xe2\x82xyz": "abcde\ufffdxyz", b"abcdef\r": "abcdef\n",
             b"\xef\xbb\xbfabcd\r\n": "abcd\n"}
    monkeypatch.setattr(readers, "READ_BYTES", 7)
    for data, text in cases.items():
        path = write(tmp_path / "c.txt", data)
        assert read_text(path) == whole_text(data) == text
        assert list(iter_text_blocks(path, read_bytes=7)) == [text.strip()]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("size", SIZES)
def test_strict_names_the_offset_of_the_first_invalid_byte(tmp_path, suffix, size):
    path = write(tmp_path / f"c{suffix}", TRICKY)
    with pytest.raises(UnicodeDecodeError) as whole:
        TRICKY.decode("utf-8")
    where = "decompressed byte" if suffix.endswith(".gz") else "byte"
    with pytest.raises(DataError, match=rf"not valid UTF-8: {where} offset "
                                        rf"{whole.value.start} is b'\\xff'"):
        list(iter_text_blocks(path, "strict", read_bytes=size))
    cut = write(tmp_path / f"d{suffix}", "x€".encode()[:-1])  # cut off at the end
    with pytest.raises(DataError, match=rf"{where} offset 1 is b'\\xe2'"):
        list(iter_text_blocks(cut, "strict", read_bytes=size))


def test_replacement_count_ignores_a_genuine_u_fffd_across_chunks(tmp_path, warnings):
    data = b"ab\xef\xbf\xbdcd\xff\xfe"  # a real U+FFFD, then 2 invalid bytes
    path = write(tmp_path / "c.txt", data)
    for size in (1, 2, 3, 4):
        assert list(iter_text_blocks(path, read_bytes=size)) == whole_blocks(data)
    assert [w[2:] for w in warnings] == [(2, "byte", 7)] * 4


JSONL = ("\ufeff" + json.dumps({"text": " café ", "id": 1}) + "\r\n\r\n"
         + json.dumps({"text": "😀 two", "id": 2}, ensure_ascii=False) + "\r"
         + json.dumps({"text": "   "}) + "\n" + json.dumps({"text": "€ three"}) + "\r")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("size", SIZES)
def test_jsonl_streamed_equals_the_whole_file_read(tmp_path, suffix, size):
    path = write(tmp_path / f"c{suffix}", JSONL.encode())
    whole = list(iter_jsonl(path, "text", read_bytes=len(JSONL) * 4))
    assert whole == ["café", "😀 two", "€ three"]
    assert list(iter_jsonl(path, "text", read_bytes=size)) == whole


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_jsonl_errors_name_the_line_counting_crlf_and_lone_cr(tmp_path, size):
    # Lines: 1 one, 2 blank, 3 two (ends with a lone \r), 4 the fault.
    good = '{"text": "one"}\r\n\r\n{"text": "two"}\r'
    cases = {'{"other": "x"}\n': r"line 4: no 'text' field \(keys: 'other'\)",
             "not json\r\n": "line 4: not valid JSON", '{"text": 3}': "line 4: field 'text' is "
             "a int", "[1]": r"line 4: no 'text' field \(keys: none\)"}
    for bad, message in cases.items():
        path = write(tmp_path / "c.jsonl.gz", (good + bad).encode())
        documents = iter_jsonl(path, "text", read_bytes=size)
        assert [next(documents), next(documents)] == ["one", "two"]
        with pytest.raises(DataError, match=rf"c\.jsonl\.gz, {message}"):
            next(documents)


def test_gzip_and_file_errors_while_streaming(tmp_path):
    whole = gzip.compress(TRICKY * 50)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.txt\.gz ends before .* the file is cut off"):
        list(iter_text_blocks(str(cut), read_bytes=7))
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_bytes(b"plain text")
    with pytest.raises(DataError, match="plain.txt.gz is not a valid gzip file"):
        list(iter_text_blocks(str(not_gzip)))
    with pytest.raises(DataError, match="Cannot read .*missing.jsonl"):
        list(iter_jsonl(str(tmp_path / "missing.jsonl"), "text"))


@pytest.mark.parametrize("name", ["big.txt", "big.jsonl.gz"])
def test_corpus_streams_a_file_of_many_chunks_as_documents_lists_it(tmp_path, name):
    documents = [f"Document {i} é€😀" + " word" * (i % 50) for i in range(20_000)]
    if name.endswith(".txt"):
        # \r\n line ends, one of them across the first chunk boundary.
        head = "\r\n\r\n".join(documents[:100])
        pad = "x" * (readers.READ_BYTES - 1 - len(head.encode()) - len("\r\n\r\n"))
        text = head + "\r\n\r\n" + pad + "\r\nsecond line\r\n\r\n" + "\r\n\r\n".join(
            documents[100:])
        assert text.encode().index(b"\r\nsecond line") == readers.READ_BYTES - 1
        documents = documents[:100] + [pad + "\nsecond line"] + documents[100:]
    else:
        text = "\n".join(json.dumps({"text": d}, ensure_ascii=False) for d in documents)
    assert len(text.encode()) > 2 * readers.READ_BYTES
    path = write(tmp_path / name, text.encode())
    corpus = load_corpus({"corpus": path})
    streamed = {split: list(load_corpus({"corpus": path}).iter_documents(split))
                for split in SPLITS}
    assert streamed == {split: corpus.documents(split) for split in SPLITS}
    assert sorted(sum(streamed.values(), [])) == sorted(documents)


@pytest.mark.parametrize("name", ["big.txt", "big.jsonl"])
def test_streaming_a_big_file_holds_a_few_chunks_not_the_file(tmp_path, name):
    text = "Some words, é and €. " * 20
    line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
    # One document repeated: all of them fall in one split.
    unit, document = ((line, text.strip()) if name.endswith(".jsonl")
                      else (line * 2 + "\n", (line * 2).strip()))
    per_mib = (1 << 20) // len(unit.encode())
    path = tmp_path / name
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(30):
            f.write(unit * per_mib)
    corpus = load_corpus({"corpus": str(path)})
    tracemalloc.start()
    try:
        count = sum(1 for _ in corpus.iter_documents(split_of(document)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30 * per_mib
    assert path.stat().st_size > 29 * readers.READ_BYTES
    assert peak < 8 * readers.READ_BYTES, f"peak {peak} bytes"
