"""RoBERTa imports: the position offset (padding_idx + 1), the token-type row, the LM head
(always the exact GELU) and the <mask> rule, against a float64 reference and keras-hub."""

import json
import os

import keras_hub
import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

import tflm
from tests.convert import hf_dirs
from tflm.convert import import_hf
from tflm.model_dir import load_model_dir

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("roberta"))


@pytest.fixture(scope="module")
def imported(root):
    # Real RoBERTa checkpoints store a zero token-type row (keras-hub drops it).
    source = hf_dirs.roberta_dir(os.path.join(root, "hf"), zero_token_types=True,
                                 tied_decoder=True)
    report = import_hf(source, os.path.join(root, "out"))
    return source, os.path.join(root, "out"), report


def _batch(tokenizer, texts, length=16):
    rows = [[tokenizer.cls_id, *ids[:length - 2], tokenizer.sep_id]
            for ids in tokenizer.encode(texts)]
    ids = np.full((len(rows), length), tokenizer.pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return ids, mask


def _reference(source):
    return hf_dirs.load_tensors(source), json.load(open(os.path.join(source, "config.json")))


def test_layout(imported):
    _, out, report = imported
    assert report["objective"] == "masked_lm" and report["head"] == {"pair_task": "none"}
    assert report["missing_heads"] == []
    b = report["backbone"]
    # 66 stored position rows; rows 0 and 1 (padding_idx = 1) are never read.
    assert (b["max_sequence_length"], b["num_segments"], b["layer_norm_epsilon"]) == (
        64, 0, 1e-5)
    assert report["tokenizer"]["special_tokens"]["mask"]["token"] == "<mask>"


def test_hidden_states_and_lm_logits_match(imported):
    source, out, _ = imported
    model, tokenizer, _ = load_model_dir(out)
    tensors, config = _reference(source)
    ids, mask = _batch(tokenizer, ["The cat sat on the mat.", "Café <mask> 東京"])
    reference = hf_dirs.encoder_reference(tensors, config, ids, mask=mask)
    outputs = model({"token_ids": ids, "padding_mask": mask,
                     "mask_positions": np.tile(np.arange(ids.shape[1]), (2, 1))})
    hidden = model.backbone({"token_ids": ids, "padding_mask": mask})["sequence_output"]
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], reference[real], atol=TOLERANCE)
    logits = hf_dirs.mlm_reference(tensors, config, reference)
    scale = np.abs(logits).max()
    np.testing.assert_allclose(np.asarray(outputs["mlm"])[real] / scale, logits[real] / scale,
                               atol=TOLERANCE)
    keras_hub_backbone = keras_hub.models.Backbone.from_preset(source)
    theirs = keras_hub_backbone({"token_ids": ids, "padding_mask": mask})  # (B, T, H)
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(theirs)[real],
                               atol=TOLERANCE)


def test_nonzero_token_type_row_is_kept(root):
    # A RoBERTa whose single token-type row is not zero: added to every position row.
    source = hf_dirs.roberta_dir(os.path.join(root, "typed"), seed=1)
    import_hf(source, os.path.join(root, "typed_out"))
    model, tokenizer, _ = load_model_dir(os.path.join(root, "typed_out"))
    tensors, config = _reference(source)
    assert np.abs(tensors["roberta.embeddings.token_type_embeddings.weight"]).max() > 0.1
    ids, mask = _batch(tokenizer, ["a quick brown fox", "jumps"])
    reference = hf_dirs.encoder_reference(tensors, config, ids, mask=mask)
    hidden = model.backbone({"token_ids": ids, "padding_mask": mask})["sequence_output"]
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(hidden)[real], reference[real], atol=TOLERANCE)


def test_fill_mask_uses_the_checkpoints_layout(imported):
    source, out, _ = imported
    lm = tflm.load(out)
    text = "The cat <mask> on the mat."
    [[candidates]] = lm.fill_mask([text], top_k=2)
    # <s> ... </s> with <mask> taking the space before it: the checkpoint's own ids.
    ids = HFTokenizer.from_file(os.path.join(source, "tokenizer.json")).encode(text).ids
    assert lm._sequences([text]) == [ids]
    tensors, config = _reference(source)
    hidden = hf_dirs.encoder_reference(tensors, config, np.array([ids]))
    logits = hf_dirs.mlm_reference(tensors, config, hidden)[0, ids.index(lm.tokenizer.mask_id)]
    assert [c["token_id"] for c in candidates] == list(np.argsort(-logits)[:2])
