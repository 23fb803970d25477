"""`tflm embed`: a text file in, the SentenceEncoder's vectors out as .npy; bad input files
are named."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.testing import tiny_encoder_dir
from tflm.errors import DataError
from tflm.generation.embedding import SentenceEncoder, read_sentences

LINES = ["The quick brown fox jumps over the lazy dog.", "", "A function returns a value.",
         "   ", "the lazy dog " * 20, "Classes define methods."]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tflm.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_encoder_dir(tmp_path_factory.mktemp("cli_embed") / "model")


def test_embed_writes_the_sentence_encoders_vectors(model_dir, tmp_path):
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "vectors.npy"
    result = run_cli("embed", f"--model={model_dir}", f"--input={source}",
                     f"--output={output}", "--batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    first, rest = result.stdout.split("\n", 1)
    assert first.startswith("Embedded 4 sentences (2 blank lines skipped)")
    report = json.loads(rest)
    assert report["shape"] == [4, 16] and report["pooling"] == "mean"
    vectors = np.load(output)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 16)
    expected = SentenceEncoder.from_model_dir(model_dir).embed([t for t in LINES if t.strip()])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    result = run_cli("embed", f"--model={model_dir}", f"--input={source}",
                     f"--output={output}", "--pooling=first")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.split("\n", 1)[1])["pooling"] == "first"


def test_bad_input_files_are_named(model_dir, tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("first line\nsecond\ncaf\xe9 au lait\n".encode("latin-1"))
    result = run_cli("embed", f"--model={model_dir}", f"--input={source}",
                     f"--output={tmp_path / 'x.npy'}")
    assert result.returncode == 1
    assert f"'{source}' is not UTF-8 at line 3" in result.stderr
    assert not (tmp_path / "x.npy").exists()
    with pytest.raises(DataError, match="cannot be read"):
        read_sentences(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no sentences"):
        read_sentences(str(empty))
    windows = tmp_path / "crlf.txt"
    windows.write_bytes(b"first\r\n\r\nsecond\r\n")
    assert read_sentences(str(windows)) == (["first", "second"], 1)
