"""Magnitude pruning, measured on the int8 .tflite that ships."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.compress.overrides import LayerOverride
from edgeslim.compress.prune import PruneConfig, plan_layers, prune
from edgeslim.errors import RecipeError
from edgeslim.tflite_inspect import inspect_tflite, unmet_targets

# Float test accuracy may drop at most this much per stage (digits, 297 test images).
MARGIN = 0.05
LAYERS = ["input", "conv1", "bn1", "relu1", "dw1", "relu2", "pw1", "relu3", "dw2", "relu4",
          "pw2", "relu5", "pool", "dense_out"]


def test_pruned_int8_reaches_per_layer_targets(pruned, dscnn, ctx, tflite_of, helpers):
    info = inspect_tflite(tflite_of("pruned", pruned.model), LAYERS)
    w = info.weights_by_layer()
    # Every prunable layer of the model is in the file, named after its Keras layer.
    assert set(w) == {"conv1", "dw1", "pw1", "dw2", "pw2", "dense_out"}
    for layer, target in helpers.prune_expected.items():
        assert w[layer].sparsity >= target - 0.02, (layer, w[layer].sparsity, target)
        # and not wildly more: the schedule stops at the target
        assert w[layer].sparsity <= target + 0.1, (layer, w[layer].sparsity, target)
    # Skipped by exact name: stays dense.
    assert w["dense_out"].sparsity < 0.05
    assert pruned.skipped["dense_out"].startswith("skipped by override (layer = 'dense_out')")
    # The stage's own targets agree with what shipped.
    assert unmet_targets(info, pruned.info["targets"]) == []
    assert {k: v["sparsity"] for k, v in pruned.info["targets"].items()} == helpers.prune_expected
    assert pruned.info["layers"]["pw1"]["from"] == "override (layer = 'pw1')"
    assert pruned.info["layers"]["pw2"]["from"] == "override (regex = '^pw')"


def test_baseline_depthwise_is_dense_so_the_check_can_fail(dscnn, tflite_of):
    w = inspect_tflite(tflite_of("baseline", dscnn)).weights_by_layer()
    assert w["dw1"].sparsity < 0.05 and w["dw2"].sparsity < 0.05
    assert w["pw1"].sparsity < 0.05


def test_pruned_accuracy_within_margin(pruned, dscnn, ctx, tflite_of, digits_data, helpers):
    base = ctx.evaluate(dscnn, "test")
    after = ctx.evaluate(pruned.model, "test")
    assert base >= 0.85
    assert after >= base - MARGIN, (base, after)
    int8 = helpers.int8_accuracy(tflite_of("pruned", pruned.model), digits_data.x_test,
                         digits_data.y_test)
    assert int8 >= base - MARGIN, (base, int8)


def test_prune_returns_plain_model_and_leaves_input_untouched(pruned, dscnn):
    from edgeslim._tf import keras

    before = [w.copy() for w in dscnn.get_weights()]
    assert all(type(l).__module__.startswith("tf_keras") for l in pruned.model.layers)
    assert type(pruned.model.get_layer("dw1")) is keras.layers.DepthwiseConv2D
    assert [l.name for l in pruned.model.layers] == [l.name for l in dscnn.layers]
    # the baseline's kernels are still dense (the stage trained a copy)
    assert np.mean(dscnn.get_layer("pw1").kernel.numpy() == 0) < 0.01
    assert all(np.array_equal(a, b) for a, b in zip(before, dscnn.get_weights()))


def test_two_four_structure_in_int8(dscnn, ctx, tflite_of):
    out = prune(dscnn, PruneConfig(structure="2:4", epochs=1), ctx=ctx)
    # conv1 has one input channel: no groups of 4, so it is skipped with the reason.
    assert "1 input channels" in out.skipped["conv1"]
    w = inspect_tflite(tflite_of("2:4", out.model)).weights_by_layer()
    for layer in ("pw1", "pw2", "dense_out"):
        # every group of 4 along the input-channel axis holds at least 2 zeros
        groups = (w[layer].zeros_mask()).reshape(-1, 4).sum(axis=1)
        assert groups.min() >= 2, layer
        assert w[layer].blocks_2of4 == 1.0
    # depthwise kernels stay unstructured at their own target
    assert w["dw1"].sparsity >= 0.25 - 0.02
    assert out.info["layers"]["dw1"]["structure"] == "unstructured"
    assert w["conv1"].sparsity < 0.05


def test_two_four_checks(dscnn):
    with pytest.raises(RecipeError, match="cannot apply to layer 'conv1'"):
        plan_layers(dscnn, PruneConfig(structure="2:4",
                                       overrides=(LayerOverride(layer="conv1", sparsity=0.5),)))
    with pytest.raises(RecipeError, match="fixes it at 0.5"):
        plan_layers(dscnn, PruneConfig(structure="2:4",
                                       overrides=(LayerOverride(regex="^pw", sparsity=0.7),)))
    plans, skipped = plan_layers(
        dscnn, PruneConfig(structure="2:4", overrides=(LayerOverride(layer="conv1", skip=True),))
    )
    assert {n for n, p in plans.items() if p.structure == "2:4"} == {"pw1", "pw2", "dense_out"}


def test_two_four_on_a_model_with_no_eligible_layer(ctx):
    from edgeslim._tf import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, name="c")(inp)
    m = keras.Model(inp, keras.layers.Dense(10, name="d")(keras.layers.Flatten()(x)))
    # d has 108 inputs (a multiple of 4): skip it by name and nothing is left
    with pytest.raises(RecipeError, match="applies to no layer"):
        prune(m, PruneConfig(structure="2:4", overrides=(LayerOverride(layer="d", skip=True),)),
              ctx=ctx)


def test_depthwise_default_and_override(dscnn):
    plans, _ = plan_layers(dscnn, PruneConfig(sparsity=0.6, depthwise_sparsity=0.2))
    assert plans["dw1"].sparsity == 0.2 and plans["pw1"].sparsity == 0.6
    plans, skipped = plan_layers(
        dscnn, PruneConfig(overrides=(LayerOverride(regex="^dw", skip=True),))
    )
    assert "dw1" not in plans and "dw2" not in plans and "regex = '^dw'" in skipped["dw2"]


def test_unknown_layer_in_override_is_a_recipe_error(dscnn, ctx):
    with pytest.raises(RecipeError, match="'dense_output'"):
        prune(dscnn, PruneConfig(overrides=(LayerOverride(layer="dense_output", skip=True),)),
              ctx=ctx)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"sparsity": 1.0}, "prune.sparsity"),
        ({"sparsity": "half"}, "prune.sparsity"),
        ({"depthwise_sparsity": -0.1}, "prune.depthwise_sparsity"),
        ({"structure": "4:8"}, "prune.structure"),
        ({"epochs": 0}, "prune.epochs"),
        ({"end_fraction": 0.0}, "prune.end_fraction"),
        ({"frequency": 0}, "prune.frequency"),
    ],
)
def test_config_validation_names_the_key(kwargs, key):
    with pytest.raises(RecipeError) as err:
        PruneConfig(**kwargs)
    assert err.value.message.startswith(key)
    assert err.value.hint
