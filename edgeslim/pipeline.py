"""The build driver: load -> compress -> convert -> check -> bundle, one stage after another.

Each step is a call into its own module; this file only orders them, times
them, checks the model between stages and collects the report. Nothing is
written to the output directory until every step has succeeded.
"""

from __future__ import annotations

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


def _safe_dir_name(name: str) -> str:
    """The target as typed becomes a directory name; a path-like spec keeps its stem."""
    if "/" in name or name.endswith(".toml"):
        name = Path(name).stem
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
) -> BuildResult:
    """Compress ``model``, convert it to int8, check it against ``target``, write the bundle.

    ``model``: a path (.keras, .h5, SavedModel dir) or an in-memory tf_keras model.
    ``data``: a path (.npz or image folder) or an edgeslim Dataset.
    ``recipe``: None, a path to a TOML recipe, a dict of recipe tables, or a Recipe.
    ``teacher``: a path or tf_keras model (or a list of them) that the distill stage
    distils into ``model``; without it, distill derives the student from ``model``.
    """
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
    if backend not in ("tflm", "c"):
        raise EdgeslimError(f"unknown backend {backend!r}", "Use --backend tflm (default) or --backend c.")
    if backend == "c" and tgt.kind != "mcu":
        raise EdgeslimError(
            f"--backend c is for microcontroller targets; {target} is a {tgt.kind} target",
            "Use a cortex-m* target, or drop --backend.",
        )
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
                       test_fraction=rcp.build.test_fraction)
    check_data_fits_model(ds, kmodel)
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
    float_tflite = convert.to_float_tflite(kmodel)
    stages_report = [{
        "name": "baseline", "metric": float_metric, "params": count_params(kmodel),
        "tflite_bytes": len(float_tflite), "tflite_gzip_bytes": _gzip_size(float_tflite),
        "tflite_kind": "float32", "wall_s": time.monotonic() - t,
    }]
    timings["baseline"] = time.monotonic() - t
    progress.echo(f"[baseline] float {ds.metric_name} = {float_metric:.4f}, "
                  f"float .tflite {len(float_tflite)} bytes")

    # -- compression stages --------------------------------------------------------
    current = float_model = kmodel
    layer_names = [layer.name for layer in kmodel.layers]
    stage_targets: list[dict] = []
    preserve: set[str] = set()
    qat_skipped: dict = {}
    qat_ran = False
    qat_choice: dict | None = None
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
        stage_targets.append(outcome.info.get("targets") or {})
        if stage != "qat":
            float_model = current
        if stage == "prune":
            preserve.add("sparsity")
        elif stage == "cluster":
            preserve.add("clusters")
        elif stage == "qat":
            qat_ran = True
            qat_skipped = dict(outcome.skipped)
        metric = ctx.evaluate(current, "test")
        stage_tflite = convert.to_int8_tflite(
            current, calib, int8_io=rcp.build.int8_io,
            allow_float_fallback=True,  # the strict check runs once, on the final model
        )
        if stage == "qat" and cfg.fallback_to_ptq:
            qat_choice = _qat_or_ptq(
                ctx, qat_bytes=stage_tflite,
                ptq_bytes=prev_tflite or convert.to_int8_tflite(
                    float_model, calib, int8_io=rcp.build.int8_io, allow_float_fallback=True),
            )
            if qat_choice["shipped"] == "ptq":
                current = float_model
                progress.echo(f"[qat] {qat_choice['reason']}")
        prev_tflite = stage_tflite
        figs = _tflite_figures(stage_tflite, _names(layer_names, current))
        wall = time.monotonic() - t
        timings[stage] = wall
        stages_report.append({
            # QAT adds quantizer state to the weights: count the model it wraps.
            "name": stage, "metric": metric, "params": count_params(float_model),
            "nonzero_weights": figs["nonzero_weights"],
            "tflite_bytes": figs["bytes"], "tflite_gzip_bytes": figs["gzip_bytes"],
            "tflite_kind": "int8", "weights": figs["inspect"].get("weights"),
            "info": outcome.info, "skipped": outcome.skipped, "wall_s": wall,
        })
        progress.echo(f"[{stage}] {ds.metric_name} = {metric:.4f}, int8 .tflite "
                      f"{figs['bytes']} bytes ({figs['gzip_bytes']} gzip'd), {wall:.1f}s")

    # -- convert ------------------------------------------------------------------
    t = time.monotonic()
    progress.stage("convert", f"fully-integer conversion ({len(calib)} calibration samples)")
    model_bytes = convert.to_int8_tflite(
        current, calib, int8_io=rcp.build.int8_io, allow_float_fallback=rcp.build.allow_float_fallback
    )
    final = _tflite_figures(model_bytes, _names(layer_names, current))
    from edgeslim.tflite_inspect import merge_targets, unmet_targets

    not_reached = unmet_targets(final["info"], merge_targets(*stage_targets))
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
    progress.stage("evaluate", "int8 model on the held-out set (LiteRT)")
    int8_pred = evaluate.run_litert(model_bytes, ds.x_test)
    int8_metric = ctx.score(int8_pred, ds.y_test)
    micro_metric = None
    micro_agreement = None
    if tgt.kind == "mcu":
        progress.stage("evaluate", "int8 model on the held-out set (TFLite Micro reference kernels)")
        micro_pred = evaluate.run_micro(model_bytes, ds.x_test)
        micro_metric = ctx.score(micro_pred, ds.y_test)
        if ds.task == CLASSIFICATION:
            micro_agreement = float(np.mean(np.argmax(micro_pred, -1) == np.argmax(int8_pred, -1)))
    timings["evaluate"] = time.monotonic() - t
    stages_report.append({
        "name": "int8", "metric": int8_metric, "metric_tflm": micro_metric,
        "params": count_params(float_model), "nonzero_weights": final["nonzero_weights"],
        "tflite_bytes": final["bytes"],
        "tflite_gzip_bytes": final["gzip_bytes"], "tflite_kind": "int8",
        "weights": final["inspect"].get("weights"), "wall_s": timings["convert"] + timings["evaluate"],
    })

    # -- report -----------------------------------------------------------------------
    from edgeslim.report import make_report, render_markdown

    per_class = None
    if ds.task == CLASSIFICATION and ds.num_classes:
        per_class = per_class_table(ds.y_test, float_pred, int8_pred, ds.num_classes, ds.class_names)
    report = make_report(
        model_name=model_name, model_source=model_source, model_notes=model_notes,
        target=tgt, dataset=ds, recipe=rcp, stages=stages_report,
        float_metric=float_metric, int8_metric=int8_metric, micro_metric=micro_metric,
        micro_agreement=micro_agreement, float_tflite_bytes=len(float_tflite),
        float_tflite_gzip=_gzip_size(float_tflite), final=final, per_class=per_class,
        qat_ran=qat_ran, qat_skipped=qat_skipped, qat_choice=qat_choice, check=check, timings=timings,
        not_reached=not_reached,
        total_s=time.monotonic() - t_start,
    )
    report["calibration"] = {"method": rcp.build.calibration, "samples": int(len(calib))}
    report["distillation"] = _distillation_summary(stages_report, int8_metric, ds)

    # -- write the bundle atomically ---------------------------------------------------------
    out = Path(out)
    bundle_name = _safe_dir_name(target)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_name}.", dir=out))
    try:
        (tmp / "model.tflite").write_bytes(model_bytes)
        if fp16_bytes is not None:
            (tmp / "model_fp16.tflite").write_bytes(fp16_bytes)
        (tmp / "recipe.toml").write_text(rcp.to_toml(), encoding="utf-8")
        from edgeslim import bundle

        bundle.write_target_files(
            tmp, tgt, model_bytes=model_bytes, fp16_bytes=fp16_bytes, model_name=model_name,
            labels=labels or (list(ds.class_names) if ds.class_names else None), check=check,
        )
        if backend == "c":
            from edgeslim.codegen import generate

            progress.stage("codegen", "generating the interpreter-free C library")
            from edgeslim.bundle.render import c_identifier

            cg = generate(model_bytes, tmp / "c", name=c_identifier(model_name),
                          pack_weights=pack_weights)
            report["codegen"] = {
                **cg.report(),
                # the same model under TFLite Micro, for comparison (64-bit host measurement)
                "tflm_arena_measured_bytes": getattr(check, "arena_measured_bytes", None),
                "pack_weights": pack_weights,
            }
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        (tmp / "report.md").write_text(render_markdown(report), encoding="utf-8")
        from edgeslim.bundle.manifest import write_manifest

        write_manifest(tmp, target=tgt, model_path=tmp / "model.tflite",
                       extra={"model_name": model_name, "backend": backend})
        final_dir = out / bundle_name
        _replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress.stage("done", f"bundle written to {final_dir}")
    return BuildResult(bundle_dir=final_dir, model_path=final_dir / "model.tflite", report=report, recipe=rcp)


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
    if i.get("scratch_metric") is not None:
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
