"""Per-layer overrides: one test per precedence rule, and the recipe checks."""

from __future__ import annotations

import pytest

from edgeslim.compress.overrides import (
    DEFAULT,
    EXACT,
    REGEX,
    LayerOverride,
    check_unknown_layers,
    resolve,
    validate_overrides,
)
from edgeslim.errors import RecipeError

OVS = (
    LayerOverride(regex="^conv", sparsity=0.3),
    LayerOverride(regex="conv", sparsity=0.4),
    LayerOverride(layer="conv2", sparsity=0.7),
    LayerOverride(layer="dense_out", skip=True),
)


def test_exact_name_beats_regex():
    r = resolve("conv2", OVS, 0.5)
    assert (r.value, r.source, r.skip) == (0.7, EXACT, False)


def test_regex_beats_default_and_first_matching_regex_wins():
    r = resolve("conv1", OVS, 0.5)
    assert (r.value, r.source) == (0.3, REGEX)
    r = resolve("pw_conv", OVS, 0.5)  # only the second regex matches (re.search)
    assert (r.value, r.source) == (0.4, REGEX)


def test_default_when_nothing_matches():
    r = resolve("dense_1", OVS, 0.5)
    assert (r.value, r.source, r.skip, r.override) == (0.5, DEFAULT, False, None)


def test_skip_by_exact_name():
    r = resolve("dense_out", OVS, 0.5)
    assert r.skip and r.source == EXACT


def test_value_left_unset_comes_from_default_not_a_weaker_override():
    ovs = (LayerOverride(regex="^conv", sparsity=0.3), LayerOverride(layer="conv1", clusters=8))
    r = resolve("conv1", ovs, 0.5, key="sparsity")
    assert (r.value, r.source) == (0.5, EXACT)
    assert resolve("conv1", ovs, 16, key="clusters").value == 8


@pytest.mark.parametrize(
    "ov, words",
    [
        (LayerOverride(layer="a", regex="b", skip=True), "exactly one"),
        (LayerOverride(skip=True), "exactly one"),
        (LayerOverride(regex="(", skip=True), "not a valid regular expression"),
        (LayerOverride(layer="a", sparsity=1.0), "sparsity"),
        (LayerOverride(layer="a", sparsity=-0.1), "sparsity"),
        (LayerOverride(layer="a", clusters=4), "does not use"),
        (LayerOverride(layer="a"), "changes nothing"),
    ],
)
def test_invalid_prune_overrides_name_the_entry(ov, words):
    with pytest.raises(RecipeError) as err:
        validate_overrides((LayerOverride(layer="ok", skip=True), ov), "prune",
                           allowed=("sparsity",))
    assert "prune.override #2" in err.value.message
    assert words in err.value.message
    assert err.value.hint


def test_cluster_override_clusters_checked():
    with pytest.raises(RecipeError, match=r"cluster.override #1.clusters"):
        validate_overrides((LayerOverride(layer="a", clusters=1),), "cluster",
                           allowed=("clusters",))


def test_unknown_exact_layer_raises_unmatched_regex_reported():
    with pytest.raises(RecipeError, match="'conv9'") as err:
        check_unknown_layers((LayerOverride(layer="conv9", skip=True),), ["conv1", "dense"],
                             "prune")
    assert "conv1, dense" in err.value.hint
    assert check_unknown_layers((LayerOverride(regex="^lstm", skip=True),), ["conv1"],
                                "prune") == ["^lstm"]
