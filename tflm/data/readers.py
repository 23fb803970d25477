"""Readers of corpus files: UTF-8 text (plain or gzip) and JSON Lines, with clear errors."""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib

from absl import logging

from tflm.errors import DataError


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
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except EOFError as e:
        raise DataError(f"{path} ends before its gzip stream does: the file is cut off; "
                        "download or copy it again.") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is not a valid gzip file ({e}); download it again, or "
                        "drop the .gz suffix if it is plain text.") from e
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = "decompressed byte" if path.endswith(".gz") else "byte"
        if invalid_utf8 == "strict":
            raise DataError(
                f"{path} is not valid UTF-8: {where} offset {e.start} is "
                f"{data[e.start:e.start + 1]!r}. Re-encode the file as UTF-8 (e.g. "
                "iconv -f latin1 -t utf-8) or set config.data.invalid_utf8='replace'."
            ) from e
        text = data.decode("utf-8", errors="replace")
        count = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
        logging.warning("%s: replaced %d invalid UTF-8 byte sequence(s) with U+FFFD (the "
                        "first at %s offset %d); set config.data.invalid_utf8='strict' to "
                        "fail instead.", path, count, where, e.start)
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def split_blocks(text: str) -> list[str]:
    """The blank-line separated blocks of ``text``, stripped, empty ones dropped."""
    return [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]


def read_jsonl(path: str, text_field: str, invalid_utf8: str = "replace") -> list[str]:
    """The non-empty ``text_field`` strings of a JSON Lines file, one per line.

    Raises:
        DataError: a line is not a JSON object or lacks a string ``text_field``
            (naming the file and line number).
    """
    documents = []
    for number, line in enumerate(read_text(path, invalid_utf8).split("\n"), start=1):
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
            documents.append(text.strip())
    return documents


def file_identity(path: str) -> list:
    """``[absolute path, size, mtime_ns]``: changes whenever the file is rewritten."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]
