"""Per-class accuracy before/after and the flagging of classes that lost most."""

from __future__ import annotations

import numpy as np

from edgeslim.pipeline import per_class_table


def _onehot(pred, n=3):
    return np.eye(n)[pred]


def test_a_class_that_collapses_is_flagged_while_the_mean_barely_moves():
    y = np.array([0] * 90 + [1] * 90 + [2] * 20)
    before = y.copy()
    after = y.copy()
    after[180:188] = 0          # class 2 loses 8 of 20 (40 points); overall only 4 points
    t = per_class_table(y, _onehot(before), _onehot(after), 3, ("cat", "dog", "rare"))
    assert abs(t["overall_drop"] - 0.04) < 1e-12
    rows = {r["name"]: r for r in t["classes"]}
    assert rows["rare"]["before"] == 1.0 and abs(rows["rare"]["after"] - 0.6) < 1e-12
    assert t["flagged"] == ["rare"]
    assert t["lost_most"] == ["rare"]
    assert rows["cat"]["flagged"] is False and rows["cat"]["support"] == 90


def test_a_uniform_small_drop_flags_nothing():
    y = np.repeat(np.arange(3), 100)
    after = y.copy()
    for c in range(3):
        after[c * 100] = (c + 1) % 3    # one error per class: 1 point everywhere
    t = per_class_table(y, _onehot(y), _onehot(after), 3)
    assert t["flagged"] == []
    assert sorted(t["lost_most"]) == ["0", "1", "2"]


def test_classes_absent_from_the_test_set_are_left_out():
    y = np.array([0, 0, 1, 1])
    t = per_class_table(y, _onehot(y), _onehot(y), 3)
    assert [r["class"] for r in t["classes"]] == [0, 1]
