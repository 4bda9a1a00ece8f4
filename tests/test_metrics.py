"""classification_metrics against values computed by hand, including classes that are never predicted."""

from __future__ import annotations

import numpy as np
import pytest

from edgesent.metrics import classification_metrics, confusion_matrix, softmax


# true:  a a b b c c
# pred:  a b b b a a   -> class c is never predicted
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0])


def test_confusion_matrix_rows_are_true_labels() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]


def test_hand_computed_report_with_a_class_never_predicted() -> None:
    report = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    # a: tp 1, predicted 3 (1 + 2 from c), support 2 -> P 1/3, R 1/2, F1 2PR/(P+R) = (1/3)/(5/6) = 2/5
    # b: tp 2, predicted 3, support 2 -> P 2/3, R 1, F1 (4/3)/(5/3) = 4/5
    # c: tp 0, predicted 0, support 2 -> P 0 (not NaN, not skipped), R 0, F1 0
    expected = {
        "a": (1 / 3, 1 / 2, 2 / 5, 2),
        "b": (2 / 3, 1.0, 4 / 5, 2),
        "c": (0.0, 0.0, 0.0, 2),
    }
    for label, (precision, recall, f1, support) in expected.items():
        got = report["per_class"][label]
        assert got["precision"] == pytest.approx(precision) and got["recall"] == pytest.approx(recall)
        assert got["f1"] == pytest.approx(f1) and got["support"] == support
    assert report["accuracy"] == pytest.approx(3 / 6)
    # macro-F1 averages over ALL classes: (0.4 + 0.8 + 0) / 3 = 0.4, not the 0.6 of skipping c
    assert report["macro_f1"] == pytest.approx(0.4)
    assert report["n"] == 6 and report["labels"] == ["a", "b", "c"]
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert all(np.isfinite(v) for cls in report["per_class"].values() for v in cls.values())


def test_a_label_absent_from_data_and_predictions_still_counts_in_macro_f1() -> None:
    report = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert report["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_f1"] == pytest.approx((0.4 + 0.8 + 0 + 0) / 4)


def test_perfect_and_empty_predictions() -> None:
    perfect = classification_metrics(Y_TRUE, Y_TRUE, ["a", "b", "c"])
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_softmax_is_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert np.allclose(probs, [[0.5, 0.5], [0.25, 0.75]])
