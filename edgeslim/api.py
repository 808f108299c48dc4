"""The public Python API: everything the CLI does, one call away.

    import edgeslim
    result = edgeslim.build("model.keras", "data.npz", target="rpi4", out="out")
    result.report["metric"]

Works in a notebook that already imported TensorFlow with Keras 3 and passes an
in-memory Keras 3 model: TFMOT needs Keras 2 (tf_keras), which a process can
only select before TensorFlow is first imported, so in that case the model and
data are saved to a temporary folder and the build runs in a child Python
process; the result is read back from the bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError
from edgeslim.pipeline import BuildResult, Progress

# keyword arguments of build() that map onto recipe flags
_FLAG_KEYS = (
    "seed", "sparsity", "structure", "clusters", "epochs", "prune_epochs", "cluster_epochs",
    "qat_epochs", "representative_samples", "allow_float_fallback", "distill_width",
    "distill_epochs", "temperature", "alpha", "rank_energy", "calibration", "max_drop", "no_guard",
    "prune_channels", "channels_epochs", "activations", "float_layers", "float_worst",
)


def _is_keras3_model(model) -> bool:
    mod = type(model).__module__
    return mod.startswith("keras.") or mod == "keras"


def _tf_keras_usable_here() -> bool:
    """True when TFMOT can run in this process (tf.keras is, or can still become, tf_keras)."""
    if "tensorflow" not in sys.modules:
        return True
    from edgeslim._tf import legacy_keras_active

    return legacy_keras_active()


def load_model(path, *, trust: bool = False):
    from edgeslim.io.models import load_model as _load

    return _load(path, trust=trust)


def load_data(path, **kwargs):
    from edgeslim.io.data import load_data as _load

    return _load(path, **kwargs)


def distill(teacher, data, *, student=None, width=None, out=None, **kwargs):
    """Distil ``teacher`` (a path, a tf_keras model, or a list of them) into ``student``
    (a model or path) or into a student derived with ``width``; see
    ``edgeslim.compress.distill.distill_model`` for every option. With ``out``, the
    student is saved there (.keras). Returns the stage outcome (``.model``, ``.info``)."""
    from edgeslim.compress.distill import distill_model

    return distill_model(teacher, data, student=student, width=width, out=out, **kwargs)


def build(
    model,
    data,
    *,
    target: str = "rpi",
    recipe=None,
    out: str | Path = "out",
    no_prune: bool = False,
    no_cluster: bool = False,
    no_qat: bool = False,
    ram=None,
    flash=None,
    trust_model: bool = False,
    backend: str = "tflm",
    pack_weights: bool = False,
    kernels: str = "optimized",
    memory_plan: str = "smallest",
    teacher=None,
    labels: list[str] | None = None,
    name: str | None = None,
    verbose: bool = True,
    test_data=None,
    **flags: Any,
) -> BuildResult:
    """Compress, convert, check and bundle ``model`` for ``target``; see ``edgeslim build --help``.

    ``model``: a path, a tf_keras model, or a Keras 3 model; or a path to an int8 ``.tflite``
    converted elsewhere, which is checked and bundled as it is (``data`` may then be None; given,
    it scores the model). ``data``: a path (.npz, image folder), a Dataset, or a dict of arrays
    with the .npz keys.
    Other keyword arguments are the recipe flags: seed, sparsity, structure,
    clusters, epochs, prune_epochs, cluster_epochs, qat_epochs,
    representative_samples, allow_float_fallback, distill_width, distill_epochs,
    temperature, alpha, rank_energy, calibration, max_drop, no_guard, activations ("int16":
    16x8), float_layers (layer names or regexes kept in float), float_worst. ``teacher``: a
    path (or a list of paths) of teacher models to distill into ``model`` first.
    ``test_data``: a path (.npz with x_test, y_test; image folder) scored as the test split.
    """
    from edgeslim import recipe as recipe_mod

    unknown = sorted(set(flags) - set(_FLAG_KEYS))
    if unknown:
        raise TypeError(f"build() got unknown keyword argument(s): {', '.join(unknown)}")
    drop, add = recipe_mod.stage_flags({**flags, "no_prune": no_prune, "no_cluster": no_cluster,
                                         "no_qat": no_qat})
    teachers = teacher if isinstance(teacher, (list, tuple)) else ([teacher] if teacher is not None else [])

    from edgeslim.prebuilt import build_prebuilt, is_tflite

    if isinstance(model, (str, Path)) and is_tflite(model):
        given = [k for k, v in {**flags, "recipe": recipe, "teacher": teacher, "no_prune": no_prune,
                                 "no_cluster": no_cluster, "no_qat": no_qat}.items() if v not in (None, False)]
        if given:
            from edgeslim.errors import EdgeslimError

            raise EdgeslimError(f"{Path(model).name} is already converted: {', '.join(given)} do not apply to it",
                                hint="Give the Keras model or SavedModel to compress it, or drop those arguments.")
        progress = Progress(echo=(lambda line: print(line, flush=True)) if verbose else (lambda line: None))
        with tempfile.TemporaryDirectory(prefix="edgeslim-data-") as tmp:
            if isinstance(data, dict):
                data = _dict_to_dataset_path(data, Path(tmp))
            return build_prebuilt(model, data, target=target, out=out, ram=ram, flash=flash, backend=backend,
                                  pack_weights=pack_weights, kernels=kernels, memory_plan=memory_plan,
                                  labels=labels, name=name, progress=progress,
                                  test_data=test_data)

    in_process = _tf_keras_usable_here() and not any(_is_keras3_model(m) for m in [model, *teachers])
    if in_process:
        table = recipe_mod.flags_to_table(**flags)
        progress = Progress(echo=(lambda line: print(line, flush=True)) if verbose else (lambda line: None))
        from edgeslim.pipeline import build as _build

        with tempfile.TemporaryDirectory(prefix="edgeslim-data-") as tmp:
            if isinstance(data, dict):
                data = _dict_to_dataset_path(data, Path(tmp))
            return _build(
                model, data, target=target, recipe=recipe, flags=table, drop_stages=drop,
                add_stages=add, teacher=list(teachers) or None, out=out, ram=ram, flash=flash,
                trust_model=trust_model, backend=backend, pack_weights=pack_weights,
                kernels=kernels, memory_plan=memory_plan, labels=labels, name=name, progress=progress, test_data=test_data,
            )
    return _build_in_child(
        model, data, target=target, recipe=recipe, out=out, drop=drop, ram=ram, flash=flash,
        trust_model=trust_model, backend=backend, pack_weights=pack_weights, teachers=teachers,
        kernels=kernels, memory_plan=memory_plan,
        labels=labels, name=name, verbose=verbose, flags=flags, test_data=test_data,
    )


def _dict_to_dataset_path(data: dict, folder: Path) -> Path:
    path = folder / "data.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
    return path


def _dataset_to_npz(ds, folder: Path) -> Path:
    splits = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return _dict_to_dataset_path({k: getattr(ds, k) for k in splits}, folder)


def _save_for_child(model, folder: Path, name: str) -> Path:
    if isinstance(model, (str, Path)):
        return Path(model)
    path = folder / f"{name}.keras"
    model.save(path)
    return path


def _build_in_child(model, data, *, target, recipe, out, drop, ram, flash, trust_model, backend,
                    pack_weights, teachers, labels, name, verbose, flags, test_data=None,
                    kernels: str = "optimized", memory_plan: str = "smallest") -> BuildResult:
    from edgeslim import recipe as recipe_mod
    from edgeslim.io.dataset import Dataset

    with tempfile.TemporaryDirectory(prefix="edgeslim-child-") as tmp:
        tmp = Path(tmp)
        model_path = _save_for_child(model, tmp, name or getattr(model, "name", None) or "model")
        if isinstance(data, Dataset):
            data_path = _dataset_to_npz(data, tmp)
        elif isinstance(data, dict):
            data_path = _dict_to_dataset_path(data, tmp)
        else:
            data_path = Path(data)
        cmd = [sys.executable, "-m", "edgeslim.cli", "build", str(model_path), "--data", str(data_path),
               "--target", target, "--out", str(out), "--backend", backend]
        if isinstance(recipe, recipe_mod.Recipe):
            (tmp / "recipe.toml").write_text(recipe.to_toml())
            cmd += ["--recipe", str(tmp / "recipe.toml")]
        elif isinstance(recipe, dict):
            import tomli_w

            (tmp / "recipe.toml").write_text(tomli_w.dumps(recipe))
            cmd += ["--recipe", str(tmp / "recipe.toml")]
        elif recipe is not None:
            cmd += ["--recipe", str(recipe)]
        for key, value in flags.items():
            opt = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    cmd.append(opt)
            elif value is not None:
                cmd += [opt, str(value)]
        for stage in drop:
            cmd.append(f"--no-{stage}")
        for opt, value in (("--ram", ram), ("--flash", flash), ("--name", name),
                           ("--test-data", test_data)):
            if value is not None:
                cmd += [opt, str(value)]
        if trust_model:
            cmd.append("--trust-model")
        if pack_weights:
            cmd.append("--pack-weights")
        if kernels != "optimized":
            cmd += ["--kernels", kernels]
        if memory_plan != "smallest":
            cmd += ["--memory-plan", memory_plan]
        for i, t in enumerate(teachers):
            cmd += ["--teacher", str(_save_for_child(t, tmp, f"teacher{i}"))]
        if labels:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
            cmd += ["--labels", str(tmp / "labels.txt")]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if verbose and proc.stdout:
            print(proc.stdout, end="")
        if proc.returncode != 0:
            message = proc.stderr.strip().splitlines()
            errors = [line for line in message if line.startswith("error:")]
            raise EdgeslimError(
                errors[-1][len("error: "):] if errors else f"the build failed (exit {proc.returncode})",
                "\n".join(message[-5:]) if not errors else None,
            )
    from edgeslim.pipeline import _safe_dir_name

    bundle_dir = Path(out) / _safe_dir_name(target)
    report = json.loads((bundle_dir / "report.json").read_text())
    return BuildResult(bundle_dir=bundle_dir, model_path=bundle_dir / "model.tflite", report=report,
                       recipe=report.get("recipe"))
