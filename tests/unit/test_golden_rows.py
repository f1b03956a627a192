"""The trainer's golden items (`pipeline._golden_rows`): each class is represented by items the model labels as
that class, so the agent's verdict check can judge every label the model gives."""

from __future__ import annotations

import numpy as np

from cloud_trainer.train.pipeline import _golden_rows
from model_packager.manifest import OutputSpec


def test_each_class_is_represented_first_by_items_the_model_labels_as_it():
    # 3 classes, 60 held-out items; the model labels every item right except the first four of class 2, which
    # come first in the test order: taken by true label alone, class 2's golden items were all ones the model
    # calls class 1, so no golden item had label 'scratch' as its top label
    classes = ["ok", "dent", "scratch"]
    y = np.array([2] * 4 + [0, 1, 2] * 18 + [2, 2], dtype=np.int64)
    test = np.arange(len(y))
    pred = y.copy()
    pred[:4] = 1
    logits = np.full((len(y), 3), -4.0, dtype=np.float32)
    logits[np.arange(len(y)), pred] = 4.0
    spec = OutputSpec(name="logits", dtype="float32", shape=["batch", 3], role="class_logits", labels=classes)
    rows = _golden_rows(y, test, [spec], {"logits": logits}, n=6)
    top = {classes[int(pred[r])] for r in rows}
    assert top == set(classes)
    assert {classes[int(y[r])] for r in rows} == set(classes)  # still every true class, as before


def test_without_model_outputs_the_items_are_taken_by_class_in_test_order_as_before():
    y = np.array([0, 1, 0, 1, 0, 1], dtype=np.int64)
    assert _golden_rows(y, np.arange(6), n=4).tolist() == [0, 1, 2, 3]
