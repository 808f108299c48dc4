#!/usr/bin/env python3
"""Every configuration edgeslim ships, loaded, as JSON: each target profile
(targets/*.toml; abstract bases through the profiles that inherit them) as its Target,
every field; each recipe (the defaults, every profile's [recipe] tables, every TOML
example in docs/recipe.md) as the resolved Recipe, every table. The record
tests/targets/test_profile_schema.py and tests/test_recipe_schema.py compare the
loaders against.

  tools/snapshot_config.py > tests/targets/data/shipped_config.json

Regenerate it only when a profile, a documented recipe or a config field changes on
purpose (and say so in the commit); a loader change must leave it identical.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, Path):
        return value.name
    if isinstance(value, float):
        return {"float": repr(value)}  # keeps int vs float apart
    return value


ROOT = Path(__file__).resolve().parents[1]


def doc_recipes() -> list[str]:
    """The ```toml blocks of docs/recipe.md."""
    text = (ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    return re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)


def snapshot() -> dict:
    from edgeslim import recipe
    from edgeslim.resources import targets_dir
    from edgeslim.targets import load_target

    targets, recipes = {}, {"defaults": jsonable(recipe.resolve().to_dict())}
    for path in sorted(targets_dir().glob("*.toml")):
        if "abstract = true" in path.read_text(encoding="utf-8"):
            continue
        target = load_target(path.stem)
        targets[path.stem] = jsonable(target)
        recipes[f"target:{path.stem}"] = jsonable(recipe.resolve(target_recipe=target.recipe).to_dict())
    for i, block in enumerate(doc_recipes()):
        recipes[f"docs/recipe.md:{i}"] = jsonable(recipe.from_dict(tomllib.loads(block)).to_dict())
    return {"targets": targets, "recipes": recipes}


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
