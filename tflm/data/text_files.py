"""Reading example files: TSV / CSV (with a header row, or columns named by their 0-based
index), or JSONL (one object per line)."""

import csv
import json
import os
from collections.abc import Sequence

from tflm.errors import DataError

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_columns(path: str, columns: Sequence[str],
                 header: bool = True) -> tuple[dict[str, list[str]], list[int]]:
    """Values of `columns` in every record of `path`, as strings, and each record's line.

    The format comes from the extension: `.tsv` / `.csv` (with `header`, the first row
    names the columns; without, columns are named by their 0-based index: "0", "1", ...,
    as in GLUE's CoLA files) or `.jsonl` / `.json` (one JSON object per line; blank lines
    skipped). Raises DataError naming the file and line (and column) for a missing file,
    an empty one, a missing column, a row with more or fewer fields than the header, a
    malformed JSON line or bytes that are not UTF-8.
    """
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown format; use a .tsv, .csv or .jsonl file.")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check the path in the config.")
    values: dict[str, list[str]] = {c: [] for c in columns}
    lines: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        if kind == "jsonl":
            records = json_records(f, path)
        else:
            records = _table_records(f, path, kind, header)
        for line, record in utf8_checked(records, path):
            for column in columns:
                if record.get(column) is None:
                    raise DataError(
                        f"{path}:{line}: no value for column {column!r} (found "
                        f"{sorted(record)}); fix the file or the column name in the config."
                    )
                values[column].append(str(record[column]))
            lines.append(line)
    if not lines:
        raise DataError(f"{path}: no records; the file is empty.")
    return values, lines


def json_records(f, path):
    """(line number, dict) of each non-blank line of an open JSONL file; DataError names
    the line of invalid JSON or a value that is not an object."""
    for number, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); fix the line.") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line.")
        yield number, record


def utf8_checked(records, path):
    """`records`, with a decoding error turned into a DataError naming the line."""
    line = 0
    try:
        for line, record in records:
            yield line, record
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}:{line + 1}: not UTF-8 (byte {err.object[err.start]:#x}); save the file "
            "as UTF-8."
        ) from err


def _table_records(f, path, kind, header):
    """(line number, dict) of each row (after the header row when there is one)."""
    reader = csv.reader(
        f,
        delimiter="\t" if kind == "tsv" else ",",
        quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL,
    )
    names = None
    if header:
        names = next(reader, None)
        if names is None:
            raise DataError(f"{path}: empty file; the first row must name the columns "
                            "(or set config.data.header=False).")
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if names is None:
            yield reader.line_num, {str(i): field for i, field in enumerate(row)}
            continue
        if len(row) != len(names):
            raise DataError(
                f"{path}:{reader.line_num}: {len(row)} fields, but the header names "
                f"{len(names)} ({', '.join(names)}); fix the row (a tab or comma inside a "
                "text must be quoted in CSV, and TSV texts cannot hold tabs)."
            )
        yield reader.line_num, dict(zip(names, row))
