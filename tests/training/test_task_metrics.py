"""Task metrics on hand-made cases, checked against worked numbers or brute-force references."""

import itertools
import math

import numpy as np
import pytest

from tflm.training.task_metrics import (
    accuracy,
    average_ranks,
    confusion_matrix,
    macro_f1,
    matthews_corrcoef,
    pearson,
    scores,
    spearman,
    token_f1,
)


def _pairwise_pearson(x, y):
    """Pearson from the pairwise-difference form: sum_{i<j} dx dy / sqrt(...)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    sxy = sum((x[i] - x[j]) * (y[i] - y[j]) for i, j in pairs)
    sxx = sum((x[i] - x[j]) ** 2 for i, j in pairs)
    syy = sum((y[i] - y[j]) ** 2 for i, j in pairs)
    return sxy / math.sqrt(sxx * syy)


def _brute_ranks(values):
    """Average rank: 1 + (number strictly smaller) + (ties other than itself) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2
            for v in values]


def test_accuracy():
    assert accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == 0.75


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_macro_f1_leaves_out_a_class_absent_from_both_sides():
    labels = [0, 0, 1, 1]
    predictions = [0, 1, 1, 1]
    # class 0: TP 1, FP 0, FN 1 -> 2/3. class 1: TP 2, FP 1, FN 0 -> 4/5.
    # class 2 never occurs: left out, not counted as 0.
    assert macro_f1(labels, predictions, 3) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_macro_f1_class_on_one_side_only_scores_zero():
    # class 2 is predicted once but never true: TP 0, so F1 0 (and it counts in the mean).
    labels = [0, 0, 1, 1]
    predictions = [0, 2, 1, 0]
    # class 0: TP 1, predicted 2, true 2 -> 1/2; class 1: TP 1, predicted 1, true 2 -> 2/3.
    assert macro_f1(labels, predictions, 3) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_binary_mcc_matches_the_2x2_formula():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    predictions = np.where(rng.random(50) < 0.7, labels, 1 - labels)
    tp = np.sum((labels == 1) & (predictions == 1))
    tn = np.sum((labels == 0) & (predictions == 0))
    fp = np.sum((labels == 0) & (predictions == 1))
    fn = np.sum((labels == 1) & (predictions == 0))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(labels, predictions, 2) == pytest.approx(expected)


def test_multiclass_mcc_worked_example():
    labels = [0, 1, 2, 2]
    predictions = [0, 2, 2, 1]
    # c = 2 correct, s = 4, t = (1, 1, 2), p = (1, 1, 2): sum p t = 1 + 1 + 4 = 6,
    # sum p^2 = sum t^2 = 6 -> (2*4 - 6) / sqrt((16 - 6)(16 - 6)) = 2 / 10.
    assert matthews_corrcoef(labels, predictions, 3) == pytest.approx(0.2)
    assert matthews_corrcoef(labels, labels, 3) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0], 2) == pytest.approx(-1.0)


def test_mcc_is_zero_when_everything_is_one_class():
    assert matthews_corrcoef([1, 1, 1], [1, 1, 1], 2) == 0.0
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1], 2) == 0.0  # predictions constant


def test_pearson_against_the_pairwise_form_and_constant_input():
    x = [1.0, 2.0, 4.0, 7.0, 3.0]
    y = [2.0, 1.0, 5.0, 8.0, 3.5]
    assert pearson(x, y) == pytest.approx(_pairwise_pearson(x, y))
    assert pearson(x, [3.0] * 5) == 0.0
    assert pearson([3.0] * 5, y) == 0.0
    assert pearson(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)


def test_average_ranks_give_ties_the_mean_rank():
    values = [10, 20, 10, 30, 20, 10]
    # 10s take ranks 1..3 -> 2; 20s take 4..5 -> 4.5; 30 -> 6.
    np.testing.assert_array_equal(average_ranks(values), [2, 4.5, 2, 6, 4.5, 2])
    assert list(average_ranks(values)) == _brute_ranks(values)


def test_spearman_with_ties_against_a_brute_force_reference():
    x = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5]
    y = [0.3, 0.1, 0.4, 0.4, 0.9, 0.2, 0.9, 0.0]
    expected = _pairwise_pearson(_brute_ranks(x), _brute_ranks(y))
    assert spearman(x, y) == pytest.approx(expected)
    # Monotone but not linear: 1 for Spearman, below 1 for Pearson.
    z = [v ** 3 for v in x]
    assert spearman(x, z) == pytest.approx(1.0)
    assert spearman(x, [1.0] * 8) == 0.0


def test_token_f1_skips_outside_tokens_and_zero_weights():
    outside = 0
    labels = np.array([[0, 1, 2, 0, 2],
                       [1, 1, 0, 0, 3]])
    predictions = np.array([[0, 1, 0, 2, 2],
                            [1, 2, 0, 3, 0]])
    weights = np.array([[1, 1, 1, 1, 1],
                        [1, 1, 1, 1, 0]])  # the last token (gold 3, predicted 0) not scored
    # Scored: predicted non-outside at (0,1) 1=1 TP, (0,3) 2 vs 0 FP, (0,4) 2=2 TP,
    # (1,0) 1=1 TP, (1,1) 2 vs 1 FP, (1,3) 3 vs 0 FP -> 6 predicted, 3 TP: P = 1/2.
    # Gold non-outside: (0,1), (0,2), (0,4), (1,0), (1,1) -> 5, 3 TP: R = 3/5.
    result = token_f1(labels, predictions, weights, outside)
    assert result.precision == pytest.approx(0.5)
    assert result.recall == pytest.approx(0.6)
    assert result.f1 == pytest.approx(2 * 0.5 * 0.6 / 1.1)


def test_token_f1_is_zero_without_entities():
    labels = np.zeros((1, 3), int)
    assert token_f1(labels, labels, np.ones((1, 3)), 0) == (0.0, 0.0, 0.0)


def test_scores_classification_takes_logits_and_weights():
    logits = np.array([[2.0, 0.1], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])  # argmax 0 1 0 1
    labels = np.array([0, 1, 1, 0])
    result = scores("classification", labels, logits, weights=[1, 1, 1, 0])
    # Scored rows 0..2: labels 0 1 1, predictions 0 1 0.
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(macro_f1([0, 1, 1], [0, 1, 0], 2))
    assert result["mcc"] == pytest.approx(matthews_corrcoef([0, 1, 1], [0, 1, 0], 2))
    assert set(result) == {"accuracy", "macro_f1", "mcc"}


def test_scores_regression_accepts_a_column_of_predictions():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([[1.5], [2.0], [2.5], [5.0]])
    result = scores("regression", y_true, y_pred)
    assert result["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert result["pearson"] == pytest.approx(pearson(y_true, y_pred[:, 0]))
    assert result["spearman"] == pytest.approx(1.0)


def test_scores_token_classification():
    labels = np.array([[0, 1, 2]])
    logits = np.eye(3)[[[0, 1, 1]]] * 4.0  # predicts 0 1 1
    result = scores("token_classification", labels, logits, weights=[[1, 1, 1]],
                    outside_id=0)
    assert result["accuracy"] == pytest.approx(2 / 3)
    # 2 predicted entities, 1 right; 2 gold entities: P = R = F1 = 1/2.
    assert result["token_precision"] == result["token_recall"] == pytest.approx(0.5)
    assert result["token_f1"] == pytest.approx(0.5)


@pytest.mark.parametrize("call, message", [
    (lambda: scores("ranking", [0], [[0.0, 1.0]]), "Unknown task kind"),
    (lambda: scores("token_classification", [[0]], [[[0.0, 1.0]]]), "outside_id"),
    (lambda: scores("classification", [0, 1, 1], [[0.0, 1.0]] * 2), "same shape"),
    (lambda: scores("classification", [0, 1], [[0.0, 1.0]] * 2, num_classes=3),
     "num_classes=3"),
    (lambda: scores("classification", [0], [[0.0, 1.0]], weights=[0]), "empty"),
    (lambda: pearson([1.0, 2.0], [1.0]), "same shape"),
    (lambda: macro_f1([0, 5], [0, 1], 2), "outside"),
])
def test_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
