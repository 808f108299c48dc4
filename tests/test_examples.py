"""The built-in digits example: data file, Keras 3 model, image folder."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from edgeslim import examples
from edgeslim.errors import EdgeslimError


def test_digits_npz_split(tmp_path):
    path = examples.write_digits_npz(tmp_path / "d.npz", seed=3)
    assert path == tmp_path / "d.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no temp file left
    with np.load(path) as data:
        assert sorted(data.files) == ["x_test", "x_train", "y_test", "y_train"]
        x_tr, y_tr, x_te, y_te = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
    assert x_tr.dtype == np.float32 and np.issubdtype(y_tr.dtype, np.integer)
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert set(np.unique(y_te)) == set(range(10))
    # stratified: each class's share of the test set is within 1 point of its share overall
    share_tr = np.bincount(y_tr, minlength=10) / len(y_tr)
    share_te = np.bincount(y_te, minlength=10) / len(y_te)
    assert np.max(np.abs(share_tr - share_te)) < 0.01
    # no sample in both splits
    train_rows = {row.tobytes() for row in x_tr.reshape(len(x_tr), -1)}
    overlap = sum(row.tobytes() in train_rows for row in x_te.reshape(len(x_te), -1))
    assert overlap <= 5  # sklearn's digits hold a few exact duplicates, nothing more

    again = examples.write_digits_npz(tmp_path / "again.npz", seed=3)
    other = examples.write_digits_npz(tmp_path / "other.npz", seed=4)
    with np.load(again) as a, np.load(other) as b:
        assert np.array_equal(a["y_test"], y_te) and np.array_equal(a["x_test"], x_te)
        assert not np.array_equal(b["y_test"], y_te)


def test_trained_example_model(digits_keras3_path, digits_npz):
    import keras as keras3

    with zipfile.ZipFile(digits_keras3_path) as zf:
        assert json.loads(zf.read("metadata.json"))["keras_version"].startswith("3.")
    model = keras3.saving.load_model(digits_keras3_path)
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["input", "conv1", "dw1", "pw1", "pool1"]
    assert not any(isinstance(l, (keras3.layers.BatchNormalization, keras3.layers.Dropout))
                   for l in model.layers)
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 10)
    with np.load(digits_npz) as data:
        pred = model.predict(data["x_test"], verbose=0)
        accuracy = float(np.mean(pred.argmax(1) == data["y_test"]))
    assert accuracy >= 0.95
    assert np.allclose(pred.sum(1), 1.0, atol=1e-5)  # softmax output


def test_training_is_silent_and_seeded(tmp_path, digits_npz, capfd):
    import keras as keras3

    with np.load(digits_npz) as data:  # a small subset: this test is about behaviour, not accuracy
        small = tmp_path / "small.npz"
        np.savez(small, x_train=data["x_train"][:128], y_train=data["y_train"][:128])
    path = examples.train_digits_model(tmp_path / "a.keras", small, seed=5, epochs=1)
    out, err = capfd.readouterr()
    assert "Epoch" not in out + err and "step" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "small.npz"]
    trained = keras3.saving.load_model(path).get_weights()
    keras3.utils.set_random_seed(5)
    initial = examples.build_digits_model(keras3).get_weights()
    keras3.utils.set_random_seed(5)
    again = examples.build_digits_model(keras3).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(initial, again))  # seeded initialisation
    assert any(not np.array_equal(a, b) for a, b in zip(initial, trained))  # and it trained
    with pytest.raises(EdgeslimError, match=r"\.keras"):
        examples.train_digits_model(tmp_path / "m.h5", small, epochs=1)


def test_image_folder(tmp_path):
    from PIL import Image

    root = examples.write_digits_image_folder(tmp_path / "imgs", n_per_class=3)
    assert sorted(p.name for p in root.iterdir()) == [str(i) for i in range(10)]
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 30
    img = Image.open(files[0])
    assert img.size == (8, 8) and img.mode == "L"
    # pixels are the digits' values scaled to 0..255
    x, _ = examples.load_digits_arrays()
    index = int(files[0].stem.split("_")[1])
    assert np.array_equal(np.asarray(img), np.rint(x[index, :, :, 0] * 255).astype(np.uint8))
    with pytest.raises(EdgeslimError, match="already exists"):
        examples.write_digits_image_folder(root, n_per_class=1)
