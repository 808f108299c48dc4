"""The search space, budgets, pruning before training and the Pareto front: no training here."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.errors import EdgeslimError, RecipeError
from edgeslim.report.pareto import pareto_front
from edgeslim.search import Budgets, SearchSpace, parse_count
from edgeslim.search.space import Trial, enumerate_candidates


def test_sizes_are_bytes_and_macs_are_counts():
    b = Budgets.parse(max_flash="24k", max_ram="12000", max_macs="1.2M")
    assert (b.flash, b.ram, b.macs) == (24 * 1024, 12000, 1_200_000)
    assert parse_count("800k") == 800_000
    assert b.over({"flash": 24 * 1024 + 5, "ram": 100, "macs": 2_000_000}) == {
        "flash": 5, "macs": 800_000}
    with pytest.raises(EdgeslimError, match="--max-macs"):
        Budgets.parse(max_macs="lots")
    with pytest.raises(EdgeslimError, match="--max-flash"):
        Budgets.parse(max_flash="24q")


def test_the_space_enumerates_distinct_meaningful_points_in_a_fixed_order():
    space = SearchSpace(ratios=(0.0, 0.5), sparsities=(0.0,), clusters=(0, 16),
                        pack_weights=(False, True), distill=(True, False), calibrations=("random",))
    c_points = enumerate_candidates(space, backend="c")
    tflm_points = enumerate_candidates(space, backend="tflm")
    # ratio 0: distill means nothing (2 points: clusters 0 / 16 unpacked, + 16 packed);
    # ratio 0.5: x distill on/off.
    assert len(c_points) == 3 + 6
    assert not any(c.pack_weights for c in tflm_points)  # packing is the C library's
    assert len(tflm_points) == 2 + 4
    assert [c.index for c in c_points] == list(range(len(c_points)))
    assert enumerate_candidates(space, backend="c") == c_points  # the same order every time
    assert c_points[0].is_plain and c_points[0].name.startswith("c000 plain int8")


def test_a_candidate_no_smaller_and_no_gentler_is_not_trained():
    from edgeslim.search import _prune_dominated

    space = SearchSpace(ratios=(0.5,), sparsities=(0.0, 0.5), clusters=(0,), pack_weights=(False,),
                        distill=(True,), calibrations=("random",))
    dense, sparse = (Trial(c, figures={"flash": 8000, "ram": 1280, "macs": 25000})
                     for c in enumerate_candidates(space, backend="c"))
    _prune_dominated([dense, sparse])
    # The C library stores dense weights: sparsity changes no figure, only costs accuracy.
    assert dense.status == "pending" and sparse.status == "dominated"
    assert dense.cand.name in sparse.why


def test_the_pareto_front():
    rows = [{"index": 0, "val_drop": 0.0, "figures": {"flash": 22000, "ram": 2560, "macs": 77000}},
            {"index": 1, "val_drop": 2.0, "figures": {"flash": 8000, "ram": 1280, "macs": 25000}},
            {"index": 2, "val_drop": 3.0, "figures": {"flash": 9000, "ram": 1280, "macs": 25000}},
            {"index": 3, "val_drop": None, "figures": {"flash": 100, "ram": 1, "macs": 1}}]
    assert pareto_front(rows) == [0, 1]


def test_a_bad_space_names_the_key():
    with pytest.raises(RecipeError, match="search.ratios"):
        SearchSpace(ratios=(1.5,))
    with pytest.raises(RecipeError, match="unknown key"):
        SearchSpace.from_table({"ratio": [0.5]})


def test_per_group_candidates_rebuild_through_channel_overrides():
    import tomllib

    from edgeslim import recipe as recipe_mod
    from edgeslim.search.space import candidate_recipe, group_candidates

    space = SearchSpace(ratios=(0.5,), sparsities=(0.0,), clusters=(0,), pack_weights=(False,),
                        distill=(True,), calibrations=("random",))
    shape = ((("conv1",), 0.25), (("pw1",), 0.75))
    (cand,) = group_candidates([shape], space, backend="c", start=7)
    assert cand.index == 7 and cand.ratio == 0.75 and cand.name.startswith("c007 channels 0.25/0.75 per group")
    assert cand.structure[1] == "groups" and cand.knobs["group_ratios"] == {"conv1": 0.25, "pw1": 0.75}
    base = recipe_mod.resolve(target_recipe={"build": {"stages": ["channels"]}})
    rcp = tomllib.loads(candidate_recipe(base, cand, epochs=3, seed=0, max_drop=1.0).to_toml())
    assert rcp["build"]["stages"] == ["channels"]
    assert [(o["layer"], o["ratio"]) for o in rcp["channels"]["override"]] == [("conv1", 0.25), ("pw1", 0.75)]
    # Uniform 0.5 is narrower than this vector in conv1 and wider in pw1: neither dominates.
    (uni,) = enumerate_candidates(space, backend="c")
    assert not uni.costs_no_more_accuracy_than(cand) and not cand.costs_no_more_accuracy_than(uni)
    narrow = group_candidates([((("conv1",), 0.5), (("pw1",), 0.75))], space, backend="c", start=8)[0]
    assert cand.costs_no_more_accuracy_than(narrow) and not narrow.costs_no_more_accuracy_than(cand)


def test_per_group_widths_counted_before_building_are_the_slimmed_models(digits_tfk_model):
    """WidthPlanner's MACs and parameters equal those of the model the channel stage builds
    (no fine-tuning), for uneven per-group ratios."""
    from edgeslim.compress import channels
    from edgeslim.compress.context import count_params

    planner = channels.WidthPlanner(digits_tfk_model)
    ratios = {g.id: r for g, r in zip(planner.groups, (0.25, 0.5, 0.75, 0.5))}
    figs = planner.figures(ratios)
    keep = {gid: np.arange(k) for gid, k in figs["kept"].items()
            if k < next(g.channels for g in planner.groups if g.id == gid)}
    slim = channels.slim(digits_tfk_model, keep)
    assert figs["macs"] == channels.count_macs(slim)
    assert figs["params"] == count_params(slim)


def test_per_group_widths_proposed_are_the_widest_that_fit():
    """propose(): vectors over the flash line fitted on the global ratios, then those another
    fitting vector is wider than everywhere, are left out; the even ones are the global ratios'."""
    from edgeslim._tf import keras
    from edgeslim.compress.channels import ChannelsConfig, WidthPlanner
    from edgeslim.search import shapes

    L = keras.layers
    x = inp = keras.Input((8, 8, 1))
    for i, c in enumerate((16, 16, 16)):
        x = L.Conv2D(c, 3, padding="same", name=f"conv{i}")(x)
    x = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, x)
    planner = WidthPlanner(model)
    space = SearchSpace(ratios=(0.25, 0.5), group_ratios=(0.25, 0.5), group_shapes=10)
    params = {r: planner.figures({g.id: r for g in planner.groups})["params"] for r in (0.25, 0.5)}
    measured = {r: {"flash": 1000 + 2 * p} for r, p in params.items()}  # a line: 2 B per parameter
    budget = 1000 + 2 * (params[0.25] + params[0.5]) // 2
    got, info = shapes.propose(model, ChannelsConfig(), space, Budgets(flash=budget), measured)
    assert info["flash_estimate"]["bytes_per_param"] == pytest.approx(2.0)
    assert got and len(got) <= 10
    chosen = info["chosen"]
    for c in chosen:
        assert c["flash_estimate"] <= budget and len(set(c["ratios"])) == 2
    # None chosen is narrower everywhere than another chosen one.
    for a in chosen:
        assert not any(b is not a and all(x >= y for x, y in zip(b["kept"], a["kept"])) for b in chosen)
    off, why = shapes.propose(model, ChannelsConfig(), space, Budgets(ram=4096), measured)
    assert off == [] and "no --max-flash or --max-macs" in why["why"]
