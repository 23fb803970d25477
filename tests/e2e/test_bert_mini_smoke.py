"""End to end: the real configs/bert_mini.py, shrunk, trained by the one trainer.

Masked LM + next sentence prediction on the built-in corpus, then `tflm evaluate` and
fill-mask through `tflm.load`: everything the masked-LM objective adds goes through the
objective registry, with the same trainer, model directory and CLI as GPT.
"""

import os

import numpy as np
import pytest

import tflm
from tests.training.train_worker import shared_cache_dir
from tflm.config import load_config
from tflm.data import load_corpus
from tflm.training import evaluate, train

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "bert_mini.py")
STEPS = 600


def _train(tmp_path_factory, steps):
    config = load_config(CONFIG)
    config.model.backbone.update(vocabulary_size=512, num_layers=2, hidden_dim=64,
                                 num_heads=2, intermediate_dim=128, max_sequence_length=64,
                                 dropout=0.0)
    config.data.update(seq_len=64, max_predictions=9,
                       cache_dir=shared_cache_dir(tmp_path_factory))
    config.train.update(batch_size=16, steps=steps, learning_rate=2e-3, warmup_steps=20,
                        eval_every=steps, eval_steps=8, log_every=50, checkpoint_every=steps)
    workdir = str(tmp_path_factory.mktemp("bert_mini"))
    return config, workdir, train(config, workdir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory, STEPS)


def test_masked_lm_and_next_sentence_prediction_learn(run):
    _, _, summary = run
    assert summary["final_step"] == STEPS and summary["objective"] == "masked_lm"
    # Masked-token perplexity falls by a large factor, accuracy by more; NSP's loss falls
    # (its accuracy needs longer: the slow test below).
    assert summary["validation_mlm_perplexity"] < summary["initial_validation_mlm_perplexity"] / 2
    assert summary["validation_mlm_accuracy"] > 10 * summary["initial_validation_mlm_accuracy"]
    assert summary["validation_pair_loss"] < summary["initial_validation_pair_loss"]


def test_evaluate_reports_the_same_numbers_on_every_call(run):
    _, workdir, summary = run
    first = evaluate(os.path.join(workdir, "model"), max_batches=8)
    second = evaluate(os.path.join(workdir, "model"), max_batches=8)
    assert first == second
    np.testing.assert_allclose(first["mlm_perplexity"], summary["validation_mlm_perplexity"],
                               rtol=1e-5)
    assert {"loss", "mlm_accuracy", "mlm_perplexity", "pair_accuracy"} <= set(first)


def _wordpiece_text(tokens: list[str]) -> str:
    """WordPiece tokens back to text ("##" pieces glued to the piece before)."""
    return "".join(t[2:] if t.startswith("##") else " " + t for t in tokens).strip()


def _fill_mask_hit_rate(config, workdir) -> float:
    """How often fill-mask's top 5 hold a masked whole word of held-out text: in each
    validation document's first 50 tokens one whole-word token is replaced by [MASK]."""
    lm = tflm.load(os.path.join(workdir, "model"))
    tokenizer = lm.tokenizer
    rng = np.random.default_rng(0)
    texts, originals = [], []
    for doc in load_corpus(config.data).documents("validation")[:200]:
        ids = tokenizer.encode([doc])[0][:50]
        tokens = [tokenizer.id_to_token(i) for i in ids]
        whole = [i for i in range(1, len(ids) - 1)
                 if not tokens[i].startswith("##") and not tokens[i + 1].startswith("##")]
        if len(ids) < 20 or not whole:
            continue
        i = int(rng.choice(whole))
        texts.append(f"{_wordpiece_text(tokens[:i])} [MASK] {_wordpiece_text(tokens[i + 1:])}")
        originals.append(ids[i])
    results = lm.fill_mask(texts, top_k=5)
    hits = [original in [c["token_id"] for c in masks[0]]
            for original, masks in zip(originals, results)]
    assert len(hits) >= 30
    return float(np.mean(hits))


def test_fill_mask_ranks_held_out_words_well_above_chance(run):
    config, workdir, _ = run
    # A model that had learnt nothing would hit 5 / 512 of the time; the tiny model
    # hits ~30% after 3000 steps (measured), mostly on frequent words.
    assert _fill_mask_hit_rate(config, workdir) > 0.05  # 5x chance


@pytest.mark.slow
def test_longer_training_learns_next_sentence_prediction_and_fill_mask(tmp_path_factory):
    """3000 steps (~3 minutes on 2 cores): NSP clearly above chance, fill-mask better."""
    config, workdir, summary = _train(tmp_path_factory, 3000)
    assert summary["validation_mlm_perplexity"] < summary["initial_validation_mlm_perplexity"] / 3
    assert summary["validation_pair_accuracy"] > 0.65
    assert _fill_mask_hit_rate(config, workdir) > 0.2  # 0.30 measured
