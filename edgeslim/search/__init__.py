"""Builds driven by a budget: search the compression settings, ship the best that fits.

``search(...)`` answers "my board has this much flash and RAM (or my Pi this many
MACs), and I can lose at most this much accuracy": it

1. enumerates the candidates of a :class:`SearchSpace` (space.py);
2. measures each candidate's figures before any training (figures.py: MACs, the C
   library cross-compiled in each of its variants or the TFLite Micro arena, on the
   slimmed untrained model, whose channel counts are final) and drops those over a
   budget, those another candidate beats on every figure at no more accuracy cost,
   and, shipping one bundle, those compressed harder than one within the budgets
   (not even measured when found so before);
3. trains the rest by successive halving on Ray Tune (trials.py): short fine-tunes
   first, ``eta`` times longer for the best ``1/eta`` of each rung;
4. ships the candidate with the least validation drop meeting every budget, built
   again from its recipe by the ordinary build (pipeline.build), and re-measures
   every budget on the bundle written; ``search.json`` and ``pareto.png`` go in it.

No candidate within the budgets: a BudgetError (exit 2) names the binding budget and
how far the closest candidate is, and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeslim._determinism import restores_op_determinism
from edgeslim import recipe as recipe_mod
from edgeslim.errors import EdgeslimError
from edgeslim.search.figures import Budgets, parse_count
from edgeslim.search.space import (SearchSpace, Trial, candidate_recipe, enumerate_candidates,
                                   group_candidates)

__all__ = ["search", "SearchResult", "SearchSpace", "Budgets", "BudgetError", "parse_count",
           "ignored_settings"]

_FIG_NAMES = {"flash": ("--max-flash", "B of flash"), "ram": ("--max-ram", "B of RAM"),
              "macs": ("--max-macs", "MACs")}


class BudgetError(EdgeslimError):
    """No candidate meets the budgets (exit 2, nothing written)."""


@dataclass
class SearchResult:
    """What a search did: every candidate (as in search.json), the winner, the bundle."""

    summary: dict
    bundle_dir: Path | None
    build: object = None  # the pipeline.BuildResult of the shipped bundle
    pareto_dir: Path | None = None

    @property
    def winner(self) -> dict:
        return self.summary["winner"]


@dataclass
class _Settings:
    rungs: int = 2
    eta: int = 2
    min_epochs: int = 1
    max_trials: int = 16


@restores_op_determinism
def search(
    model,
    data,
    *,
    target: str = "cortex-m4",
    budgets: Budgets = Budgets(),
    max_drop: float | None = None,
    backend: str = "tflm",
    out: str | Path = "out",
    recipe=None,
    flags: dict | None = None,
    seed: int | None = 0,
    space: SearchSpace | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    trial_resources: dict | None = None,
    rungs: int = 2,
    eta: int = 2,
    min_epochs: int = 10,
    max_trials: int = 16,
    write_pareto_set: bool = False,
    ignored_flags: list[dict] | None = None,
    trust_model: bool = False,
    test_data=None,
    labels: list[str] | None = None,
    name: str | None = None,
    echo: Callable[[str], None] = lambda line: None,
    live: bool = False,
) -> SearchResult:
    """Search the space under ``budgets`` and ``max_drop``; write the winner's bundle to
    ``out/<target>/`` (with search.json and pareto.png), and with ``write_pareto_set``
    every Pareto candidate's recipe to ``out/search/``. See the module docstring.

    ``ignored_flags``: command-line flags the caller did not pass on (``{"setting", "why"}``
    each); reported with the recipe settings the search overrides, as ``ignored``."""
    from edgeslim import targets
    from edgeslim.search import trials as trials_mod
    from edgeslim.search.figures import check_budgets_apply
    from edgeslim.search.progress import SearchProgress

    from edgeslim.io.outputs import check_replaceable
    from edgeslim.pipeline import _safe_dir_name, check_backend, check_output_location

    t_start = time.monotonic()
    # The output first, as the build does: a bad -o fails before any work, and only folders
    # edgeslim wrote may be replaced (the bundle, and the Pareto set's out/search/).
    out = check_output_location(out, target)
    if write_pareto_set:
        _check_pareto_replaceable(out / "search")
    tgt = targets.load_target(target)
    check_backend(tgt, backend, target)
    check_budgets_apply(budgets, tgt, backend)
    settings = _Settings(rungs, eta, min_epochs, max_trials)
    if rungs < 1 or eta < 2 or min_epochs < 1 or max_trials < 1:
        raise EdgeslimError("the search needs rungs >= 1, eta >= 2, min epochs >= 1, max trials >= 1",
                            "e.g. --rungs 2 --eta 2 --min-epochs 1 --max-trials 16.")
    trials_mod.require_ray()  # before anything slow: say how to install it
    space = space or SearchSpace()
    resources = dict(trial_resources or {"cpu": 1})
    base = recipe_mod.resolve(target_recipe=tgt.recipe,
                              recipe_file=recipe if isinstance(recipe, (str, Path)) else None,
                              recipe_table=recipe if isinstance(recipe, dict) else None,
                              flags=flags)
    if base.convert.mixed:
        raise EdgeslimError(
            f"the budget search converts to plain int8; convert: {base.convert.describe()} is not "
            "searched",
            "Drop --activations/--float-layers/--float-worst (or [convert]) from the search, or build "
            "the winner's recipe with them (edgeslim build --recipe).")
    seed = base.build.seed if seed is None else seed
    seed = 0 if seed is None else seed  # a search is always seeded: its choice must repeat
    ignored = list(ignored_flags or []) + ignored_settings(recipe, flags)
    for item in ignored:
        echo(f"[search] ignored: {item['setting']} ({item['why']})")

    # -- load, as the build does ------------------------------------------------------
    kmodel, ds, model_name = _load(model, data, base, seed=seed, trust_model=trust_model,
                                   test_data=test_data, name=name)
    from edgeslim import guard
    from edgeslim._tf import keras, tf
    from edgeslim.compress.context import StageContext

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    ctx = StageContext(data=ds, seed=seed, batch_size=base.build.batch_size,
                       patience=base.build.patience, learning_rate=base.build.learning_rate)
    float_val = ctx.evaluate(kmodel, "val")
    drop_budget = guard.Budget.for_task(max_drop if max_drop is not None else base.build.max_drop,
                                        ds.task)
    echo(f"[search] float validation {ds.metric_name} {float_val:.4f}; budgets: "
         + ", ".join([f"{_FIG_NAMES[k][0]} {v:,}" for k, v in budgets.items()]
                     + [f"--max-drop {drop_budget.max_drop:g} {drop_budget.unit}"]))

    # -- candidates and their figures before training ----------------------------------
    cands = enumerate_candidates(space, backend=backend)
    trials = {c.index: Trial(c) for c in cands}
    t = time.monotonic()
    measure_kw = dict(budgets=budgets, variants=space.library_variants if backend == "c" else ())
    # Shipping one bundle, a structure whose every candidate compresses harder than one
    # already within the budgets is not measured (nor trained): it cannot lose less. A
    # Pareto set (edgeslim search) needs every figure.
    fitting: list | None = None if write_pareto_set else []
    skipped: dict = {}
    structures = _measure_structures(cands, kmodel, ds, base, ctx, tgt, backend, seed, echo,
                                     model_name, fitting=fitting, skipped=skipped, **measure_kw)
    # Per-group widths: ranked by figures counted without a model, measured for real one at
    # a time like the rest (shapes.py).
    measured = {c.ratio: structures[c.structure] for c in cands
                if not c.pack_weights and c.allocation == "uniform" and c.structure in structures}
    shapes_info = _group_widths(kmodel, base, space, budgets, measured, structures, trials,
                                backend=backend, measure=lambda extra: _measure_structures(
                                    extra, kmodel, ds, base, ctx, tgt, backend, seed, echo,
                                    model_name, fitting=fitting, skipped=skipped, **measure_kw),
                                echo=echo)
    cands = sorted((tr.cand for tr in trials.values()), key=lambda c: c.index)
    for tr in trials.values():
        if tr.cand.structure in skipped:
            tr.status, tr.why = "outcompeted", skipped[tr.cand.structure]
        else:
            tr.figures = structures[tr.cand.structure]
    cheap_s = time.monotonic() - t
    feasible = []
    for tr in trials.values():
        if tr.status == "outcompeted":
            continue
        over = budgets.over(tr.figures)
        if over:
            tr.status = "pruned"
            tr.why = "over budget before training: " + "; ".join(
                f"{k} {tr.figures[k]:,} > {getattr(budgets, k):,} (+{v:,})" for k, v in over.items())
        else:
            feasible.append(tr)
    if not feasible:
        raise _no_fit_error(list(trials.values()), budgets, drop_budget, trained=False)
    _prune_dominated(feasible)
    if not write_pareto_set:
        _prune_outcompeted(feasible)
    to_train = [tr for tr in feasible if tr.status == "pending"]
    # Every structure once before any structure's variants (distill, calibration, ...), then
    # largest feasible models first (the most capacity left: the int8 model's bytes, then
    # MACs; not flash, which also depends on the C library variant), then the index.
    variant: dict[int, int] = {}
    seen_structures: dict[tuple, int] = {}
    for tr in sorted(to_train, key=lambda tr: tr.cand.index):
        variant[tr.cand.index] = seen_structures.get(tr.cand.structure, 0)
        seen_structures[tr.cand.structure] = variant[tr.cand.index] + 1
    to_train.sort(key=lambda tr: (variant[tr.cand.index], -(tr.figures.get("tflite_bytes") or 0),
                                  -tr.figures["macs"], tr.cand.index))
    plain = [tr for tr in to_train if tr.cand.is_plain]
    rest = [tr for tr in to_train if not tr.cand.is_plain]
    keep = plain + rest[:max(0, max_trials - len(plain))]
    for tr in rest[max(0, max_trials - len(plain)):]:
        tr.status, tr.why = "not tried", (f"beyond --max-trials {max_trials} (each structure's first "
                                          "variant first, then smaller models last)")
    keep_ids = sorted(tr.cand.index for tr in keep)
    n = {s: sum(t.status == s for t in trials.values()) for s in ("pruned", "dominated", "outcompeted")}
    echo(f"[search] {len(cands)} candidates: {n['pruned']} over a budget, {n['dominated']} "
         f"dominated, {n['outcompeted']} compressed harder than one that fits, {len(keep_ids)} "
         f"to train ({cheap_s:.1f}s measuring before training)")

    # -- successive halving on Ray Tune ---------------------------------------------------
    progress = SearchProgress(echo=echo, live=live, unit=drop_budget.unit,
                              names={c.index: c.name for c in cands})
    progress.set_pruned(len(cands) - len(keep_ids), len(cands))
    payload = {"model_json": kmodel.to_json(), "weights": kmodel.get_weights(), "data": ds}
    ray_info: dict = {}
    lost: list[dict] = []
    blobs: dict[tuple, str] = {}  # (candidate, rung) -> the trial's int8 model, base64
    alive = list(keep_ids)
    storage = Path(tempfile.mkdtemp(prefix="edgeslim-tune-"))
    session = contextlib.ExitStack()  # Ray stays up until the winner's bundle is built
    with session:
        progress.start()
        try:
            ray, ray_info = session.enter_context(trials_mod.ray_session(ray_address, num_cpus))
            shared = ray.put(payload)
            for rung in range(rungs):
                epochs = min_epochs * eta ** rung
                progress.set_rung(f"rung {rung + 1}/{rungs}: {len(alive)} candidate(s), "
                                  f"{epochs} epoch(s) of fine-tuning per stage")
                todo = {i: candidate_recipe(base, trials[i].cand, epochs=epochs, seed=seed,
                                            max_drop=drop_budget.max_drop).to_dict()
                        for i in alive if not (trials[i].cand.is_plain and trials[i].rungs)}
                results = trials_mod.run_rung(
                    ray, shared_ref=shared, recipes=todo, epochs=epochs, rung=rung,
                    float_val=float_val, max_drop=drop_budget.max_drop, resources=resources,
                    storage=storage, progress=progress) if todo else {}
                for i in alive:
                    if i not in todo:  # plain int8: no training, its result stands
                        trials[i].rungs.append({**trials[i].rungs[-1], "rung": rung, "epochs": 0,
                                                "reused": True})
                        continue
                    r = {"rung": rung, "epochs": epochs if not trials[i].cand.is_plain else 0,
                         **results[i]}
                    if "tflite_b64" in r:
                        blobs[(i, rung)] = r.pop("tflite_b64")
                    trials[i].rungs.append(r)
                    if "lost" in r:
                        trials[i].status, trials[i].why = "lost", f"rung {rung + 1}: {r['lost']}"
                        lost.append({"index": i, "name": trials[i].cand.name, "rung": rung,
                                     "reason": r["lost"]})
                ranked = sorted((i for i in alive if trials[i].status != "lost"),
                                key=lambda i: _rank_key(trials[i]))
                if rung < rungs - 1:
                    n_keep = max(1, math.ceil(len(ranked) / eta))
                    for i in ranked[n_keep:]:
                        trials[i].status = "stopped"
                        trials[i].why = (f"successive halving: not in the best 1/{eta} after rung "
                                         f"{rung + 1} ({epochs} epochs)")
                    alive = ranked[:n_keep]
                else:
                    alive = ranked
        finally:
            progress.stop()
            shutil.rmtree(storage, ignore_errors=True)
        for i in alive:
            trials[i].status = "trained"
        if lost:
            echo(f"[search] {len(lost)} trial(s) lost (worker died): "
                 + "; ".join(f"{x['name']} at rung {x['rung'] + 1}" for x in lost)
                 + ". The search went on without them.")

        # -- the winner --------------------------------------------------------------------
        # Every rung's result is a configuration its recipe rebuilds exactly (the same
        # candidate, epochs and seed): the least drop among all of them wins.
        results = [(tr, r) for tr in trials.values() for r in tr.rungs
                   if r.get("val_drop") is not None and not r.get("failed") and not r.get("reused")]
        meeting = [(tr, r) for tr, r in results if drop_budget.allows(r["val_drop"])]
        if not meeting:
            raise _no_fit_error(list(trials.values()), budgets, drop_budget, trained=True)
        # The figures were measured before training; training leaves the channel counts but
        # the generated C can differ by a few bytes with the values (+24 B on 10,864 B seen on
        # the KWS model): measure the trained model itself, best first, until one fits.
        winner = w_result = None
        for tr, r in sorted(meeting, key=lambda p: (*_rank_key(p[0], p[1]), p[1]["epochs"])):
            r["figures_trained"] = _trained_figures(blobs.get((tr.cand.index, r["rung"])), tr,
                                                    tgt, backend, model_name, **measure_kw)
            over = budgets.over(r["figures_trained"])
            if over:
                r["over_after_training"] = over
                continue
            winner, w_result = tr, r
            break
        if winner is None:
            tr, r = min(meeting, key=lambda p: (*_rank_key(p[0], p[1]), p[1]["epochs"]))
            over = r["over_after_training"]
            k = max(over, key=lambda k: over[k] / getattr(budgets, k))
            raise BudgetError(
                f"no trained candidate meets {_FIG_NAMES[k][0]} {getattr(budgets, k):,} "
                f"{_FIG_NAMES[k][1]}: measured after training, the best, {tr.cand.name}, needs "
                f"{r['figures_trained'][k]:,} ({over[k]:,} over); nothing was written.",
                f"Raise {_FIG_NAMES[k][0]} by {over[k]:,} or more.")
        winner.status = "winner"
        w_epochs = w_result["epochs"] or min_epochs
        w_recipe = candidate_recipe(base, winner.cand, epochs=w_epochs, seed=seed,
                                    max_drop=drop_budget.max_drop)
        library = _library(w_result["figures_trained"], backend)
        echo(f"[search] winner {winner.cand.name} at {w_result['epochs']} epoch(s): validation "
             f"drop {w_result['val_drop']:.2f} {drop_budget.unit}"
             + (f"; C library: {library['kernels']} kernels, {library['memory_plan']} memory plan"
                if library else "") + "; building its bundle")

        summary = _summary(trials, cands, budgets, drop_budget, tgt, backend, seed, space, settings,
                           float_val, ds, ray_info, resources, lost, winner, w_result, w_recipe,
                           base, time.monotonic() - t_start)
        summary["group_widths"] = shapes_info
        summary["ignored"] = ignored

        # -- ship: the ordinary build of the winner's recipe, re-measured, then moved in place
        from edgeslim.pipeline import _replace_dir

        out = Path(out)
        made_out = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".search.", dir=out))
        shipped = False
        try:
            # In a Ray worker on this node with the trials' CPUs and threads: TensorFlow's
            # results depend on its thread count, and the bundle must hold the bytes the
            # winner's trial scored.
            res = trials_mod.build_on_driver_node(
                ray, shared, resources, model_name=model_name, recipe=w_recipe.to_dict(),
                target=target, out=staging, backend=backend, pack_weights=winner.cand.pack_weights,
                labels=labels, **library)
            summary["verified"] = _verify(res, tgt, backend, budgets, drop_budget, w_result)
            summary["wall_s"] = time.monotonic() - t_start
            bundle = res.bundle_dir
            _write_report(bundle, summary, float_val, ds.metric_name, drop_budget,
                          title=f"{model_name} -> {tgt.name} ({backend})")
            # The manifest lists every file of the bundle: written again with search.json and
            # pareto.png (a later build may replace only a folder its manifest describes).
            from edgeslim.bundle.manifest import MANIFEST, write_manifest

            manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
            write_manifest(bundle, target=tgt, model_path=bundle / manifest["model"]["path"],
                           extra=manifest.get("extra"))
            pareto_dir = None
            if write_pareto_set:
                pareto_dir = staging / "search"
                pareto_dir.mkdir()
                for c in summary["candidates"]:
                    if c["pareto"]:
                        (pareto_dir / f"c{c['index']:03d}.toml").write_text(c["recipe"], encoding="utf-8")
                shutil.copy2(bundle / "search.json", pareto_dir / "search.json")
                shutil.copy2(bundle / "pareto.png", pareto_dir / "pareto.png")
            final = out / _safe_dir_name(target)
            check_replaceable(final)  # again: the folder may have appeared during the search
            _replace_dir(bundle, final)
            if pareto_dir is not None:
                _check_pareto_replaceable(out / "search")
                _replace_dir(pareto_dir, out / "search")
                pareto_dir = out / "search"
            shipped = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if not shipped and made_out and not any(out.iterdir()):
                out.rmdir()  # nothing written: not even the folder
        res.bundle_dir, res.model_path = final, final / "model.tflite"
        echo(f"[search] bundle written to {final}")
        return SearchResult(summary=summary, bundle_dir=final, build=res, pareto_dir=pareto_dir)


# Recipe settings every candidate's recipe sets (space.candidate_recipe), and why.
_SEARCHED = {
    ("build", "stages"): "the search chooses the stages (channels, prune, cluster)",
    ("build", "calibration"): "the search chooses the calibration set (search.calibrations)",
    ("build", "guard"): "a search always checks --max-drop on validation",
    ("build", "backoff_steps"): "the search does not back off: it already chose",
    ("channels", "ratio"): "the search chooses channel ratios (search.ratios, search.group_ratios)",
    ("channels", "allocation"): "the search chooses the allocation (search.allocations)",
    ("channels", "distill"): "the search chooses distillation (search.distill)",
    ("channels", "epochs"): "the search sets fine-tuning epochs (--min-epochs, --eta, --rungs)",
    ("channels", "steps"): "the search sets fine-tuning epochs (--min-epochs, --eta, --rungs)",
    ("prune", "sparsity"): "the search chooses sparsities (search.sparsities)",
    ("prune", "epochs"): "the search sets fine-tuning epochs (--min-epochs, --eta, --rungs)",
    ("cluster", "clusters"): "the search chooses cluster counts (search.clusters)",
    ("cluster", "epochs"): "the search sets fine-tuning epochs (--min-epochs, --eta, --rungs)",
}
# The command-line flag behind a recipe key (recipe.flags_to_table), to name it as typed.
_FLAG_OF = {("channels", "ratio"): "--prune-channels", ("channels", "epochs"): "--channels-epochs",
            ("prune", "sparsity"): "--sparsity", ("prune", "epochs"): "--prune-epochs/--epochs",
            ("cluster", "clusters"): "--clusters", ("cluster", "epochs"): "--cluster-epochs/--epochs",
            ("build", "calibration"): "--calibration", ("build", "guard"): "--no-guard"}


def ignored_settings(recipe, flags: dict | None) -> list[dict]:
    """The settings the user gave (a recipe file or table, flags as recipe tables) that a
    search overrides in every candidate: ``{"setting", "value", "from", "why"}`` each."""
    layers = []
    if isinstance(recipe, (str, Path)):
        layers.append((f"--recipe {recipe}", recipe_mod.load_toml(recipe)))
    elif isinstance(recipe, dict):
        layers.append(("the recipe table", recipe))
    layers.append(("command line", flags or {}))
    out, seen = [], set()
    for source, table in reversed(layers):  # flags win over the recipe: report theirs
        for (section, key), why in _SEARCHED.items():
            value = (table.get(section) or {}).get(key) if isinstance(table.get(section), dict) \
                else None
            if value is None or (section, key) in seen:
                continue
            seen.add((section, key))
            if source == "command line" and (section, key) in _FLAG_OF:
                setting = f"{_FLAG_OF[(section, key)]} ([{section}] {key} = {value!r})"
            else:
                setting = f"[{section}] {key} = {value!r} from {source}"
            out.append({"setting": setting, "value": value, "from": source, "why": why})
        for section in ("qat", "distill", "lowrank"):  # stages no candidate runs
            keys = table.get(section)
            if isinstance(keys, dict) and keys and section not in seen:
                seen.add(section)
                out.append({"setting": f"[{section}] " + ", ".join(
                                f"{k} = {v!r}" for k, v in keys.items()) + f" from {source}",
                            "value": keys, "from": source,
                            "why": f"no candidate runs the {section} stage: the search tries "
                                   "channels, prune and cluster"})
    return out


def _group_widths(kmodel, base, space, budgets, measured, structures, trials, *, backend,
                  measure, echo) -> dict:
    """Per-group width vectors (shapes.py), measured one at a time: what a measurement needs
    beyond the flash line corrects the next estimates, until ``group_shapes`` fit or twice
    that many were measured. Their candidates join ``trials`` (one over a budget is pruned
    like any other)."""
    from edgeslim.search import shapes as shapes_mod

    tried: list[tuple] = []
    fitting, correction, info = 0, 0.0, {}
    rows = []
    while fitting < space.group_shapes and len(tried) < 2 * space.group_shapes:
        found, info = shapes_mod.propose(kmodel, base.stages["channels"], space, budgets, measured,
                                         correction=correction, exclude=frozenset(tried), limit=1)
        if not tried:
            echo("[search] per-group widths: " + (
                f"{info['vectors']} vectors over {len(info['groups'])} layer groups, "
                f"{info['fitting_by_estimate']} fit by estimate, {info['widest']} widest"
                if "why" not in info else info["why"]))
        if not found:
            break
        row = info["chosen"][0]
        tried.append(tuple(row["ratios"]))
        extra = group_candidates(found, space, backend=backend, start=max(trials) + 1)
        structures.update(measure(extra))
        trials.update({c.index: Trial(c) for c in extra})
        if extra[0].structure not in structures:  # compressed harder than one that fits
            rows.append({**row, "flash": None, "ram": None, "fits": None, "skipped": True})
            continue
        figs = structures[extra[0].structure]
        over = budgets.over(figs)
        rows.append({**row, "flash": figs.get("flash"), "ram": figs.get("ram"), "fits": not over})
        fitting += not over
        if figs.get("flash") is not None and row.get("flash_line") is not None:
            correction = max(correction, float(figs.get("flash_min", figs["flash"]) - row["flash_line"]))
    info.pop("chosen", None)
    return {**info, "correction_bytes": correction, "chosen": rows}


def _load(model, data, base, *, seed, trust_model, test_data, name):
    from edgeslim.io.data import check_data_fits_model, load_data
    from edgeslim.io.dataset import Dataset
    from edgeslim.io.models import load_model

    if isinstance(model, (str, Path)):
        kmodel = load_model(model, trust=trust_model).model
        model_name = name or Path(str(model).rstrip("/")).stem
    else:
        kmodel, model_name = model, name or getattr(model, "name", None) or "model"
    ds = data if isinstance(data, Dataset) else load_data(
        data, seed=seed or 0, val_fraction=base.build.val_fraction,
        test_fraction=base.build.test_fraction, test_data=test_data)
    check_data_fits_model(ds, kmodel)
    return kmodel, ds, model_name


def _measure_structures(cands, kmodel, ds, base, ctx, tgt, backend, seed, echo,
                        model_name: str, *, budgets: Budgets, variants, fitting: list | None = None,
                        skipped: dict | None = None) -> dict:
    """Figures per distinct structure, on the slimmed (and, for packed weights, clustered)
    model with no fine-tuning: its channel counts and values per channel are final.

    ``fitting`` (shipping one bundle): the candidates found within the budgets so far,
    extended here. The structures are then measured gentlest first, and one whose every
    candidate compresses harder than one of ``fitting`` is not measured: it goes in
    ``skipped`` (structure -> why)."""
    from edgeslim import convert
    from edgeslim.bundle.render import c_identifier
    from edgeslim.pipeline import Progress, _run_stages
    from edgeslim.search import figures
    from edgeslim.search.trials import calibration

    out: dict = {}
    if fitting is not None:
        cands = sorted(cands, key=lambda c: (c.gentleness, c.index))
    for c in cands:
        if c.structure in out or (skipped is not None and c.structure in skipped):
            continue
        same = [d for d in cands if d.structure == c.structure]
        if fitting is not None:
            witness = [next((a for a in fitting if _outcompetes(a, d)), None) for d in same]
            if all(witness):
                skipped[c.structure] = (f"not measured: {witness[0].name} fits the budgets and "
                                        "compresses no harder in any setting")
                continue
        _, alloc, packed, pack = c.structure
        probe = dataclasses.replace(c, index=-1, allocation="uniform" if alloc == "groups" else alloc,
                                    sparsity=0.0, clusters=packed, distill=False,
                                    calibration="random")
        rcp = candidate_recipe(base, probe, epochs=0, seed=seed, max_drop=None)
        calib = calibration(rcp, ds, kmodel, seed)
        run = _run_stages(kmodel, rcp, ctx, calib, [], [layer.name for layer in kmodel.layers],
                          Progress(), {})
        tfl = convert.to_int8_tflite(run.current, calib, int8_io=rcp.build.int8_io,
                                     allow_float_fallback=rcp.build.allow_float_fallback)
        out[c.structure] = figures.measure(tfl, run.current, target=tgt, backend=backend,
                                           pack_weights=pack, c_name=c_identifier(model_name),
                                           budgets=budgets, variants=variants)
        f = out[c.structure]
        if fitting is not None and not budgets.over(f):
            fitting.extend(same)
        width = "/".join(f"{r:g}" for _, r in c.groups) if c.groups else f"{c.ratio:g}"
        lib = _library(f, backend)
        echo(f"[search] structure channels {width}{' packed ' + str(packed) if pack else ''}: "
             f"MACs {f['macs']:,}, flash {_fmt(f['flash'])}, RAM {_fmt(f['ram'])}"
             + (f" ({lib['kernels']} kernels, {lib['memory_plan']} plan)" if lib else ""))
    return out


def _library(figs: dict, backend: str) -> dict:
    """The C library variant the figures are those of, as build() keywords ({} for TFLM)."""
    if backend != "c" or not figs.get("kernels"):
        return {}
    return {"kernels": figs["kernels"], "memory_plan": figs["memory_plan"]}


def _outcompetes(a, b) -> bool:
    """``a`` costs no more accuracy than ``b`` in every knob, and less in one."""
    return a.costs_no_more_accuracy_than(b) and not b.costs_no_more_accuracy_than(a)


def _trained_figures(blob: str | None, tr: Trial, tgt, backend: str, model_name: str, *,
                     budgets: Budgets, variants) -> dict:
    """Flash, RAM and MACs of a trial's own int8 model (the structure's where it has none),
    with the first C library variant that fits."""
    import base64

    from edgeslim.bundle.render import c_identifier
    from edgeslim.search import figures

    if blob is None:
        return dict(tr.figures)
    figs = figures.measure(base64.b64decode(blob), None, target=tgt, backend=backend,
                           pack_weights=tr.cand.pack_weights, c_name=c_identifier(model_name),
                           budgets=budgets, variants=variants)
    return {**figs, "macs": figs["macs"] if figs["macs"] is not None else tr.figures["macs"]}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:,} B"


def _prune_dominated(feasible: list[Trial]) -> None:
    """A candidate another beats (or equals) on every figure while costing no more
    accuracy in any knob cannot win: it is not trained."""
    def figs(tr):
        return [tr.figures.get(k) for k in ("flash", "ram", "macs")]

    for b in feasible:
        for a in feasible:
            if a is b or a.status == "dominated":
                continue
            if not a.cand.costs_no_more_accuracy_than(b.cand):
                continue
            fa, fb = figs(a), figs(b)
            if all(x is None or y is None or x <= y for x, y in zip(fa, fb)):
                b.status = "dominated"
                b.why = (f"{a.cand.name} is no larger on any figure and compresses no harder "
                         f"in any setting")
                break


def _prune_outcompeted(feasible: list[Trial]) -> None:
    """Shipping one bundle: a candidate compressed harder in some knob (and no gentler in
    any) than another within the budgets cannot lose less accuracy; it is not trained.
    (Its smaller figures would only matter to a Pareto set.)"""
    for b in feasible:
        if b.status != "pending":
            continue
        a = next((a for a in feasible if a is not b and _outcompetes(a.cand, b.cand)), None)
        if a is not None:
            b.status = "outcompeted"
            b.why = f"{a.cand.name} fits the budgets and compresses no harder in any setting"


def _rank_key(tr: Trial, result: dict | None = None) -> tuple:
    """Least validation drop first; a stage's failure last; ties: smaller figures, index.
    ``result``: one rung's result (default: the candidate's latest)."""
    last = tr.last if result is None else result
    if last is None:
        return (2, math.inf, tr.cand.index)
    f = tr.figures
    return (1 if last.get("failed") else 0, round(float(last["val_drop"]), 9),
            f.get("flash") or 0, f.get("ram") or 0, f["macs"], tr.cand.index)


def _no_fit_error(trials: list[Trial], budgets: Budgets, drop_budget, *, trained: bool):
    """The binding budget and how far the closest candidate is from it, with numbers."""
    if not trained:
        def excess(tr):  # the worst relative excess over the budgets
            return max(v / getattr(budgets, k) for k, v in budgets.over(tr.figures).items())

        closest = min(trials, key=lambda tr: (excess(tr), tr.cand.index))
        over = budgets.over(closest.figures)
        binding = max(over, key=lambda k: over[k] / getattr(budgets, k))
        flag, unit = _FIG_NAMES[binding]
        limit = getattr(budgets, binding)
        need = closest.figures[binding]
        others = [f"{_FIG_NAMES[k][0]} by {v:,} {_FIG_NAMES[k][1]}" for k, v in over.items()
                  if k != binding]
        lib = closest.figures.get("kernels")
        tried = (f" with the {lib} kernels and the {closest.figures['memory_plan']} memory plan, "
                 f"the closest of the C library variants searched ({len(closest.figures['variants'])})"
                 if lib else "")
        msg = (f"no candidate meets {flag} {limit:,} {unit}: the closest, {closest.cand.name}, "
               f"needs {need:,} {unit}{tried} ({need - limit:,} over, "
               f"+{100.0 * (need - limit) / limit:.1f}%)"
               + (f"; it is also over {', '.join(others)}" if others else "")
               + f". {len(trials)} candidates measured before training; nothing was written.")
        hint = (f"Raise {flag} to at least {need:,}, or widen the search space (higher channel "
                "ratios, packed clustered weights with --backend c, the reference kernels: "
                "search.kernels) with --search-space.")
        return BudgetError(msg, hint)
    scored = [tr for tr in trials if tr.last is not None and not tr.last.get("failed")]
    if not scored:
        return BudgetError("no candidate within the size budgets could be trained (every trial "
                           "was lost or failed); nothing was written",
                           "See the messages above; retry, or check the Ray cluster.")
    closest = min(scored, key=_rank_key)
    d = closest.last["val_drop"]
    return BudgetError(
        f"no candidate meets --max-drop {drop_budget.max_drop:g} {drop_budget.unit}: the closest "
        f"within the size budgets, {closest.cand.name}, loses {d:.2f} {drop_budget.unit} on "
        f"validation ({d - drop_budget.max_drop:.2f} over). Nothing was written.",
        "Raise --max-drop, loosen --max-flash/--max-ram/--max-macs, or train longer "
        "(--min-epochs, --rungs).")


def _candidate_dict(tr: Trial, base, seed, drop_budget, backend) -> dict:
    """One row of search.json: the candidate at its best rung (the result its recipe, at
    that rung's epochs, rebuilds), with every rung's result in ``rungs``."""
    best = tr.best or {}
    epochs = int(best.get("epochs") or 0)
    rcp = candidate_recipe(base, tr.cand, epochs=max(epochs, 1), seed=seed,
                           max_drop=drop_budget.max_drop)
    command = "edgeslim build MODEL --data DATA --recipe c%03d.toml" % tr.cand.index
    if backend == "c":
        lib = _library((best.get("figures_trained") or tr.figures), backend)
        command += (" --backend c" + (" --pack-weights" if tr.cand.pack_weights else "")
                    + (f" --kernels {lib['kernels']}" if lib.get("kernels", "optimized") != "optimized" else "")
                    + (f" --memory-plan {lib['memory_plan']}"
                       if lib.get("memory_plan", "smallest") != "smallest" else ""))
    return {
        "index": tr.cand.index, "name": tr.cand.name, "knobs": tr.cand.knobs,
        "status": tr.status, "why": tr.why, "figures": tr.figures,
        "val_metric": best.get("val_metric"), "val_drop": best.get("val_drop"),
        "epochs": epochs, "rungs": tr.rungs,
        "wall_s": float(sum(r.get("wall_s", 0.0) for r in tr.rungs if not r.get("reused"))),
        "recipe": rcp.to_toml(), "command": command, "pareto": False,
    }


def _summary(trials, cands, budgets, drop_budget, tgt, backend, seed, space, settings, float_val,
             ds, ray_info, resources, lost, winner, w_result, w_recipe, base, wall) -> dict:
    from edgeslim.report.pareto import pareto_front

    rows = [_candidate_dict(trials[c.index], base, seed, drop_budget, backend) for c in cands]
    front = set(pareto_front(rows))
    for r in rows:
        r["pareto"] = r["index"] in front
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "schema": "edgeslim.search/1",
        "target": tgt.name, "backend": backend, "seed": seed,
        "metric": ds.metric_name, "float_val_metric": float_val,
        "budgets": {**budgets.to_dict(), "max_drop": drop_budget.max_drop,
                    "drop_unit": drop_budget.unit,
                    "min_val_metric": (float_val - drop_budget.max_drop / 100.0
                                       if drop_budget.task == "classification" else None)},
        "space": space.to_dict(),
        "schedule": {"kind": "successive halving (synchronous rungs, one Ray Tune run each)",
                     "rungs": settings.rungs, "eta": settings.eta,
                     "epochs": [settings.min_epochs * settings.eta ** r for r in range(settings.rungs)],
                     "max_trials": settings.max_trials},
        "ray": {**ray_info, "trial_resources": resources},
        "counts": counts,
        "trials_run": sum(1 for r in rows for x in r["rungs"] if not x.get("reused")),
        "lost": lost,
        "winner": {"index": winner.cand.index, "name": winner.cand.name,
                   "epochs": w_result["epochs"], "rung": w_result["rung"],
                   "val_metric": w_result["val_metric"], "val_drop": w_result["val_drop"],
                   "figures": w_result.get("figures_trained") or winner.figures,
                   "figures_before_training": winner.figures,
                   "library": _library(w_result.get("figures_trained") or winner.figures, backend),
                   "tflite_sha256": w_result.get("tflite_sha256"),
                   "recipe": w_recipe.to_toml()},
        "candidates": rows,
        "pareto": sorted(front),
        "wall_s": wall,
    }


def _verify(res, tgt, backend, budgets: Budgets, drop_budget, w_result: dict) -> dict:
    """Every budget re-measured on the bundle written; the bundle's model against the trial's."""
    from edgeslim.search.figures import measure_bundle

    figs = measure_bundle(res.bundle_dir, target=tgt, backend=backend)
    sha = hashlib.sha256(res.model_path.read_bytes()).hexdigest()
    checks = {k: {"budget": v, "measured": figs.get(k), "met": figs.get(k) is not None
                  and figs[k] <= v} for k, v in budgets.items()}
    shipped = res.report["guard"]["shipped"]
    vdrop = next((c["val_drop"] for c in res.report["guard"]["candidates"] if c["name"] == shipped),
                 None)
    checks["drop"] = {"budget": drop_budget.max_drop, "measured": vdrop,
                      "met": vdrop is not None and drop_budget.allows(vdrop)}
    bad = [k for k, c in checks.items() if not c["met"]]
    if bad:
        raise EdgeslimError(
            "the winner's bundle, built again from its recipe, does not meet "
            + ", ".join(f"{k} (budget {checks[k]['budget']}, measured {checks[k]['measured']})"
                        for k in bad) + "; nothing was written",
            "Report this: the search's figures and the build's disagree.")
    return {"figures": figs, "checks": checks, "shipped": shipped,
            "model_sha256": sha, "same_bytes_as_trial": sha == w_result.get("tflite_sha256")}


def _write_report(bundle: Path, summary: dict, float_val: float, metric: str, drop_budget,
                  *, title: str) -> None:
    from edgeslim.pipeline import _json_default
    from edgeslim.report.pareto import plot

    tmp = bundle / ".search.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, bundle / "search.json")
    plot(summary["candidates"], bundle / "pareto.png", chosen=summary["winner"]["index"],
         budgets=summary["budgets"], metric=metric, float_val=float_val, title=title)


_PARETO_FILES = re.compile(r"c\d{3}\.toml|search\.json|pareto\.png")


def _check_pareto_replaceable(folder: Path) -> None:
    """out/search/ may be replaced only if it holds nothing but what a search writes there."""
    from edgeslim.io.outputs import OutputError

    if not os.path.lexists(folder):
        return
    others = [p.name for p in folder.iterdir()] if folder.is_dir() and not folder.is_symlink() else [folder.name]
    others = [n for n in others if not _PARETO_FILES.fullmatch(n)]
    if others or folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder} already exists and is not a Pareto set edgeslim wrote "
                          f"(it holds {', '.join(sorted(others)[:3]) or 'something else'}); it was left untouched",
                          hint="Move your files elsewhere, or choose another output folder with -o.")


def load_space(path) -> SearchSpace:
    return SearchSpace.load(path)
