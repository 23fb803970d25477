"""Scores of fine-tuning tasks: pure numpy functions of labels and predictions.

One function per score (GLUE's usual ones, and token-level F1 for tagging), plus
:func:`scores`, the set of scores of each task kind computed from a model's raw outputs:

- ``classification``: y_true (N,) class ids, y_pred (N, C) logits -> ``accuracy``,
  ``macro_f1``, ``mcc``.
- ``regression``: y_true (N,), y_pred (N,) or (N, 1) -> ``pearson``, ``spearman``,
  ``mse``.
- ``token_classification``: y_true (N, T) label ids, y_pred (N, T, C) logits ->
  ``accuracy`` (over scored tokens), ``token_f1``, ``token_precision``, ``token_recall``.

Sample weights select: a position (an example, or a token) is scored when its weight is
> 0 and left out otherwise; the weight's value does not count beyond that. All results
are python floats; every degenerate case (a constant side, a zero denominator) has a
stated value rather than a NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("classification", "regression", "token_classification")


class TokenF1(NamedTuple):
    """Micro precision, recall and F1 over the labelled tokens (:func:`token_f1`)."""

    precision: float
    recall: float
    f1: float


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    """Raises ValueError unless ``a`` and ``b`` have the same number of elements and some."""
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape; got {a.shape} and {b.shape}. "
                         "Pass one prediction per label.")
    if a.size == 0:
        raise ValueError(f"{names} are empty: there is nothing to score. Check that the "
                         "evaluation data holds labelled examples (weights > 0).")


def _ids(values, name: str) -> np.ndarray:
    """``values`` as a flat int64 array."""
    array = np.asarray(values)
    if array.size and not np.all(np.equal(np.mod(array, 1), 0)):
        raise ValueError(f"{name} must be integer class ids; got {array.dtype} values "
                         "that are not whole numbers. Take the argmax of logits first.")
    return array.reshape(-1).astype(np.int64)


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        labels: (N,) true class ids in ``[0, num_classes)``.
        predictions: (N,) predicted class ids in ``[0, num_classes)``.
        num_classes: C.

    Returns:
        (C, C) int64: rows are true classes, columns predicted classes.

    Raises:
        ValueError: on different lengths, no examples or an id outside ``[0, C)``.
    """
    labels, predictions = _ids(labels, "labels"), _ids(predictions, "predictions")
    _same_length(labels, predictions, "labels and predictions")
    for name, ids in (("labels", labels), ("predictions", predictions)):
        if ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(f"{name} hold ids in [{ids.min()}, {ids.max()}], outside "
                             f"[0, num_classes={num_classes}); pass the right num_classes "
                             "or leave unlabelled positions out with a zero weight.")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes)


def accuracy(labels, predictions) -> float:
    """Fraction of ``predictions`` equal to ``labels`` (both (N,) ids, N > 0)."""
    labels, predictions = _ids(labels, "labels"), _ids(predictions, "predictions")
    _same_length(labels, predictions, "labels and predictions")
    return float(np.mean(labels == predictions))


def macro_f1(labels, predictions, num_classes: int) -> float:
    """Mean over classes of each class' F1 = 2 TP / (2 TP + FP + FN).

    A class absent from both the labels and the predictions has no F1 (0 / 0) and is
    left out of the mean, so a validation set that happens to lack a class is not
    penalised for it. A class that occurs on one side only has TP = 0, hence F1 = 0.

    Args:
        labels, predictions: (N,) class ids in ``[0, num_classes)``.
        num_classes: C.
    """
    matrix = confusion_matrix(labels, predictions, num_classes)
    true_positives = np.diag(matrix).astype(np.float64)
    # 2 TP + FP + FN = (predicted as k) + (truly k)
    denominators = matrix.sum(axis=0) + matrix.sum(axis=1)
    present = denominators > 0
    return float(np.mean(2.0 * true_positives[present] / denominators[present]))


def matthews_corrcoef(labels, predictions, num_classes: int) -> float:
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K).

    With the confusion matrix, c = correct predictions, s = examples, t_k = examples of
    class k and p_k = predictions of class k:
    ``(c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))``; for two
    classes this is the usual ``(TP TN - FP FN) / sqrt(...)``. 0.0 when the denominator
    is 0 (all labels, or all predictions, one class).

    Args:
        labels, predictions: (N,) class ids in ``[0, num_classes)``.
        num_classes: C.
    """
    matrix = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    correct, total = np.trace(matrix), matrix.sum()
    numerator = correct * total - predicted_counts @ true_counts
    denominator = np.sqrt((total ** 2 - predicted_counts @ predicted_counts)
                          * (total ** 2 - true_counts @ true_counts))
    return float(numerator / denominator) if denominator > 0 else 0.0


def pearson(x, y) -> float:
    """Pearson correlation of two (N,) series; 0.0 when either is constant."""
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    _same_length(x, y, "x and y")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float(np.clip(dx @ dy / denominator, -1.0, 1.0)) if denominator > 0 else 0.0


def average_ranks(values) -> np.ndarray:
    """1-based ranks of (N,) ``values``; tied values all get the mean of their ranks."""
    values = np.asarray(values, np.float64).reshape(-1)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Runs of equal values: [starts[i], ends[i]) in sorted order.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson of the average ranks (0.0 for a constant side)."""
    x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    _same_length(x, y, "x and y")
    return pearson(average_ranks(x), average_ranks(y))


def token_f1(labels, predictions, weights, outside_id: int) -> TokenF1:
    """Micro precision / recall / F1 over labelled tokens, ``outside_id`` not an entity.

    Token-level, not span-level: each token is scored on its own (CoNLL's entity F1
    would also need whole B-/I- spans to match).

    Tokens with weight > 0 are scored. A true positive is a token predicted as its gold
    label, that label not ``outside_id``. Precision = TP / tokens predicted as
    anything but outside; recall = TP / tokens whose gold label is not outside; F1 =
    their harmonic mean. Each is 0.0 when its denominator is 0 (no entity predicted,
    no entity in the gold labels, or P = R = 0).

    Args:
        labels: (N, T) gold label ids.
        predictions: (N, T) predicted label ids.
        weights: (N, T); > 0 marks the tokens to score (pads and sub-word pieces get 0).
        outside_id: the label of tokens outside any entity (e.g. the id of "O").
    """
    labels, predictions = _ids(labels, "labels"), _ids(predictions, "predictions")
    scored = np.asarray(weights).reshape(-1) > 0
    if scored.shape != labels.shape:
        raise ValueError(f"weights hold {scored.size} values for {labels.size} labels; "
                         "pass one weight per token.")
    _same_length(labels, predictions, "labels and predictions")
    labels, predictions = labels[scored], predictions[scored]
    _same_length(labels, predictions, "labelled tokens (weights > 0)")
    predicted = predictions != outside_id
    gold = labels != outside_id
    true_positives = float(np.sum(predicted & (predictions == labels)))
    precision = true_positives / predicted.sum() if predicted.any() else 0.0
    recall = true_positives / gold.sum() if gold.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TokenF1(float(precision), float(recall), float(f1))


def check_kind(kind: str, outside_id: int | None = None) -> None:
    """Raises ValueError unless ``kind`` is one of :data:`KINDS` with what it needs."""
    if kind not in KINDS:
        raise ValueError(f"Unknown task kind {kind!r}; use one of {', '.join(KINDS)}.")
    if kind == "token_classification" and outside_id is None:
        raise ValueError("token_classification scores need outside_id: the label id of "
                         "tokens outside any entity (e.g. the id of 'O').")


def _selected(weights, n: int) -> np.ndarray:
    """(n,) bool: the positions with weight > 0 (all when ``weights`` is None)."""
    if weights is None:
        return np.ones(n, bool)
    selected = np.asarray(weights).reshape(-1) > 0
    if selected.size != n:
        raise ValueError(f"weights hold {selected.size} values for {n} labels; pass one "
                         "weight per example (per token for token_classification).")
    return selected


def _classification(labels, logits, weights, num_classes) -> dict[str, float]:
    """accuracy, macro_f1, mcc of (N,) labels and (N, C) logits."""
    if num_classes is not None and num_classes != logits.shape[-1]:
        raise ValueError(f"num_classes={num_classes} but the logits have "
                         f"{logits.shape[-1]} columns; they must agree.")
    labels, predictions = labels.reshape(-1), np.argmax(logits, axis=-1)
    _same_length(labels, predictions, "classification labels (N,) and logits rows")
    keep = _selected(weights, len(labels))
    labels, predictions = labels[keep], predictions[keep]
    num_classes = logits.shape[-1]
    return {"accuracy": accuracy(labels, predictions),
            "macro_f1": macro_f1(labels, predictions, num_classes),
            "mcc": matthews_corrcoef(labels, predictions, num_classes)}


def _regression(targets, values, weights) -> dict[str, float]:
    """pearson, spearman, mse of (N,) targets and (N,) or (N, 1) predictions."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    targets = targets.reshape(-1).astype(np.float64)
    _same_length(targets, values, "regression targets (N,) and predictions (N,)")
    keep = _selected(weights, len(targets))
    targets, values = targets[keep], values[keep]
    _same_length(targets, values, "regression targets and predictions with weight > 0")
    return {"pearson": pearson(targets, values), "spearman": spearman(targets, values),
            "mse": float(np.mean((targets - values) ** 2))}


def _token_classification(labels, logits, weights, outside_id) -> dict[str, float]:
    """accuracy, token_f1, token_precision, token_recall of (N, T) labels, (N, T, C) logits."""
    predictions = np.argmax(logits, axis=-1)
    if labels.size != predictions.size:
        raise ValueError(f"token labels {labels.shape} do not match the logits "
                         f"{logits.shape}: pass (N, T) labels for (N, T, C) logits.")
    labels = labels.reshape(predictions.shape)
    scored = _selected(weights, labels.size)
    result = token_f1(labels, predictions, scored, outside_id)
    return {"accuracy": accuracy(labels.reshape(-1)[scored], predictions.reshape(-1)[scored]),
            "token_f1": result.f1, "token_precision": result.precision,
            "token_recall": result.recall}


def scores(kind: str, y_true, y_pred, weights=None, num_classes: int | None = None,
           outside_id: int | None = None) -> dict[str, float]:
    """The scores of one task kind from labels and the model's raw outputs.

    Args:
        kind: ``classification``, ``regression`` or ``token_classification``.
        y_true: (N,) (or (N, 1)) class ids or targets; (N, T) label ids for tokens.
        y_pred: (N, C) logits; (N,) or (N, 1) values; (N, T, C) logits for tokens.
        weights: optional, > 0 selects the scored examples ((N,)) or tokens ((N, T));
            None = all of them.
        num_classes: C for ``classification``; None = the logits' last dimension (given,
            it must equal it).
        outside_id: the "outside" label id; required for ``token_classification``.

    Returns:
        ``classification``: accuracy, macro_f1, mcc. ``regression``: pearson, spearman,
        mse. ``token_classification``: accuracy (over scored tokens), token_f1,
        token_precision, token_recall.

    Raises:
        ValueError: an unknown kind, a missing ``outside_id``, shapes that do not match.
    """
    check_kind(kind, outside_id)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred, np.float64)
    if kind == "regression":
        return _regression(y_true, y_pred, weights)
    expected_ndim = 2 if kind == "classification" else 3
    if y_pred.ndim != expected_ndim or y_pred.shape[-1] < 2:
        layout = "(N, C)" if kind == "classification" else "(N, T, C)"
        raise ValueError(f"{kind} needs logits shaped {layout} with C >= 2 classes; got "
                         f"{y_pred.shape}.")
    if kind == "classification":
        return _classification(y_true, y_pred, weights, num_classes)
    return _token_classification(y_true, y_pred, weights, outside_id)
