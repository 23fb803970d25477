"""Unsupervised SimCSE through the real trainer (``configs/simcse_mini.py`` shrunk): it
raises the Spearman correlation of cosine similarity with graded paraphrases above the
starting encoder's (measured by the objective's ``similarity_validation`` callback, and
again through ``tflm.load``).

The starting point is a tiny masked-LM encoder (2 layers, hidden 32) fitted here on
sentences of the built-in corpus. The paraphrase set is built from held-out documents:
a sentence with a few words dropped (grade 2), another sentence of the same document
(grade 1), a sentence of another document (grade 0).
"""

import os
import re

import keras
import numpy as np
import pytest

from tflm.config import base_config, load_config, validate
from tflm.data.builtin import builtin_documents
from tflm.model_dir import build_model, save_model_dir
from tflm.text import train_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQ = 32
TRAIN_DOCS, EVAL_DOCS = 300, 60


def _sentences(document: str) -> list[str]:
    text = " ".join(document.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 6 <= len(s.split()) <= 24]


@pytest.fixture(scope="module")
def documents():
    """Sentences of each built-in document that has at least two: (train, held out)."""
    docs = [s for s in map(_sentences, builtin_documents(None)) if len(s) >= 2]
    return docs[:TRAIN_DOCS], docs[TRAIN_DOCS:TRAIN_DOCS + EVAL_DOCS]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, documents):
    """A model directory of a 2-layer, hidden-32 masked LM fitted for 2 passes over the
    ~1900 training sentences (118 steps); its corpus file holds one sentence per
    document."""
    root = tmp_path_factory.mktemp("simcse")
    sentences = [s for doc in documents[0] for s in doc]
    corpus = os.path.join(root, "sentences.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n\n".join(sentences))
    tokenizer = train_tokenizer("wordpiece", sentences, 400, lowercase=True)
    config = base_config("masked_lm")
    config.model.backbone.update(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=2, hidden_dim=32,
        num_heads=2, intermediate_dim=64, max_sequence_length=SEQ, causal=False,
        norm_first=False, activation="gelu")
    config.model.pair_task = "none"
    config.data.update(corpus=corpus, seq_len=SEQ, tokenizer="wordpiece", lowercase=True,
                       max_predictions=5)
    config = validate(config)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    x, y = _masked(tokenizer, sentences, np.random.default_rng(0))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=model.default_loss())
    model.fit(x, {"mlm": y}, sample_weight={"mlm": np.ones_like(y, np.float32)},
              batch_size=32, epochs=2, verbose=0)
    return save_model_dir(os.path.join(root, "model"), model, tokenizer, config), corpus


def _masked(tokenizer, sentences, rng, masks=5):
    """`[CLS] s [SEP]` rows with `masks` of their real tokens replaced by [MASK]."""
    rows = [[tokenizer.cls_id, *ids[:SEQ - 2], tokenizer.sep_id]
            for ids in tokenizer.encode(sentences)]
    ids = np.zeros((len(rows), SEQ), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    positions = np.stack([rng.choice(np.arange(1, max(int(m.sum()) - 1, masks + 1)), masks,
                                     replace=False) for m in mask]).astype(np.int32)
    labels = np.take_along_axis(ids, positions, axis=1)
    np.put_along_axis(ids, positions, tokenizer.mask_id, axis=1)
    return {"token_ids": ids, "padding_mask": mask, "mask_positions": positions}, labels


def _paraphrases(documents, rng):
    """(first, second, grade) rows: a sentence with a word or two dropped (2), another
    sentence of its document (1), a sentence of another document (0)."""
    rows = []
    for d, doc in enumerate(documents):
        sentence, other = doc[0], doc[1]
        words = sentence.split()
        keep = np.sort(rng.choice(len(words), len(words) - 2, replace=False))
        stranger = documents[(d + 1 + rng.integers(len(documents) - 1)) % len(documents)]
        rows += [(sentence, " ".join(words[i] for i in keep), 2),
                 (sentence, other, 1), (sentence, stranger[0], 0)]
    return rows


def test_simcse_raises_spearman_on_graded_paraphrases(encoder_dir, documents, tmp_path):
    import tflm
    from tflm.training.finetune import finetune
    from tflm.training.task_metrics import spearman

    model_dir, corpus = encoder_dir
    pairs = os.path.join(tmp_path, "pairs.tsv")
    rows = _paraphrases(documents[1], np.random.default_rng(1))
    with open(pairs, "w", encoding="utf-8") as f:
        f.write("sentence1\tsentence2\tscore\n")
        f.writelines(f"{a}\t{b}\t{g}\n" for a, b, g in rows)
    config = load_config(os.path.join(ROOT, "configs", "simcse_mini.py"))
    with config.unlocked():
        config.init_from = model_dir
        # "auto" trains with what SentenceEncoder embeds it with: mean pooling. (The
        # [CLS] vector of a masked LM fitted without a pair task is untrained.)
        config.model.backbone.pooling = "auto"
        config.data.update(corpus=corpus, cache_dir=str(tmp_path / "cache"),
                           similarity_validation=pairs)
        config.train.update(batch_size=32, steps=100, warmup_steps=10, learning_rate=1e-3,
                            eval_every=100, checkpoint_every=100, eval_steps=2,
                            log_every=50)
    summary = finetune(config, str(tmp_path / "run"))

    before, after = summary["initial_validation_spearman"], summary["validation_spearman"]
    assert after > before + 0.1, (before, after)  # measured: 0.16 -> 0.33-0.41 (3 seeds)
    assert summary["objective"] == "simcse" and summary["final_step"] == 100
    assert 0.0 <= summary["validation_accuracy"] <= 1.0

    encoder = tflm.load(summary["model_dir"])  # the objective's interface
    assert type(encoder).__name__ == "SentenceEncoder" and encoder.pooling == "mean"
    assert encoder.config.model.backbone.pooling == "mean"  # resolved before training
    cosine = encoder.similarity([a for a, _, _ in rows], [b for _, b, _ in rows])
    assert spearman(cosine, [g for _, _, g in rows]) == pytest.approx(after, abs=1e-4)
