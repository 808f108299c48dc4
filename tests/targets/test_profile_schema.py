"""Board profiles are typed (edgeslim.schema, pydantic strict): every wrong type of
issue 13 is refused with the file, the key and the expected type; the shipped profiles
load exactly as they did before the schema (tests/targets/data/shipped_config.json,
written by tools/snapshot_config.py with the loader of before)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgeslim.errors import TargetError
from edgeslim.targets import load_target

ROOT = Path(__file__).resolve().parents[2]


def snapshot_tool():
    spec = importlib.util.spec_from_file_location("snapshot_config", ROOT / "tools" / "snapshot_config.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_shipped_profiles_load_identically():
    want = json.loads((Path(__file__).parent / "data" / "shipped_config.json").read_text())["targets"]
    got = json.loads(json.dumps(snapshot_tool().snapshot()["targets"]))
    # profiles added after the record load too (snapshot() loads every one); the ones
    # recorded must be unchanged
    assert len(want) == 13 and set(want) <= set(got)
    for name in want:
        assert got[name] == want[name], name


BASE = 'inherit = "rpi4"\n'


@pytest.mark.parametrize("text, key, expected", [
    (BASE + "runtime_options = 5\n", "runtime_options", "a table"),
    (BASE + '[runtime_options]\nnum_threads = "4"\n', "runtime_options.num_threads", "an integer"),
    (BASE + "[ops]\ntensor_types = [1, 2]\n", "ops.tensor_types[0]", "a string"),
    (BASE + '[ops]\ntensor_types = "int8"\n', "ops.tensor_types", "an array"),
    (BASE + "variants = [1, 2]\n", "variants", "a table"),
    (BASE + "[cpu]\nfeatures = [1, {a = 1}]\n", "cpu.features[0]", "a string"),
    (BASE + "[cpu]\nclock_mhz = true\n", "cpu.clock_mhz", "an integer or a number"),
    (BASE + "[cpu]\nclock_mhz = -5\n", "cpu.clock_mhz", "greater than 0"),
    (BASE + "[ops]\nsupported = 5\n", "ops.supported", "'builtin' or an array"),
    (BASE + "[ops.constraints]\nCONV_2D = 3\n", "ops.constraints.CONV_2D", "a string"),
    (BASE + "[memory]\nram = 1.5\n", "memory.ram", "an integer or a string"),
    (BASE + "[memory]\nram = -1\n", "memory.ram", "greater than or equal to 0"),
    (BASE + "[build]\ncflags = [\"-O2\"]\n", "build.cflags", "a string"),
    (BASE + "abstract = 1\n", "abstract", "true or false"),
    (BASE + "description = 7\n", "description", "a string"),
    (BASE + "[variants.cpu]\nnum_threads = 1.5\n", "variants.cpu.num_threads", "an integer"),
    (BASE + "[recipe]\nprune = 3\n", "recipe.prune", "a table"),
    (BASE + "[ops]\nmin_scale = nan\n", "ops.min_scale", "a finite number"),
    (BASE + "[cpu]\nclock_mhz = inf\n", "cpu.clock_mhz", "an integer or a finite number"),
])
def test_wrong_types_name_file_key_and_type(tmp_path, text, key, expected):
    bad = tmp_path / "board.toml"
    bad.write_text(text)
    with pytest.raises(TargetError) as e:
        load_target(str(bad))
    msg = e.value.message
    assert str(bad) in msg and f"key '{key}' must be {expected}" in msg, msg


def test_invalid_utf8_profile(tmp_path):
    bad = tmp_path / "board.toml"
    bad.write_bytes(BASE.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(TargetError) as e:
        load_target(str(bad))
    assert str(bad) in e.value.message and "not UTF-8" in e.value.message


def test_wrong_type_in_a_base_names_the_base(tmp_path):
    (tmp_path / "base.toml").write_text('kind = "rpi"\nruntime = "litert"\ndescription = "b"\n'
                                        '[ops]\nsupported = "builtin"\ntensor_types = "int8"\n')
    (tmp_path / "child.toml").write_text('inherit = "base"\n')
    with pytest.raises(TargetError) as e:
        load_target(str(tmp_path / "child.toml"))
    assert str(tmp_path / "base.toml") in e.value.message and "ops.tensor_types" in e.value.message


def test_unknown_nested_key(tmp_path):
    bad = tmp_path / "board.toml"
    bad.write_text(BASE + "[variants.cpu]\nthreads = 2\n")
    with pytest.raises(TargetError) as e:
        load_target(str(bad))
    assert "unknown key 'variants.cpu.threads'" in e.value.message
