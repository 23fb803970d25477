"""Reading example files: TSV / CSV with a header row, or JSONL (one object per line)."""

import csv
import json
import os
from collections.abc import Sequence

from tflm.errors import DataError

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_columns(path: str, columns: Sequence[str]) -> tuple[dict[str, list[str]], list[int]]:
    """Values of `columns` in every record of `path`, as strings, and each record's line.

    The format comes from the extension: `.tsv` / `.csv` (first row names the columns) or
    `.jsonl` / `.json` (one JSON object per line; blank lines skipped). Raises DataError
    naming the file and line for a missing file, column or malformed line.
    """
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown format; use a .tsv, .csv or .jsonl file.")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check the path in the config.")
    values: dict[str, list[str]] = {c: [] for c in columns}
    lines: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        records = _json_records(f, path) if kind == "jsonl" else _table_records(f, path, kind)
        for line, record in records:
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


def _json_records(f, path):
    """(line number, dict) of each non-blank line."""
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


def _table_records(f, path, kind):
    """(line number, dict) of each row after the header."""
    reader = csv.DictReader(
        f,
        delimiter="\t" if kind == "tsv" else ",",
        quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL,
    )
    if reader.fieldnames is None:
        raise DataError(f"{path}: empty file; the first row must name the columns.")
    for row in reader:
        yield reader.line_num, row
