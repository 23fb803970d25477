"""WikiText-2 / WikiText-103 (Merity et al., 2016): finding, downloading and parsing.

The official archives (``wikitext-2-v1.zip``, ``wikitext-2-raw-v1.zip``,
``wikitext-103-v1.zip``, ``wikitext-103-raw-v1.zip``) unpack to a directory holding
``wiki.train.tokens``, ``wiki.valid.tokens`` and ``wiki.test.tokens`` (``.raw`` for the
raw variants). Each file is a sequence of Wikipedia articles, each starting with a
`` = Title = `` line; sections are `` = = Section = = ``. One article is one document.

:func:`locate` looks for an unpacked copy under ``<cache_dir>/wikitext/`` and, when
asked to, downloads the archive there with ``keras.utils.get_file``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

import keras
from absl import logging

from tflm.errors import DataError

# name -> (archive file name, directory the archive unpacks to, file suffix)
NAMES = {
    "wikitext-2": ("wikitext-2-v1.zip", "wikitext-2", "tokens"),
    "wikitext-2-raw": ("wikitext-2-raw-v1.zip", "wikitext-2-raw", "raw"),
    "wikitext-103": ("wikitext-103-v1.zip", "wikitext-103", "tokens"),
    "wikitext-103-raw": ("wikitext-103-raw-v1.zip", "wikitext-103-raw", "raw"),
}
# Where the archives are hosted (the original S3 bucket is gone).
DEFAULT_BASE_URL = "https://wikitext.smerity.com"
# Overrides DEFAULT_BASE_URL when config.data.download_url is empty (mirrors, tests).
URL_ENV = "TFLM_WIKITEXT_URL"
CACHE_SUBDIR = "wikitext"
_FILE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
# An article title line: " = Title = " (sections have two or more "=").
_TITLE = re.compile(r"^ ?= [^=].* = ?$")


def split_files(directory: str, suffix: str | None = None) -> dict[str, str] | None:
    """{split: path} of the ``wiki.{train,valid,test}.{tokens,raw}`` files, or None.

    ``suffix`` ("tokens" or "raw") picks a variant; None takes whichever is there.

    Raises:
        DataError: ``wiki.train.*`` is there but a validation or test file is missing.
    """
    for variant in (suffix,) if suffix else ("tokens", "raw"):
        files = {split: os.path.join(directory, f"wiki.{name}.{variant}")
                 for split, name in _FILE_SPLITS.items()}
        if not os.path.isfile(files["train"]):
            continue
        missing = [os.path.basename(p) for p in files.values() if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{directory} has wiki.train.{variant} but no "
                            f"{', '.join(missing)}; unpack the whole archive again.")
        return files
    return None


def split_articles(text: str) -> list[str]:
    """The articles of a WikiText file's text, each beginning with its title line."""
    return list(iter_articles(text.split("\n")))


def iter_articles(lines: Iterable[str]) -> Iterator[str]:
    """The articles of a WikiText file's lines, each beginning with its title line: one
    article in memory at a time (``tflm.data.readers.iter_lines`` streams the file)."""
    article: list[str] = []
    real = False  # whether the article so far has a non-blank line
    for line in lines:
        if _TITLE.match(line) and real:
            yield "\n".join(article).strip()
            article, real = [], False
        article.append(line)
        real = real or bool(line.strip())
    if real:
        yield "\n".join(article).strip()


def archive_url(name: str, download_url: str = "") -> str:
    """The URL of ``name``'s archive: ``download_url``, else ``$TFLM_WIKITEXT_URL``, else
    the official host. A value ending in ``.zip`` is the archive itself; any other is a
    base URL the archive file name is appended to."""
    base = download_url or os.environ.get(URL_ENV, "") or DEFAULT_BASE_URL
    if base.endswith(".zip"):
        return base
    return f"{base.rstrip('/')}/{NAMES[name][0]}"


def locate(name: str, cache_dir: str, download: bool = False,
           download_url: str = "") -> str:
    """The unpacked directory of WikiText ``name``, downloading it if allowed.

    Args:
        name: one of :data:`NAMES`.
        cache_dir: ``config.data.cache_dir``; the archive goes to ``<cache_dir>/wikitext``.
        download: download the archive if no unpacked copy is found.
        download_url: see :func:`archive_url`.

    Raises:
        DataError: no local copy and ``download`` is False, or the download failed or
            did not hold the expected files.
    """
    cache_dir = os.path.expanduser(cache_dir)
    found = _find_unpacked(name, os.path.join(cache_dir, CACHE_SUBDIR))
    if found:
        return found
    archive, directory, _ = NAMES[name]
    if not download:
        raise DataError(
            f"{name} is not in {os.path.join(cache_dir, CACHE_SUBDIR)}. Set "
            "config.data.download=True to download it (--config.data.download=True), or "
            f"unzip {archive} yourself and point config.data.corpus at the unpacked "
            f"'{directory}' directory."
        )
    url = archive_url(name, download_url)
    os.makedirs(cache_dir, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):  # get_file would silently use /tmp instead
        raise DataError(f"Cannot write to {cache_dir}; set config.data.cache_dir to a "
                        f"writable directory to download {name}.")
    logging.info("Downloading %s from %s into %s.", name, url, cache_dir)
    try:
        extracted = keras.utils.get_file(fname=archive, origin=url, extract=True,
                                         cache_dir=cache_dir, cache_subdir=CACHE_SUBDIR)
    except Exception as e:  # noqa: BLE001 - get_file raises bare Exceptions
        raise DataError(
            f"Downloading {name} from {url} failed ({e}). Check the network or the URL "
            f"(config.data.download_url or ${URL_ENV}), or unzip {archive} yourself and "
            "point config.data.corpus at the unpacked directory."
        ) from e
    found = _find_unpacked(name, os.path.dirname(extracted))
    if not found:
        archive_path = os.path.join(os.path.dirname(extracted), archive)
        if os.path.isfile(archive_path):
            os.remove(archive_path)  # so that the next try downloads it again
        raise DataError(
            f"The archive downloaded from {url} could not be unpacked or holds no "
            f"wiki.train.{NAMES[name][2]}; it may be cut off or the wrong file. It was "
            "deleted: try again, or fix config.data.download_url."
        )
    return found


def _find_unpacked(name: str, root: str) -> str | None:
    """``root``'s unpacked copy of ``name``: as keras extracts it or as unzipped by hand."""
    archive, directory, suffix = NAMES[name]
    extracted = os.path.join(root, archive.split(".")[0] + "_extracted")
    for candidate in (os.path.join(extracted, directory), extracted,
                      os.path.join(root, directory)):
        if os.path.isfile(os.path.join(candidate, f"wiki.train.{suffix}")):
            split_files(candidate, suffix)  # raises if validation or test is missing
            return candidate
    return None
