"""Recipes are typed by a schema made from the stage configs' own type hints
(edgeslim.schema, pydantic strict): the substring hole of the old check
(``hints = "pw2:pw2"`` read as a tuple of characters) and its relatives are refused
with the file, the key and the expected type; every recipe edgeslim ships resolves
exactly as before (tests/targets/data/shipped_config.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgeslim import recipe as R
from edgeslim.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_recipes_resolve_identically():
    spec = importlib.util.spec_from_file_location("snapshot_config", ROOT / "tools" / "snapshot_config.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    want = json.loads((ROOT / "tests" / "targets" / "data" / "shipped_config.json").read_text())["recipes"]
    got = json.loads(json.dumps(tool.snapshot()["recipes"]))
    assert len(want) == 15 and set(want) <= set(got) and "docs/recipe.md:0" in got
    for name in want:
        assert got[name] == want[name], name


@pytest.mark.parametrize("text, key, expected", [
    ('[distill]\nhints = "pw2:pw2"\n', "distill.hints", "an array"),
    ("[distill]\nhints = [1, 2]\n", "distill.hints[0]", "a string"),
    ('[distill]\nteacher_weights = [1, "a"]\n', "distill.teacher_weights[1]", "a number"),
    ("[build]\nseed = true\n", "build.seed", "an integer"),
    ("[build]\nseed = 1.5\n", "build.seed", "an integer"),
    ('[build]\nstages = "prune"\n', "build.stages", "an array"),
    ("[build]\nguard = 1\n", "build.guard", "true or false"),
    ('[build]\nlearning_rate = "0.1"\n', "build.learning_rate", "a number"),
    ("[prune]\nsparsity = true\n", "prune.sparsity", "a number"),
    ('[prune]\nstructure = ["2:4"]\n', "prune.structure", "a string"),
    ("[cluster]\nclusters = 16.0\n", "cluster.clusters", "an integer"),
    ("[channels]\nscan = [[0.5]]\n", "channels.scan[0]", "a number"),
    ('[[prune.override]]\nlayer = "conv1"\nsparsity = "high"\n', "prune.override[0].sparsity", "a number"),
    ("[lowrank]\nlayers = {a = 1}\n", "lowrank.layers", "an array"),
    ("[distill]\ntemperature = nan\n", "distill.temperature", "a finite number"),
    ("[build]\nmax_drop = inf\n", "build.max_drop", "a finite number"),
])
def test_wrong_types_name_file_key_and_type(tmp_path, text, key, expected):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as e:
        R.resolve(recipe_file=path)
    msg = str(e.value)
    assert f"recipe key {key} in {path} must be {expected}" in msg, msg


def test_valid_types_still_convert(tmp_path):
    """An integer where a float is expected is a float; arrays are the configs' tuples."""
    path = tmp_path / "r.toml"
    path.write_text('[build]\nstages = ["prune", "qat"]\nlearning_rate = 0\n'
                    '[prune]\nsparsity = 1\n[distill]\nhints = ["a:b"]\nteacher_weights = [1, 2.5]\n')
    with pytest.raises(RecipeError, match="learning_rate"):  # the value check still runs
        R.resolve(recipe_file=path)
    path.write_text('[build]\nstages = ["prune", "qat"]\n[prune]\nsparsity = 0\n'
                    '[distill]\nhints = ["a:b"]\nteacher_weights = [1, 2.5]\n')
    r = R.resolve(recipe_file=path)
    assert r.build.stages == ("prune", "qat") and r.config("prune").sparsity == 0.0
    assert isinstance(r.config("prune").sparsity, float)
    assert r.config("distill").hints == ("a:b",) and r.config("distill").teacher_weights == (1.0, 2.5)
    assert R.from_dict(R.resolve(recipe_file=path).to_dict()) == r


def test_invalid_utf8_and_deep_nesting(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b'[prune]\nstructure = "\xff"\n')
    with pytest.raises(RecipeError, match="not valid TOML"):
        R.resolve(recipe_file=path)
    path.write_text("[build]\nseed = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(RecipeError) as e:
        R.resolve(recipe_file=path)
    assert str(path) in str(e.value)


def test_a_board_recipe_with_a_wrong_type_is_named_as_the_boards(tmp_path):
    from edgeslim.targets import load_target

    board = tmp_path / "board.toml"
    board.write_text('inherit = "rpi4"\n[recipe.prune]\nsparsity = true\n')
    target = load_target(str(board))  # typed when a build resolves it (the stage schemas need TensorFlow)
    with pytest.raises(RecipeError) as e:
        R.resolve(target_recipe=target.recipe)
    assert "recipe key prune.sparsity in the target profile's [recipe] tables must be a number" in str(e.value)
