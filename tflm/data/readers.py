"""Readers of corpus files: UTF-8 text (plain or gzip) and JSON Lines, with clear errors.

Files are read ``READ_BYTES`` at a time: streaming a file's documents holds a few chunks
and the current document in memory, whatever the file's size (#16).
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator

from absl import logging

from tflm.errors import DataError

READ_BYTES = 1 << 20
_REPLACEMENT = "\ufffd".encode()


def read_text(path: str, invalid_utf8: str = "replace") -> str:
    """The text of a (possibly gzipped) UTF-8 file, newlines normalised to ``\\n``.

    Args:
        path: the file; ``.gz`` files are decompressed.
        invalid_utf8: "replace" invalid bytes with U+FFFD (logging a warning with the
            count) or "strict" (raise).

    Raises:
        DataError: unreadable, a cut-off or corrupt gzip file, or invalid UTF-8 with
            ``invalid_utf8="strict"`` (naming the byte offset).
    """
    return "".join(_iter_text(path, invalid_utf8, READ_BYTES))


def iter_text_blocks(path: str, invalid_utf8: str = "replace",
                     read_bytes: int = READ_BYTES) -> Iterator[str]:
    """The blank-line separated blocks of ``read_text(path)``, stripped, empty ones
    dropped, read ``read_bytes`` at a time.

    Raises:
        DataError: as ``read_text``, when the iteration reaches the fault.
    """
    yield from _blocks(_lines(_iter_text(path, invalid_utf8, read_bytes)))


def iter_lines(path: str, invalid_utf8: str = "replace",
               read_bytes: int = READ_BYTES) -> Iterator[str]:
    """The lines of ``read_text(path)`` as ``split("\\n")`` gives them, read
    ``read_bytes`` at a time (WikiText files: ``tflm.data.wikitext.iter_articles``).

    Raises:
        DataError: as ``read_text``, when the iteration reaches the fault.
    """
    yield from _lines(_iter_text(path, invalid_utf8, read_bytes))


def iter_jsonl(path: str, text_field: str, invalid_utf8: str = "replace",
               read_bytes: int = READ_BYTES) -> Iterator[str]:
    """The non-empty ``text_field`` strings of a JSON Lines file, one per line, stripped,
    read ``read_bytes`` at a time.

    Raises:
        DataError: as ``read_text``, or a line is not a JSON object or lacks a string
            ``text_field`` (naming the file and line number).
    """
    lines = _lines(_iter_text(path, invalid_utf8, read_bytes))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {number}: not valid JSON ({e.msg}); each line "
                            "must hold one JSON object.") from e
        if not isinstance(record, dict) or text_field not in record:
            keys = ", ".join(map(repr, record)) if isinstance(record, dict) else "none"
            raise DataError(f"{path}, line {number}: no {text_field!r} field (keys: "
                            f"{keys}); set config.data.text_field to the field that "
                            "holds the text.")
        text = record[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}, line {number}: field {text_field!r} is a "
                            f"{type(text).__name__}, not a string.")
        if text.strip():
            yield text.strip()


def file_identity(path: str) -> list:
    """``[absolute path, size, mtime_ns]``: changes whenever the file is rewritten."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def _iter_text(path: str, invalid_utf8: str, read_bytes: int) -> Iterator[str]:
    """``read_text(path)`` in pieces: BOM dropped, ``\\r\\n`` and ``\\r`` made ``\\n``."""
    held = ""  # a piece's last "\r" waits for the next: "\r" + "\n" is one newline
    started = False
    for text, final in _decode(path, _read_chunks(path, read_bytes), invalid_utf8):
        if not started and text:
            text, started = text.removeprefix("\ufeff"), True
        text, held = held + text, ""
        if text.endswith("\r") and not final:
            text, held = text[:-1], "\r"
        if text:
            yield text.replace("\r\n", "\n").replace("\r", "\n")


def _read_chunks(path: str, read_bytes: int) -> Iterator[bytes]:
    """The bytes of a file (decompressed if ``.gz``), ``read_bytes`` at a time."""
    with _read_errors(path):
        f = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    with f:
        while True:
            with _read_errors(path):
                chunk = f.read(read_bytes)
            if not chunk:
                return
            yield chunk


@contextlib.contextmanager
def _read_errors(path: str) -> Iterator[None]:
    """Turns the errors of opening or reading ``path`` into DataErrors that say what to do."""
    try:
        yield
    except EOFError as e:
        raise DataError(f"{path} ends before its gzip stream does: the file is cut off; "
                        "download or copy it again.") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is not a valid gzip file ({e}); download it again, or "
                        "drop the .gz suffix if it is plain text.") from e
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e


def _decode(path: str, chunks: Iterable[bytes],
            invalid_utf8: str) -> Iterator[tuple[str, bool]]:
    """``(text, final)`` per chunk of UTF-8 ``chunks``, as one decode of their concatenation
    gives it (a sequence split across chunks waits for the next one); see ``read_text``.
    The replacement warning comes once the last chunk is decoded."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # strict until the first invalid byte
    where = "decompressed byte" if path.endswith(".gz") else "byte"
    fed = written = replaced = 0  # bytes fed; U+FFFD in the bytes; U+FFFD in the text
    first_invalid, tail = None, b""  # tail: the last 2 bytes, where a U+FFFD may begin
    for chunk, final in itertools.chain(((c, False) for c in chunks), [(b"", True)]):
        buffered = decoder.getstate()[0]  # an unfinished sequence from the last chunk
        start = fed - len(buffered)  # the file offset of buffered + chunk
        fed += len(chunk)
        written += chunk.count(_REPLACEMENT) + (tail + chunk[:2]).count(_REPLACEMENT)
        tail = (tail + chunk[-2:])[-2:]
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as e:
            if invalid_utf8 == "strict":
                raise DataError(
                    f"{path} is not valid UTF-8: {where} offset {start + e.start} is "
                    f"{(buffered + chunk)[e.start:e.start + 1]!r}. Re-encode the file as "
                    "UTF-8 (e.g. iconv -f latin1 -t utf-8) or set config.data."
                    "invalid_utf8='replace'.") from e
            first_invalid = start + e.start
            decoder.errors = "replace"  # the failed call left the decoder as it was
            text = decoder.decode(chunk, final)
        replaced += text.count("\ufffd")
        yield text, final
    if first_invalid is not None:
        logging.warning("%s: replaced %d invalid UTF-8 byte sequence(s) with U+FFFD (the "
                        "first at %s offset %d); set config.data.invalid_utf8='strict' to "
                        "fail instead.", path, replaced - written, where, first_invalid)


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """The lines of the text made of ``pieces``, as ``text.split("\\n")`` gives them."""
    partial: list[str] = []  # the pieces of the line read so far
    for piece in pieces:
        start, end = 0, piece.find("\n")
        while end >= 0:
            partial.append(piece[start:end])
            yield "".join(partial)
            partial, start, end = [], end + 1, piece.find("\n", end + 1)
        partial.append(piece[start:])
    yield "".join(partial)


def _blocks(lines: Iterable[str]) -> Iterator[str]:
    """The blocks of ``lines`` that whitespace-only lines separate, stripped, non-empty."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block).strip()
            block = []
    if block:
        yield "\n".join(block).strip()
