"""Honest evaluation and the accuracy guard, on real builds (training, conversion, LiteRT).

- The leakage warning fires when the test split is carved from training samples the
  model memorised, and stays silent when the held-out data comes with --test-data.
- The guard ships plain int8 when a deliberately over-pruned recipe breaks the budget.
- The back-off ladder and the budget arithmetic, checked value by value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeslim import guard
from edgeslim import recipe as R
from edgeslim.cli import cli

SEED = 5


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A small MLP trained to 100% on 300 digits (it memorised them), and data files:
    ``train_only.npz`` holds exactly those 300 samples (any test split carved from it
    overlaps the training data); ``held_out.npz`` holds 400 digits it never saw."""
    from edgeslim import examples
    from edgeslim._tf import keras

    x, y = examples.load_digits_arrays()
    rng = np.random.default_rng(SEED)
    idx = rng.permutation(len(x))
    tr, held = idx[:300], idx[300:700]
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ], name="mlp")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x[tr], y[tr], epochs=80, batch_size=32, verbose=0)
    train_acc = float(np.mean(np.argmax(model.predict(x[tr], verbose=0), -1) == y[tr]))
    assert train_acc == 1.0, train_acc  # the premise: it memorised its training samples
    d = tmp_path_factory.mktemp("memorised")
    model.save(d / "mlp.keras")
    np.savez(d / "train_only.npz", x_train=x[tr], y_train=y[tr])
    np.savez(d / "held_out.npz", x_test=x[held], y_test=y[held])
    return d


def _build(args):
    result = CliRunner().invoke(cli, ["build", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_leakage_warning_fires_on_a_test_split_carved_from_memorised_training_data(memorised, tmp_path):
    d = memorised
    out = _build([str(d / "mlp.keras"), "--data", str(d / "train_only.npz"), "--target", "rpi4",
                  "-o", str(tmp_path), "--no-prune", "--no-cluster", "--no-qat", "--seed", "0"])
    report = json.loads((tmp_path / "rpi4" / "report.json").read_text())
    e = report["evaluation"]
    assert e["test_origin"] == "carved" and report["metric"]["test_origin"] == "carved"
    assert e["float_test"] == 1.0  # carved from what it memorised
    assert e["warning"] and "--test-data" in e["warning"]
    assert "WARNING" in out and "carved from the training data" in out
    md = (tmp_path / "rpi4" / "report.md").read_text()
    assert "**Warning:**" in md and "test split (carved from the training data given" in md


def test_no_leakage_warning_with_real_test_data(memorised, tmp_path):
    d = memorised
    out = _build([str(d / "mlp.keras"), "--data", str(d / "train_only.npz"),
                  "--test-data", str(d / "held_out.npz"), "--target", "rpi4", "-o", str(tmp_path),
                  "--no-prune", "--no-cluster", "--no-qat", "--seed", "0"])
    report = json.loads((tmp_path / "rpi4" / "report.json").read_text())
    e = report["evaluation"]
    assert e["test_origin"] == "test-data" and e["test_samples"] == 400
    assert e["warning"] is None and "WARNING" not in out
    # an honest figure: 300 training samples generalise far below 100%
    assert 0.6 < report["metric"]["float"] < 0.99, report["metric"]
    # nothing was carved off for testing: all 300 samples minus validation trained
    assert report["data"]["train"] + report["data"]["val"] == 300
    assert "test split (--test-data" in out


def test_guard_ships_plain_int8_when_an_over_pruned_recipe_breaks_the_budget(digits_tfk_model, digits_npz,
                                                                           tmp_path):
    from edgeslim.pipeline import build

    flags = R.flags_to_table(seed=SEED, sparsity=0.97, prune_epochs=1, max_drop=1.0)
    flags["build"]["backoff_steps"] = 0
    flags["prune"]["depthwise_sparsity"] = 0.9
    result = build(digits_tfk_model, digits_npz, target="rpi4", flags=flags,
                   recipe={"build": {"stages": ["prune"]}}, out=tmp_path)
    g = result.report["guard"]
    names = [c["name"] for c in g["candidates"]]
    assert names == ["plain-int8", "recipe"]
    plain, pruned = g["candidates"]
    assert pruned["val_drop"] > 1.0 and not pruned["within_budget"], pruned
    assert g["shipped"] == "plain-int8" and g["shipped_is_plain_int8"]
    assert "no compressed candidate fits" in g["reason"]
    # What ships is the plain conversion: no stage ran on it, and the recipe says so
    assert [s["name"] for s in result.report["stages"]] == ["baseline", "int8"]
    assert result.recipe.active_stages == ()
    assert result.report["metric"]["validation"]["int8"] == pytest.approx(plain["val_metric"])
    assert len(result.model_path.read_bytes()) == plain["tflite_bytes"]
    md = (result.bundle_dir / "report.md").read_text()
    assert "## Accuracy guard" in md and "plain-int8 (shipped)" in md


def test_budget_arithmetic():
    b = guard.Budget.for_task(None, "classification")
    assert b.max_drop == 1.0 and b.unit == "points"
    assert b.drop(0.93, 0.9271) == pytest.approx(0.29)
    assert b.allows(1.0) and not b.allows(1.01)
    r = guard.Budget.for_task(None, "regression")
    assert r.max_drop == 10.0
    assert r.drop(0.020, 0.023) == pytest.approx(15.0)  # percent of MSE increase
    assert not r.allows(15.0)


def test_backoff_ladder_values():
    rcp = R.resolve(target_recipe={"build": {"stages": ["prune", "cluster", "qat"]},
                                   "prune": {"sparsity": 0.5, "depthwise_sparsity": 0.25, "epochs": 2,
                                             "override": [{"regex": "^pw", "sparsity": 0.6}]},
                                   "cluster": {"clusters": 16, "epochs": 2}, "qat": {"epochs": 2}})
    same, changes = guard.backoff(rcp, 0)
    assert same is rcp and changes == {}
    one, changes = guard.backoff(rcp, 1)
    assert one.config("prune").sparsity == 0.25 and one.config("prune").depthwise_sparsity == 0.125
    assert one.config("prune").overrides[0].sparsity == 0.3
    assert one.config("cluster").clusters == 32 and one.config("qat").epochs == 4
    assert changes["prune"]["sparsity"] == 0.25 and changes["cluster"]["clusters"] == 32
    two, _ = guard.backoff(rcp, 2)
    assert two.config("prune").sparsity == 0.125 and two.config("cluster").clusters == 64
    assert two.config("prune").epochs == 6
    # the original recipe is untouched, and a backed-off recipe round-trips through TOML
    assert rcp.config("prune").sparsity == 0.5
    import tomllib

    assert R.from_dict(tomllib.loads(two.to_toml())) == two
    d = R.resolve(target_recipe={"build": {"stages": ["distill", "lowrank"]},
                                 "distill": {"width": 0.5}, "lowrank": {"rank_energy": 0.9}})
    d1, _ = guard.backoff(d, 1)
    assert d1.config("distill").width == 0.75 and d1.config("lowrank").rank_energy == 0.95
