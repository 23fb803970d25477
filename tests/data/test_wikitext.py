"""WikiText: article parsing, local directories, and the download (from a local server)."""

import functools
import http.server
import os
import threading
import zipfile

import pytest

from tflm.data import readers, wikitext
from tflm.data.corpus import load_corpus
from tflm.errors import DataError

ARTICLES = {
    "train": [
        " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 is a game . \n \n"
        " = = Gameplay = = \n \n As with previous games , the player ... \n",
        " = Tower Building of the Little Rock Arsenal = \n \n The tower is a building . \n"
        " = = = Later use = = = \n The building @-@ now a museum . \n",
        " = Cicely Mary Barker = \n \n Cicely Mary Barker was an illustrator . \n",
    ],
    "valid": [" = Homarus gammarus = \n \n Homarus gammarus is a lobster . \n"],
    "test": [" = Robert Boulter = \n \n Robert Boulter is an actor . \n",
             " = Du Fu = \n \n Du Fu was a poet . \n"],
}
SPLIT_OF = {"train": "train", "validation": "valid", "test": "test"}


def write_wikitext(directory, suffix="tokens"):
    os.makedirs(directory, exist_ok=True)
    for name, articles in ARTICLES.items():
        with open(os.path.join(directory, f"wiki.{name}.{suffix}"), "w",
                  encoding="utf-8") as f:
            f.write(" \n" + " \n".join(articles))
    return directory


def expected(split):
    return [a.strip() for a in ARTICLES[SPLIT_OF[split]]]


def test_split_articles_keeps_sections_inside_their_article():
    articles = wikitext.split_articles(" \n" + " \n".join(ARTICLES["train"]))
    assert articles == expected("train")
    assert "= = Gameplay = =" in articles[0]


@pytest.mark.parametrize("read_bytes", [1, 7, 64, 1 << 20])
def test_articles_stream_a_chunk_at_a_time_as_the_whole_file_splits(tmp_path, read_bytes):
    directory = write_wikitext(str(tmp_path / "wt"))
    path = os.path.join(directory, "wiki.train.tokens")
    with open(path, "a", encoding="utf-8") as f:  # CRLF endings and a trailing title
        f.write(" = Crlf = \r\n \r\n Ελληνικά text . \r\n = Last = \n")
    streamed = list(wikitext.iter_articles(readers.iter_lines(path, read_bytes=read_bytes)))
    assert streamed == wikitext.split_articles(readers.read_text(path))
    assert streamed[:3] == expected("train") and streamed[-1] == "= Last ="


def test_a_local_directory_is_read_by_path(tmp_path):
    directory = write_wikitext(str(tmp_path / "wikitext-2"))
    corpus = load_corpus({"corpus": directory})
    assert corpus.name == "wikitext-2"
    for split in SPLIT_OF:
        assert corpus.documents(split) == expected(split)
        assert list(load_corpus({"corpus": directory}).iter_documents(split)) == expected(split)
    assert load_corpus({"corpus": directory}).fingerprint == corpus.fingerprint


def test_a_named_corpus_needs_a_local_copy_or_download(tmp_path):
    with pytest.raises(DataError, match=r"config\.data\.download=True.*config\.data\.corpus"):
        load_corpus({"corpus": "wikitext-103", "cache_dir": str(tmp_path)})
    write_wikitext(str(tmp_path / "wikitext" / "wikitext-103"))
    corpus = load_corpus({"corpus": "wikitext-103", "cache_dir": str(tmp_path)})
    assert corpus.documents("validation") == expected("validation")


def test_a_missing_split_file_is_named(tmp_path):
    directory = write_wikitext(str(tmp_path / "wt"))
    os.remove(os.path.join(directory, "wiki.test.tokens"))
    with pytest.raises(DataError, match=r"no wiki\.test\.tokens"):
        load_corpus({"corpus": directory})


def test_archive_url_precedence(monkeypatch):
    monkeypatch.delenv(wikitext.URL_ENV, raising=False)
    assert wikitext.archive_url("wikitext-2") == (
        f"{wikitext.DEFAULT_BASE_URL}/wikitext-2-v1.zip")
    monkeypatch.setenv(wikitext.URL_ENV, "http://mirror/x/")
    assert wikitext.archive_url("wikitext-103-raw") == (
        "http://mirror/x/wikitext-103-raw-v1.zip")
    assert wikitext.archive_url("wikitext-2", "http://h/w2.zip") == "http://h/w2.zip"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A directory served over HTTP on 127.0.0.1: (directory, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_from_a_local_server(tmp_path, server, monkeypatch):
    root, url = server
    source = write_wikitext(str(tmp_path / "src" / "wikitext-2-raw"), suffix="raw")
    with zipfile.ZipFile(root / "wikitext-2-raw-v1.zip", "w") as archive:
        for name in sorted(os.listdir(source)):
            archive.write(os.path.join(source, name), f"wikitext-2-raw/{name}")
    cache_dir = str(tmp_path / "cache")
    monkeypatch.setenv(wikitext.URL_ENV, url)
    corpus = load_corpus({"corpus": "wikitext-2-raw", "cache_dir": cache_dir,
                          "download": True})
    assert corpus.documents("train") == expected("train")
    os.remove(root / "wikitext-2-raw-v1.zip")  # later loads use the unpacked copy
    again = load_corpus({"corpus": "wikitext-2-raw", "cache_dir": cache_dir})
    assert again.documents("test") == expected("test")
    assert again.fingerprint == corpus.fingerprint


@pytest.mark.filterwarnings("ignore:Could not extract archive")
def test_a_broken_download_is_deleted_and_reported(tmp_path, server):
    root, url = server
    (root / "wikitext-2-v1.zip").write_bytes(b"PK\x03\x04 this is cut off")
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(DataError, match="could not be unpacked"):
        load_corpus({"corpus": "wikitext-2", "cache_dir": cache_dir, "download": True,
                     "download_url": url})
    assert not os.path.exists(os.path.join(cache_dir, "wikitext", "wikitext-2-v1.zip"))
    with pytest.raises(DataError, match="failed"):
        load_corpus({"corpus": "wikitext-2", "cache_dir": cache_dir, "download": True,
                     "download_url": url + "/missing.zip"})
