"""The build driver: load -> compress -> convert -> check -> bundle, one stage after another.

Each step is a call into its own module; this file only orders them, times
them, checks the model between stages and collects the report. Nothing is
written to the output directory until every step has succeeded.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeslim._determinism import restores_op_determinism
from edgeslim import recipe as recipe_mod
from edgeslim.errors import EdgeslimError


@dataclass
class BuildResult:
    """What a build produced: the bundle's paths and the report (as in report.json)."""

    bundle_dir: Path
    model_path: Path
    report: dict
    recipe: Any

    @property
    def metric_name(self) -> str:
        return self.report["metric"]["name"]

    @property
    def float_metric(self) -> float:
        return self.report["metric"]["float"]

    @property
    def int8_metric(self) -> float:
        return self.report["metric"]["int8"]


@dataclass
class Progress:
    """Where the build tells the user what it is doing. ``echo`` prints one line."""

    echo: Callable[[str], None] = lambda line: None
    _stage_started: dict = field(default_factory=dict)

    def stage(self, name: str, what: str) -> None:
        self.echo(f"[{name}] {what}")

    def keras_callbacks(self, stage: str, epochs: int) -> list:
        from edgeslim._tf import keras

        progress = self

        class _EpochLine(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                done = epoch + 1
                per_epoch = (time.monotonic() - self.t0) / done
                eta = per_epoch * (epochs - done)
                shown = "  ".join(
                    f"{k}={v:.4f}" for k, v in logs.items() if k.startswith("val_") and isinstance(v, float)
                )
                progress.echo(f"[{stage}] epoch {done}/{epochs}  {shown}  ETA {eta:.0f}s")

        return [_EpochLine()]


def _gzip_size(data: bytes) -> int:
    # mtime=0: the same bytes always give the same gzip size.
    return len(gzip.compress(data, compresslevel=9, mtime=0))


MAX_SEED = 2**32 - 1  # numpy's and Keras's seeds are unsigned 32-bit
# A split scored with fewer samples than this gives a figure that means nothing
# ("accuracy 1.0000" on one sample).
MIN_SPLIT_SAMPLES = 10
QUANT_ERROR_SAMPLES = 256  # validation samples for the per-layer quantization error (report.html)
# Flag settings of a stage that only mean something when that stage runs.
_STAGE_FLAGS = {("cluster", "clusters"): "--clusters", ("prune", "sparsity"): "--sparsity",
                ("prune", "structure"): "--structure"}


def _check_flags_used(flags: dict, rcp) -> None:
    """A flag that sets a stage the build will not run would be silently ignored: refuse it."""
    for (stage, key), option in _STAGE_FLAGS.items():
        value = (flags.get(stage) or {}).get(key) if isinstance(flags.get(stage), dict) else None
        if value is not None and stage not in rcp.active_stages:
            raise recipe_mod.RecipeError(
                f"{option} {value} sets the {stage} stage, but this build has no {stage} stage "
                f"(stages: {', '.join(rcp.active_stages) or 'none: plain int8'}); it would be ignored",
                hint=f"Drop {option}, or list \"{stage}\" in build.stages of a --recipe file "
                     f"(and leave out --no-{stage}).")


def _check_enough_data(ds) -> None:
    """Refuse data too small to measure anything: one class, or a split of a few samples."""
    from edgeslim.errors import DataError
    from edgeslim.io.dataset import CLASSIFICATION

    small = {s: n for s, n in (("validation", len(ds.x_val)), ("test", len(ds.x_test)))
             if n < MIN_SPLIT_SAMPLES}
    if small:
        raise DataError(
            f"{ds.source}: too few samples to measure the model: "
            + ", ".join(f"{n} in the {s} split" for s, n in small.items())
            + f" (at least {MIN_SPLIT_SAMPLES} each; {len(ds.x_train)} training samples)",
            hint="Give more data, or x_val/y_val and x_test/y_test of at least "
                 f"{MIN_SPLIT_SAMPLES} samples each in the .npz.")
    if ds.task == CLASSIFICATION:
        classes = np.unique(ds.y_train)
        if len(classes) < 2:
            raise DataError(
                f"{ds.source}: the training labels hold a single class ({int(classes[0]) if len(classes) else '-'}); "
                "there is nothing to classify and every accuracy would be 1.0",
                hint="Give samples of at least two classes.")


def _check_labels(labels, ds, kmodel):
    """The class names shipped in the bundle: one per output class of the model."""
    from edgeslim.errors import DataError
    from edgeslim.io.dataset import CLASSIFICATION

    if labels is None:
        return None
    labels = list(labels)
    if ds.task != CLASSIFICATION:
        raise DataError(f"class names were given (--labels, {len(labels)} lines) but the task is "
                        f"{ds.task}", hint="Drop --labels: a regression model has no classes.")
    shape = kmodel.output_shape[0] if isinstance(kmodel.output_shape, list) else kmodel.output_shape
    outputs = int(shape[-1]) if shape and shape[-1] else ds.num_classes
    if len(labels) != outputs:
        raise DataError(f"--labels holds {len(labels)} class names but the model has {outputs} "
                        "output classes",
                        hint="Give one class name per line, in class-index order, one per output.")
    return labels


def _safe_dir_name(name: str) -> str:
    """The target as typed becomes a directory name; a path-like spec keeps its stem."""
    if "/" in name or "\\" in name or name.endswith(".toml"):
        name = Path(name.replace("\\", "/")).stem
    if name in ("", ".", "..") or name.startswith("-"):
        raise EdgeslimError(f"target {name!r} cannot name the bundle folder",
                            "Give a target name such as rpi4 or cortex-m4, or a board file such as boards/my-board.toml.")
    return name


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[float | None]:
    y_true = np.asarray(y_true).reshape(-1)
    pred = np.argmax(y_pred, axis=-1)
    out: list[float | None] = []
    for c in range(num_classes):
        mask = y_true == c
        out.append(float(np.mean(pred[mask] == c)) if mask.any() else None)
    return out


def per_class_table(y_true, before, after, num_classes, class_names=None) -> dict:
    """Per-class accuracy before/after and the classes that lost most.

    A class is flagged when it lost at least 5 points and at least twice the
    overall drop: compression hurts some classes far more than the mean shows.
    """
    b = _per_class(y_true, before, num_classes)
    a = _per_class(y_true, after, num_classes)
    y = np.asarray(y_true).reshape(-1)
    overall_drop = float(np.mean(np.argmax(before, -1) == y) - np.mean(np.argmax(after, -1) == y))
    rows = []
    for c in range(num_classes):
        if b[c] is None:
            continue
        drop = b[c] - a[c]
        rows.append({
            "class": c,
            "name": class_names[c] if class_names else str(c),
            "support": int(np.sum(y == c)),
            "before": b[c],
            "after": a[c],
            "drop": drop,
            "flagged": bool(drop >= 0.05 and drop >= 2 * max(overall_drop, 0.0)),
        })
    lost_most = sorted((r for r in rows if r["drop"] > 0), key=lambda r: -r["drop"])[:3]
    return {
        "overall_drop": overall_drop,
        "classes": rows,
        "lost_most": [r["name"] for r in lost_most],
        "flagged": [r["name"] for r in rows if r["flagged"]],
        "flag_rule": "drop >= 0.05 and drop >= 2 x overall drop",
    }


def _tflite_figures(data: bytes, layer_names=None) -> dict:
    from edgeslim.tflite_inspect import inspect_tflite

    info = inspect_tflite(data, layer_names)
    d = info.to_dict()
    nonzero = int(sum(w.values.size - int(w.zeros_mask().sum()) for w in info.weights))
    return {"bytes": len(data), "gzip_bytes": _gzip_size(data), "inspect": d, "info": info,
            "nonzero_weights": nonzero}


@restores_op_determinism
def build(
    model,
    data,
    *,
    target: str = "rpi",
    recipe=None,
    flags: dict | None = None,
    drop_stages: tuple[str, ...] = (),
    add_stages: tuple[str, ...] = (),
    teacher=None,
    out: str | Path = "out",
    ram=None,
    flash=None,
    trust_model: bool = False,
    backend: str = "tflm",
    pack_weights: bool = False,
    labels: list[str] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    test_data=None,
    front_end: dict | None = None,
    kernels: str = "optimized",
    memory_plan: str = "smallest",
) -> BuildResult:
    """Compress ``model``, convert it to int8, check it against ``target``, write the bundle.

    ``model``: a path (.keras, .h5, SavedModel dir) or an in-memory tf_keras model.
    ``data``: a path (.npz or image folder) or an edgeslim Dataset.
    ``recipe``: None, a path to a TOML recipe, a dict of recipe tables, or a Recipe.
    ``teacher``: a path or tf_keras model (or a list of them) that the distill stage
    distils into ``model``; without it, distill derives the student from ``model``.
    ``test_data``: a separate .npz or image folder scored as the test split.
    ``front_end``: for the web target, how its page turns a sound or a picture into the
    model's input (``{"audio": "mlperf-tiny-kws"}``; edgeslim.bundle.web).
    ``kernels`` (``optimized``, ``reference``) and ``memory_plan`` (``smallest``,
    ``layer-by-layer``): the C library's variant (``--backend c``; codegen.generate).

    The output is checked first: OUT must be a writable folder (or creatable), and
    OUT/<target> absent or a bundle edgeslim wrote; otherwise OutputError before any work.
    """
    out = check_output_location(out, target)

    from edgeslim import convert, evaluate, targets
    from edgeslim._tf import keras, tf
    from edgeslim.compress.context import StageContext, count_params
    from edgeslim.io.data import check_data_fits_model, load_data
    from edgeslim.io.dataset import CLASSIFICATION, Dataset
    from edgeslim.io.models import load_model

    progress = progress or Progress()
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    # -- settings ------------------------------------------------------------
    tgt = targets.load_target(target, ram=ram, flash=flash)
    check_backend(tgt, backend, target, kernels=kernels, memory_plan=memory_plan)
    check_front_end(tgt, front_end)
    if tgt.kind == "web":  # the runtime files the bundle copies: refuse now, not after training
        from edgeslim.bundle.web import check_runtime

        check_runtime()
    if isinstance(recipe, recipe_mod.Recipe):
        rcp = recipe
    else:
        rcp = recipe_mod.resolve(
            target_recipe=tgt.recipe,
            recipe_file=recipe if isinstance(recipe, (str, Path)) else None,
            recipe_table=recipe if isinstance(recipe, dict) else None,
            flags=flags,
            drop_stages=drop_stages,
            add_stages=tuple(add_stages) + (("distill",) if teacher is not None else ()),
        )
    seed = rcp.build.seed
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
        raise recipe_mod.RecipeError(f"seed {seed!r} is out of range",
                                     hint=f"A seed is a whole number from 0 to {MAX_SEED} (2**32 - 1).")
    _check_flags_used(flags or {}, rcp)
    targets.check_precision(tgt, rcp.convert, backend=backend)
    if seed is not None:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()

    # -- load ------------------------------------------------------------------
    t = time.monotonic()
    progress.stage("load", "reading the model and the data")
    if isinstance(model, (str, Path)):
        loaded = load_model(model, trust=trust_model)
        kmodel, model_notes = loaded.model, list(loaded.notes)
        model_source = {
            "path": str(model), "format": loaded.format, "bridged_from_keras3": loaded.bridged,
            "bridge_max_abs_diff": loaded.max_abs_diff, "bridge_tolerance": loaded.tolerance,
        }
        model_name = name or Path(str(model).rstrip("/")).stem
    else:
        kmodel, model_notes = model, []
        model_source = {"path": None, "format": "in-memory tf_keras"}
        model_name = name or (getattr(kmodel, "name", None) or "model")
    if isinstance(data, Dataset):
        ds = data
    else:
        ds = load_data(data, seed=seed or 0, val_fraction=rcp.build.val_fraction,
                       test_fraction=rcp.build.test_fraction, test_data=test_data)
    check_data_fits_model(ds, kmodel)
    _check_enough_data(ds)
    labels = _check_labels(labels, ds, kmodel)
    teacher_models = []
    if teacher is not None:
        for tm in teacher if isinstance(teacher, (list, tuple)) else [teacher]:
            tm = load_model(tm, trust=trust_model).model if isinstance(tm, (str, Path)) else tm
            check_data_fits_model(ds, tm)
            teacher_models.append(tm)
        if "distill" not in rcp.active_stages:
            raise EdgeslimError("a teacher was given but the recipe's build.stages leaves out distill",
                                "Add \"distill\" to build.stages, or drop --teacher.")
    timings["load"] = time.monotonic() - t

    ctx = StageContext(
        data=ds, seed=seed, batch_size=rcp.build.batch_size, patience=rcp.build.patience,
        learning_rate=rcp.build.learning_rate, callbacks=progress.keras_callbacks, log=progress.echo,
    )
    if rcp.build.calibration == "coreset":
        from edgeslim.compress import coreset

        # Embeddings of a trained model: the teacher when one is given (the student may be new).
        picked = coreset.select(teacher_models[0] if teacher_models else kmodel, ds.x_train,
                                ds.y_train if ds.task == CLASSIFICATION else None,
                                rcp.build.representative_samples, seed=seed)
        calib = np.asarray(ds.x_train[picked], dtype=np.float32)
    else:
        calib = convert.calibration_sample(ds.x_train, rcp.build.representative_samples, seed)

    # -- baseline ----------------------------------------------------------------
    t = time.monotonic()
    progress.stage("baseline", "evaluating the float model")
    float_pred = ctx.predict(kmodel, ds.x_test)
    float_metric = ctx.score(float_pred, ds.y_test)
    float_val = ctx.evaluate(kmodel, "val")
    float_tflite = convert.to_float_tflite(kmodel)
    stages_head = [{
        "name": "baseline", "metric": float_metric, "metric_val": float_val,
        "params": count_params(kmodel),
        "tflite_bytes": len(float_tflite), "tflite_gzip_bytes": _gzip_size(float_tflite),
        "tflite_kind": "float32", "wall_s": time.monotonic() - t,
    }]
    timings["baseline"] = time.monotonic() - t
    evaluation = describe_test_split(ds, float_test=float_metric, float_val=float_val)
    progress.echo(f"[baseline] float {ds.metric_name}: validation {float_val:.4f}, "
                  f"test {float_metric:.4f} ({evaluation['test_split']}); "
                  f"float .tflite {len(float_tflite)} bytes")
    if evaluation["warning"]:
        progress.echo(f"[baseline] WARNING: {evaluation['warning']}")

    # -- candidates: plain int8, then the recipe (backing off while over budget) --------
    # (each converted as [convert] says: int8, 16x8, or int8 with float layers)
    from edgeslim import guard, precision

    budget = guard.Budget.for_task(rcp.build.max_drop, ds.task)
    layer_names = [layer.name for layer in kmodel.layers]
    t = time.monotonic()
    plain = guard.Candidate(name=guard.PLAIN, recipe=None, rung=None, model=kmodel)
    if rcp.convert.mixed:
        progress.stage("convert", rcp.convert.describe())
    plain.converted = precision.convert_model(kmodel, rcp.convert, rcp.build, calib)
    plain.tflite = plain.converted.tflite
    if rcp.convert.activations == "int16":
        # Every op at 16x8 on the target's runtime: refused now, before any training.
        targets.check_int16_ops(targets.read_model(plain.tflite), tgt)
    _score_candidate(plain, ctx, budget, float_val)
    plain.wall_s = time.monotonic() - t
    timings["plain_int8"] = plain.wall_s
    progress.echo(f"[guard] budget: at most {budget.describe()}; plain int8: validation "
                  f"{ds.metric_name} {plain.val_metric:.4f} (drop {plain.val_drop:.2f} {budget.unit})")
    candidates = [plain]
    chosen = plain
    rungs = rcp.build.backoff_steps if rcp.build.guard else 0
    for rung in range(rungs + 1) if rcp.active_stages else ():
        cand_rcp, changes = guard.backoff(rcp, rung)
        cand_name = "recipe" if rung == 0 else f"back-off {rung}"
        if rung:
            progress.echo(f"[guard] {cand_name}: " + "; ".join(
                f"{st} " + ", ".join(f"{k} {v}" for k, v in ch.items()) for st, ch in changes.items()))
        t = time.monotonic()
        cand = guard.Candidate(name=cand_name, recipe=cand_rcp, rung=rung, changes=changes)
        cand.run = _run_stages(kmodel, cand_rcp, ctx, calib, teacher_models, layer_names,
                               progress, timings)
        cand.model = cand.run.current
        cand.failed = cand.run.failure
        cand.converted = precision.convert_model(cand.model, rcp.convert, rcp.build, calib)
        cand.tflite = cand.converted.tflite
        _score_candidate(cand, ctx, budget, float_val)
        cand.wall_s = time.monotonic() - t
        candidates.append(cand)
        verdict = ("within budget" if cand.within_budget else
                   f"FAILED: {cand.failed}" if cand.failed else "over budget")
        progress.echo(f"[guard] {cand_name}: validation {ds.metric_name} {cand.val_metric:.4f} "
                      f"(drop {cand.val_drop:.2f} {budget.unit}), {len(cand.tflite)} bytes: {verdict}")
        if cand.within_budget or not rcp.build.guard:
            chosen = cand
            break
    guard_summary = _guard_summary(candidates, chosen, budget, rcp, float_val, len(ds.x_val))
    progress.echo(f"[guard] shipping {chosen.name}: {guard_summary['reason']}")

    run = chosen.run
    current = chosen.model
    float_model = run.float_model if run else kmodel
    stages_report = stages_head + (run.stages_report if run else [])
    model_bytes = chosen.tflite
    # The recipe that rebuilds what ships (plain int8: no compression stage).
    shipped_rcp = chosen.recipe or dataclasses.replace(
        rcp, build=dataclasses.replace(rcp.build, stages=()))

    # -- convert ------------------------------------------------------------------
    t = time.monotonic()
    final = _tflite_figures(model_bytes, _names(layer_names, current))
    from edgeslim.tflite_inspect import merge_targets, unmet_targets

    not_reached = unmet_targets(final["info"], merge_targets(*(run.stage_targets if run else [])))
    # The float16 (GPU) variant comes from the last model without QAT's fake-quant wrappers.
    fp16_bytes = convert.to_fp16_tflite(float_model) if tgt.wants_fp16 else None
    timings["convert"] = time.monotonic() - t

    # -- check against the target (before anything is written) ---------------------
    t = time.monotonic()
    progress.stage("check", f"checking ops and memory against {tgt.name}")
    check = targets.check_model(model_bytes, tgt)
    timings["check"] = time.monotonic() - t

    # -- evaluate the int8 model ----------------------------------------------------
    t = time.monotonic()
    progress.stage("evaluate", "int8 model on the test split (LiteRT)")
    int8_pred = evaluate.run_litert(model_bytes, ds.x_test)
    int8_metric = ctx.score(int8_pred, ds.y_test)
    micro_metric = None
    micro_agreement = None
    if tgt.kind == "mcu":
        progress.stage("evaluate", "int8 model on the test split (TFLite Micro reference kernels)")
        micro_pred = evaluate.run_micro(model_bytes, ds.x_test)
        micro_metric = ctx.score(micro_pred, ds.y_test)
        if ds.task == CLASSIFICATION:
            micro_agreement = float(np.mean(np.argmax(micro_pred, -1) == np.argmax(int8_pred, -1)))
    timings["evaluate"] = time.monotonic() - t
    t = time.monotonic()
    progress.stage("evaluate", "per-layer quantization error on the validation split")
    quant_error = _quantization_error(model_bytes, current, ds.x_val)
    timings["quantization_error"] = time.monotonic() - t
    stages_report.append({
        "name": "int8", "metric": int8_metric, "metric_val": chosen.val_metric,
        "metric_tflm": micro_metric,
        "params": count_params(float_model), "nonzero_weights": final["nonzero_weights"],
        "tflite_bytes": final["bytes"],
        "tflite_gzip_bytes": final["gzip_bytes"],
        "tflite_kind": {"int8": "int8", "int16": "16x8"}[rcp.convert.activations]
        + ("+float" if rcp.convert.keeps_float else ""),
        "weights": final["inspect"].get("weights"), "wall_s": timings["convert"] + timings["evaluate"],
    })

    # -- report -----------------------------------------------------------------------
    from edgeslim.report import make_report

    per_class = None
    if ds.task == CLASSIFICATION and ds.num_classes:
        per_class = per_class_table(ds.y_test, float_pred, int8_pred, ds.num_classes, ds.class_names)
    report = make_report(
        model_name=model_name, model_source=model_source, model_notes=model_notes,
        target=tgt, dataset=ds, recipe=shipped_rcp, stages=stages_report,
        float_metric=float_metric, int8_metric=int8_metric, micro_metric=micro_metric,
        micro_agreement=micro_agreement, float_tflite_bytes=len(float_tflite),
        float_tflite_gzip=_gzip_size(float_tflite), final=final, per_class=per_class,
        qat_ran=bool(run and run.qat_ran), qat_skipped=run.qat_skipped if run else {},
        qat_choice=run.qat_choice if run else None, check=check, timings=timings,
        not_reached=not_reached, float_val_metric=float_val, int8_val_metric=chosen.val_metric,
        total_s=time.monotonic() - t_start,
    )
    report["evaluation"] = evaluation
    report["quantization_error"] = quant_error
    report["guard"] = guard_summary
    report["precision"] = precision.comparison(
        ctx, rcp.convert, chosen.converted, shipped_val=chosen.val_metric, shipped_test=int8_metric,
        float_val=float_val, float_test=float_metric, test_split=evaluation["test_split"])
    if report["precision"]:
        p = report["precision"]
        progress.echo(f"[convert] {p['describe']}: validation {ds.metric_name} {p['mixed']['val']:.4f} "
                      f"(plain int8 {p['int8']['val']:.4f}), test {p['mixed']['test']:.4f} "
                      f"(plain int8 {p['int8']['test']:.4f}); {p['mixed']['bytes']} bytes "
                      f"(plain int8 {p['int8']['bytes']})")
    report["calibration"] = {"method": rcp.build.calibration, "samples": int(len(calib))}
    report["distillation"] = _distillation_summary(stages_report, int8_metric, ds)
    if chosen is plain and any(c.run for c in candidates):
        # What the compression stages did, although their model did not ship.
        tried = candidates[-1].run
        report["distillation"] = report["distillation"] or _distillation_summary(
            tried.stages_report, None, ds)

    final_dir = write_bundle(
        out, target, tgt, model_bytes=model_bytes, fp16_bytes=fp16_bytes, model_name=model_name,
        labels=labels or (list(ds.class_names) if ds.class_names else None), check=check,
        backend=backend, pack_weights=pack_weights, kernels=kernels, memory_plan=memory_plan,
        report=report, recipe_toml=shipped_rcp.to_toml(),
        progress=progress, manifest_extra={"model_name": model_name, "backend": backend},
        reference=(ds.x_test, ds.y_test), front_end=front_end,
    )
    return BuildResult(bundle_dir=final_dir, model_path=final_dir / "model.tflite", report=report, recipe=shipped_rcp)


def _quantization_error(model_bytes: bytes, kmodel, x_val) -> dict:
    """Per-layer SNR of the shipped int8 model against the Keras model it was converted from
    (edgeslim.quant_debug), on at most QUANT_ERROR_SAMPLES validation samples. A model the
    measurement cannot follow (e.g. several inputs) gets ``{"error": ...}``: the bundle is still
    good, only this diagnostic is missing."""
    from edgeslim import quant_debug

    try:
        return quant_debug.analyse(model_bytes, kmodel, x_val, max_samples=QUANT_ERROR_SAMPLES).to_dict()
    except EdgeslimError as exc:
        return {"error": exc.message}


@dataclass
class _StagesRun:
    """What running the recipe's compression stages produced."""

    current: Any  # the last stage's model (QAT-wrapped when QAT shipped)
    float_model: Any  # the last model without QAT's fake-quant wrappers
    stages_report: list
    stage_targets: list
    qat_ran: bool = False
    qat_skipped: dict = field(default_factory=dict)
    qat_choice: dict | None = None
    failure: str | None = None  # a stage's own verdict that its model is unusable


def _run_stages(kmodel, rcp, ctx, calib, teacher_models, layer_names, progress, timings) -> _StagesRun:
    """Run the recipe's compression stages in order on ``kmodel`` (unchanged)."""
    from edgeslim import convert
    from edgeslim.compress.context import count_params

    current = float_model = kmodel
    run = _StagesRun(current=kmodel, float_model=kmodel, stages_report=[], stage_targets=[])
    preserve: set[str] = set()
    prev_tflite: bytes | None = None  # the previous stage's model, converted to int8
    for stage in rcp.active_stages:
        t = time.monotonic()
        progress.stage(stage, "running")
        fn = recipe_mod.stage_function(stage)
        cfg = rcp.config(stage)
        kwargs = {"preserve": set(preserve)} if stage == "qat" else {}
        if stage == "distill":
            kwargs = {"teachers": teacher_models}
        outcome = fn(current, cfg, ctx=ctx, **kwargs)
        current = outcome.model
        run.stage_targets.append(outcome.info.get("targets") or {})
        if outcome.info.get("student_failed"):
            run.failure = outcome.info.get("failure") or f"the {stage} stage's student failed to learn"
        if stage != "qat":
            float_model = current
        if stage == "prune":
            preserve.add("sparsity")
        elif stage == "cluster":
            preserve.add("clusters")
        elif stage == "qat":
            run.qat_ran = True
            run.qat_skipped = dict(outcome.skipped)
        metric = ctx.evaluate(current, "test")
        metric_val = ctx.evaluate(current, "val")
        stage_tflite = convert.to_int8_tflite(
            current, calib, int8_io=rcp.build.int8_io,
            allow_float_fallback=True,  # the strict check runs on the candidate's final model
        )
        if stage == "qat" and cfg.fallback_to_ptq:
            run.qat_choice = _qat_or_ptq(
                ctx, qat_bytes=stage_tflite,
                ptq_bytes=prev_tflite or convert.to_int8_tflite(
                    float_model, calib, int8_io=rcp.build.int8_io, allow_float_fallback=True),
            )
            if run.qat_choice["shipped"] == "ptq":
                current = float_model
                progress.echo(f"[qat] {run.qat_choice['reason']}")
        prev_tflite = stage_tflite
        figs = _tflite_figures(stage_tflite, _names(layer_names, current))
        wall = time.monotonic() - t
        timings[stage] = timings.get(stage, 0.0) + wall
        run.stages_report.append({
            # QAT adds quantizer state to the weights: count the model it wraps.
            "name": stage, "metric": metric, "metric_val": metric_val,
            "params": count_params(float_model),
            "nonzero_weights": figs["nonzero_weights"],
            "tflite_bytes": figs["bytes"], "tflite_gzip_bytes": figs["gzip_bytes"],
            "tflite_kind": "int8", "weights": figs["inspect"].get("weights"),
            "info": outcome.info, "skipped": outcome.skipped, "wall_s": wall,
        })
        progress.echo(f"[{stage}] {ctx.data.metric_name}: validation {metric_val:.4f}, test "
                      f"{metric:.4f} (float model); int8 .tflite {figs['bytes']} bytes "
                      f"({figs['gzip_bytes']} gzip'd), {wall:.1f}s")
    run.current, run.float_model = current, float_model
    return run


def _score_candidate(cand, ctx, budget, float_val: float) -> None:
    """The candidate's int8 model on the validation split (LiteRT), against the budget."""
    from edgeslim import evaluate

    cand.val_metric = ctx.score(evaluate.run_litert(cand.tflite, ctx.data.x_val), ctx.data.y_val)
    cand.val_drop = budget.drop(float_val, cand.val_metric)
    cand.within_budget = budget.allows(cand.val_drop) and cand.failed is None


def _guard_summary(candidates, chosen, budget, rcp, float_val: float, n_val: int) -> dict:
    """Every candidate tried with its validation figure, what shipped and why."""
    from edgeslim.guard import PLAIN

    plain = candidates[0]
    compressed = candidates[1:]
    if not compressed:
        reason = "the recipe runs no compression stage"
    elif chosen is not plain and not rcp.build.guard:
        reason = "build.guard = false: the recipe's model ships whatever it scores"
        if not chosen.within_budget:
            reason += f" (validation drop {chosen.val_drop:.2f} {budget.unit}, over the budget)"
    elif chosen is not plain:
        reason = (f"validation drop {chosen.val_drop:.2f} {budget.unit} is within the budget of "
                  f"{budget.max_drop:g}")
        if chosen.rung:
            reason += f" after {chosen.rung} back-off step(s)"
    else:
        closest = min(compressed, key=lambda c: c.val_drop)
        why = "; ".join(f"{c.name}: " + (f"failed ({c.failed})" if c.failed else
                                          f"drop {c.val_drop:.2f} {budget.unit}") for c in compressed)
        reason = (f"no compressed candidate fits the budget of {budget.describe()} ({why}); "
                  f"shipping plain int8 conversion (closest compressed candidate: {closest.name})")
    if not plain.within_budget:
        note = (f"even plain int8 conversion loses {plain.val_drop:.2f} {budget.unit} on validation, "
                f"over the budget of {budget.max_drop:g}")
        reason += f". Note: {note}" if chosen is plain else ""
    resolution = None
    if budget.task == "classification":
        # One validation sample is this many points: a budget of fewer than ~3 samples
        # makes the decision hinge on single samples.
        resolution = 100.0 / max(1, n_val)
    return {
        "val_samples": n_val, "points_per_val_sample": resolution,
        "max_drop": budget.max_drop, "unit": budget.unit, "measured_on": "validation",
        "interpreter": "LiteRT", "enabled": bool(rcp.build.guard),
        "float_val_metric": float_val,
        "candidates": [c.to_dict() for c in candidates],
        "shipped": chosen.name, "shipped_is_plain_int8": chosen.name == PLAIN, "reason": reason,
    }


def describe_test_split(ds, *, float_test: float, float_val: float) -> dict:
    """Where the test split came from, and a warning when it likely overlaps training data.

    A test split carved from the training samples the user gave may hold samples the
    model was trained on; its figures then overstate. The warning fires, for such a
    split, when the float model is at or near perfect on it (accuracy >= 0.99) or far
    above its validation score (>= 5 points higher; for regression, MSE under half the
    validation MSE).
    """
    from edgeslim.io.dataset import CARVED, TEST_FILE

    origin = ds.test_origin
    describe = {CARVED: "carved from the training data given",
                TEST_FILE: f"--test-data {ds.test_source}"}.get(origin, f"given in {Path(ds.source).name}")
    warning = None
    if origin == CARVED:
        if ds.higher_is_better:
            suspicious = float_test >= 0.99 or float_test - float_val >= 0.05
            seen = f"float accuracy {float_test:.4f} on it, {float_val:.4f} on validation"
        else:
            suspicious = float_test <= 0.5 * float_val
            seen = f"float MSE {float_test:.4g} on it, {float_val:.4g} on validation"
        if suspicious:
            warning = (f"the test split was carved from the training data given ({seen}); it likely "
                       "overlaps the samples the model was trained on, so the test figures "
                       "overstate. Pass the held-out data the model never saw with --test-data.")
    return {"test_split": describe, "test_origin": origin, "test_samples": int(len(ds.x_test)),
            "val_origin": ds.val_origin, "val_samples": int(len(ds.x_val)),
            "float_test": float_test, "float_val": float_val, "warning": warning}


def _names(original: list[str], model) -> list[str]:
    """The input model's layer names plus those a stage added (lowrank's ``*_lr``, a student's)."""
    return original + [layer.name for layer in model.layers if layer.name not in original]


def _distillation_summary(stages_report: list[dict], int8_metric: float, ds) -> dict | None:
    """Teacher, scratch student, distilled student and final int8 student side by side,
    all on the test split (the distill stage trained both students on the same budget)."""
    stage = next((s for s in stages_report if s["name"] == "distill"), None)
    if stage is None:
        return None
    i = stage["info"]
    higher = ds.higher_is_better
    int8_vs_scratch = None
    if i.get("scratch_metric") is not None and int8_metric is not None:
        int8_vs_scratch = (int8_metric - i["scratch_metric"]) if higher else (i["scratch_metric"] - int8_metric)
    return {
        "metric": ds.metric_name,
        "teachers": i["teachers"],
        "teacher_metrics": i["teacher_metrics"],
        "teacher_params": i["teacher_params"],
        "student_params": i["student_params"],
        "scratch_metric": i.get("scratch_metric"),
        "distilled_metric": i["distilled_metric"],
        "final_int8_metric": int8_metric,
        "gain_over_scratch": i.get("gain_over_scratch"),
        "beat_scratch": i.get("beat_scratch"),
        "final_int8_vs_scratch": int8_vs_scratch,
        "budget": i["budget"],
        "student_failed": i.get("student_failed", False),
        "failure": i.get("failure"),
        "summary": i.get("summary"),
        "init": i.get("init"),
        "temperature": i["temperature"],
        "alpha": i["alpha"],
        "hints": i["hints"],
    }


def _qat_or_ptq(ctx, *, qat_bytes: bytes, ptq_bytes: bytes) -> dict:
    """Which int8 model to ship: QAT's, or plain post-training quantization of the
    model QAT started from. Decided on the validation split (the test split stays
    untouched for the report); QAT wins ties. On small data, or when pruning and
    clustering already made the weights quantization-friendly, a few QAT epochs can
    end below plain conversion: shipping the worse model would cost users accuracy."""
    from edgeslim import evaluate

    x, y = ctx.data.x_val, ctx.data.y_val
    qat_val = ctx.score(evaluate.run_litert(qat_bytes, x), y)
    ptq_val = ctx.score(evaluate.run_litert(ptq_bytes, x), y)
    better = (ptq_val > qat_val) if ctx.data.higher_is_better else (ptq_val < qat_val)
    name = ctx.data.metric_name
    choice = {"val_int8_qat": qat_val, "val_int8_ptq": ptq_val, "shipped": "ptq" if better else "qat"}
    if better:
        choice["reason"] = (f"QAT's int8 model ({name} {qat_val:.4f} on validation) is worse than plain "
                            f"int8 conversion of the model before QAT ({ptq_val:.4f}): shipping the latter")
    else:
        choice["reason"] = (f"QAT's int8 model ({name} {qat_val:.4f} on validation) is at least as good as "
                            f"plain int8 conversion ({ptq_val:.4f}): shipping it")
    return choice


def check_backend(tgt, backend: str, target: str, *, kernels: str = "optimized",
                  memory_plan: str = "smallest") -> None:
    """``--backend`` is tflm or c, and c only for a microcontroller target; ``--kernels`` and
    ``--memory-plan`` choose a variant of the C library, so need ``--backend c``."""
    if backend not in ("tflm", "c"):
        raise EdgeslimError(f"unknown backend {backend!r}", "Use --backend tflm (default) or --backend c.")
    if backend == "c" and tgt.kind != "mcu":
        raise EdgeslimError(
            f"--backend c is for microcontroller targets; {target} is a {tgt.kind} target",
            "Use a cortex-m* target, or drop --backend.",
        )
    from edgeslim.codegen import check_library_options

    check_library_options(kernels, memory_plan)
    given = [f"--{k.replace('_', '-')} {v}" for k, v, default in
             (("kernels", kernels, "optimized"), ("memory_plan", memory_plan, "smallest"))
             if v != default]
    if given and backend != "c":
        raise EdgeslimError(f"{' and '.join(given)} choose(s) a variant of the C library, which "
                            f"--backend {backend} does not write",
                            "Add --backend c, or drop " + " and ".join(g.split()[0] for g in given) + ".")


def check_output_location(out, target: str) -> Path:
    """Where a build writes, checked before any work (and again before the bundle moves in):
    OUT a writable folder (or creatable), OUT/<target> absent or a bundle edgeslim wrote;
    otherwise OutputError. Returns OUT as a Path."""
    from edgeslim.io.outputs import check_output_folder, check_replaceable

    out = check_output_folder(out)
    check_replaceable(out / _safe_dir_name(str(target)))
    return out


def check_front_end(tgt, front_end: dict | None) -> None:
    """A front end is stated for the web page only, and must be one the page implements."""
    if front_end is None:
        return
    if tgt.kind != "web":
        raise EdgeslimError(f"a front end (--audio-front-end) is for the web target; {tgt.profile} is a "
                            f"{tgt.kind} target", "Drop --audio-front-end, or build with --target web.")
    from edgeslim.bundle.web import AUDIO_FRONT_ENDS

    audio = front_end.get("audio")
    if isinstance(audio, str) and audio not in AUDIO_FRONT_ENDS:
        raise EdgeslimError(f"unknown audio front end {audio!r}", f"Known: {', '.join(AUDIO_FRONT_ENDS)}.")


def write_bundle(out, target: str, tgt, *, model_bytes: bytes, fp16_bytes: bytes | None, model_name: str,
                 labels, check, backend: str, pack_weights: bool, report: dict, recipe_toml: str | None,
                 kernels: str = "optimized", memory_plan: str = "smallest",
                 progress: Progress, manifest_extra: dict, timings: dict | None = None,
                 t_start: float | None = None, reference=None, front_end: dict | None = None) -> Path:
    """Write the bundle into a temporary folder beside ``out/<target>`` and move it there once
    every file is written (nothing half-written is ever at the final path). ``report`` gets the
    C library's figures (``--backend c``) and, with ``timings``, the wall times; it is written as
    report.json, report.md and report.html. ``reference``: (x, y) test samples a bundle may ship to check
    itself on the device (the web page). Returns the bundle's folder."""
    from edgeslim.io.outputs import check_replaceable
    from edgeslim.report import render_markdown
    from edgeslim.report.html import render_html

    bundle_name = _safe_dir_name(str(target))
    out = check_output_location(out, target)  # again: the folder may have appeared during the build
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_name}.", dir=out))
    try:
        (tmp / "model.tflite").write_bytes(model_bytes)
        if fp16_bytes is not None:
            (tmp / "model_fp16.tflite").write_bytes(fp16_bytes)
        if recipe_toml is not None:
            (tmp / "recipe.toml").write_text(recipe_toml, encoding="utf-8")
        from edgeslim import bundle

        bundle.write_target_files(tmp, tgt, model_bytes=model_bytes, fp16_bytes=fp16_bytes,
                                  model_name=model_name, labels=labels, check=check, reference=reference,
                                  front_end=front_end)
        if backend == "c":
            from edgeslim.bundle.render import c_identifier
            from edgeslim.codegen import generate

            progress.stage("codegen", "generating the interpreter-free C library")
            t = time.monotonic()
            # the profile's cpu.features choose the kernels (DSP where it has them) unless
            # kernels="reference"
            cg = generate(model_bytes, tmp / "c", name=c_identifier(model_name), pack_weights=pack_weights,
                          target=tgt, kernels=kernels, layer_by_layer=memory_plan == "layer-by-layer")
            report["codegen"] = {
                **cg.report(),
                # the same model under TFLite Micro, for comparison (64-bit host measurement)
                "tflm_arena_measured_bytes": getattr(check, "arena_measured_bytes", None),
                "pack_weights": pack_weights,
            }
            if timings is not None:
                timings["codegen"] = time.monotonic() - t
        from edgeslim.report.memory import activation_timeline

        report["memory_timeline"] = activation_timeline(model_bytes)
        if timings is not None:
            report["timings_s"] = {**timings, "total": time.monotonic() - t_start}
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        (tmp / "report.md").write_text(render_markdown(report), encoding="utf-8")
        progress.stage("report", "drawing report.html")
        (tmp / "report.html").write_text(render_html(report), encoding="utf-8")
        from edgeslim.bundle.manifest import write_manifest

        write_manifest(tmp, target=tgt, model_path=tmp / "model.tflite", extra=manifest_extra)
        final_dir = out / bundle_name
        check_replaceable(final_dir)
        _replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress.stage("done", f"bundle written to {final_dir}")
    return final_dir


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is replaced only after ``src`` is complete."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
