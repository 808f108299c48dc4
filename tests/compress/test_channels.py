"""Channel pruning: dependency groups proved by exactness, counts by arithmetic, the stage
on digits, students from ``shrink``, int8 conversion, the recipe table.

Exactness: removing a channel must compute exactly what the original model computes
when every weight that reads that channel downstream is zero. The tests zero those
weights by hand (naming the consumer layers and the rows, independently of the code
under test), then compare with ``slim``'s smaller model on random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim._tf import keras
from edgeslim.compress import channels as C
from edgeslim.compress.context import count_params
from edgeslim.compress.overrides import LayerOverride
from edgeslim.errors import RecipeError

L = keras.layers
SEED = 1234
RTOL, ATOL = 1e-5, 1e-6  # float32; the same products, summed with fewer zero terms


# -- helpers ------------------------------------------------------------------------------


def _randomise(model, seed=0):
    """Random weights everywhere, BN statistics included (positive variances), so no
    channel is silently zero and BN is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "moving_variance" in w.name:
                new.append(rng.uniform(0.5, 2.0, shape))
            elif "gamma" in w.name:
                new.append(rng.uniform(0.5, 1.5, shape))
            else:
                new.append(rng.normal(0.0, 0.4, shape))
        if new:
            layer.set_weights([a.astype(np.float32) for a in new])
    return model


def _copy(model):
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _zero_rows(model, layer_name, rows, *, axis=-2, index=0):
    """Zero ``rows`` of weight ``index`` of ``layer_name`` along ``axis``."""
    layer = model.get_layer(layer_name)
    w = layer.get_weights()
    a = np.moveaxis(w[index], axis, 0)
    a[np.asarray(rows)] = 0.0
    w[index] = np.moveaxis(a, 0, axis)
    layer.set_weights(w)


def _group(groups, producers):
    found = [g for g in groups if set(g.producers) == set(producers)]
    assert len(found) == 1, (producers, groups)
    return found[0]


def _drop(n, every=3, offset=1):
    """Channels to remove: a fixed, irregular pattern."""
    return np.array([c for c in range(n) if c % every == offset])


def _keep(n, drop):
    return np.setdiff1d(np.arange(n), drop)


def _assert_same(a, b, shape):
    x = np.random.default_rng(7).normal(size=(8, *shape)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=RTOL, atol=ATOL)


# -- models -------------------------------------------------------------------------------


def build_residual():
    """stem conv -> BN -> ReLU, then two pre-activation blocks x + conv_b(relu(bn(conv_a(
    relu(bn(x)))))), GAP, Dense. Groups: {stem, b1_b, b2_b} joined by the Adds, b1_a, b2_a."""
    inp = keras.Input((8, 8, 1), name="input")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for b in ("b1", "b2"):
        y = L.BatchNormalization(name=f"{b}_bn1")(x)
        y = L.ReLU(name=f"{b}_relu1")(y)
        y = L.Conv2D(12, 3, padding="same", name=f"{b}_a")(y)
        y = L.BatchNormalization(name=f"{b}_bn2")(y)
        y = L.ReLU(name=f"{b}_relu2")(y)
        y = L.Conv2D(8, 1, name=f"{b}_b")(y)
        x = L.Add(name=f"{b}_add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, name="head")(x)
    return keras.Model(inp, out, name="residual")


def build_flatten():
    """Sequential: conv(8) -> depthwise x2 (16 channels, c -> 2c, 2c+1) -> pool -> Flatten
    -> Dense(10) -> Dense(3). Dense "fc" reads 2x2 positions x 16 channels, channels fastest."""
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(8, 3, name="conv"),
        L.ReLU(name="relu"),
        L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flat"),
        L.Dense(10, activation="relu", name="fc"),
        L.Dense(3, name="out"),
    ], name="flat_model")


def build_concat():
    """a = conv(6), b = conv(4) on the input; cat = [a, b, input] -> BN -> ReLU ->
    SeparableConv2D(5, depth_multiplier=2) "mix" -> GAP -> Dense."""
    inp = keras.Input((6, 6, 3), name="input")
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([a, b, inp])
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, name="mix")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, name="head")(x)
    return keras.Model(inp, out, name="concat")


# -- exactness ----------------------------------------------------------------------------


def test_residual_blocks_are_one_group_and_slimming_is_exact():
    model = _randomise(build_residual())
    groups = C.channel_groups(model)
    res = _group(groups, ["stem", "b1_b", "b2_b"])
    a1, a2 = _group(groups, ["b1_a"]), _group(groups, ["b2_a"])
    head = _group(groups, ["head"])
    assert res.prunable and a1.prunable and a2.prunable and res.channels == 8
    assert not head.prunable and "output" in head.reason
    assert set(res.consumers) == {"b1_a", "b2_a", "head"}

    d_res, d1, d2 = _drop(8), _drop(12, 2, 0), _drop(12, 4, 3)
    zeroed = _copy(model)
    for consumer in ("b1_a", "b2_a", "head"):   # everything reading the residual stream
        _zero_rows(zeroed, consumer, d_res)
    _zero_rows(zeroed, "b1_b", d1)
    _zero_rows(zeroed, "b2_b", d2)

    slimmed = C.slim(model, {res.id: _keep(8, d_res), a1.id: _keep(12, d1),
                             a2.id: _keep(12, d2)})
    assert slimmed.get_layer("stem").filters == 8 - len(d_res)
    assert slimmed.get_layer("b2_b").filters == 8 - len(d_res)
    assert slimmed.get_layer("b1_a").filters == 12 - len(d1)
    assert slimmed.get_layer("b1_bn1").get_weights()[0].shape == (8 - len(d_res),)
    assert [layer.name for layer in slimmed.layers] == [layer.name for layer in model.layers]
    _assert_same(slimmed, zeroed, (8, 8, 1))
    # the input model is untouched
    assert model.get_layer("stem").get_weights()[0].shape == (3, 3, 1, 8)


def test_depthwise_separable_model_slimming_is_exact(helpers):
    model = _randomise(helpers.build_dscnn(keras, prelu=True), seed=1)
    groups = C.channel_groups(model)
    g1, g2, g3 = (_group(groups, [p]) for p in ("conv1", "pw1", "pw2"))
    assert all(g.prunable for g in (g1, g2, g3))
    assert not _group(groups, ["dense_out"]).prunable
    d1, d2, d3 = _drop(16), _drop(32, 2, 1), _drop(32, 5, 0)
    zeroed = _copy(model)
    _zero_rows(zeroed, "pw1", d1)          # conv1 -> bn1 -> relu1 -> dw1 -> relu2 -> pw1
    _zero_rows(zeroed, "pw2", d2)          # pw1 -> prelu -> dw2 -> relu4 -> pw2
    _zero_rows(zeroed, "dense_out", d3)    # pw2 -> relu5 -> pool -> dense_out
    slimmed = C.slim(model, {g1.id: _keep(16, d1), g2.id: _keep(32, d2), g3.id: _keep(32, d3)})
    assert slimmed.get_layer("dw1").get_weights()[0].shape == (5, 5, 16 - len(d1), 1)
    assert slimmed.get_layer("prelu").get_weights()[0].shape == (1, 1, 32 - len(d2))
    _assert_same(slimmed, zeroed, (8, 8, 1))


def test_flatten_dense_rows_are_position_major():
    model = _randomise(build_flatten(), seed=2)
    groups = C.channel_groups(model)
    conv, fc = _group(groups, ["conv"]), _group(groups, ["fc"])
    assert conv.prunable and fc.prunable and not _group(groups, ["out"]).prunable
    d_conv, d_fc = np.array([0, 3, 4]), np.array([1, 2, 9])
    zeroed = _copy(model)
    # dw: conv channel c -> 2c, 2c+1; Flatten of 2x2x16: row = position * 16 + channel
    rows = [p * 16 + 2 * c + m for p in range(4) for c in d_conv for m in range(2)]
    _zero_rows(zeroed, "fc", rows)
    _zero_rows(zeroed, "out", d_fc)
    slimmed = C.slim(model, {conv.id: _keep(8, d_conv), fc.id: _keep(10, d_fc)})
    assert isinstance(slimmed, keras.Sequential)
    assert slimmed.get_layer("fc").get_weights()[0].shape == (4 * 2 * 5, 7)
    _assert_same(slimmed, zeroed, (6, 6, 2))


def test_concatenate_maps_channels_by_offset():
    model = _randomise(build_concat(), seed=3)
    groups = C.channel_groups(model)
    a, b, mix = (_group(groups, [p]) for p in ("a", "b", "mix"))
    assert a.prunable and b.prunable and mix.prunable
    d_a, d_b, d_mix = np.array([1, 4]), np.array([0]), np.array([2, 3])
    zeroed = _copy(model)
    # mix reads cat = [a (0..5), b (6..9), input (10..12)]; its pointwise rows are
    # channel * 2 + m (depth_multiplier 2): zero the pointwise rows of removed channels.
    cat_drop = list(d_a) + [6 + c for c in d_b]
    _zero_rows(zeroed, "mix", [2 * c + m for c in cat_drop for m in range(2)], index=1)
    _zero_rows(zeroed, "head", d_mix)
    slimmed = C.slim(model, {a.id: _keep(6, d_a), b.id: _keep(4, d_b), mix.id: _keep(5, d_mix)})
    assert slimmed.get_layer("bn").get_weights()[0].shape == (6 - 2 + 4 - 1 + 3,)
    assert slimmed.get_layer("mix").get_weights()[0].shape == (3, 3, 10, 2)
    _assert_same(slimmed, zeroed, (6, 6, 3))


# -- counting ---------------------------------------------------------------------------


def test_macs_and_params_match_hand_arithmetic():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(8, 3, padding="same", name="conv"),
        L.DepthwiseConv2D(3, padding="same", name="dw"),
        L.Conv2D(16, 1, name="pw"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(10, name="out"),
    ])
    # conv 8*8 positions * 8 out * 9 taps * 1 in; dw 8*8 * 8 ch * 9; pw 8*8 * 16 * 8; dense 16*10
    assert C.count_macs(model) == 64 * 8 * 9 + 64 * 8 * 9 + 64 * 16 * 8 + 16 * 10 == 17568
    # conv 9*8+8, dw 9*8+8, pw 8*16+16, dense 16*10+10
    assert count_params(model) == 80 + 80 + 144 + 170 == 474
    groups = C.channel_groups(model)
    conv, pw = _group(groups, ["conv"]), _group(groups, ["pw"])
    slimmed = C.slim(model, {conv.id: np.arange(4), pw.id: np.arange(8)})
    assert C.count_macs(slimmed) == 64 * 4 * 9 + 64 * 4 * 9 + 64 * 8 * 4 + 8 * 10 == 6736
    assert count_params(slimmed) == (36 + 4) + (36 + 4) + (32 + 8) + (80 + 10) == 210
    an = C._Analysis(model)
    assert C._plan_macs(an, {conv.id: 4, pw.id: 8}) == 6736

    sep = keras.Sequential([keras.Input((8, 8, 4)),
                            L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)])
    # depthwise part 8*8 * 4*2 * 9, pointwise 8*8 * 8 * 8
    assert C.count_macs(sep) == 64 * 8 * 9 + 64 * 8 * 8 == 8704


# -- unprunable -------------------------------------------------------------------------


def _awkward_model():
    """c_in is added to the model input; c1 feeds a Reshape; d1 is fine; out is the output."""
    inp = keras.Input((8, 8, 1), name="input")
    c_in = L.Conv2D(1, 1, name="c_in")(inp)
    x = L.Add(name="add")([inp, c_in])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = L.Reshape((8 * 8 * 8,), name="reshape")(x)
    x = L.Dense(16, activation="relu", name="d1")(x)
    out = L.Dense(10, name="out")(x)
    return keras.Model(inp, out, name="awkward")


def test_unprunable_groups_are_reported_and_left_intact(ctx):
    model = _randomise(_awkward_model(), seed=4)
    groups = {g.producers[0]: g for g in C.channel_groups(model)}
    assert "model input" in groups["c_in"].reason and not groups["c_in"].prunable
    assert "Reshape" in groups["c1"].reason and not groups["c1"].prunable
    assert "output" in groups["out"].reason and not groups["out"].prunable
    assert groups["d1"].prunable and groups["d1"].reason is None
    with pytest.raises(ValueError, match="not prunable"):
        C.slim(model, {groups["c1"].id: np.arange(4)})

    head = keras.Model(model.inputs, model.get_layer("c1").output)  # a conv as the output
    assert not C.channel_groups(head)[-1].prunable

    out = C.prune_channels(model, C.ChannelsConfig(ratio=0.5, epochs=0), ctx=ctx)
    m = out.model
    assert (m.get_layer("c_in").filters, m.get_layer("c1").filters) == (1, 8)
    assert (m.get_layer("d1").units, m.get_layer("out").units) == (8, 10)
    assert set(out.skipped) == {"c_in", "c1", "out"}
    reasons = {u["producers"][0]: u["reason"] for u in out.info["unprunable"]}
    assert "Reshape" in reasons["c1"] and "model input" in reasons["c_in"]


def test_raw_ops_shared_layers_and_nested_models_stop_a_group():
    inp = keras.Input((8, 8, 3), name="input")
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    s = a + b                                  # a TFOpLambda, not a keras.layers.Add
    shared = L.Conv2D(6, 1, name="shared")
    u = L.Add(name="add")([shared(s), shared(L.ReLU(name="r")(s))])
    sub = keras.Sequential([keras.Input((8, 8, 6)), L.Conv2D(5, 1, name="inner")], name="sub")
    c = L.Conv2D(8, 3, name="c")(sub(u))
    d = L.Conv2D(8, 1, name="d")(L.Conv2D(8, 1, name="pre")(u))
    out = L.Add(name="join")([L.GlobalAveragePooling2D(name="g1")(c),
                              L.GlobalAveragePooling2D(name="g2")(d)])
    model = keras.Model(inp, L.Dense(2, name="head")(out))
    groups = {g.producers[0]: g for g in C.channel_groups(model)}
    assert "TFOpLambda" in groups["a"].reason and "TFOpLambda" in groups["b"].reason
    assert "shared" not in groups                       # called twice: no group of its own
    assert groups["pre"].prunable       # reads the shared layer's output: fixed channels
    assert set(groups["c"].producers) == {"c", "d"}     # joined by the Add after pooling
    assert groups["c"].prunable
    # 8*8*(4*3 + 4*3 + 2 calls * 6*4) + 8*8*5*6 (nested) + 6*6*8*9*5 + 8*8*(8*6 + 8*8) + 8*2
    assert C.count_macs(model) == 64 * (12 + 12 + 48) + 64 * 30 + 36 * 360 + 64 * 112 + 16


# -- importance -------------------------------------------------------------------------


def test_importance_ranks_dead_channels_last(ctx, helpers):
    """l2: a zero filter; bn: a zero gamma; taylor: a channel nothing downstream reads.
    Each is the first channel removed by its score."""
    model = _randomise(helpers.build_dscnn(keras), seed=5)
    g = {p: _group(C.channel_groups(model), [p]).id for p in ("conv1", "pw1", "pw2")}
    _zero_rows(model, "pw1", [7], axis=-1)                   # pw1 filter 7 is zero
    bn = model.get_layer("bn1")
    w = bn.get_weights()
    w[0][5] = 0.0                                            # bn1 gamma 5 is zero
    bn.set_weights(w)
    _zero_rows(model, "dense_out", [11])                     # pw2 channel 11 is read by nothing
    l2 = C.channel_importance(model, "l2")
    assert np.argmin(l2[g["pw1"]]) == 7
    assert np.argmin(C.channel_importance(model, "bn")[g["conv1"]]) == 5
    taylor = C.channel_importance(model, "taylor", data=ctx.data, samples=128)
    assert taylor[g["pw2"]][11] == 0.0 and taylor[g["pw2"]].max() > 0


# -- the stage on digits -------------------------------------------------------------------

DSCNN_MACS = 8 * 8 * (16 * 9 + 16 * 25 + 32 * 16 + 32 * 25 + 32 * 32) + 32 * 10  # 184640
# ratio 0.5: conv1 16 -> 8, pw1 32 -> 16, pw2 32 -> 16; the depthwise layers only follow
HALF_MACS = 8 * 8 * (8 * 9 + 8 * 25 + 16 * 8 + 16 * 25 + 16 * 16) + 16 * 10      # 67744


@pytest.fixture(scope="module")
def channel_pruned(dscnn, ctx):
    return C.prune_channels(dscnn, C.ChannelsConfig(ratio=0.5, epochs=10), ctx=ctx)


def test_stage_halves_channels_and_keeps_accuracy(dscnn, ctx, channel_pruned):
    info = channel_pruned.info
    assert info["macs_before"] == DSCNN_MACS and info["macs_after"] == HALF_MACS
    assert info["macs_planned"] == HALF_MACS
    # 0.367x: the depthwise layers (a third of the MACs) shrink on one side only
    assert info["macs_after"] <= 0.37 * info["macs_before"]
    assert info["params_after"] < 0.45 * info["params_before"]
    after = {g["producers"][0]: g["channels_after"] for g in info["groups"]}
    assert after == {"conv1": 8, "pw1": 16, "pw2": 16}
    assert info["skipped"] == {"dense_out": "reaches the model output ('dense_out')"}
    assert info["fine_tune"]["method"] == "distill" and info["fine_tune"]["epochs_run"] >= 1
    base = ctx.evaluate(dscnn, "test")
    acc = ctx.evaluate(channel_pruned.model, "test")
    # measured (seeded): 0.929 -> 0.838 test; 0.34 on validation straight after slimming.
    # The defaults halve conv1, the layer this tiny model is most sensitive to.
    assert acc >= base - 0.15, (base, acc)
    assert info["fine_tune"]["val_metric"] > info["fine_tune"]["val_metric_pruned"] + 0.3
    assert dscnn.get_layer("pw1").filters == 32  # the caller's model is untouched


def test_sensitivity_allocation_meets_the_uniform_budget(dscnn, ctx):
    cfg = C.ChannelsConfig(ratio=0.5, allocation="sensitivity", epochs=0)
    out = C.prune_channels(dscnn, cfg, ctx=ctx)
    info = out.info
    assert info["macs_after"] <= HALF_MACS
    ratios = {g["producers"][0]: g["ratio_used"] for g in info["groups"]}
    sens = {g["producers"][0]: g["sensitivity"] for g in info["groups"]}
    # conv1 (16 filters on a 1-channel input) is the most sensitive group: pruned least
    assert sens["conv1"]["0.5"] > sens["pw1"]["0.5"]
    assert ratios["conv1"] < ratios["pw1"]
    # without fine-tuning, the measured allocation beats the uniform one on validation
    uniform = C.prune_channels(dscnn, C.ChannelsConfig(ratio=0.5, epochs=0), ctx=ctx)
    assert (info["fine_tune"]["val_metric_pruned"]
            > uniform.info["fine_tune"]["val_metric_pruned"] + 0.2)


def test_override_sets_a_ratio_and_skips_a_layer(dscnn, ctx):
    cfg = C.ChannelsConfig(ratio=0.5, epochs=0, overrides=(
        LayerOverride(layer="pw1", ratio=0.25), LayerOverride(regex="^conv", skip=True)))
    out = C.prune_channels(dscnn, cfg, ctx=ctx)
    assert out.model.get_layer("pw1").filters == 24
    assert out.model.get_layer("conv1").filters == 16
    assert out.model.get_layer("pw2").filters == 16
    assert "skipped by override" in out.skipped["conv1"]
    with pytest.raises(RecipeError, match="produces no channels"):
        C.prune_channels(dscnn, C.ChannelsConfig(
            overrides=(LayerOverride(layer="dw1", ratio=0.3),)), ctx=ctx)


def test_int8_tflite_is_smaller(dscnn, ctx, channel_pruned):
    from edgeslim.convert import to_int8_tflite

    calib = ctx.data.x_train[:64]
    before = to_int8_tflite(dscnn, calib)
    after = to_int8_tflite(channel_pruned.model, calib)
    assert len(after) < len(before), (len(after), len(before))


# -- students ---------------------------------------------------------------------------


def test_shrink_keeps_teacher_channels(dscnn, ctx):
    student, info = C.shrink(dscnn, 0.5, importance="bn", data=ctx.data, seed=SEED)
    widths = {n: student.get_layer(n).filters for n in ("conv1", "pw1", "pw2")}
    assert widths == {"conv1": 8, "pw1": 16, "pw2": 16}
    assert student.get_layer("dense_out").units == 10
    assert info["macs_after"] == HALF_MACS and info["bias_compensated"]
    acc = ctx.evaluate(student, "test")
    assert acc > 0.25, acc   # chance is 0.10; measured 0.38 with no training at all

    odd, _ = C.shrink(dscnn, 0.3, round_to=4)
    assert [odd.get_layer(n).filters for n in ("conv1", "pw1", "pw2")] == [4, 8, 8]
    assert odd.predict(ctx.data.x_test[:4], verbose=0).shape == (4, 10)


# -- the recipe ---------------------------------------------------------------------------


def test_recipe_round_trip_with_a_channels_table():
    import tomllib

    from edgeslim import recipe as R

    table = {
        "build": {"stages": ["channels", "qat"]},
        "channels": {"ratio": 0.4, "importance": "bn", "allocation": "sensitivity",
                     "round_to": 8, "scan": [0.3, 0.6],
                     "override": [{"layer": "pw1", "ratio": 0.25},
                                  {"regex": "^conv", "skip": True}]},
    }
    rcp = R.from_dict(table)
    cfg = rcp.config("channels")
    assert (cfg.ratio, cfg.importance, cfg.round_to, cfg.scan) == (0.4, "bn", 8, (0.3, 0.6))
    assert cfg.overrides[0].ratio == 0.25 and cfg.overrides[1].skip
    assert R.from_dict(tomllib.loads(rcp.to_toml())) == rcp
    assert list(R.STAGES)[:2] == ["distill", "channels"]


@pytest.mark.parametrize("table, words", [
    ({"ratio": 1.0}, ["channels.ratio"]),
    ({"importance": "l1"}, ["channels.importance", "taylor"]),
    ({"allocation": "greedy"}, ["channels.allocation"]),
    ({"round_to": 0}, ["channels.round_to"]),
    ({"override": [{"layer": "pw1", "ratio": 1.5}]}, ["override #1.ratio"]),
    ({"override": [{"layer": "pw1", "sparsity": 0.5}]}, ["sparsity", "ratio"]),
])
def test_invalid_channels_settings_name_the_key(table, words):
    from edgeslim import recipe as R

    with pytest.raises(RecipeError) as err:
        R.from_dict({"channels": table})
    for w in words:
        assert w in str(err.value)
