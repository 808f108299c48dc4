"""Weight clustering, measured on the int8 .tflite: unique values per output channel."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.compress.cluster import ClusterConfig, cluster, plan_layers
from edgeslim.compress.overrides import LayerOverride
from edgeslim.errors import RecipeError
from edgeslim.tflite_inspect import inspect_tflite, unmet_targets

MARGIN = 0.05


@pytest.fixture(scope="module")
def clustered(dscnn, ctx):
    cfg = ClusterConfig(
        clusters=16,
        epochs=1,
        overrides=(LayerOverride(layer="dense_out", clusters=8),
                   LayerOverride(regex="pw2$", skip=True)),
    )
    return cluster(dscnn, cfg, ctx=ctx)


def test_clustered_int8_unique_values_per_channel(clustered, dscnn, tflite_of):
    w = inspect_tflite(tflite_of("clustered", clustered.model)).weights_by_layer()
    base = inspect_tflite(tflite_of("baseline", dscnn)).weights_by_layer()
    # 5x5 depthwise kernels: 25 weights per channel; the baseline uses more than 16 values
    assert base["dw1"].unique_per_channel_max > 16 and base["dw2"].unique_per_channel_max > 16
    for layer in ("conv1", "dw1", "pw1", "dw2"):
        assert w[layer].unique_per_channel_max <= 16, (layer, w[layer].unique_per_channel_max)
    assert w["dense_out"].unique_per_channel_max <= 8  # exact-name override
    assert base["dense_out"].unique_per_channel_max > 8
    # pw2 skipped by regex: still as varied as in the baseline
    assert w["pw2"].unique_per_channel_max > 16
    assert "regex = 'pw2$'" in clustered.skipped["pw2"]
    assert unmet_targets(inspect_tflite(tflite_of("clustered", clustered.model)),
                         clustered.info["targets"]) == []
    assert clustered.info["layers"]["dw1"]["kind"] == "depthwise"
    assert clustered.info["layers"]["dw1"]["unique_values_keras"] <= 16


def test_clustered_accuracy_within_margin(clustered, dscnn, ctx, tflite_of, digits_data, helpers):
    base = ctx.evaluate(dscnn, "test")
    assert ctx.evaluate(clustered.model, "test") >= base - MARGIN
    int8 = helpers.int8_accuracy(tflite_of("clustered", clustered.model), digits_data.x_test,
                         digits_data.y_test)
    assert int8 >= base - MARGIN, (base, int8)


def test_cluster_after_prune_preserves_sparsity(pruned, pruned_clustered, tflite_of):
    w = inspect_tflite(tflite_of("pruned+clustered", pruned_clustered.model)).weights_by_layer()
    for layer, lay in pruned.info["layers"].items():
        assert w[layer].sparsity >= lay["target_sparsity"] - 0.02, layer
    for layer in pruned_clustered.info["layers"]:
        assert w[layer].unique_per_channel_max <= 16, layer
        assert pruned_clustered.info["layers"][layer]["preserve_sparsity"] is (
            layer != "dense_out")  # dense_out was not pruned: nothing to preserve


def test_cluster_returns_plain_model_and_leaves_input_untouched(clustered, dscnn):
    from edgeslim._tf import keras

    assert type(clustered.model.get_layer("dw1")) is keras.layers.DepthwiseConv2D
    assert np.unique(dscnn.get_layer("dw1").depthwise_kernel.numpy()).size > 16
    assert np.unique(clustered.model.get_layer("dw1").depthwise_kernel.numpy()).size <= 16


def test_depthwise_can_be_left_out(dscnn):
    plans, skipped = plan_layers(dscnn, ClusterConfig(depthwise=False))
    assert "dw1" not in plans and "cluster.depthwise = false" in skipped["dw1"]
    assert "pw1" in plans


def test_too_few_weights_is_skipped_not_fatal(dscnn):
    plans, skipped = plan_layers(dscnn, ClusterConfig(clusters=200))
    assert "conv1" in skipped and "144 weights" in skipped["conv1"]
    assert plans["dw2"].clusters == 200  # 800 weights


@pytest.mark.parametrize(
    "kwargs, key",
    [({"clusters": 1}, "cluster.clusters"), ({"clusters": 8.5}, "cluster.clusters"),
     ({"epochs": -1}, "cluster.epochs"), ({"preserve_sparsity": "yes"},
                                          "cluster.preserve_sparsity")],
)
def test_config_validation_names_the_key(kwargs, key):
    with pytest.raises(RecipeError) as err:
        ClusterConfig(**kwargs)
    assert err.value.message.startswith(key)
