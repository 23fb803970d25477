"""`SentenceEncoder`: one L2-normalised vector per text from any encoder model directory.

Texts are laid out as in pre-training: `[CLS] text [SEP]` when the tokenizer has both
tokens (WordPiece, SentencePiece), else the raw ids (byte-level BPE; an empty text is the
start token, `tflm.special_ids.prompt_ids`), cut at the end to the model's positions. The
texts are sorted by length and cut into batches, each padded to a bucket length
(`decode.bucket_length`), so short texts do not pay for long ones; every bucket length
is one compiled shape (XLA on TensorFlow; one traced graph for all of them) and batches
keep a fixed shape (`batch_plan`: longest first, fewer rows for long buckets). The vector
is the backbone's hidden states pooled (`tflm.models.pool`) and L2-normalised
(`sentence_embedding`, the rule the SavedModel and TFLite `embed` signatures run too).

Pooling (`sentence_pooling`): the model directory's `config.model.backbone.pooling`,
where "auto" means "mean" (mean over real tokens: what any encoder embeds well with; a
SimCSE model's config names the pooling it was trained with). A causal (GPT) model
embeds too, by default with mean pooling over its (causal) hidden states.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
from absl import logging
from keras import ops

from tflm import special_ids
from tflm.errors import DataError, GenerationError
from tflm.generation.decode import bucket_length, compile_fn
from tflm.models import pool

POOLINGS = ("first", "mean", "max", "last")
EPSILON = 1e-12  # squared-norm floor of the L2 normalisation (an all-zero vector stays 0)
LONG_FILE = 1000  # sentences from which `embed_file` shows a progress bar
ROW_TOKENS = 32  # bucket length up to which a call holds batch_size texts (see batch_plan)


def sentence_pooling(configured: str, pooling: str | None = None) -> str:
    """The pooling of sentence embeddings: `pooling` when given, else the model's
    `config.model.backbone.pooling` (`configured`), where "auto" means "mean".

    Raises:
        GenerationError: `pooling` is not one of "first", "mean", "max", "last".
    """
    if pooling is None:
        return "mean" if configured == "auto" else configured
    if pooling not in POOLINGS:
        raise GenerationError(f"pooling {pooling!r} is not one of {POOLINGS}; leave it out "
                              "for the model's own (config.model.backbone.pooling, "
                              "'auto' -> 'mean').")
    return pooling


def sentence_normalize(config=None, normalize: bool | None = None) -> bool:
    """The one normalisation rule: an explicit `normalize`, else the model's
    `config.model.normalize` (a task that has it: an imported sentence-transformers model
    without a Normalize module keeps its vectors' lengths), else True."""
    if normalize is not None:
        return bool(normalize)
    if config is not None and "normalize" in config.model:
        return bool(config.model.normalize)
    return True


def sentence_embedding(sequence_output, padding_mask, pooling: str, normalize: bool = True):
    """One float32 vector per sequence: `pool(sequence_output, padding_mask, pooling)`,
    L2-normalised when `normalize` (keras.ops, so it runs in the compiled functions of
    `SentenceEncoder` and in the exported signatures alike).

    Args:
        sequence_output: (B, T, H) hidden states.
        padding_mask: (B, T) int, 1 = real token.
    Returns:
        (B, H) float32.
    """
    pooled = pool(ops.cast(sequence_output, "float32"), padding_mask, pooling)  # (B, H)
    if not normalize:
        return pooled
    squared = ops.sum(ops.square(pooled), axis=-1, keepdims=True)  # (B, 1)
    return pooled / ops.sqrt(ops.maximum(squared, EPSILON))


def batch_plan(lengths: Sequence[int], batch_size: int,
               limit: int) -> list[tuple[list[int], int, int]]:
    """How `SentenceEncoder.embed` batches texts of `lengths` tokens: one
    `(indices, rows, length)` per compiled call, which embeds the texts `indices` padded
    to a (rows, length) batch.

    - Longest first: the texts are sorted by length, descending (ties in input order), so
      the call with the largest activations runs before the other buckets' compiled
      functions (each holds memory for good) exist.
    - A batch is padded to the bucket of its longest text (`bucket_length`, at most
      `limit`) and holds `batch_size` texts; a bucket longer than `ROW_TOKENS` holds
      `batch_size * ROW_TOKENS // length` (at least 1): the same token slots, so a call's
      memory does not grow with the texts' length.
    - The last batch, when short of rows, runs in the previous batch's shape if its texts
      fit (no compilation for a remainder), else in the next power of two rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    plan: list[tuple[list[int], int, int]] = []
    first = 0
    while first < len(order):
        length = bucket_length(lengths[order[first]], limit)
        rows = min(batch_size, max(1, batch_size * ROW_TOKENS // length))
        indices = order[first:first + rows]
        first += rows
        if len(indices) < rows and plan and len(indices) <= plan[-1][1]:
            rows, length = plan[-1][1], plan[-1][2]
        elif len(indices) < rows:
            rows = min(rows, 1 << (len(indices) - 1).bit_length())
        plan.append((indices, rows, length))
    return plan


def _check_texts(texts) -> list[str]:
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise GenerationError(f"texts must be a list of strings, got {type(texts).__name__} "
                              f"{texts!r:.80}; wrap a single text in a list")
    return list(texts)


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


class SentenceEncoder:
    """Sentence embeddings from a backbone and its tokenizer.

    Args:
        backbone: a `tflm.models.TransformerBackbone` (a model directory's, see
            `from_model_dir`, or `task.backbone`).
        tokenizer: its `tflm.text` tokenizer (`encode`, `cls_id`, `sep_id`, `pad_id`).
        config: the model directory's config; its `config.model.backbone.pooling` sets the
            default pooling (else the backbone's own `pooling`).
        pooling: "first" | "mean" | "max" | "last", or None for the rule of
            `sentence_pooling`.
        normalize: L2-normalise the vectors (cosine = dot product); None = the rule of
            `sentence_normalize` (`config.model.normalize` where the task has it, else
            True).

    Raises:
        GenerationError: an unknown `pooling`.
    """

    def __init__(self, backbone: keras.Model, tokenizer, config=None,
                 pooling: str | None = None, normalize: bool | None = None):
        configured = backbone.pooling if config is None else config.model.backbone.pooling
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.pooling = sentence_pooling(configured, pooling)
        self.normalize = sentence_normalize(config, normalize)
        self._function = None  # compiled on first use

    @classmethod
    def from_model_dir(cls, path: str, pooling: str | None = None) -> SentenceEncoder:
        """The encoder of a model directory: its trained backbone (`load_backbone`; the
        discriminator of an ELECTRA directory) and its tokenizer.

        Raises:
            ModelDirError, TokenizerError: the directory cannot be loaded.
            GenerationError: an unknown `pooling`.
        """
        from tflm.model_dir import TOKENIZER_DIR, load_backbone, read_model_config
        from tflm.text import check_vocabulary, load_tokenizer

        path = os.path.expanduser(path)
        config = read_model_config(path)
        tokenizer = load_tokenizer(os.path.join(path, TOKENIZER_DIR))
        check_vocabulary(tokenizer, config.model.backbone.vocabulary_size)
        return cls(load_backbone(path), tokenizer, config, pooling)

    @property
    def hidden_dim(self) -> int:
        return int(self.backbone.hidden_dim)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids each text is embedded from: `[CLS] ids [SEP]` (tokenizers with both),
        else the ids (an empty text: the start token), cut at the end to the model's
        positions; one warning counts the cut texts.

        Raises:
            GenerationError: `texts` is not a list of strings.
        """
        texts = _check_texts(texts)
        cls_id, sep_id = self.tokenizer.cls_id, self.tokenizer.sep_id
        framed = cls_id is not None and sep_id is not None
        limit = self.backbone.max_sequence_length - (2 if framed else 0)
        encoded = self.tokenizer.encode(texts)
        cut = sum(len(ids) > limit for ids in encoded)
        if cut:
            logging.warning("%d of %d texts are longer than the model's %d tokens and were "
                            "cut at the end.", cut, len(encoded), limit)
        if framed:
            return [[cls_id, *ids[:limit], sep_id] for ids in encoded]
        return [special_ids.prompt_ids(self.tokenizer, ids[:limit]) for ids in encoded]

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """One vector per text, in input order.

        Args:
            texts: a list of strings (may be empty).
            batch_size: texts per compiled call (fewer for texts over `ROW_TOKENS`
                tokens, see `batch_plan`).
            progress: show a `keras.utils.Progbar` (sentences done).

        Returns:
            (N, hidden) float32, L2-normalised unless `normalize=False`.

        Raises:
            GenerationError: `texts` is not a list of strings, or batch_size < 1.
        """
        if int(batch_size) < 1:
            raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
        sequences = self.token_ids(texts)
        out = np.zeros((len(sequences), self.hidden_dim), np.float32)
        plan = batch_plan([len(ids) for ids in sequences], int(batch_size),
                          self.backbone.max_sequence_length)
        bar = keras.utils.Progbar(len(sequences), unit_name="sentence") if progress else None
        for indices, rows, length in plan:
            out[indices] = self._embed_batch([sequences[i] for i in indices], rows, length)
            if bar is not None:
                bar.add(len(indices))
        return out

    def _embed_batch(self, sequences: list[list[int]], rows: int, length: int) -> np.ndarray:
        """(len(sequences), hidden) of sequences run as one (rows, length) padded batch."""
        tokens = np.full((rows, length), special_ids.pad_id(self.tokenizer), np.int32)
        mask = np.zeros((rows, length), np.int32)
        for row, ids in enumerate(sequences):
            tokens[row, :len(ids)], mask[row, :len(ids)] = ids, 1
        if self._function is None:
            any_batch = ((None, None), "int32")  # (rows, length): one trace for all buckets
            self._function = compile_fn(self._forward, self.backbone, [any_batch] * 2)
        vectors = self._function(tokens, mask)  # (rows, hidden)
        return np.asarray(ops.convert_to_numpy(vectors))[:len(sequences)]

    def _forward(self, tokens, mask):
        out = self.backbone({"token_ids": tokens, "padding_mask": mask})
        return sentence_embedding(out["sequence_output"], mask, self.pooling, self.normalize)

    def similarity(self, a, b):
        """Cosine similarity of two texts (a float), or of two equal-length lists of texts
        pairwise ((N,) float32 array).

        Raises:
            GenerationError: anything but two strings or two lists of the same length.
        """
        if isinstance(a, str) and isinstance(b, str):
            return float(self.similarity([a], [b])[0])
        if not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                and len(a) == len(b)):
            raise GenerationError(
                "similarity takes two strings, or two lists of strings of the same length "
                f"(compared pairwise); got {_describe(a)} and {_describe(b)}")
        vectors = self.embed([*a, *b])
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.sqrt(EPSILON))
        unit = vectors / norms
        return np.sum(unit[:len(a)] * unit[len(a):], axis=1).astype(np.float32)


def task_encoder(model: keras.Model, tokenizer, config) -> SentenceEncoder:
    """The interface hook of encoder objectives whose task has no use of its own at
    inference (`simcse`, `electra`): a `SentenceEncoder` on the task's backbone, with the
    pooling of `config` (`tflm.load(dir).embed(texts)`)."""
    return SentenceEncoder(model.backbone, tokenizer, config)


def read_sentences(path: str) -> tuple[list[str], int]:
    """The non-blank lines of the UTF-8 text file `path` (line ends stripped) and how many
    blank lines were skipped.

    Raises:
        DataError: the file is missing or unreadable, not UTF-8 (the line is named), or
            holds no sentence.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"input file '{path}' cannot be read ({e.strerror or e}); pass a "
                        "UTF-8 text file with one sentence per line.") from e
    sentences, blank = [], 0
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"input file '{path}' is not UTF-8 at line {number} (byte "
                            f"{e.start} of the line); re-save it as UTF-8.") from e
        if text.strip():
            sentences.append(text)
        else:
            blank += 1
    if not sentences:
        raise DataError(f"input file '{path}' holds no sentences; write one sentence per "
                        "line.")
    return sentences, blank


def embed_file(model_dir: str, input: str, output: str, batch_size: int = 64,
               pooling: str | None = None) -> dict:
    """Embeds every non-blank line of the UTF-8 file `input` with the model directory
    `model_dir` and writes the float32 (N, hidden) array to the `.npy` file `output` (row
    i = the i-th non-blank line; blank lines are skipped and counted).

    Returns:
        A report: `input`, `output`, `sentences`, `blank_lines_skipped`, `shape`,
        `pooling`, `normalized`, `seconds`, `sentences_per_second`.

    Raises:
        DataError: see `read_sentences`; ModelDirError / TokenizerError: see
            `SentenceEncoder.from_model_dir`.
    """
    sentences, blank = read_sentences(input)
    encoder = SentenceEncoder.from_model_dir(model_dir, pooling)
    start = time.perf_counter()
    vectors = encoder.embed(sentences, batch_size, progress=len(sentences) >= LONG_FILE)
    seconds = time.perf_counter() - start
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npy", delete=False) as f:
        try:
            np.save(f, vectors)
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(f.name, output)  # a complete file or none
    return {"input": input, "output": output, "sentences": len(sentences),
            "blank_lines_skipped": blank, "shape": list(vectors.shape),
            "dtype": "float32", "pooling": encoder.pooling, "normalized": encoder.normalize,
            "seconds": round(seconds, 3),
            "sentences_per_second": round(len(sentences) / max(seconds, 1e-9), 1)}

