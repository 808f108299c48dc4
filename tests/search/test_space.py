"""The search space, budgets, pruning before training and the Pareto front: no training here."""

from __future__ import annotations

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
