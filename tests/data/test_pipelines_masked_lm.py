"""Masked LM: selection rate, 80/10/10, specials, whole words, feature consistency, streams."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tflm.data import masking, pipelines
from tflm.data.masking import MaskingSpec, mask_tokens
from tflm.errors import DataError

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
VOCAB = 1000
SPEC = MaskingSpec(MASK, VOCAB, special_ids=(PAD, CLS, SEP, UNK), max_predictions=40)


def random_batch(batch, length, seed=0):
    """`[CLS] tokens [SEP] pad` rows with random real lengths and a few UNKs."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, VOCAB, size=(batch, length)).astype(np.int32)
    tokens[rng.random((batch, length)) < 0.02] = UNK
    lengths = rng.integers(length // 2, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    tokens[:, 0] = CLS
    tokens[np.arange(batch), lengths - 1] = SEP
    tokens[mask == 0] = PAD
    noise = rng.random((3, batch, length)).astype(np.float32)
    return tokens, mask, noise


def masked(tokens, mask, noise, spec=SPEC):
    return {k: v.numpy() for k, v in mask_tokens(tokens, mask, noise, spec).items()}


def test_selection_rate_and_80_10_10_split():
    tokens, mask, noise = random_batch(1100, 128)  # ~103k candidate tokens
    out = masked(tokens, mask, noise)
    candidates = mask.astype(bool) & ~np.isin(tokens, [PAD, CLS, SEP, UNK, MASK])
    rows, cols = np.nonzero(out["mask_weights"])
    positions = out["mask_positions"][rows, cols]
    assert candidates.sum() > 100_000
    assert abs(len(rows) / candidates.sum() - 0.15) < 0.01
    original, new = tokens[rows, positions], out["token_ids"][rows, positions]
    assert abs(np.mean(new == MASK) - 0.8) < 0.02
    assert abs(np.mean((new != MASK) & (new != original)) - 0.1) < 0.02
    assert abs(np.mean(new == original) - 0.1) < 0.02
    assert not np.isin(new, [PAD, CLS, SEP, UNK]).any()  # random ids are never special


def test_specials_and_padding_are_never_selected_and_features_are_consistent():
    tokens, mask, noise = random_batch(64, 32, seed=1)
    out = masked(tokens, mask, noise, MaskingSpec(MASK, VOCAB, (PAD, CLS, SEP, UNK), 0.3, 5))
    changed = out["token_ids"] != tokens
    selected = np.zeros_like(changed)
    for row in range(64):
        used = out["mask_weights"][row] == 1
        pos = out["mask_positions"][row][used]
        assert 1 <= used.sum() <= 5 and used[: used.sum()].all()  # used slots first
        assert (np.diff(pos) > 0).all()
        np.testing.assert_array_equal(out["mask_ids"][row][used], tokens[row, pos])
        assert (out["mask_ids"][row][~used] == 0).all()
        assert (out["mask_positions"][row][~used] == 0).all()
        selected[row, pos] = True
    assert not (changed & ~selected).any()
    special = np.isin(tokens, [PAD, CLS, SEP, UNK]) | (mask == 0)
    assert not (selected & special).any()


def test_whole_word_masking_takes_whole_words():
    word_start = np.arange(VOCAB) % 3 == 0  # ids 3k start words, others continue them
    spec = MaskingSpec(MASK, VOCAB, (PAD, CLS, SEP, UNK), max_predictions=30, word_start=word_start)
    tokens, mask, noise = random_batch(200, 48, seed=2)
    out = masked(tokens, mask, noise, spec)
    special = np.isin(tokens, [PAD, CLS, SEP, UNK, MASK]) | (mask == 0)
    selected = np.zeros(tokens.shape, bool)
    rows, cols = np.nonzero(out["mask_weights"])
    selected[rows, out["mask_positions"][rows, cols]] = True
    for row in range(200):
        word = -1
        words = []
        for t in range(48):
            if special[row, t]:
                word = -1
                continue
            if word == -1 or word_start[tokens[row, t]]:
                words.append([])
                word = len(words) - 1
            words[word].append(t)
        for positions in words:
            flags = selected[row, positions]
            assert flags.all() or not flags.any()
    candidates = (~special).sum()
    assert 0.10 < selected.sum() / candidates <= 0.16


def test_word_starts_of_a_wordpiece_vocabulary():
    table = masking.word_starts(["[PAD]", "play", "##ing", "##s", "go"])
    np.testing.assert_array_equal(table, [True, True, False, False, True])


def test_masking_spec_errors_say_what_to_fix():
    with pytest.raises(DataError, match="mask_rate"):
        MaskingSpec(MASK, VOCAB, (), mask_rate=1.5)
    with pytest.raises(DataError, match="word_start"):
        MaskingSpec(MASK, VOCAB, (), word_start=np.ones(10, bool))


def make_cache(doc_lengths, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=sum(doc_lengths)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    return types.SimpleNamespace(ids=ids, offsets=offsets)


CACHE = make_cache([50, 20, 70, 33, 41])


def take(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def mlm(start_step=0, input_context=None, batch=4, seed=7):
    return pipelines.masked_lm_dataset(
        CACHE,
        16,
        batch,
        seed,
        SPEC,
        cls_id=CLS,
        sep_id=SEP,
        start_step=start_step,
        input_context=input_context,
    )


def test_dataset_sequences_resume_and_shards():
    full = take(mlm(), 6)
    x, y, w = full[0]
    assert set(x) == {"token_ids", "padding_mask", "segment_ids", "mask_positions"}
    assert x["token_ids"].shape == (4, 16) and y.shape == w.shape == (4, 40)
    assert (x["token_ids"][:, 0] == CLS).all() and (x["token_ids"][:, -1] == SEP).all()
    assert (x["segment_ids"] == 0).all() and (x["padding_mask"] == 1).all()
    for a, b in zip(full[2:], take(mlm(start_step=2), 4)):
        for key in x:
            np.testing.assert_array_equal(a[0][key], b[0][key])
        np.testing.assert_array_equal(a[1], b[1])
    shards = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(2, worker, 2)
        shards.append(take(mlm(input_context=ctx), 3))
    for step in range(3):
        for key in x:
            joined = np.concatenate([shards[0][step][0][key], shards[1][step][0][key]])
            np.testing.assert_array_equal(joined, full[step][0][key])


def test_eval_dataset_is_finite_and_repeatable():
    make = lambda: pipelines.masked_lm_eval_dataset(  # noqa: E731
        CACHE, 16, 4, SPEC, cls_id=CLS, sep_id=SEP, remainder="pad"
    )
    first, second = take(make(), 100), take(make(), 100)
    assert sum(len(b[1]) for b in first) == -(-(214 + 5) // 14)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0]["token_ids"], b[0]["token_ids"])
    last = first[-1][0]
    length = last["padding_mask"][-1].sum()
    assert last["token_ids"][-1][length - 1] == SEP and (last["token_ids"][-1][length:] == 0).all()
