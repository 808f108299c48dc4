"""load_data / check_data_fits_model: splits, task detection, image folders, every data error."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgeslim import examples
from edgeslim._tf import keras
from edgeslim.errors import DataError
from edgeslim.io.data import check_data_fits_model, load_data


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- splits
def test_digits_npz_gets_a_stratified_val_split(digits_npz):
    before = _sha(digits_npz)
    ds = load_data(digits_npz, seed=1)
    assert _sha(digits_npz) == before
    assert ds.task == "classification" and ds.num_classes == 10
    assert len(ds.x_test) == 360  # given in the file, kept
    assert len(ds.x_val) == round(0.1 * 1437) and len(ds.x_train) == 1437 - len(ds.x_val)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    share_tr = np.bincount(ds.y_train, minlength=10) / len(ds.y_train)
    share_val = np.bincount(ds.y_val, minlength=10) / len(ds.y_val)
    assert np.max(np.abs(share_tr - share_val)) < 0.01
    assert any("x_val/y_val" in n and "stratified" in n and "seed 1" in n for n in ds.notes)
    assert not any(n.startswith("x_test/y_test") for n in ds.notes)
    same = load_data(digits_npz, seed=1)
    other = load_data(digits_npz, seed=2)
    assert np.array_equal(same.y_val, ds.y_val) and np.array_equal(same.x_train, ds.x_train)
    assert not np.array_equal(other.y_val, ds.y_val)


def test_train_only_npz_gets_val_and_test(tmp_path):
    x = _rng().random((200, 6), dtype=np.float32)
    y = np.repeat(np.arange(4), 50)
    ds = load_data(_npz(tmp_path / "d.npz", x_train=x, y_train=y), val_fraction=0.1, test_fraction=0.25)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (130, 20, 50)
    assert np.ptp(np.bincount(ds.y_test)) <= 1  # stratified: 50 = 12/13 per class
    assert np.ptp(np.bincount(ds.y_val)) <= 1
    # every sample lands in exactly one split
    rows = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert len({r.tobytes() for r in rows}) == 200
    assert sum("split with seed 0" in n for n in ds.notes) == 2


def test_all_splits_given_are_used_as_is(tmp_path):
    r = _rng(1)
    arrays = {f"{k}_{s}": None for k in "xy" for s in ("train", "val", "test")}
    for s, n in (("train", 30), ("val", 7), ("test", 9)):
        arrays[f"x_{s}"] = r.random((n, 3)).astype(np.float64)
        arrays[f"y_{s}"] = r.integers(0, 3, n).reshape(n, 1)  # (N, 1) labels
    ds = load_data(_npz(tmp_path / "d.npz", **arrays))
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (30, 7, 9)
    assert ds.y_val.shape == (7,) and np.array_equal(ds.y_val, arrays["y_val"][:, 0])
    assert ds.x_train.dtype == np.float32
    assert any("float64 converted to float32" in n for n in ds.notes)
    assert not any("split with seed" in n for n in ds.notes)


# --------------------------------------------------------------------------- task detection
@pytest.mark.parametrize(
    "y, task, y_shape",
    [
        (np.arange(40) % 4, "classification", (None,)),
        ((np.arange(40) % 4).astype(np.float32), "classification", (None,)),
        ((np.arange(40) % 4).reshape(40, 1).astype(np.uint8), "classification", (None,)),
        (np.linspace(0, 1, 40, dtype=np.float32), "regression", (None, 1)),
        ((np.arange(40) % 4).reshape(40, 1).astype(np.float32), "regression", (None, 1)),
    ],
)
def test_task_detection(tmp_path, y, task, y_shape):
    x = _rng().random((40, 5), dtype=np.float32)
    ds = load_data(_npz(tmp_path / "d.npz", x_train=x, y_train=y))
    assert ds.task == task
    assert len(ds.y_train.shape) == len(y_shape)
    if task == "classification":
        assert ds.num_classes == 4 and ds.y_train.dtype == np.int64
    else:
        assert ds.num_classes is None and ds.y_train.dtype == np.float32
    assert any(n.startswith(f"task detected: {task}") for n in ds.notes)


def test_autoencoder_and_task_override(tmp_path):
    x = _rng().random((50, 4, 4, 1), dtype=np.float32)
    ds = load_data(_npz(tmp_path / "ae.npz", x_train=x, y_train=x.copy()))
    assert ds.task == "regression" and ds.y_train.shape[1:] == (4, 4, 1)
    assert np.array_equal(ds.x_train, ds.y_train) and np.array_equal(ds.x_test, ds.y_test)
    counts = np.arange(50) % 7
    forced = load_data(_npz(tmp_path / "c.npz", x_train=x, y_train=counts), task="regression")
    assert forced.task == "regression" and forced.y_train.shape[1:] == (1,)


# --------------------------------------------------------------------------- image folders
def test_image_folder_loads_like_the_arrays(tmp_path):
    root = examples.write_digits_image_folder(tmp_path / "imgs", n_per_class=12)
    ds = load_data(root, seed=0)
    assert ds.class_names == tuple(str(i) for i in range(10)) and ds.num_classes == 10
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_train.dtype == np.float32
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 120
    assert len(ds.x_test) == 24 and len(ds.x_val) == 12
    assert np.ptp(np.bincount(ds.y_test, minlength=10)) <= 1  # stratified: 24 = 2 or 3 per class
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # every loaded image is one of the digits, within PNG's 8-bit rounding
    x, y = examples.load_digits_arrays()
    flat = x.reshape(len(x), -1)
    for img, label in zip(ds.x_test[:5], ds.y_test[:5]):
        dist = np.abs(flat - img.reshape(-1)).max(axis=1)
        assert dist.min() <= 0.5 / 255 + 1e-6 and y[dist.argmin()] == label
    assert any("scaled to [0, 1] float32" in n for n in ds.notes)

    big = load_data(root, image_size=(16, 12))
    assert big.x_train.shape[1:] == (16, 12, 1)
    assert any("resized" in n for n in big.notes)


def test_rgb_folder_with_mixed_sizes(tmp_path):
    from PIL import Image

    r = _rng(2)
    for cls in ("cat", "dog"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(5):
            size = (10, 6) if i else (7, 9)  # (width, height)
            pixels = r.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / cls / f"{i}.png")
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    ds = load_data(tmp_path / "pets")
    assert ds.class_names == ("cat", "dog")
    assert ds.x_train.shape[1:] == (9, 7, 3)  # (height, width) of the first image, cat/0.png
    assert sum(len(getattr(ds, f"x_{s}")) for s in ("train", "val", "test")) == 10
    assert any("8 images resized" in n for n in ds.notes)


# --------------------------------------------------------------------------- errors
def _error(path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_data(path, **kwargs)
    assert info.value.hint
    return info.value


def test_file_errors(tmp_path):
    assert "no such file" in _error(tmp_path / "missing.npz").message
    csv = tmp_path / "d.csv"
    csv.write_text("1,2\n")
    assert "unsupported data format '.csv'" in _error(csv).message
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    assert "not a readable .npz" in _error(junk).message
    x = np.zeros((10, 2), np.float32)
    wrong = _npz(tmp_path / "keys.npz", x=x, labels=np.zeros(10))
    err = _error(wrong)
    assert "missing x_train and y_train" in err.message and "keys found: labels, x" in err.message
    half = _npz(tmp_path / "half.npz", x_train=x, y_train=np.zeros(10), x_val=x)
    assert "has x_val but no y_val" in _error(half).message
    objects = _npz(tmp_path / "obj.npz", x_train=np.array([{}, {}], dtype=object), y_train=np.zeros(2))
    assert "Python objects" in _error(objects).message
    assert "unknown task" in _error(half, task="segmentation").message
    assert "val_fraction=1.5" in _error(half, val_fraction=1.5).message


def test_array_errors(tmp_path):
    x = _rng().random((20, 3), dtype=np.float32)
    y = np.arange(20) % 2
    cases = {
        "empty": (dict(x_train=x[:0], y_train=y[:0]), "x_train is empty"),
        "length": (dict(x_train=x, y_train=y[:15]), "x_train has 20 samples but y_train has 15"),
        "nan_x": (dict(x_train=np.where(x > 0.9, np.nan, x), y_train=y), "x_train holds"),
        "nan_y": (dict(x_train=x, y_train=np.where(y > 0, np.nan, 0.0)), "y_train holds 10 NaN"),
        "nan_test": (dict(x_train=x, y_train=y, x_test=x.copy() * np.inf, y_test=y), "x_test holds 60 NaN"),
        "negative": (dict(x_train=x, y_train=y - 1), "negative label -1"),
        "shapes": (dict(x_train=x, y_train=y, x_test=x[:, :2], y_test=y), "inputs differ in shape"),
        "tiny": (dict(x_train=x[:2], y_train=y[:2]), "too few to split"),
    }
    for key, (arrays, expected) in cases.items():
        path = _npz(tmp_path / f"{key}.npz", **arrays)
        before = _sha(path)
        assert expected in _error(path).message, key
        assert _sha(path) == before
    fractional = _npz(tmp_path / "frac.npz", x_train=x, y_train=np.linspace(0, 1, 20))
    assert "fractional values" in _error(fractional, task="classification").message


def test_image_folder_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    assert "without class sub-folders" in _error(tmp_path / "flat").message
    root = examples.write_digits_image_folder(tmp_path / "imgs", n_per_class=2)
    (root / "empty_class").mkdir()
    assert "'empty_class' hold no images" in _error(root).message
    (root / "empty_class" / "bad.png").write_bytes(b"\x89PNG broken")
    assert "bad.png: cannot read this image" in _error(root).message
    assert "classification task, not regression" in _error(root, task="regression").message


# --------------------------------------------------------------------------- data vs model
def _tiny_model(input_shape, units):
    inp = keras.Input(input_shape)
    out = keras.layers.Dense(units)(keras.layers.Flatten()(inp))
    return keras.Model(inp, out)


def test_data_fits_the_example_model(digits_npz, digits_tfk_model):
    ds = load_data(digits_npz)
    check_data_fits_model(ds, digits_tfk_model)  # raises on any mismatch


def test_shape_and_label_mismatches(tmp_path):
    r = _rng(3)
    mnist_like = load_data(_npz(tmp_path / "m.npz", x_train=r.random((40, 28, 28), dtype=np.float32),
                                y_train=np.arange(40) % 10))
    with pytest.raises(DataError) as info:
        check_data_fits_model(mnist_like, _tiny_model((8, 8, 1), 10))
    assert info.value.message == "data samples have shape (28, 28) but the model expects (8, 8, 1)"

    flat = load_data(_npz(tmp_path / "f.npz", x_train=r.random((40, 64), dtype=np.float32),
                          y_train=np.arange(40) % 13))
    with pytest.raises(DataError) as info:
        check_data_fits_model(flat, _tiny_model((8, 8, 1), 10))
    assert "x.reshape(-1, 8, 8, 1)" in info.value.hint
    with pytest.raises(DataError, match="label 12 but the model's output has only 10 units"):
        check_data_fits_model(flat, _tiny_model((64,), 10))
    check_data_fits_model(flat, _tiny_model((64,), 13))
    with pytest.raises(DataError, match="single output unit"):
        check_data_fits_model(flat, _tiny_model((64,), 1))

    x = r.random((40, 8, 8, 1), dtype=np.float32)
    ae = load_data(_npz(tmp_path / "ae.npz", x_train=x, y_train=x.reshape(40, 8, 8)))
    inp = keras.Input((8, 8, 1))
    decoder = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))
    with pytest.raises(DataError) as info:
        check_data_fits_model(ae, decoder)
    assert info.value.message == "regression targets have shape (8, 8) but the model outputs (8, 8, 1)"
    good = load_data(_npz(tmp_path / "ae2.npz", x_train=x, y_train=x))
    check_data_fits_model(good, decoder)
