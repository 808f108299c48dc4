"""Recipe parsing: the documented example, layering, bad keys, round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeslim import recipe as R
from edgeslim.errors import RecipeError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "recipe.md"


def _doc_example() -> str:
    text = DOCS.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/recipe.md should hold exactly one toml example"
    return blocks[0]


def test_documented_example_parses(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(_doc_example())
    rcp = R.resolve(recipe_file=path)
    assert rcp.build.seed == 0
    assert rcp.active_stages == ("prune", "cluster", "qat")
    prune = rcp.config("prune")
    assert prune.sparsity == 0.5 and prune.depthwise_sparsity == 0.25
    assert [o.layer for o in prune.overrides] == ["dense_out", None]
    assert prune.overrides[1].regex == "^pw" and prune.overrides[1].sparsity == 0.6
    assert rcp.config("cluster").clusters == 16


def test_round_trip_through_toml(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(_doc_example())
    rcp = R.resolve(recipe_file=path)
    again = tmp_path / "again.toml"
    again.write_text(rcp.to_toml())
    assert R.resolve(recipe_file=again) == rcp


def test_layers_override_in_order():
    target = {"prune": {"sparsity": 0.3, "epochs": 5}, "build": {"stages": ["prune", "qat"]}}
    user = {"prune": {"sparsity": 0.4}}
    flags = R.flags_to_table(sparsity=0.6, qat_epochs=3)
    rcp = R.resolve(target_recipe=target, recipe_table=user, flags=flags)
    assert rcp.config("prune").sparsity == 0.6          # flag beats recipe beats target
    assert rcp.config("prune").epochs == 5              # from the target, untouched
    assert rcp.config("qat").epochs == 3
    assert rcp.active_stages == ("prune", "qat")        # from the target
    assert R.resolve(target_recipe=target, drop_stages=("qat",)).active_stages == ("prune",)


def test_epochs_flag_sets_every_stage():
    rcp = R.resolve(flags=R.flags_to_table(epochs=1, cluster_epochs=4))
    assert (rcp.config("prune").epochs, rcp.config("cluster").epochs, rcp.config("qat").epochs) == (1, 4, 1)


@pytest.mark.parametrize(
    "table, words",
    [
        ({"prune": {"sparsty": 0.5}}, ["prune.sparsty", "sparsity"]),
        ({"bogus": {}}, ["bogus", "build"]),
        ({"build": {"stages": ["prune", "quantise"]}}, ["quantise", "qat"]),
        ({"build": {"seed": "zero"}}, ["build.seed"]),
        ({"build": {"representative_samples": 0}}, ["representative_samples"]),
        ({"prune": {"sparsity": 1.5}}, ["sparsity"]),
        ({"cluster": {"clusters": 1}}, ["clusters"]),
    ],
)
def test_invalid_recipes_name_the_key(table, words):
    with pytest.raises(RecipeError) as err:
        R.from_dict(table)
    text = str(err.value)
    for w in words:
        assert w in text


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[prune\nsparsity = ")
    with pytest.raises(RecipeError, match="not valid TOML"):
        R.resolve(recipe_file=path)
    with pytest.raises(RecipeError, match="not found"):
        R.resolve(recipe_file=tmp_path / "missing.toml")
