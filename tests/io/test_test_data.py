"""--test-data: a held-out set scored as the test split, and where each split came from."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim import examples
from edgeslim.errors import DataError
from edgeslim.io.data import load_data


def _digits(n=200):
    x, y = examples.load_digits_arrays()
    return x[:n], y[:n], x[n:n + 60], y[n:n + 60]


def test_carved_and_given_origins(tmp_path, digits_npz):
    x, y, _, _ = _digits()
    np.savez(tmp_path / "train.npz", x_train=x, y_train=y)
    ds = load_data(tmp_path / "train.npz", seed=0)
    assert ds.test_origin == "carved" and ds.val_origin == "carved" and ds.test_carved
    assert "carved from the training samples of train.npz" in ds.test_source
    given = load_data(digits_npz, seed=0)
    assert given.test_origin == "given" and given.val_origin == "carved" and not given.test_carved


@pytest.mark.parametrize("keys", [("x_test", "y_test"), ("x", "y")])
def test_test_data_npz_replaces_the_carved_split(tmp_path, keys):
    x, y, xt, yt = _digits()
    np.savez(tmp_path / "train.npz", x_train=x, y_train=y)
    np.savez(tmp_path / "held.npz", **{keys[0]: xt, keys[1]: yt})
    ds = load_data(tmp_path / "train.npz", seed=0, test_data=tmp_path / "held.npz")
    assert ds.test_origin == "test-data" and ds.test_source == str(tmp_path / "held.npz")
    np.testing.assert_array_equal(ds.x_test, xt)
    np.testing.assert_array_equal(ds.y_test, yt)
    # nothing carved for testing: train + val are all 200 samples given
    assert len(ds.x_train) + len(ds.x_val) == 200


def test_test_data_replaces_a_given_test_split_and_says_so(tmp_path, digits_npz):
    _, _, xt, yt = _digits()
    np.savez(tmp_path / "held.npz", x_test=xt, y_test=yt)
    ds = load_data(digits_npz, seed=0, test_data=tmp_path / "held.npz")
    assert len(ds.x_test) == 60 and any("replaced by --test-data" in n for n in ds.notes)


def test_test_data_errors(tmp_path):
    x, y, xt, yt = _digits()
    np.savez(tmp_path / "train.npz", x_train=x, y_train=y)
    np.savez(tmp_path / "wrong_keys.npz", a=xt, b=yt)
    with pytest.raises(DataError, match="needs arrays x_test and y_test"):
        load_data(tmp_path / "train.npz", test_data=tmp_path / "wrong_keys.npz")
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "train.npz", test_data=tmp_path / "missing.npz")
    np.savez(tmp_path / "bad_shape.npz", x_test=xt[:, :4], y_test=yt)
    with pytest.raises(DataError, match="inputs differ in shape"):
        load_data(tmp_path / "train.npz", test_data=tmp_path / "bad_shape.npz")
    np.savez(tmp_path / "short.npz", x_test=xt, y_test=yt[:5])
    with pytest.raises(DataError, match="x_test has 60 samples but y_test has 5"):
        load_data(tmp_path / "train.npz", test_data=tmp_path / "short.npz")


def test_test_data_image_folder_must_have_the_training_classes(tmp_path):
    train = examples.write_digits_image_folder(tmp_path / "train", n_per_class=4, seed=0)
    test = examples.write_digits_image_folder(tmp_path / "test", n_per_class=2, seed=1)
    ds = load_data(train, seed=0, test_data=test)
    assert ds.test_origin == "test-data" and len(ds.x_test) == 20
    (tmp_path / "test" / "9").rename(tmp_path / "test" / "nine")
    with pytest.raises(DataError, match="not the training data's classes"):
        load_data(train, seed=0, test_data=test)
