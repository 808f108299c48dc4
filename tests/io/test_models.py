"""load_model / bridge_keras3_model: Keras 3 round trips, tf_keras formats, safety, bad files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from edgeslim._tf import keras, tf
from edgeslim.errors import ModelLoadError
from edgeslim.io.models import ABS_TOLERANCE, bridge_keras3_model, load_model

keras3 = pytest.importorskip("keras")  # Keras 3 is a hard dependency of TF >= 2.16
L3 = keras3.layers
SEED = 7


def _fingerprint(path: Path) -> tuple:
    """sha256 of a file (or of every file in a folder) and the mtimes: proof we wrote nothing."""
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.read_bytes())
    return digest.hexdigest(), tuple(os.stat(p).st_mtime_ns for p in files)


def _rand(shape, seed=SEED):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomize_bn(model):
    """Give BatchNormalization layers non-trivial statistics so a wrong copy would show."""
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, L3.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.5, beta.shape).astype("float32"),
                rng.normal(0, 0.5, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])


def _assert_same_predictions(model3, model2, x):
    y3 = np.asarray(model3(x, training=False))
    y2 = np.asarray(model2(x, training=False))
    assert y3.shape == y2.shape
    assert float(np.max(np.abs(y3 - y2))) <= ABS_TOLERANCE * max(1.0, float(np.max(np.abs(y3))))
    assert float(np.std(y3)) > 1e-3  # the outputs carry signal: equality above means something


# --------------------------------------------------------------------------- Keras 3 round trips
def test_digits_example_bridges_exactly(digits_keras3_path, digits_npz):
    before = _fingerprint(digits_keras3_path)
    loaded = load_model(digits_keras3_path)
    assert _fingerprint(digits_keras3_path) == before
    assert loaded.format == "keras3" and loaded.bridged
    assert isinstance(loaded.model, keras.Model)  # tf_keras, what TFMOT needs
    assert loaded.tolerance == pytest.approx(ABS_TOLERANCE)  # softmax outputs are <= 1
    assert loaded.max_abs_diff <= loaded.tolerance
    assert [layer.name for layer in loaded.model.layers][:4] == ["input", "conv1", "dw1", "pw1"]
    with np.load(digits_npz) as data:
        x, y = data["x_test"], data["y_test"]
    original = keras3.saving.load_model(digits_keras3_path)
    p3 = np.asarray(original.predict(x, verbose=0))
    p2 = np.asarray(loaded.model.predict(x, verbose=0))
    assert float(np.max(np.abs(p3 - p2))) <= 1e-5
    assert np.array_equal(p3.argmax(1), p2.argmax(1))
    assert float(np.mean(p2.argmax(1) == y)) >= 0.95
    assert any("max abs diff" in note for note in loaded.notes)


def test_bridged_model_is_ready_for_tfmot(digits_tfk_model):
    import tensorflow_model_optimization as tfmot

    x = _rand((6, 8, 8, 1))
    before = digits_tfk_model.predict(x, verbose=0)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(digits_tfk_model)
    wrapped = {l.layer.name for l in pruned.layers if type(l).__name__ == "PruneLowMagnitude"}
    assert wrapped >= {"conv1", "pw1", "pw2", "fc1", "output"}
    # masks start all-ones: the wrapped model computes exactly what the bridged one does
    assert float(np.max(np.abs(pruned.predict(x, verbose=0) - before))) <= 1e-6


def test_keras3_sequential_many_layers_round_trip(tmp_path):
    keras3.utils.set_random_seed(SEED)
    model3 = keras3.Sequential(
        [
            keras3.Input((12, 12, 3), name="image"),
            L3.Rescaling(1 / 4.0, offset=-0.5, name="scale"),
            L3.ZeroPadding2D(1, name="pad"),
            L3.Conv2D(
                8, 3, name="conv",
                kernel_initializer=keras3.initializers.Orthogonal(seed=1),
                kernel_regularizer=keras3.regularizers.L2(1e-3),
                kernel_constraint=keras3.constraints.MaxNorm(3.0),
            ),
            L3.BatchNormalization(name="bn"),
            L3.ReLU(max_value=6.0, name="relu6"),
            L3.SeparableConv2D(8, 3, padding="same", name="sep"),
            L3.LeakyReLU(negative_slope=0.1, name="leaky"),
            L3.AveragePooling2D(2, name="avg"),
            L3.DepthwiseConv2D(3, padding="same", activation="swish", name="dw"),
            L3.Activation("tanh", name="act"),
            L3.MaxPooling2D(2, name="max"),
            L3.Permute((2, 1, 3), name="perm"),
            L3.Reshape((9, 8), name="reshape"),
            L3.Conv1D(6, 3, padding="causal", activation="gelu", name="conv1d"),
            L3.LayerNormalization(name="ln"),
            L3.GlobalAveragePooling1D(name="gap1d"),
            L3.Dropout(0.3, name="drop"),
            L3.Dense(5, name="logits"),
            L3.Softmax(name="softmax"),
        ],
        name="seq_all",
    )
    _randomize_bn(model3)
    path = tmp_path / "seq.keras"
    model3.save(path)

    loaded = load_model(path)
    model2 = loaded.model
    assert isinstance(model2, keras.Sequential)
    assert loaded.bridged and loaded.max_abs_diff <= loaded.tolerance == pytest.approx(1e-5)
    x = _rand((6, 12, 12, 3)) * 4.0
    _assert_same_predictions(model3, model2, x)
    # configs mapped, not just weights: regularizer, constraint, initializer, renamed argument
    conv = model2.get_layer("conv")
    assert isinstance(conv.kernel_regularizer, keras.regularizers.L2)
    assert float(conv.kernel_regularizer.l2) == pytest.approx(1e-3)
    assert isinstance(conv.kernel_constraint, keras.constraints.MaxNorm)
    assert conv.kernel_constraint.max_value == 3.0
    assert isinstance(conv.kernel_initializer, keras.initializers.Orthogonal)
    assert float(model2.get_layer("leaky").alpha) == pytest.approx(0.1)
    assert model2.get_layer("relu6").max_value == 6.0
    assert np.allclose(model2.get_layer("bn").moving_variance.numpy(),
                       model3.get_layer("bn").moving_variance.numpy())


def _functional_model():
    keras3.utils.set_random_seed(SEED)
    inp = keras3.Input((10, 10, 4), name="inp")
    x = L3.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = L3.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L3.BatchNormalization(name="bn")(y)
    y = L3.Activation("relu", name="dw_relu")(y)
    x = L3.Add(name="residual")([x, y])
    a = L3.Conv2D(4, 1, name="branch_a")(x)
    b = L3.Conv2D(4, 1, activation="sigmoid", name="branch_b")(x)
    g = L3.Multiply(name="gate")([a, b])
    x = L3.Concatenate(name="concat")([x, g])
    head = keras3.Sequential(  # a nested model
        [L3.Conv2D(6, 3, strides=2, name="head_conv"), L3.GlobalMaxPooling2D(name="gmp")],
        name="head",
    )
    p = head(x)
    q = L3.Flatten(name="flat")(L3.MaxPooling2D(5, name="pool")(x))
    out = L3.Dense(3, name="out")(L3.Concatenate(name="join")([p, q]))
    model = keras3.Model(inp, out, name="branchy")
    _randomize_bn(model)
    return model


def test_keras3_functional_residual_round_trip(tmp_path):
    model3 = _functional_model()
    path = tmp_path / "func.keras"
    model3.save(path)
    before = _fingerprint(path)

    loaded = load_model(path)
    assert _fingerprint(path) == before
    model2 = loaded.model
    assert loaded.format == "keras3" and loaded.bridged
    assert loaded.max_abs_diff <= loaded.tolerance
    assert loaded.tolerance >= ABS_TOLERANCE
    x = _rand((5, 10, 10, 4))
    _assert_same_predictions(model3, model2, x)
    assert model2.get_layer("residual").__class__ is keras.layers.Add
    assert len(model2.get_layer("residual").inbound_nodes[0].inbound_layers) == 2
    assert model2.count_params() == model3.count_params()


def test_bridge_in_memory_and_keras3_h5(tmp_path):
    model3 = _functional_model()
    model2, diff = bridge_keras3_model(model3)
    assert isinstance(model2, keras.Model) and diff <= ABS_TOLERANCE * 10
    _assert_same_predictions(model3, model2, _rand((3, 10, 10, 4), seed=3))
    same, zero = bridge_keras3_model(model2)  # already tf_keras: returned untouched
    assert same is model2 and zero == 0.0

    path = tmp_path / "k3.h5"
    model3.save(path)
    loaded = load_model(path)
    assert loaded.format == "h5" and loaded.bridged
    _assert_same_predictions(model3, loaded.model, _rand((2, 10, 10, 4), seed=4))


def test_bridge_multi_io_shared_layer_and_call_built_sequential():
    keras3.utils.set_random_seed(SEED)
    a, b = keras3.Input((5,), name="a"), keras3.Input((5,), name="b")
    shared = L3.Dense(3, activation="tanh", name="shared")
    total = L3.Add(name="sum")([shared(a), shared(b)])
    model3 = keras3.Model([a, b], [total, L3.Dense(2, name="o2")(shared(b))])
    model2, diff = bridge_keras3_model(model3)
    assert diff <= ABS_TOLERANCE
    assert len(model2.get_layer("shared").inbound_nodes) == 3  # still one shared layer
    xa, xb = _rand((4, 5), seed=1), _rand((4, 5), seed=2)
    for y3, y2 in zip(model3([xa, xb]), model2([xa, xb])):
        assert float(np.max(np.abs(np.asarray(y3) - np.asarray(y2)))) <= ABS_TOLERANCE

    seq = keras3.Sequential([L3.Dense(4, activation="relu"), L3.Dense(2)])
    seq(np.zeros((1, 3), "float32"))  # built by a call with batch size 1
    seq2, _ = bridge_keras3_model(seq)
    assert seq2.input_shape == (None, 3)  # the call's batch size is not baked in
    _assert_same_predictions(seq, seq2, _rand((5, 3)))


def test_output_check_catches_a_wrong_rebuild(monkeypatch):
    """The equality proof is live: a rebuild that is off by 1e-3 in one weight is refused."""
    from edgeslim.io import keras3_bridge

    copy = keras3_bridge._copy_weights

    def off_by_a_little(layer3, layer2):
        copy(layer3, layer2)
        if layer2.name == "dw":
            kernel, bias = layer2.get_weights()
            layer2.set_weights([kernel + 1e-3, bias])

    monkeypatch.setattr(keras3_bridge, "_copy_weights", off_by_a_little)
    with pytest.raises(ModelLoadError, match="does not reproduce its outputs"):
        bridge_keras3_model(_functional_model())


def test_keras_ops_nodes_round_trip(tmp_path):
    """Functional models with raw keras.ops (x + 1, ops.mean, ...) as MobileNetV3 has them."""
    ops = keras3.ops
    keras3.utils.set_random_seed(SEED)
    inp = keras3.Input((4, 6), name="i")
    x = L3.Dense(6, name="d")(inp)
    y = ops.mean((x + 1.0) * 0.5 - x / 3.0, axis=-1, keepdims=True) * ops.sigmoid(x)
    z = ops.concatenate([ops.reshape(y, (-1, 24)), ops.reshape(ops.transpose(y, (0, 2, 1)), (-1, 24))], axis=1)
    out = ops.softmax(ops.clip(L3.Dense(5, name="head")(z), -1.0, 1.0), axis=-1)
    model3 = keras3.Model(inp, out)
    path = tmp_path / "ops.keras"
    model3.save(path)
    loaded = load_model(path)
    assert loaded.max_abs_diff <= loaded.tolerance
    _assert_same_predictions(model3, loaded.model, _rand((4, 4, 6)))
    kinds = {type(layer).__name__ for layer in loaded.model.layers}
    assert "TFOpLambda" in kinds and "Dense" in kinds


# --------------------------------------------------------------------------- unmappable layers
def test_unmappable_builtin_layer_is_named(tmp_path):
    model3 = keras3.Sequential(
        [keras3.Input((6,)), L3.Dense(4, name="d"), L3.RMSNormalization(name="rms_norm")]
    )
    path = tmp_path / "rms.keras"
    model3.save(path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert "'rms_norm'" in info.value.message and "RMSNormalization" in info.value.message
    assert "tf_keras" in info.value.hint


def test_keras3_only_activations_keep_keras3_semantics():
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6, tf_keras's is clip(0.2 x + 0.5): the
    bridge must compute Keras 3's (as TF ops), not silently switch to tf_keras's."""
    keras3.utils.set_random_seed(SEED)
    model3 = keras3.Sequential(
        [keras3.Input((3,)), L3.Dense(4, activation="hard_sigmoid", name="hs"),
         L3.Activation("hard_silu", name="hswish"), L3.Dense(2, name="out")]
    )
    model2, diff = bridge_keras3_model(model3)
    assert diff <= ABS_TOLERANCE
    x = _rand((8, 3)) * 3.0
    _assert_same_predictions(model3, model2, x)
    pre = model3.get_layer("hs").kernel.numpy()
    z = x @ pre + model3.get_layer("hs").bias.numpy()
    tf_keras_version = np.clip(0.2 * z + 0.5, 0, 1)
    keras3_version = np.clip(z + 3.0, 0, 6) / 6.0
    assert np.max(np.abs(tf_keras_version - keras3_version)) > 1e-2  # they really differ


@keras3.saving.register_keras_serializable(package="edgeslim_tests")
class TimesThree(L3.Layer):
    def call(self, x):
        return x * 3.0


def test_custom_layer_refused_and_unmappable(tmp_path):
    model3 = keras3.Sequential([keras3.Input((4,)), L3.Dense(2, name="d"), TimesThree(name="triple")])
    with pytest.raises(ModelLoadError, match=r"'triple' \(TimesThree\).*custom layer"):
        bridge_keras3_model(model3)
    path = tmp_path / "custom.keras"
    model3.save(path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)  # refused before anything is deserialized
    assert "'triple'" in info.value.message and "TimesThree" in info.value.message
    assert "--trust-model" in info.value.hint
    with pytest.raises(ModelLoadError, match=r"'triple' \(TimesThree\)"):
        load_model(path, trust=True)  # trusted and registered, but still not rebuildable


def test_subclassed_model_is_refused():
    class Net(keras3.Model):
        def __init__(self):
            super().__init__()
            self.d = L3.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ModelLoadError, match="subclassed"):
        bridge_keras3_model(net)


# --------------------------------------------------------------------------- tf_keras formats
def _tfk_model(with_lambda=False):
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((5,), name="x")
    h = keras.layers.Dense(4, activation="relu", name="hidden")(inp)
    if with_lambda:
        h = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


def test_tf_keras_files_load_directly(tmp_path):
    model = _tfk_model()
    x = _rand((4, 5))
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "sm", save_format="tf")
    for name, fmt in (("m.keras", "keras2"), ("m.h5", "h5"), ("sm", "savedmodel")):
        path = tmp_path / name
        before = _fingerprint(path)
        loaded = load_model(path)
        assert _fingerprint(path) == before, name
        assert loaded.format == fmt and not loaded.bridged and loaded.max_abs_diff is None
        np.testing.assert_allclose(loaded.model.predict(x, verbose=0), expected, atol=1e-6)


def test_lambda_h5_needs_trust(tmp_path):
    model = _tfk_model(with_lambda=True)
    x = _rand((3, 5))
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "lam.h5")
    model.save(tmp_path / "lam.keras")
    model.save(tmp_path / "lam_sm", save_format="tf")
    for name in ("lam.h5", "lam.keras", "lam_sm"):
        with pytest.raises(ModelLoadError) as info:
            load_model(tmp_path / name)
        assert "'affine'" in info.value.message and "Lambda" in info.value.message
        assert "--trust-model" in info.value.hint
    loaded = load_model(tmp_path / "lam.h5", trust=True)
    np.testing.assert_allclose(loaded.model.predict(x, verbose=0), expected, atol=1e-6)
    assert any("trusted" in note and "affine" in note for note in loaded.notes)


def test_keras3_lambda_keras_file_needs_trust(tmp_path):
    inp = keras3.Input((4,))
    out = L3.Lambda(lambda t: t * 2.0 - 1.0, name="shift")(L3.Dense(3, name="d")(inp))
    model3 = keras3.Model(inp, out)
    path = tmp_path / "lam3.keras"
    model3.save(path)
    with pytest.raises(ModelLoadError, match=r"'shift'.*Lambda"):
        load_model(path)
    loaded = load_model(path, trust=True)
    assert loaded.bridged and loaded.max_abs_diff <= loaded.tolerance
    _assert_same_predictions(model3, loaded.model, _rand((3, 4)))


def test_savedmodel_without_keras_metadata(tmp_path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            return 2.0 * x

    tf.saved_model.save(Doubler(), str(tmp_path / "bare"))
    with pytest.raises(ModelLoadError, match="without Keras metadata") as info:
        load_model(tmp_path / "bare")
    assert "model.save" in info.value.hint


# --------------------------------------------------------------------------- bad files
def test_bad_files(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope.keras", "no such file")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    cases["junk"] = (junk, "not a valid .keras file")
    good = tmp_path / "good.h5"
    _tfk_model().save(good)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:1500])
    cases["truncated"] = (truncated, "not a readable HDF5 file")
    weights_only = tmp_path / "w.weights.h5"
    _tfk_model().save_weights(weights_only)
    cases["weights"] = (weights_only, "weights only")
    tfl = tmp_path / "model.tflite"
    tfl.write_bytes(b"TFL3")
    cases["ext"] = (tfl, "unsupported model format '.tflite'")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases["folder"] = (folder, "not a SavedModel")
    for key, (path, expected) in cases.items():
        before = _fingerprint(path) if path.exists() else None
        with pytest.raises(ModelLoadError) as info:
            load_model(path)
        message = info.value.message
        assert str(path) in message and expected in message, key
        assert "\n" not in message and info.value.hint, key
        if before is not None:
            assert _fingerprint(path) == before, key
