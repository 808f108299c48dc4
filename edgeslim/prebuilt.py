"""Bundles from an int8 ``.tflite`` built elsewhere (a converter script, a model zoo, another
tool, MLPerf Tiny's reference models): no compression, no conversion; the target checks, the
same bundle as a Keras build, and, with data, the model's accuracy under LiteRT and TFLite
Micro.

A float ``.tflite`` (or a dynamic-range one, whose activations stay float) is refused: the
file alone holds no calibration data to re-quantize it. A model that is integer inside with
float input and output (QUANTIZE at the entry, DEQUANTIZE at the exit) is accepted where the
target runs those conversions (Linux targets) and refused, naming them, on microcontrollers,
whose bundles take int8 tensors.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeslim.errors import DataError, ModelFormatError, ModelLoadError, TargetError
from edgeslim.modelgraph import BRIDGE_OPS  # ops that only convert float <-> integer at the edges

_FLOAT_TYPES = ("float32", "float16", "float64")


def is_tflite(path) -> bool:
    """True for a path that names a ``.tflite`` file (by suffix)."""
    return Path(str(path)).suffix.lower() == ".tflite"


@dataclass(frozen=True)
class Prebuilt:
    """An integer .tflite read and classified."""

    path: Path
    model_bytes: bytes
    sha256: str
    input_type: str
    output_type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    bridge_ops: tuple[str, ...]  # QUANTIZE/DEQUANTIZE ops at float edges, with their layer
    # every input's and output's type (the fields above describe the first of each)
    io_types: tuple[str, ...] = ()
    n_inputs: int = 1
    n_outputs: int = 1

    @property
    def float_io(self) -> bool:
        types = self.io_types or (self.input_type, self.output_type)
        return any(t in _FLOAT_TYPES for t in types)

    @property
    def single_io(self) -> bool:
        return self.n_inputs == 1 and self.n_outputs == 1


def read_prebuilt(path) -> Prebuilt:
    """Read and classify ``path``; a ModelLoadError for a missing, foreign or float model."""
    from edgeslim import modelgraph

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist" if not path.exists() else f"{path} is not a file",
                             hint="Give the path of an int8 .tflite file.")
    data = path.read_bytes()
    try:
        info = modelgraph.read(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc.message}", hint=exc.hint) from None
    if not info.inputs or not info.outputs:
        raise ModelLoadError(f"{path} has {len(info.inputs)} inputs and {len(info.outputs)} outputs",
                             hint="Give the model's .tflite as the converter wrote it.")
    float_ops = [o for o in info.operators if o.opcode not in BRIDGE_OPS
                 and any(t.lower() in _FLOAT_TYPES for t in o.input_dtypes + o.output_dtypes)]
    if float_ops:
        o = float_ops[0]
        kind = ("dynamic-range quantized (int8 weights, float activations)"
                if any(t.dtype == "INT8" and t.constant for t in info.tensors) else "float")
        raise ModelLoadError(
            f"{path} is a {kind} model: {len(float_ops)} op(s) compute in float, the first "
            f"{o.opcode}{f' from layer {o.layer!r}' if o.layer else ''}. A .tflite cannot be "
            "re-quantized to int8 from the file alone (it holds no calibration data)",
            hint="Give edgeslim the Keras model (.keras/.h5) or SavedModel instead: it converts it to "
                 "a fully-integer model with your data. Or convert it yourself with full-integer "
                 "quantization (a representative dataset) and pass that .tflite.")
    if not any(o.opcode not in BRIDGE_OPS for o in info.operators):
        raise ModelLoadError(f"{path} holds no computing op (only {', '.join(info.op_names) or 'nothing'})",
                             hint="Give the model's .tflite as the converter wrote it.")
    bridges = tuple(f"{o.opcode}{f' ({o.layer})' if o.layer else ''}" for o in info.operators
                    if o.opcode in BRIDGE_OPS
                    and any(t.lower() in _FLOAT_TYPES for t in o.input_dtypes + o.output_dtypes))
    i, o = info.input_tensors[0], info.output_tensors[0]
    return Prebuilt(path=path, model_bytes=data, sha256=hashlib.sha256(data).hexdigest(),
                    input_type=i.dtype.lower(), output_type=o.dtype.lower(), input_shape=tuple(i.shape),
                    output_shape=tuple(o.shape), bridge_ops=bridges,
                    io_types=tuple(t.dtype.lower() for t in [*info.input_tensors, *info.output_tensors]),
                    n_inputs=len(info.inputs), n_outputs=len(info.outputs))


class _TensorShape:
    def __init__(self, shape):
        self.shape = (None, *shape[1:]) if len(shape) > 1 else (None,)


class _ModelShapes:
    """What check_data_fits_model reads of a model: its name and input/output shapes."""

    def __init__(self, pre: Prebuilt):
        self.name = pre.path.name
        self.inputs = [_TensorShape(pre.input_shape)]
        self.outputs = [_TensorShape(pre.output_shape)]


_UNSEEN = "edgeslim did not train this model and cannot tell which samples it saw"


def load_scoring_data(data, *, test_data=None, seed: int = 0):
    """The data that scores a model edgeslim did not train, and which samples are scored, in
    words. Besides what ``edgeslim build`` takes, an .npz of ``x_test, y_test`` or ``x, y``
    alone will do (nothing is trained on it). The test split is scored when the data has one
    (x_test/y_test, or --test-data); otherwise every sample given."""
    from edgeslim.io import data as io_data
    from edgeslim.io.dataset import CARVED, CLASSIFICATION, GIVEN, Dataset

    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".npz" and test_data is None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                has_train = {"x_train", "y_train"} <= set(npz.files)
        except Exception:  # unreadable: load_data says why
            has_train = True
        if not has_train:
            (x, y), notes = io_data._read_test_data(path, None, None, what="--data")
            io_data._check_arrays(path, "test", x, y)
            task, arrays, task_notes = io_data._prepare_targets(path, {"train": (x, y)}, None)
            x, y = arrays["train"]
            ds = Dataset(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y, task=task,
                         num_classes=int(y.max()) + 1 if task == CLASSIFICATION else None,
                         source=str(path), notes=tuple(notes + task_notes), val_origin=GIVEN,
                         test_origin=GIVEN, test_source=str(path))
            return ds, x, y, f"every sample of {path.name} ({_UNSEEN})"
    ds = io_data.load_data(path, seed=seed, test_data=test_data)
    if ds.test_origin != CARVED:  # x_test/y_test in the file, or --test-data
        return ds, ds.x_test, ds.y_test, f"the test split given ({ds.test_source})"
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    return ds, x, y, f"every sample of {path.name} (it has no x_test/y_test; {_UNSEEN})"


def build_prebuilt(
    model,
    data=None,
    *,
    target: str = "rpi",
    out: str | Path = "out",
    ram=None,
    flash=None,
    backend: str = "tflm",
    pack_weights: bool = False,
    labels: list[str] | None = None,
    name: str | None = None,
    progress=None,
    test_data=None,
    seed: int = 0,
    front_end: dict | None = None,
    kernels: str = "optimized",
    memory_plan: str = "smallest",
):
    """Check an int8 ``.tflite`` against ``target`` and write the same bundle as a Keras build;
    with ``data``, score it (LiteRT, and TFLite Micro for a microcontroller). Every check runs
    before anything is written."""
    from edgeslim import evaluate, targets
    from edgeslim.io.data import check_data_fits_model
    from edgeslim.io.dataset import score
    from edgeslim.io.dataset import CLASSIFICATION
    from edgeslim.pipeline import BuildResult, Progress, check_backend, check_front_end, write_bundle

    progress = progress or Progress()
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    from edgeslim.pipeline import check_output_location

    out = check_output_location(out, target)  # before any work: a bad -o fails at once
    tgt = targets.load_target(target, ram=ram, flash=flash)
    check_backend(tgt, backend, target, kernels=kernels, memory_plan=memory_plan)
    check_front_end(tgt, front_end)

    t = time.monotonic()
    progress.stage("load", "reading the .tflite model" + (" and the data" if data is not None else ""))
    pre = read_prebuilt(model)
    if tgt.kind == "mcu" and pre.float_io:
        raise TargetError(
            f"{pre.path.name} takes {pre.input_type} input and gives {pre.output_type} output through "
            f"{', '.join(pre.bridge_ops)}; {tgt.profile}'s bundles (TFLite Micro and the C library) "
            "take int8 input and output",
            hint="Convert with inference_input_type and inference_output_type tf.int8, or build for a "
                 "Linux target (rpi4, android), which runs the float edges.")
    ds = None
    if data is not None and not pre.single_io:
        raise DataError(
            f"{pre.path.name} has {pre.n_inputs} inputs and {pre.n_outputs} outputs; edgeslim's "
            "data sets (--data) hold one input and one target per sample",
            hint="Build it without --data (nothing is scored), or export one input and output.")
    if data is not None:
        ds, x_eval, y_eval, where = load_scoring_data(data, test_data=test_data, seed=seed)
        check_data_fits_model(ds, _ModelShapes(pre))
    elif test_data is not None:
        raise DataError("--test-data needs --data too", hint="Pass the data with --data.")
    if labels is not None and len(labels) != (pre.output_shape[-1] if pre.output_shape else 0):
        raise DataError(f"--labels holds {len(labels)} class names but {pre.path.name} has "
                        f"{pre.output_shape[-1] if pre.output_shape else 0} outputs",
                        hint="Give one class name per line, in class-index order, one per output.")
    if ds is not None:
        from edgeslim.pipeline import MIN_SPLIT_SAMPLES

        if len(x_eval) < MIN_SPLIT_SAMPLES:
            raise DataError(f"{data}: {len(x_eval)} samples to score the model with (at least "
                            f"{MIN_SPLIT_SAMPLES})", hint="Give more samples, or leave out --data.")
    model_name = name or pre.path.stem
    timings["load"] = time.monotonic() - t

    t = time.monotonic()
    progress.stage("check", f"checking ops and memory against {tgt.name}")
    check = targets.check_model(pre.model_bytes, tgt)
    timings["check"] = time.monotonic() - t

    metric = {"measured": False, "name": None, "int8": None, "int8_tflm": None,
              "tflm_litert_top1_agreement": None, "evaluated_on": None, "samples": 0,
              "note": "no accuracy measured: pass --data to score the model"}
    per_class = None
    if ds is not None:
        t = time.monotonic()
        x, y = x_eval, y_eval
        progress.stage("evaluate", f"the model on {len(x)} samples (LiteRT)")
        pred = evaluate.run_litert(pre.model_bytes, x)
        metric.update(measured=True, name=ds.metric_name, int8=score(ds.task, pred, y),
                      higher_is_better=ds.higher_is_better, evaluated_on=where, samples=int(len(x)),
                      note=None)
        if tgt.kind == "mcu":
            progress.stage("evaluate", "the model on the same samples (TFLite Micro reference kernels)")
            micro_pred = evaluate.run_micro(pre.model_bytes, x)
            metric["int8_tflm"] = score(ds.task, micro_pred, y)
            if ds.task == CLASSIFICATION:
                metric["tflm_litert_top1_agreement"] = float(np.mean(
                    np.argmax(micro_pred, -1) == np.argmax(pred, -1)))
        if ds.task == CLASSIFICATION and ds.num_classes:
            from edgeslim.pipeline import _per_class

            per_class = [{"class": c, "name": ds.class_names[c] if ds.class_names else str(c),
                          "samples": int(np.sum(np.asarray(y).reshape(-1) == c)), "int8": acc}
                         for c, acc in enumerate(_per_class(y, pred, ds.num_classes))]
        timings["evaluate"] = time.monotonic() - t
        progress.echo(f"[evaluate] {ds.metric_name} {metric['int8']:.4f} (LiteRT)"
                      + (f", {metric['int8_tflm']:.4f} (TFLite Micro)" if metric["int8_tflm"] is not None else "")
                      + f" on {where}")

    from edgeslim.pipeline import _tflite_figures
    from edgeslim.report import SCHEMA_VERSION, _target_dict, library_versions

    final = _tflite_figures(pre.model_bytes)
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "prebuilt",
        "tool": {"name": "edgeslim", "versions": library_versions()},
        "model": {"name": model_name, "path": str(pre.path), "format": "tflite",
                  "already_converted": True, "sha256": pre.sha256,
                  "input": {"type": pre.input_type, "shape": list(pre.input_shape)},
                  "output": {"type": pre.output_type, "shape": list(pre.output_shape)},
                  "inputs": pre.n_inputs, "outputs": pre.n_outputs,
                  "float_edges": list(pre.bridge_ops),
                  "notes": ["came in already converted: no compression or conversion stage ran"]},
        "target": _target_dict(tgt),
        "data": None if ds is None else {
            "source": ds.source, "task": ds.task, "num_classes": ds.num_classes,
            "class_names": list(ds.class_names) if ds.class_names else None, "notes": list(ds.notes)},
        "metric": metric,
        "per_class": per_class,
        "size": {"int8_tflite_bytes": final["bytes"], "int8_tflite_gzip_bytes": final["gzip_bytes"]},
        "ops": final["inspect"].get("op_names"),
        "layers": final["inspect"].get("weights"),
        "check": check.to_dict() if hasattr(check, "to_dict") else check,
    }
    final_dir = write_bundle(
        out, target, tgt, model_bytes=pre.model_bytes, fp16_bytes=None, model_name=model_name,
        labels=labels or (list(ds.class_names) if ds is not None and ds.class_names else None),
        check=check, backend=backend, pack_weights=pack_weights, kernels=kernels,
        memory_plan=memory_plan, report=report, recipe_toml=None,
        progress=progress, timings=timings, t_start=t_start, front_end=front_end,
        reference=(x_eval, y_eval) if ds is not None else None,
        manifest_extra={"model_name": model_name, "backend": backend,
                        "source": {"format": "tflite", "already_converted": True, "sha256": pre.sha256}},
    )
    return BuildResult(bundle_dir=final_dir, model_path=final_dir / "model.tflite", report=report, recipe=None)


__all__ = ["Prebuilt", "build_prebuilt", "is_tflite", "load_scoring_data", "read_prebuilt"]
