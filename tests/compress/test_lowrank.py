"""Low-rank factorization: exact SVD factors, rank choice, parameter counts, fine-tuning, errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.errors import RecipeError


def _truncated(w: np.ndarray, r: int) -> np.ndarray:
    """W_r, the best rank-r approximation of the kernel as an (m, n) matrix, reshaped back."""
    m = w.reshape(-1, w.shape[-1]).astype(np.float64)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return ((u[:, :r] * s[:r]) @ vt[:r]).reshape(w.shape).astype(np.float32)


def test_factorized_model_computes_the_truncated_svd(dscnn, digits_data):
    """The two new layers compute exactly what the original layer computes with its
    kernel replaced by W_r (Dense, 1x1 conv and 3x3 conv alike)."""
    from edgeslim._tf import keras
    from edgeslim.compress.context import count_params
    from edgeslim.compress.lowrank import LowRankConfig, factorize

    new, info, skipped = factorize(dscnn, LowRankConfig(rank=4))
    assert set(info) == {"conv1", "pw1", "pw2", "dense_out"}
    assert not skipped
    names = [layer.name for layer in new.layers]
    for n in info:  # the first factor sits right before the layer, which keeps its name
        assert names.index(f"{n}_lr") == names.index(n) - 1
    # conv1 3x3x1x16 (no bias): 9*16=144 -> 4*(9+16)=100; pw1 16->32 (+32 bias) 544 -> 4*48+32
    assert info["conv1"]["params_before"] == 144 and info["conv1"]["params_after"] == 100
    assert info["pw1"]["params_after"] == 4 * (16 + 32) + 32
    assert info["dense_out"]["params_after"] == 4 * (32 + 10) + 10
    saved = sum(v["params_before"] - v["params_after"] for v in info.values())
    assert count_params(dscnn) - count_params(new) == saved

    reference = keras.models.clone_model(dscnn)
    reference.set_weights(dscnn.get_weights())
    for n in info:
        layer = reference.get_layer(n)
        w = layer.get_weights()
        w[0] = _truncated(w[0], 4)
        layer.set_weights(w)
    x = digits_data.x_test[:64]
    np.testing.assert_allclose(new(x).numpy(), reference(x).numpy(), atol=2e-4, rtol=1e-3)
    for n, v in info.items():  # the reported error is ||W - W_r|| / ||W||
        w = dscnn.get_layer(n).get_weights()[0]
        err = np.linalg.norm(w - _truncated(w, 4)) / np.linalg.norm(w)
        assert v["weight_error"] == pytest.approx(err, abs=1e-3)


def test_rank_by_energy_and_only_where_it_saves(dscnn):
    from edgeslim.compress.lowrank import LowRankConfig, choose_rank, factorize

    s = np.array([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, .25 of 14.25
    assert choose_rank(s, 0.6, None) == 1  # 9/14.25 = 0.63
    assert choose_rank(s, 0.9, None) == 2  # 13/14.25 = 0.91
    assert choose_rank(s, 0.95, None) == 3
    assert choose_rank(s, 0.9, 10) == 4
    # Near-full energy needs near-full rank: no layer of the DS-CNN would shrink.
    _, info, skipped = factorize(dscnn, LowRankConfig(rank_energy=0.9999))
    assert info == {}
    assert set(skipped) == {"conv1", "pw1", "pw2", "dense_out"}
    assert all("would not save parameters" in why for why in skipped.values())


def test_lowrank_stage_fine_tunes_and_recovers(dscnn, ctx):
    from edgeslim.compress.lowrank import LowRankConfig, lowrank

    out = lowrank(dscnn, LowRankConfig(rank_energy=0.6, epochs=2, layers=("pw1", "pw2")), ctx=ctx)
    info = out.info
    assert set(info["layers"]) == {"pw1", "pw2"}
    assert info["params_after"] < info["params_before"]
    for v in info["layers"].values():
        assert v["energy_kept"] >= 0.6 and v["rank"] < v["max_rank"]
    # Fine-tuning wins back what truncation lost (or at least does not lose more).
    assert info["val_metric_finetuned"] >= info["val_metric_factorized"]
    assert info["val_metric_finetuned"] >= info["val_metric_before"] - 0.1
    # The caller's model is untouched.
    assert [layer.name for layer in dscnn.layers][:2] == ["input", "conv1"]


def test_sequential_models_and_config_errors():
    from edgeslim._tf import keras
    from edgeslim.compress.lowrank import LowRankConfig, factorize

    keras.utils.set_random_seed(0)
    seq = keras.Sequential([keras.Input((40,)), keras.layers.Dense(64, activation="relu", name="a"),
                            keras.layers.Dense(10, activation="softmax", name="b")])
    new, info, _ = factorize(seq, LowRankConfig(rank=5))
    assert [layer.name for layer in new.layers] == ["a_lr", "a", "b_lr", "b"]
    assert new.get_layer("b").activation.__name__ == "softmax"
    assert new.get_layer("a_lr").activation.__name__ == "linear"
    assert info["a"]["params_after"] == 5 * (40 + 64) + 64

    with pytest.raises(RecipeError, match="rank_energy"):
        LowRankConfig(rank_energy=0.0)
    with pytest.raises(RecipeError, match="lowrank.rank"):
        LowRankConfig(rank=0)
    with pytest.raises(RecipeError, match="not in the model: nope"):
        factorize(seq, LowRankConfig(layers=("nope",)))
