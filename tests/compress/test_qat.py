"""QAT: collaborative schemes keep sparsity and clusters through int8; unsupported layers."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.compress.qat import QATConfig, fold_relu, qat, scheme_for
from edgeslim.errors import RecipeError
from edgeslim.tflite_inspect import inspect_tflite, merge_targets, unmet_targets

MARGIN = 0.05


def test_chain_keeps_sparsity_and_clusters_in_int8(pruned, pruned_clustered, chain_qat,
                                                   tflite_of):
    # Known names may include the QAT wrappers' ("quant_pw1"): ops still map to "pw1".
    names = [l.name for l in pruned.model.layers] + [l.name for l in chain_qat.model.layers]
    info = inspect_tflite(tflite_of("chain", chain_qat.model), names)
    assert info.float_ops == [] and "QUANTIZE" not in info.op_names
    assert [o.layer for o in info.ops] == ["conv1", "dw1", "pw1", "dw2", "pw2", "pool",
                                           "dense_out"]
    w = info.weights_by_layer()
    for layer, lay in pruned.info["layers"].items():  # depthwise included
        assert w[layer].sparsity >= lay["target_sparsity"] - 0.02, (layer, w[layer].sparsity)
    for layer in pruned_clustered.info["layers"]:
        assert w[layer].unique_per_channel_max <= 16, (layer, w[layer].unique_per_channel_max)
    targets = merge_targets(pruned.info["targets"], pruned_clustered.info["targets"])
    assert set(targets) == {"conv1", "dw1", "pw1", "dw2", "pw2", "dense_out"}
    assert unmet_targets(info, targets) == []
    assert chain_qat.info["scheme"] == (
        "Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)")
    assert chain_qat.info["depthwise_held_fixed"] == ["dw1", "dw2"]


def test_chain_accuracy_within_margin(dscnn, chain_qat, ctx, tflite_of, digits_data, helpers):
    base = ctx.evaluate(dscnn, "test")
    assert ctx.evaluate(chain_qat.model, "test") >= base - MARGIN
    int8 = helpers.int8_accuracy(tflite_of("chain", chain_qat.model), digits_data.x_test,
                         digits_data.y_test)
    assert int8 >= base - MARGIN, (base, int8)


def test_relu_layers_are_fused_so_weights_are_fake_quantized(chain_qat, pruned_clustered):
    # Without the rewrite TFMOT gives pw1 a NoOpQuantizeConfig (no weight quantizer).
    assert chain_qat.info["relu_fused_into"] == {
        "relu2": "dw1", "relu3": "pw1", "relu4": "dw2", "relu5": "pw2"}
    for name in ("quant_pw1", "quant_pw2", "quant_dw1", "quant_conv1", "quant_dense_out"):
        qc = chain_qat.model.get_layer(name).quantize_config
        assert qc.get_weights_and_quantizers(chain_qat.model.get_layer(name).layer), name


def test_fold_relu_keeps_the_numbers(pruned_clustered, digits_data):
    model = pruned_clustered.model
    folded, pairs = fold_relu(model)
    assert pairs["relu3"] == "pw1"
    assert folded.get_layer("pw1").get_config()["activation"] == "relu"
    x = digits_data.x_test[:64]
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=0, atol=1e-5)


def test_layer_outside_qat_registry_is_skipped_not_fatal(dscnn_prelu, dscnn, ctx, digits_data,
                                                         helpers):
    import tensorflow_model_optimization as tfmot

    # TFMOT itself refuses the model:
    with pytest.raises(RuntimeError, match="prelu"):
        tfmot.quantization.keras.quantize_model(dscnn_prelu)
    out = qat(dscnn_prelu, QATConfig(epochs=1), ctx=ctx)
    assert "not in TFMOT's QAT registry" in out.skipped["prelu"]
    assert out.info["skipped"] == out.skipped
    assert "pw1" in out.info["annotated_layers"] and "prelu" not in out.info["annotated_layers"]
    data = helpers.to_int8(out.model, digits_data.x_train)
    info = inspect_tflite(data)
    assert "PRELU" in info.op_names and info.float_ops == []  # the converter quantized it
    base = ctx.evaluate(dscnn_prelu, "test")
    assert base == ctx.evaluate(dscnn, "test")  # PReLU with zero slopes = ReLU
    assert helpers.int8_accuracy(data, digits_data.x_test, digits_data.y_test) >= base - MARGIN


def test_scheme_choice():
    assert scheme_for(set())[1] == "Default8BitQuantizeScheme"
    assert scheme_for({"sparsity"})[1] == "Default8BitPrunePreserveQuantizeScheme"
    assert scheme_for({"clusters"})[1].endswith("(preserve_sparsity=False)")
    with pytest.raises(RecipeError, match="cannot preserve"):
        scheme_for({"lowrank"})


def test_config_validation():
    with pytest.raises(RecipeError, match="^qat.epochs"):
        QATConfig(epochs=0)


def test_relu6_after_conv_keeps_weight_quantization(ctx, digits_data, helpers):
    """ReLU6 cannot be fused into a Keras activation: it is left unannotated instead, so
    TFMOT keeps the conv's weight quantizer; the converter still fuses it (no RELU6 op)."""
    from edgeslim._tf import keras

    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU(6.0, name="r1")(L.Conv2D(8, 3, padding="same", name="c1")(inp))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(10, name="fc")(x))
    out = qat(model, QATConfig(epochs=1), ctx=ctx)
    assert out.info["relu_not_annotated"] == ["r1"] and out.info["relu_fused_into"] == {}
    wrapper = out.model.get_layer("quant_c1")
    assert wrapper.quantize_config.get_weights_and_quantizers(wrapper.layer)
    info = inspect_tflite(helpers.to_int8(out.model, digits_data.x_train))
    assert info.op_names == ["CONV_2D", "FULLY_CONNECTED", "MEAN"] and info.float_ops == []


def test_layer_refused_inside_quantize_apply_is_dropped_and_retried(ctx):
    """A BatchNormalization not after a conv passes the registry pre-check (TFMOT folds BN
    in its transforms) but quantize_apply refuses it: dropped, reported, the rest runs."""
    from edgeslim._tf import keras

    L = keras.layers
    inp = keras.Input((8, 8, 1))
    x = L.Flatten(name="flat")(L.BatchNormalization(name="bn_in")(inp))
    model = keras.Model(inp, L.Dense(10, name="fc")(x))
    out = qat(model, QATConfig(epochs=1), ctx=ctx)
    assert "quantize_apply refused it" in out.skipped["bn_in"]
    assert out.info["annotated_layers"] == ["fc", "flat"]
    assert out.model.get_layer("quant_fc").quantize_config.get_weights_and_quantizers(
        out.model.get_layer("quant_fc").layer)
