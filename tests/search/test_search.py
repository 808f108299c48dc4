"""edgeslim.search on the digits example: real trials on Ray Tune (a local Ray, and a
two-node cluster on loopback), real C libraries cross-compiled, real LiteRT scores."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.timeout(600)

# Three channel ratios of the digits model as a C library for the Cortex-M4: plain int8 takes
# 22,424 B of flash (over MAX_FLASH), channels 0.25 and 0.5 fit (8,212 B at 0.5).
TINY = dict(ratios=(0.0, 0.25, 0.5), sparsities=(0.0,), clusters=(0,), pack_weights=(False,),
            distill=(True,), calibrations=("random",))
MAX_FLASH = "20k"   # 20,480 B
MAX_RAM = "4k"      # 4,096 B
MAX_DROP = 10.0     # points: one or two epochs of fine-tuning on ~1,000 digits
SEED = 0


def _search(model, npz, out, **kw):
    from edgeslim.search import Budgets, SearchSpace, search

    lines: list[str] = []
    res = search(str(model), str(npz), target="cortex-m4", backend="c",
                 budgets=Budgets.parse(max_flash=MAX_FLASH, max_ram=MAX_RAM), max_drop=MAX_DROP,
                 seed=SEED, out=out, space=SearchSpace(**TINY), rungs=2, eta=2, min_epochs=1,
                 echo=lines.append, **kw)
    return res, lines


@pytest.fixture(scope="module")
def local_search(digits_keras3_path, digits_npz, tmp_path_factory):
    """The tiny search in-process, on a local Ray that edgeslim starts (2 CPUs) and stops;
    with the Pareto set (as `edgeslim search`): every candidate within the budgets trains."""
    out = tmp_path_factory.mktemp("search-local")
    res, lines = _search(digits_keras3_path, digits_npz, out, num_cpus=2, write_pareto_set=True)
    return res, lines, out


def test_plain_int8_is_pruned_before_training_and_the_rest_trained(local_search):
    res, lines, _ = local_search
    s = res.summary
    by = {c["index"]: c for c in s["candidates"]}
    assert len(by) == 3
    plain = by[0]
    assert plain["knobs"]["ratio"] == 0.0
    assert plain["status"] == "pruned" and plain["rungs"] == []
    assert plain["figures"]["flash"] > 20 * 1024
    assert "flash" in plain["why"] and f"{plain['figures']['flash']:,}" in plain["why"]
    trained = [c for c in by.values() if c["rungs"]]
    assert {c["knobs"]["ratio"] for c in trained} == {0.25, 0.5}
    # Successive halving: both train 1 epoch, the better one 2 more.
    assert sorted(len(c["rungs"]) for c in trained) == [1, 2]
    assert [r["epochs"] for r in max(trained, key=lambda c: len(c["rungs"]))["rungs"]] == [1, 2]
    assert s["trials_run"] == 3 and s["lost"] == []
    for c in s["candidates"]:  # every candidate: a re-runnable recipe, figures, wall time, status
        assert tomllib.loads(c["recipe"])["build"]["seed"] == SEED
        assert c["figures"]["macs"] > 0 and c["status"] and c["wall_s"] >= 0
    assert any("rung 2/2" in line for line in lines)


def test_every_budget_reported_as_met_is_remeasured_on_the_bundle(local_search, digits_npz):
    from edgeslim import evaluate
    from edgeslim.harness import toolchain
    from edgeslim.io.data import load_data

    res, _, out = local_search
    s, bundle = res.summary, res.bundle_dir
    assert bundle == out / "cortex-m4" and (bundle / "c").is_dir()
    w = s["winner"]
    assert w["figures"]["flash"] <= 20480 and w["figures"]["ram"] <= 4096
    assert w["val_drop"] <= MAX_DROP

    # Flash: the bundle's own C library cross-compiled here (-Os, Cortex-M4).
    objs = toolchain.cross_compile(sorted((bundle / "c").glob("*.c")), out / "obj-check",
                                   core="cortex-m4", include_dirs=[bundle / "c"], opt="-Os")
    flash = toolchain.section_sizes(objs).flash
    assert flash == s["verified"]["checks"]["flash"]["measured"] <= 20480
    assert flash == w["figures"]["flash"]  # measured before training = measured on the bundle
    # RAM: the static plan's arena in the bundle's report.
    report = json.loads((bundle / "report.json").read_text())
    assert report["codegen"]["arena_bytes"] == s["verified"]["checks"]["ram"]["measured"] <= 4096
    # Drop: the shipped model scored again on the validation split with LiteRT.
    ds = load_data(digits_npz, seed=SEED)
    model = (bundle / "model.tflite").read_bytes()
    val = float(np.mean(np.argmax(evaluate.run_litert(model, ds.x_val), -1) == ds.y_val))
    drop = 100.0 * (s["float_val_metric"] - val)
    assert drop == pytest.approx(s["verified"]["checks"]["drop"]["measured"], abs=1e-9)
    assert drop <= MAX_DROP
    # The build of the winner's recipe ships the very bytes its trial scored.
    assert s["verified"]["same_bytes_as_trial"]
    assert hashlib.sha256(model).hexdigest() == w["tflite_sha256"]

    on_disk = json.loads((bundle / "search.json").read_text())
    assert on_disk["winner"]["index"] == w["index"] and on_disk["pareto"]
    assert (bundle / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The winner's recipe rebuilds it: build.stages and the channel ratio are those searched.
    rcp = tomllib.loads((bundle / "recipe.toml").read_text())
    assert rcp["build"]["stages"] == ["channels"]
    assert rcp["channels"]["ratio"] == next(c["knobs"]["ratio"] for c in s["candidates"]
                                            if c["index"] == w["index"])


def _space_file(path, **space) -> str:
    def value(v):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"

    path.write_text("[search]\n" + "".join(f"{k} = {value(v)}\n" for k, v in space.items()))
    return str(path)


def test_two_node_cluster_gives_the_same_winner(local_search, two_node_ray, digits_keras3_path,
                                                 digits_npz, tmp_path):
    """`edgeslim search` in a fresh process (Ray keeps one auth token per process), on a head
    and a worker node of one CPU each: every trial's figure and the shipped bytes equal the
    local run's; the Pareto set's recipes are written."""
    import subprocess

    env = {**os.environ, **two_node_ray["env"], "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeslim.cli", "search", str(digits_keras3_path), "--data",
           str(digits_npz), "--target", "cortex-m4", "--backend", "c", "--max-flash", MAX_FLASH,
           "--max-ram", MAX_RAM, "--max-drop", str(MAX_DROP), "--seed", str(SEED),
           "--search-space", _space_file(tmp_path / "space.toml", **TINY), "--rungs", "2",
           "--eta", "2", "--min-epochs", "1", "--ray-address", two_node_ray["address"],
           "-o", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shipped c00" in proc.stdout and "re-measured on the bundle" in proc.stdout
    assert "Pareto set" in proc.stdout
    s = json.loads((out / "cortex-m4" / "search.json").read_text())
    # `edgeslim search` writes the whole Pareto set: one re-runnable recipe per member.
    assert s["pareto"] and sorted(p.name for p in (out / "search").glob("c*.toml")) == [
        f"c{i:03d}.toml" for i in s["pareto"]]
    assert (out / "search" / "search.json").read_bytes() == (out / "cortex-m4" / "search.json").read_bytes()
    for i in s["pareto"]:
        tomllib.loads((out / "search" / f"c{i:03d}.toml").read_text())
    local = local_search[0].summary
    assert s["ray"]["nodes"] == 2 and s["ray"]["cpus"] == 2 and not s["ray"]["started_here"]
    assert s["winner"]["index"] == local["winner"]["index"]
    assert s["winner"]["tflite_sha256"] == local["winner"]["tflite_sha256"]
    assert ((out / "cortex-m4" / "model.tflite").read_bytes()
            == (local_search[2] / "cortex-m4" / "model.tflite").read_bytes())
    # Rung 1's two trials ran at once, one per node (1 CPU each).
    first = [c["rungs"][0] for c in s["candidates"] if c["rungs"]]
    assert len(first) == 2 and len({r["node_id"] for r in first}) == 2
    for a, b in zip(sorted(local["candidates"], key=lambda c: c["index"]),
                    sorted(s["candidates"], key=lambda c: c["index"])):
        assert a["val_drop"] == b["val_drop"]  # every trial, not only the winner


def test_an_impossible_budget_exits_2_naming_it_and_writes_nothing(digits_keras3_path, digits_npz,
                                                                    tmp_path):
    from edgeslim.cli import cli

    space = tmp_path / "space.toml"
    space.write_text("[search]\nratios = [0.5]\nsparsities = [0.0]\nclusters = [0]\n"
                     "pack_weights = [false]\ndistill = [true]\ncalibrations = [\"random\"]\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                 "--target", "cortex-m4", "--backend", "c", "--max-flash", "2k",
                                 "--max-ram", "64k", "--search-space", str(space), "-o", str(out)],
                           obj={"debug": False})
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())
    assert "no candidate meets --max-flash 2,048 B of flash" in msg
    # The closest (the only one here: channels 0.5 measures 8,212 B) and how far it is.
    flash = int(msg.split("needs ")[1].split(" B")[0].replace(",", ""))
    assert flash > 2048 and f"{flash - 2048:,} over" in msg
    assert "Traceback" not in r.output
    assert not out.exists()


def test_without_ray_a_budget_flag_says_how_to_install_it(digits_keras3_path, digits_npz, tmp_path,
                                                          monkeypatch):
    from edgeslim.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                 "--target", "cortex-m4", "--max-flash", "24k", "-o",
                                 str(tmp_path / "out")], obj={"debug": False})
    assert r.exit_code == 2
    assert "pip install edgeslim[search]" in r.output
    assert not (tmp_path / "out").exists()


def _kill_first_trial_worker(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray Tune trial worker (process title ray::ImplicitFunc...) this
    process started, once it has run for a second."""
    import psutil

    me = psutil.Process()
    while not stop.is_set() and not killed:
        for p in me.children(recursive=True):
            try:
                if "ImplicitFunc" in " ".join(p.cmdline()) and time.time() - p.create_time() > 1:
                    p.kill()
                    killed.append(p.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.2)


def test_killing_one_trial_worker_loses_that_trial_only(digits_keras3_path, digits_npz, tmp_path):
    from edgeslim.search import Budgets, SearchSpace, search

    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first_trial_worker, args=(stop, killed), daemon=True)
    watcher.start()
    lines: list[str] = []
    try:
        res = search(str(digits_keras3_path), str(digits_npz), target="cortex-m4", backend="c",
                     budgets=Budgets.parse(max_flash="64k"), max_drop=MAX_DROP, seed=SEED,
                     out=tmp_path, num_cpus=2, rungs=1, echo=lines.append, write_pareto_set=True,
                     space=SearchSpace(ratios=(0.25, 0.5, 0.625), sparsities=(0.0,), clusters=(0,),
                                       pack_weights=(False,), distill=(True,),
                                       calibrations=("random",)))
    finally:
        stop.set()
        watcher.join(5)
    assert len(killed) == 1
    s = res.summary
    assert len(s["lost"]) == 1
    lost = s["lost"][0]["index"]
    statuses = {c["index"]: c["status"] for c in s["candidates"]}
    assert statuses[lost] == "lost"
    others = [c for c in s["candidates"] if c["index"] != lost]
    assert len(others) == 2 and all(c["val_drop"] is not None for c in others)
    assert s["winner"]["index"] != lost
    assert any("1 trial(s) lost" in line for line in lines)
    assert (tmp_path / "cortex-m4" / "search.json").is_file()


def test_a_search_never_replaces_a_folder_edgeslim_did_not_write(digits_keras3_path, digits_npz, tmp_path):
    """Checked before any work: the user's folder at OUT/<target> (build with a budget) or at
    OUT/search (edgeslim search's Pareto set) is refused by name and left as it was."""
    import hashlib

    from edgeslim.cli import cli

    out = tmp_path / "out"
    for folder, command in ((out / "cortex-m4", "build"), (out / "search", "search")):
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("mine")
        before = hashlib.sha256((folder / "notes.txt").read_bytes()).hexdigest()
        r = CliRunner().invoke(cli, [command, str(digits_keras3_path), "--data", str(digits_npz),
                                     "--target", "cortex-m4", "--backend", "c", "--max-flash", "24k",
                                     "-o", str(out)], obj={"debug": False})
        assert r.exit_code == 2, r.output
        assert str(folder) in " ".join(r.output.split()) or folder.name in r.output
        assert "[search]" not in r.output  # refused before measuring or training anything
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]
        assert hashlib.sha256((folder / "notes.txt").read_bytes()).hexdigest() == before
        (folder / "notes.txt").unlink()
        folder.rmdir()
        if command == "build":  # the search's own check must not be reached only through build's
            (out / "cortex-m4").mkdir()
            (out / "cortex-m4" / "keep").write_text("x")
            r = CliRunner().invoke(cli, ["search", str(digits_keras3_path), "--data", str(digits_npz),
                                         "--target", "cortex-m4", "--backend", "c", "--max-flash", "24k",
                                         "-o", str(out)], obj={"debug": False})
            assert r.exit_code == 2 and (out / "cortex-m4" / "keep").read_text() == "x", r.output
            (out / "cortex-m4" / "keep").unlink()
            (out / "cortex-m4").rmdir()


def test_shipping_one_bundle_trains_only_what_can_win_with_the_library_that_fits(
        digits_keras3_path, digits_npz, tmp_path):
    """`edgeslim build` with a budget ships one bundle: channels 0.5 compresses harder than
    0.25, which fits, so it is neither measured nor trained. The budget (14,450 B) is under
    channels 0.25 with the Cortex-M4's DSP kernels (15,758 B on this model) and over it with
    the reference kernels run layer by layer (14,322 B): that variant ships, and the bundle
    re-measured is it."""
    from edgeslim.cli import cli
    from edgeslim.harness import toolchain

    budget = 14450
    space = _space_file(tmp_path / "space.toml", ratios=(0.0, 0.25, 0.5), sparsities=(0.0,),
                        clusters=(0,), pack_weights=(False,), distill=(True, False),
                        calibrations=("random",))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                 "--target", "cortex-m4", "--backend", "c", "--max-flash", str(budget),
                                 "--max-drop", str(MAX_DROP), "--seed", str(SEED), "--search-space",
                                 space, "--rungs", "1", "--min-epochs", "1", "--num-cpus", "2",
                                 "-o", str(out)], obj={"debug": False})
    assert r.exit_code == 0, r.output
    bundle = out / "cortex-m4"
    s = json.loads((bundle / "search.json").read_text())
    by = {c["index"]: c for c in s["candidates"]}
    half = [c for c in by.values() if c["knobs"]["ratio"] == 0.5]
    assert len(half) == 2
    for c in half:  # one per distill setting: each has a gentler twin within the budget
        assert c["status"] == "outcompeted" and c["figures"] == {} and c["rungs"] == []
        assert "channels 0.25" in c["why"] and "fits the budgets" in c["why"]
    quarter = [c for c in by.values() if c["knobs"]["ratio"] == 0.25]
    assert len(quarter) == 2 and all(c["rungs"] for c in quarter)
    assert s["trials_run"] == 2
    # Every variant of the library was compiled; the first within the budget is the one taken.
    w = s["winner"]
    variants = w["figures"]["variants"]
    assert [(v["kernels"], v["memory_plan"]) for v in variants] == [
        ("optimized", "smallest"), ("optimized", "layer-by-layer"), ("reference", "smallest"),
        ("reference", "layer-by-layer")]
    first_fit = next(v for v in variants if v["flash"] <= budget)
    assert variants[0]["flash"] > budget  # the DSP kernels do not fit
    assert w["library"] == {"kernels": first_fit["kernels"], "memory_plan": first_fit["memory_plan"]}
    assert w["library"]["kernels"] == "reference"
    # The bundle is that variant: its report says so, and its C library compiled here fits.
    report = json.loads((bundle / "report.json").read_text())
    assert report["codegen"]["library"] == w["library"]
    assert report["codegen"]["features"] == []  # no DSP kernel was used
    objs = toolchain.cross_compile(sorted((bundle / "c").glob("*.c")), tmp_path / "obj",
                                   core="cortex-m4", include_dirs=[bundle / "c"], opt="-Os")
    flash = toolchain.section_sizes(objs).flash
    assert flash == s["verified"]["checks"]["flash"]["measured"] == first_fit["flash"] <= budget
    assert report["codegen"]["arena_bytes"] == first_fit["ram"]
    # The command that rebuilds it names the variant.
    cmd = by[w["index"]]["command"]
    assert "--kernels reference" in cmd
    assert ("--memory-plan layer-by-layer" in cmd) == (first_fit["memory_plan"] == "layer-by-layer")
    text = " ".join(r.output.split())
    assert "C library: reference kernels" in text
    # The summary says why it is not the fast library, with the figure that did not fit.
    assert (f"the fastest that fits: optimized kernels with the smallest plan would need flash "
            f"{variants[0]['flash']:,} > {budget:,}") in text


def test_kernels_given_restrict_the_search_and_an_impossible_one_names_the_budget(
        digits_keras3_path, digits_npz, tmp_path):
    """--kernels optimized with a budget only the reference kernels meet: exit 2, the
    binding budget named with the optimized library's figure, nothing written."""
    from edgeslim.cli import cli

    space = _space_file(tmp_path / "space.toml", ratios=(0.25,), sparsities=(0.0,), clusters=(0,),
                        pack_weights=(False,), distill=(True,), calibrations=("random",))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["build", str(digits_keras3_path), "--data", str(digits_npz),
                                 "--target", "cortex-m4", "--backend", "c", "--max-flash", "14450",
                                 "--kernels", "optimized", "--search-space", space, "-o", str(out)],
                           obj={"debug": False})
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())
    assert "no candidate meets --max-flash 14,450 B of flash" in msg
    need = int(msg.split("needs ")[1].split(" B")[0].replace(",", ""))
    assert need > 14450  # the DSP library, the only one allowed
    assert "with the optimized kernels" in msg
    assert "(optimized kernels" in msg and "(reference kernels" not in msg  # none compiled
    assert not out.exists()
