#!/usr/bin/env python3
"""Every shipped target profile (targets/*.toml, abstract bases included as the profiles
that inherit them) loaded into its Target, every field, as JSON: the record
tests/targets/test_profile_schema.py compares the loader against.

  tools/snapshot_targets.py > tests/targets/data/shipped_profiles.json

Regenerate it only when a profile or the Target fields change on purpose (and say so
in the commit); a loader change must leave it identical.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path


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


def snapshot() -> dict:
    from edgeslim.resources import targets_dir
    from edgeslim.targets import load_target

    out = {}
    for path in sorted(targets_dir().glob("*.toml")):
        if "abstract = true" in path.read_text(encoding="utf-8"):
            continue
        out[path.stem] = jsonable(load_target(path.stem))
    return out


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
