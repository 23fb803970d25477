"""Fine-tuned models exported: the SavedModel's ``classify`` / ``predict`` / ``tag`` answer as
``tflm.load(dir)`` does (also in a tensorflow-only process, for single texts and pairs);
the TFLite head equals Keras with builtin ops only and reports its quantized variants;
``tflm export`` writes report.json; versions are never overwritten; the deploy kit's
client builds ``classify`` / ``embed`` requests."""

import json
import os
import random
import runpy
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflm
from tflm.config import base_config, validate
from tflm.data.builtin import builtin_documents
from tflm.errors import ExportError
from tflm.export import export_model
from tflm.export.classifier import VERIFY_EXAMPLES, labelled_texts
from tflm.model_dir import build_model, save_model_dir
from tflm.models.tasks import get_objective
from tflm.text import train_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEQ_LEN = 24
GOOD = "good great fine lovely nice".split()
BAD = "bad awful poor dreadful nasty".split()
OTHER = "it was the food and service day".split()
# Unicode spaces split words as str.split() does; an accent; a word no piece covers.
ODD = ["it was\u00a0good\u3000and  nice", "café was bad", "  ", "§ great"]


def _sentence(rng, n=5):
    """Words and their tags: sentiment words tagged POS / NEG, the rest O."""
    words = [rng.choice(GOOD + BAD + OTHER) for _ in range(n)]
    return words, ["POS" if w in GOOD else "NEG" if w in BAD else "O" for w in words]


def _write_split(path, objective, pairs, count, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        if objective != "token_classification":
            f.write("text\tpair\tlabel\n" if pairs else "text\tlabel\n")
        for _ in range(count):
            words, tags = _sentence(rng, rng.randint(2, 7))
            good = tags.count("POS") - tags.count("NEG")
            if objective == "token_classification":
                f.write(json.dumps({"tokens": words, "tags": tags}) + "\n")
            elif objective == "regression":
                f.write(f"{' '.join(words)}\t{good}\n")
            elif pairs:
                other, other_tags = _sentence(rng)
                same = (good > 0) == (other_tags.count("POS") > other_tags.count("NEG"))
                f.write(f"{' '.join(words)}\t{' '.join(other)}\t{'same' if same else 'diff'}\n")
            else:
                f.write(f"{' '.join(words)}\t{'pos' if good > 0 else 'neg'}\n")
    return path


def _fine_tuned_dir(root, objective="classification", pairs=False, kind="wordpiece",
                    epochs=6):
    """A 2-layer, hidden-32 model of ``objective`` fitted on labelled files (train.tsv /
    dev.tsv, .jsonl for tags): a WordPiece encoder with segments, or (``kind="bpe"``) a
    causal BPE model without segments or [CLS]."""
    os.makedirs(root, exist_ok=True)
    suffix = ".jsonl" if objective == "token_classification" else ".tsv"
    train = _write_split(os.path.join(root, "train" + suffix), objective, pairs, 128, 0)
    dev = _write_split(os.path.join(root, "dev" + suffix), objective, pairs, 24, 1)
    docs = [d for d in builtin_documents(None) if len(d) > 200][:100]
    causal = kind == "bpe"
    tokenizer = train_tokenizer(kind, docs + [" ".join(GOOD + BAD + OTHER)] * 5, 300,
                                lowercase=not causal)
    config = base_config(objective)
    config.model.backbone.update(
        vocabulary_size=tokenizer.vocabulary_size, num_layers=2, hidden_dim=32,
        num_heads=2, intermediate_dim=64, max_sequence_length=32, causal=causal,
        num_segments=0 if causal else 2)
    config.data.update(tokenizer=kind, lowercase=not causal, seq_len=SEQ_LEN, train=train,
                       validation=dev, text_pair_column="pair" if pairs else "")
    if objective == "classification":
        config.model.labels = ("diff", "same") if pairs else ("neg", "pos")
    if objective == "token_classification":
        config.model.labels = ("NEG", "O", "POS")
    config.export.representative_samples = 16
    config = validate(config)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    data = get_objective(objective).resolve("pipeline")(
        {}, tokenizer, config, 16, split="train", training=False, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=model.default_loss())
    model.fit(data, epochs=epochs, shuffle=False, verbose=0)
    return save_model_dir(os.path.join(root, "model"), model, tokenizer, config)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier_export")


@pytest.fixture(scope="module")
def single_dir(root):
    """Single texts, a decoder's layout (``text eos``, no segments)."""
    return _fine_tuned_dir(os.path.join(root, "single"), kind="bpe")


@pytest.fixture(scope="module")
def pair_dir(root):
    """Text pairs, an encoder's layout (``[CLS] a [SEP] b [SEP]``, segment ids)."""
    return _fine_tuned_dir(os.path.join(root, "pair"), pairs=True)


@pytest.fixture(scope="module")
def pair_export(pair_dir, root):
    out = os.path.join(root, "pair_saved_model")
    return out, export_model(pair_dir, out)


def _texts(path, column=0, count=6):
    """The first ``count`` rows' ``column`` of a labelled TSV file."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[column] for line in f][1:count + 1]


def _serve(path, requests, tmp_path):
    """Runs ``requests`` (signature -> {input: texts}) through serving_check.py's loader
    in a fresh process (tensorflow + tensorflow_text only); returns its results."""
    requests_path, out_path = tmp_path / "requests.json", tmp_path / "out.json"
    as_bytes = {name: {k: [t.encode("utf-8").decode("latin-1") for t in v]
                       for k, v in inputs.items()} for name, inputs in requests.items()}
    requests_path.write_text(json.dumps(as_bytes))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import serving_check; "
              "serving_check.main(*sys.argv[2:])")
    proc = subprocess.run([sys.executable, "-c", script, HERE, path, str(requests_path),
                           str(out_path)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out_path.read_text())
    assert result["foreign_modules"] == []
    return result


def _probabilities(results, labels):
    return np.asarray([[r["probabilities"][name] for name in labels] for r in results])


def test_classify_saved_model_equals_text_classifier_in_a_fresh_process(single_dir, root,
                                                                         tmp_path):
    out = os.path.join(root, "single_saved_model")
    report = export_model(single_dir, out)
    assert report["path"] == os.path.join(out, "tflm", "1") and report["head"] == "classify"
    assert report["signatures"] == ["classify", "embed", "serving_default"]
    assert report["labels"] == ["neg", "pos"] and not report["pairs"]
    with open(os.path.join(out, "report.json")) as f:
        check = json.load(f)["verification"]
    assert check["labels_identical"] and check["within_1e-4"]
    assert check["probabilities_max_abs_diff"] <= 1e-4 and check["embed_max_abs_diff"] <= 1e-4
    assert check["examples"] == 24 + 2  # the validation file, an empty and a long text

    classifier = tflm.load(single_dir)
    texts = [*_texts(os.path.join(root, "single", "dev.tsv")), "", "good " * 40, *ODD]
    result = _serve(report["path"], {"classify": {"text": texts},
                                     "serving_default": {"text": texts[:2]},
                                     "embed": {"text": texts}}, tmp_path)
    assert result["signatures"] == ["classify", "embed", "serving_default"]
    served, expected = result["outputs"]["classify"], classifier.classify(texts)
    assert served["label"] == [r["label"] for r in expected]
    assert served["label_id"] == [classifier.labels.index(r["label"]) for r in expected]
    np.testing.assert_allclose(served["probabilities"],
                               _probabilities(expected, classifier.labels), atol=1e-5)
    assert result["outputs"]["serving_default"]["label"] == served["label"][:2]
    np.testing.assert_allclose(result["outputs"]["embed"]["embedding"],
                               classifier.embed(texts), atol=1e-5)
    assert len({r["label"] for r in expected}) == 2  # fitted: not one label for all


def test_pair_classifier_saved_model_takes_text_pairs(pair_dir, pair_export, root,
                                                      tmp_path):
    _, report = pair_export
    assert report["pairs"] and report["verification"]["labels_identical"]
    assert report["verification"]["within_1e-4"]
    dev = os.path.join(root, "pair", "dev.tsv")
    pairs = [*zip(_texts(dev, 0), _texts(dev, 1)), ("", ""), ("nice " * 30, "bad"),
             ("bad", "nice " * 30), (ODD[0], ODD[1])]
    result = _serve(report["path"], {"classify": {"text": [a for a, _ in pairs],
                                                  "text_pair": [b for _, b in pairs]}},
                    tmp_path)
    classifier = tflm.load(pair_dir)
    expected = classifier.classify(pairs)
    served = result["outputs"]["classify"]
    assert served["label"] == [r["label"] for r in expected]
    np.testing.assert_allclose(served["probabilities"],
                               _probabilities(expected, classifier.labels), atol=1e-5)
    signature = tf.saved_model.load(report["path"]).signatures["classify"]
    assert set(signature.structured_input_signature[1]) == {"text", "text_pair"}


def _run_tflite(path, signature, windows):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner(signature)
    return [runner(**{k: v[i:i + 1] for k, v in windows.items()})
            for i in range(len(windows["token_ids"]))]


def test_classifier_tflite_equals_keras_with_builtin_ops(pair_dir, root):
    out = os.path.join(root, "pair_tflite")
    report = export_model(pair_dir, out, format="tflite", quantize="dynamic_int8")
    assert report["signatures"] == ["classify"] and report["seq_len"] == SEQ_LEN
    assert report["inputs"] == ["padding_mask", "segment_ids", "token_ids"]
    fp32, int8 = report["variants"]["none"], report["variants"]["dynamic_int8"]
    assert fp32["labels_identical"] and fp32["label_agreement"] == 1.0
    assert fp32["probabilities_max_abs_diff"] <= 1e-4 and fp32["within_1e-4"]
    assert 0.0 <= int8["label_agreement"] <= 1.0 and int8["size_ratio_to_float32"] < 0.7
    for variant in (fp32, int8):
        assert variant["flex_ops"] == []
        assert not [op for op in variant["ops"] if op.startswith("Flex") or not op.isupper()]
    with open(os.path.join(out, "labels.json")) as f:
        assert json.load(f) == ["diff", "same"]
    assert os.path.isfile(os.path.join(out, "tokenizer", "tokenizer.json"))

    classifier = tflm.load(pair_dir)
    dev = os.path.join(root, "pair", "dev.tsv")
    pairs = [*zip(_texts(dev, 0), _texts(dev, 1)), ("", ""), ("nice " * 30, "bad")]
    windows = classifier.features(pairs)
    got = np.concatenate([o["probabilities"] for o in _run_tflite(
        os.path.join(out, "model.tflite"), "classify", windows)])
    np.testing.assert_allclose(got, _probabilities(classifier.classify(pairs),
                                                   classifier.labels), atol=1e-4)


def test_cli_exports_a_classifier_dir_with_full_int8(single_dir, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "cli"
    result = run_cli("export", f"--model={single_dir}", f"--out={out}", "--format=tflite",
                     "--quantize=int8", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["head"] == "classify" and report["inputs"] == ["padding_mask", "token_ids"]
    assert report["variants"].keys() == {"none", "int8"}
    assert report["variants"]["none"]["labels_identical"]
    assert 0.5 <= report["variants"]["int8"]["label_agreement"] <= 1.0
    assert (out / "model_int8.tflite").is_file()


def test_regressor_exports_predict(root, tmp_path):
    path = _fine_tuned_dir(os.path.join(root, "regression"), "regression")
    report = export_model(path, str(tmp_path / "saved"))
    assert report["signatures"] == ["embed", "predict", "serving_default"]
    assert report["verification"]["score_max_abs_diff"] <= 1e-4
    assert report["verification"]["within_1e-4"] and report["labels"] == []
    texts = [*_texts(os.path.join(root, "regression", "dev.tsv")), "", *ODD]
    served = tf.saved_model.load(report["path"]).signatures["predict"](text=tf.constant(texts))
    regressor = tflm.load(path)
    np.testing.assert_allclose(served["score"].numpy(), regressor.predict(texts), atol=1e-5)

    report = export_model(path, str(tmp_path / "tflite"), format="tflite", quantize="float16")
    fp32, fp16 = report["variants"]["none"], report["variants"]["float16"]
    assert report["signatures"] == ["predict"] and fp32["within_1e-4"]
    assert fp16["score_max_abs_diff"] < 0.05 and fp16["score_correlation"] > 0.99


def test_tagger_exports_tag(root, tmp_path):
    path = _fine_tuned_dir(os.path.join(root, "tagger"), "token_classification", kind="bpe",
                           epochs=10)
    report = export_model(path, str(tmp_path / "saved"))
    assert report["signatures"] == ["embed", "serving_default", "tag"]
    check = report["verification"]
    assert check["words_identical"] and check["labels_identical"] and check["within_1e-4"]
    long = " ".join(["good", "it", "bad"] * 10)  # more pieces than the window: cut words
    texts = ["it was good and the food bad", "", long, *ODD]
    served = {k: v.numpy() for k, v in tf.saved_model.load(report["path"]).signatures["tag"](
        text=tf.constant(texts)).items()}
    tagged = tflm.load(path).tag(texts)
    assert served["word_count"].tolist() == [len(t) for t in tagged]
    for row, words in enumerate(tagged):
        n = len(words)
        assert [w.decode() for w in served["words"][row, :n]] == [w["word"] for w in words]
        assert [w.decode() for w in served["label"][row, :n]] == [w["label"] or ""
                                                                  for w in words]
        np.testing.assert_allclose(served["score"][row, :n],
                                   [w["score"] or 0.0 for w in words], atol=1e-5)
        assert (served["label_id"][row, n:] == -1).all()
    assert any(w["label"] is None for w in tagged[2]) and tagged[0][2]["label"] == "POS"
    blank = tf.saved_model.load(report["path"]).signatures["tag"](text=tf.constant(["", " "]))
    assert blank["word_count"].numpy().tolist() == [0, 0] and blank["label"].shape == (2, 0)

    report = export_model(path, str(tmp_path / "tflite"), format="tflite")
    assert report["signatures"] == ["tag"] and report["variants"]["none"]["words_identical"]
    assert report["variants"]["none"]["labels_identical"]


def test_tag_layout_equals_encode_words(pair_dir):
    """The in-graph word layout of ``tag`` on a WordPiece model: pieces, first-piece
    positions, words cut at the window, a word without pieces (an accent alone)."""
    from tflm.data.token_classification import encode_words
    from tflm.export.classifier_signatures import ClassifierModule, packed_words, split_words
    from tflm.model_dir import load_model_dir

    model, tokenizer, config = load_model_dir(pair_dir)
    module = ClassifierModule(model, tokenizer, config)
    texts = ["it was good", "", "a \u0301 b", " ".join(["lovely", "dreadful"] * 12), *ODD]
    layout = tf.function(lambda text: packed_words(module, split_words(text)))  # in-graph
    features, first = layout(tf.constant(texts))
    module.cleanup()
    token_ids, mask, expected = encode_words(tokenizer, [t.split() for t in texts], SEQ_LEN)
    np.testing.assert_array_equal(features["token_ids"].numpy(), token_ids)
    np.testing.assert_array_equal(features["padding_mask"].numpy(), mask)
    np.testing.assert_array_equal(first.numpy(), expected)
    assert (expected[3] == -1).any() and token_ids[2, 2] == tokenizer.unk_id


def test_an_existing_version_is_not_overwritten(pair_dir, pair_export):
    out, report = pair_export
    graph = os.path.join(report["path"], "saved_model.pb")
    before = os.path.getmtime(graph)
    with pytest.raises(ExportError, match="immutable"):
        export_model(pair_dir, out)
    assert os.path.getmtime(graph) == before


def test_verification_examples_without_labelled_files(pair_dir):
    from tflm.model_dir import read_model_config

    config = read_model_config(pair_dir)
    train, held_out = labelled_texts(config)
    assert len(held_out) == 24 and isinstance(held_out[0], tuple) and len(train) == 128
    config.data.validation = "/nowhere/dev.tsv"
    assert labelled_texts(config)[1] == train  # the training examples instead
    config.data.train = ""
    train, held_out = labelled_texts(config)  # corpus sentences, in pairs
    assert train == [] and 0 < len(held_out) <= VERIFY_EXAMPLES
    assert all(isinstance(e, tuple) and len(e) == 2 for e in held_out)
    with pytest.raises(ExportError, match="int8 calibration needs the training examples"):
        labelled_texts(config, "int8")


@pytest.fixture(scope="module")
def client():
    """The functions of export/client.py (a script of the deploy kit, not a module)."""
    return types.SimpleNamespace(**runpy.run_path(os.path.join(ROOT, "export", "client.py")))


def _call(signature, values):
    specs = signature.structured_input_signature[1]
    return {k: v.numpy() for k, v in signature(**{
        name: tf.constant(values[name], specs[name].dtype) for name in specs}).items()}


@pytest.mark.parametrize("name", ["classify", "embed"])
def test_client_requests_reach_classify_and_embed(client, pair_export, name):
    loaded = tf.saved_model.load(pair_export[1]["path"])
    texts, pairs = ["it was good", "", "café was bad"], ["nice", "bad", ""]
    inputs = client.signature_inputs(name, texts, text_pair=pairs)
    assert inputs == ({"text": texts, "text_pair": pairs} if name == "classify"
                      else {"text": texts})
    expected = _call(loaded.signatures[name], inputs)
    body = client.rest_body(name, inputs)
    rows = json.loads(json.dumps(client.rest_body(name, inputs, row_format=True)))
    request = client.predict_request("tflm", name, inputs)
    for values in (json.loads(json.dumps(body))["inputs"],
                   {k: [row[k] for row in rows["instances"]] for k in inputs},
                   {k: tf.make_ndarray(p) for k, p in request.inputs.items()}):
        got = _call(loaded.signatures[name], values)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
