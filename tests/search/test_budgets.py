"""The budgets not covered by test_search.py: --max-ram on TFLite Micro (the arena measured by
tflite-micro) and --max-macs on a Raspberry Pi with per-group channel widths; and the flags a
budget search ignores, reported. Real trials on a local Ray, on the digits example."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.timeout(300)

SEED = 0


def _space(path, **space) -> str:
    def value(v):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]" if isinstance(v, (list, tuple)) \
            else json.dumps(v)

    base = dict(sparsities=[0.0], clusters=[0], pack_weights=[False], distill=[True],
                calibrations=["random"])
    path.write_text("[search]\n" + "".join(f"{k} = {value(v)}\n" for k, v in {**base, **space}.items()))
    return str(path)


def _recipe(path) -> str:
    """What the search does not vary, kept cheap: filter norms instead of Taylor scores."""
    path.write_text('[channels]\nimportance = "l2"\nsamples = 128\n')
    return str(path)


def _cli(args):
    from edgeslim.cli import cli

    return CliRunner().invoke(cli, args, obj={"debug": False})


def test_max_ram_with_tflite_micro_is_the_arena_tflite_micro_measures(digits_keras3_path, digits_npz,
                                                                     digits_tfk_model, tmp_path):
    """A RAM budget one byte under plain int8's arena (+ the profile's margin): plain int8 is
    pruned before training, channels 0.5 ships, and its RAM is the tflite-micro arena of the
    bundle's own model.tflite."""
    from edgeslim import convert, micro, targets

    tgt = targets.load_target("cortex-m4")
    with np.load(digits_npz) as d:
        calib = d["x_train"][:64]
    plain = convert.to_int8_tflite(digits_tfk_model, calib, int8_io=True)
    plain_ram = targets.arena_with_margin(micro.measure_arena(plain), tgt.arena_margin)
    budget = plain_ram - 1
    out = tmp_path / "out"
    r = _cli(["build", str(digits_keras3_path), "--data", str(digits_npz), "--target", "cortex-m4",
              "--max-ram", str(budget), "--max-drop", "15", "--seed", str(SEED),
              "--search-space", _space(tmp_path / "s.toml", ratios=[0.0, 0.5]),
              "--recipe", _recipe(tmp_path / "r.toml"),
              "--rungs", "1", "--min-epochs", "1", "--num-cpus", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "cortex-m4" / "search.json").read_text())
    by = {c["knobs"]["ratio"]: c for c in s["candidates"]}
    assert by[0.0]["status"] == "pruned" and by[0.0]["rungs"] == []
    assert by[0.0]["figures"]["ram"] == plain_ram and f"ram {plain_ram:,} > {budget:,}" in by[0.0]["why"]
    assert "TFLite Micro arena measured" in by[0.0]["figures"]["ram_rule"]
    assert by[0.5]["status"] == "winner"
    # Re-measured here on the shipped model: tflite-micro's arena plus the profile's margin.
    shipped = (out / "cortex-m4" / "model.tflite").read_bytes()
    ram = targets.arena_with_margin(micro.measure_arena(shipped), tgt.arena_margin)
    assert ram == s["verified"]["checks"]["ram"]["measured"] == s["winner"]["figures"]["ram"]
    assert ram <= budget < plain_ram
    assert s["verified"]["checks"]["ram"]["met"] and s["budgets"]["flash_bytes"] is None


def test_max_macs_on_rpi4_trains_per_group_widths_and_reports_ignored_flags(
        digits_keras3_path, digits_npz, digits_tfk_model, tmp_path):
    """A MAC budget between channels 0.25 and 0.5 (uniform): 0.25 is pruned, 0.5 fits but is not
    trained (the per-group vector, gentler, fits), and that vector (MACs counted exactly from the
    dependency graph) is measured, trained and rebuilt from its recipe's [[channels.override]]
    tables. --sparsity and --no-qat, which the
    search overrides, are named in the output and in search.json."""
    from edgeslim.compress import channels

    planner = channels.WidthPlanner(digits_tfk_model)
    assert len(planner.groups) >= 2
    macs = {r: planner.figures({g.id: r for g in planner.groups})["macs"] for r in (0.25, 0.5)}
    budget = (macs[0.25] + macs[0.5]) // 2
    out = tmp_path / "out"
    r = _cli(["build", str(digits_keras3_path), "--data", str(digits_npz), "--target", "rpi4",
              "--max-macs", str(budget), "--max-drop", "30", "--seed", str(SEED),
              "--sparsity", "0.3", "--no-qat",
              "--search-space", _space(tmp_path / "s.toml", ratios=[0.25, 0.5],
                                       group_ratios=[0.25, 0.5], group_shapes=1),
              "--recipe", _recipe(tmp_path / "r.toml"),
              "--rungs", "1", "--min-epochs", "1", "--num-cpus", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "[search] ignored: --sparsity ([prune] sparsity = 0.3)" in text
    assert "[search] ignored: --no-qat" in text
    assert "ignored by the search: --no-qat; --sparsity ([prune] sparsity = 0.3)" in text
    s = json.loads((out / "rpi4" / "search.json").read_text())
    assert [i["setting"] for i in s["ignored"]] == ["--no-qat", "--sparsity ([prune] sparsity = 0.3)"]
    assert all(i["why"] for i in s["ignored"])

    cands = s["candidates"]
    uniform = {c["knobs"]["ratio"]: c for c in cands if "group_ratios" not in c["knobs"]}
    assert uniform[0.25]["status"] == "pruned" and uniform[0.25]["figures"]["macs"] > budget
    assert uniform[0.5]["figures"]["macs"] <= budget
    grouped = [c for c in cands if "group_ratios" in c["knobs"]]
    assert len(grouped) == 1 and grouped[0]["rungs"] and grouped[0]["val_drop"] is not None
    g = grouped[0]
    # The per-group vector keeps at least as many channels as uniform 0.5 in every group and
    # fits: shipping one bundle, 0.5 cannot lose less, so it is not trained.
    assert uniform[0.5]["status"] == "outcompeted" and uniform[0.5]["rungs"] == []
    assert g["name"] in uniform[0.5]["why"] and "fits the budgets" in uniform[0.5]["why"]
    ratios = list(g["knobs"]["group_ratios"].values())
    assert set(ratios) == {0.25, 0.5}  # uneven: the global ratios cover the even ones
    assert s["group_widths"]["chosen"][0]["ratios"] == ratios
    # Counted on the dependency graph before any model was built (the Keras layers' count;
    # test_space checks it equals the slimmed model's): the int8 model's operators, which the
    # budget is checked on, count a little more (31,930 against 31,152 here).
    planned = s["group_widths"]["chosen"][0]["macs"]
    assert planned <= g["figures"]["macs"] <= 1.05 * planned and g["figures"]["macs"] <= budget
    assert g["figures"]["macs"] > uniform[0.5]["figures"]["macs"]  # wider than uniform 0.5
    rcp = tomllib.loads(g["recipe"])
    assert {o["layer"]: o["ratio"] for o in rcp["channels"]["override"]} == {
        p: r for p, r in g["knobs"]["group_ratios"].items()}
    # The shipped bundle meets the MAC budget, re-measured from its model.tflite.
    from edgeslim.search.figures import macs_of

    shipped = macs_of((out / "rpi4" / "model.tflite").read_bytes())
    assert shipped == s["verified"]["checks"]["macs"]["measured"] <= budget
