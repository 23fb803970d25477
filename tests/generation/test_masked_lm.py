"""MaskedLanguageModel: fill-mask probabilities are the model's, encode is the backbone's."""

import logging

import numpy as np
import pytest
from keras import ops

from tflm.errors import GenerationError
from tflm.generation.masked_lm import MaskedLanguageModel
from tflm.models import BertPretrainer
from tflm.text import train_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A function returns a value.",
         "Classes define methods and attributes."] * 10


@pytest.fixture(scope="module")
def lm():
    tokenizer = train_tokenizer("wordpiece", TEXTS, 120, lowercase=True)
    model = BertPretrainer(backbone=dict(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=1, hidden_dim=16, num_heads=2,
        intermediate_dim=32, max_sequence_length=16, causal=False, norm_first=False,
        activation="gelu", num_segments=2))
    rng = np.random.default_rng(0)
    for variable in model.weights:  # spread-out predictions
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype("float32"))
    return MaskedLanguageModel(model, tokenizer)


def _direct(lm, text):
    """The model's own probabilities at the mask positions of `[CLS] text [SEP]`."""
    from tflm.text.masks import encode_with_masks

    t = lm.tokenizer
    ids = [t.cls_id, *encode_with_masks(t, [text])[0], t.sep_id]
    positions = [i for i, v in enumerate(ids) if v == t.mask_id]
    x = {"token_ids": np.array([ids], "int32"), "padding_mask": np.ones((1, len(ids)), "int32"),
         "segment_ids": np.zeros((1, len(ids)), "int32"),
         "mask_positions": np.array([positions], "int32")}
    logits = ops.convert_to_numpy(lm.model(x)["mlm"])[0]
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def test_fill_mask_gives_the_models_top_k_probabilities(lm):
    texts = ["the quick [MASK] fox", "a [MASK] returns a [MASK]."]
    results = lm.fill_mask(texts, top_k=4)
    assert [len(r) for r in results] == [1, 2]
    for text, masks in zip(texts, results):
        probs = _direct(lm, text)
        for slot, candidates in enumerate(masks):
            assert len(candidates) == 4
            best = np.argsort(-probs[slot], kind="stable")[:4]
            assert [c["token_id"] for c in candidates] == best.tolist()
            np.testing.assert_allclose([c["score"] for c in candidates], probs[slot][best],
                                       rtol=1e-4)
            assert candidates[0]["token"] == lm.tokenizer.id_to_token(int(best[0]))


def test_batches_larger_than_one_call_and_padding_give_the_same_answers(lm):
    texts = [f"the [MASK] fox {'jumps ' * i}" for i in range(11)]
    together = lm.fill_mask(texts, top_k=2)
    alone = [lm.fill_mask([t], top_k=2)[0] for t in texts[:3]]
    for a, b in zip(together[:3], alone):
        assert [c["token_id"] for c in a[0]] == [c["token_id"] for c in b[0]]
        np.testing.assert_allclose([c["score"] for c in a[0]], [c["score"] for c in b[0]],
                                   rtol=1e-4)


def test_encode_returns_the_backbones_hidden_states_and_pooled_vector(lm):
    encoding = lm.encode(["the quick fox", "a function"])
    t = lm.tokenizer
    ids = [t.cls_id, *t.encode(["the quick fox"])[0], t.sep_id]
    assert encoding.token_ids[0] == ids
    x = {"token_ids": np.array([ids], "int32"), "padding_mask": np.ones((1, len(ids)), "int32")}
    out = lm.model.backbone(x)
    np.testing.assert_allclose(encoding.hidden_states[0],
                               ops.convert_to_numpy(out["sequence_output"])[0], atol=1e-5)
    np.testing.assert_allclose(encoding.pooled[0], ops.convert_to_numpy(out["pooled_output"])[0],
                               atol=1e-5)


def test_bad_requests_say_what_to_do(lm, caplog):
    with pytest.raises(GenerationError, match=r"no mask token '\[MASK\]'"):
        lm.fill_mask(["no mask in this text"])
    with pytest.raises(GenerationError, match="list of strings"):
        lm.fill_mask("the [MASK] fox")
    with pytest.raises(GenerationError, match="top_k must be >= 1"):
        lm.fill_mask(["the [MASK] fox"], top_k=0)
    with caplog.at_level(logging.WARNING):
        out = lm.encode(["the quick brown fox " * 10, "short"])
    assert "1 of 2 texts are longer" in caplog.text
    assert len(out.hidden_states[0]) == lm.model.max_sequence_length
