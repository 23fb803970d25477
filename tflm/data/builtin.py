"""The built-in corpus: English prose that ships with every Python install.

It needs no download, so ``config.data.corpus = "builtin"`` works offline, in tests and
in the demo. The documents are

- the language reference topics of ``pydoc_data.topics.topics`` (what ``help("if")``
  shows), one document per topic, and
- the docstrings of the standard library's top-level modules (``sys.stdlib_module_names``)
  and of the public classes, functions and methods they define, one document each.

On CPython 3.11.7 that is 3,252 documents, 1,324,470 bytes of UTF-8 text, collected in
about 0.5 s. The collection runs in a fresh ``python -I`` subprocess, so importing ~200
modules neither changes the calling process (``readline``, ``atexit`` hooks) nor depends
on what it has already imported; the result is sorted and deduplicated, hence identical across
runs. It is cached as ``<cache_dir>/builtin/builtin-<implementation>-<version>.json.gz``
(written atomically) and later loads read that file.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import inspect
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

from absl import logging

from tflm.errors import DataError

# Modules whose import has side effects (opens a browser, prints, starts a GUI) or that
# pull in test suites and GUI toolkits rather than library documentation.
SKIPPED_MODULES = frozenset({
    "__main__", "antigravity", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "test",
    "this", "tkinter", "turtle", "turtledemo",
})

# Docstrings shorter than this ("Return self+value.") carry no prose worth learning from.
MIN_CHARS = 40

_FORMAT_VERSION = 1


def cache_path(cache_dir: str) -> str:
    """Where the built-in corpus of the running Python is cached under ``cache_dir``."""
    tag = f"{platform.python_implementation().lower()}-{platform.python_version()}"
    return os.path.join(os.path.expanduser(cache_dir), "builtin", f"builtin-{tag}.json.gz")


def builtin_documents(cache_dir: str | None = None) -> list[str]:
    """The built-in corpus' documents, sorted, without duplicates.

    Args:
        cache_dir: directory of the cache file; None builds without reading or writing
            a cache.

    Returns:
        The documents (str), identical for every call on the same Python version.

    Raises:
        DataError: the collecting subprocess failed.
    """
    path = cache_path(cache_dir) if cache_dir else None
    if path and os.path.isfile(path):
        documents = _read_cache(path)
        if documents is not None:
            return documents
    start = time.perf_counter()
    documents = _collect_in_subprocess()
    logging.info("Built the built-in corpus: %d documents, %d bytes in %.2f s.",
                 len(documents), sum(len(d.encode("utf-8")) for d in documents),
                 time.perf_counter() - start)
    if path:
        try:
            _write_cache(path, documents)
        except OSError as e:
            logging.warning("Could not cache the built-in corpus in %s (%s); it will be "
                            "built again next time. Set config.data.cache_dir to a "
                            "writable directory.", path, e)
    return documents


def _read_cache(path: str) -> list[str] | None:
    """The cached documents, or None (with a warning) if the file is unreadable."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            payload = json.load(f)
        if payload.get("format") == _FORMAT_VERSION:
            return payload["documents"]
    except (OSError, EOFError, ValueError, KeyError) as e:
        logging.warning("Ignoring the unreadable built-in corpus cache %s (%s); "
                        "rebuilding it.", path, e)
    return None


def _write_cache(path: str, documents: list[str]) -> None:
    """Writes the cache file atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {"format": _FORMAT_VERSION, "python": sys.version, "documents": documents}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb",
                                                       mtime=0) as f:
            f.write(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _collect_in_subprocess() -> list[str]:
    """Runs :func:`collect` in a fresh isolated interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "documents.json")
        proc = subprocess.run([sys.executable, "-I", os.path.abspath(__file__), out],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise DataError(
                "Building the built-in corpus failed (python -I "
                f"{os.path.abspath(__file__)} exited with {proc.returncode}):\n"
                f"{proc.stderr[-2000:]}\nUse a text corpus instead: set "
                "config.data.corpus to a file, directory or glob."
            )
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def collect() -> list[str]:
    """Collects the documents in this process (importing the stdlib modules)."""
    from pydoc_data.topics import topics  # ~0.5 MB module: imported only here

    documents = set()

    def add(doc):
        if isinstance(doc, str):
            doc = inspect.cleandoc(doc)
            if len(doc) >= MIN_CHARS:
                documents.add(doc)

    for text in topics.values():
        add(text)
    warnings.simplefilter("ignore")
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIPPED_MODULES:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform-specific or optional modules
            continue
        add(module.__doc__)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isroutine(obj):
                add(obj.__doc__)
            if inspect.isclass(obj):
                for member_name, member in sorted(vars(obj).items()):
                    if member_name.startswith("_") and member_name != "__init__":
                        continue
                    if inspect.isroutine(member) or isinstance(
                            member, (property, staticmethod, classmethod)):
                        add(getattr(member, "__doc__", None))
    return sorted(documents)


if __name__ == "__main__":
    _documents = collect()
    with open(sys.argv[1], "w", encoding="utf-8") as _f:
        json.dump(_documents, _f, ensure_ascii=False)
