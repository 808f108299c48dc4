"""Coreset selection: stratified k-center greedy, and int8 calibration with a small budget."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.errors import RecipeError

K = 16  # a small calibration budget, where the choice of samples can matter
SEEDS = (0, 1, 2)

@pytest.fixture(scope="session")
def example_data(digits_npz):
    """The split the session's example model (digits_tfk_model) was trained on: its test
    samples are unseen by it (the compress fixtures' digits_data split is not)."""
    from edgeslim.io.data import load_data

    return load_data(digits_npz, seed=0)



def test_kcenter_greedy_on_known_points():
    from edgeslim.compress.coreset import covering_radius, kcenter_greedy

    # Two tight clusters and one outlier: 3 centers must take one from each.
    pts = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [20, 0]], dtype=float)
    picked = kcenter_greedy(pts, 3)
    assert picked[0] == 3  # nearest the mean (5.03, 1.68) comes first
    assert picked[1] == 5 and picked[2] in (0, 1, 2)  # then the farthest, twice
    assert covering_radius(pts, picked) < 0.2
    assert len(kcenter_greedy(pts, 10)) == 6


def test_select_is_stratified_and_covers_better_than_random(digits_tfk_model, example_data):
    digits_data = example_data
    from edgeslim.compress.coreset import covering_radius, embed, select

    x, y = digits_data.x_train, digits_data.y_train
    picked = select(digits_tfk_model, x, y, 30, seed=0)
    assert len(picked) == 30 == len(set(picked.tolist()))
    counts = np.bincount(y[picked], minlength=10)
    expected = np.bincount(y, minlength=10) / len(y) * 30
    assert np.all(np.abs(counts - expected) < 1.0)  # proportional, largest remainder
    assert np.array_equal(picked, select(digits_tfk_model, x, y, 30, seed=0))  # deterministic

    feats = embed(digits_tfk_model, x)
    assert feats.shape == (len(x), 32)  # the input of the last Dense: fc1's 32 units

    def class_radius(picked):  # the stratified objective: the worst class's covering radius
        worst = 0.0
        for c in range(10):
            members = np.flatnonzero(y == c)
            local = np.searchsorted(members, picked[y[picked] == c])  # positions within the class
            worst = max(worst, covering_radius(feats[members], local))
        return worst

    kc = class_radius(select(digits_tfk_model, x, y, K, seed=0))
    rnd = [class_radius(select(digits_tfk_model, x, y, K, seed=s, method="random")) for s in SEEDS]
    print(f"\nworst per-class covering radius, k={K}: k-center {kc:.3f}, random {np.round(rnd, 3)}")
    assert kc < np.mean(rnd)
    with pytest.raises(RecipeError, match="unknown coreset method"):
        select(digits_tfk_model, x, y, K, method="median")
    with pytest.raises(RecipeError, match="coreset size"):
        select(digits_tfk_model, x, y, 0)


def test_coreset_calibrates_at_least_as_well_as_random(digits_tfk_model, example_data):
    """int8 accuracy with K calibration samples: k-center coreset vs K random samples
    (the pipeline's default draw), averaged over seeds. On digits the int8 model is
    barely sensitive to the calibration set, so "at least as well" is asserted up to
    one test sample (1/360) of the 3-seed mean; both means are printed."""
    from edgeslim import convert, evaluate
    from edgeslim.compress.context import StageContext
    from edgeslim.compress.coreset import select

    digits_data = example_data
    ctx = StageContext(data=digits_data)
    x, y = digits_data.x_train, digits_data.y_train

    def int8_acc(calib):
        model = convert.to_int8_tflite(digits_tfk_model, calib)
        return ctx.score(evaluate.run_litert(model, digits_data.x_test), digits_data.y_test)

    core = int8_acc(x[select(digits_tfk_model, x, y, K, seed=0)])  # deterministic
    rand = [int8_acc(convert.calibration_sample(x, K, s)) for s in SEEDS]
    float_acc = ctx.evaluate(digits_tfk_model, "test")
    print(f"\nint8 accuracy with {K} calibration samples: coreset {core:.4f}, random "
          f"{np.round(rand, 4)} mean {np.mean(rand):.4f}; float {float_acc:.4f}")
    assert core >= np.mean(rand) - 1.0 / len(digits_data.x_test) - 1e-9
    assert core >= float_acc - 0.02
