"""Loading users' Keras models safely, as tf_keras models ready for TFMOT.

:func:`load_model` accepts ``.keras`` (Keras 3 or tf_keras), ``.h5`` (either) and tf_keras
SavedModel folders. tf_keras models load directly; Keras 3 models (the default of
TensorFlow >= 2.16) are rebuilt as tf_keras models and checked output for output by
:mod:`edgeslim.io.keras3_bridge` (max abs diff <= 1e-5 * max(1, max |y|)).

Safe loading: nothing in the file may run code by default. ``.keras`` files load with
``safe_mode=True``; every format's architecture is scanned before anything is deserialized
and refused when it holds a Lambda layer (Python bytecode), a custom (unknown) layer class
or a serialized function, unless ``trust=True`` (``--trust-model``). Users' files are only
ever opened for reading.
"""

from __future__ import annotations

import functools
import inspect
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from edgeslim._tf import keras
from edgeslim.errors import ModelLoadError
from edgeslim.io.keras3_bridge import (
    ABS_TOLERANCE,
    CHECK_BATCH,
    bridge_keras3_model,
    is_op_entry,
    rebuild_and_check,
    short_error,
)

KERAS3 = "keras3"
KERAS2 = "keras2"
H5 = "h5"
SAVEDMODEL = "savedmodel"

TRUST_HINT = "If you trust this file, pass --trust-model (trust=True in Python) to load it anyway."

# Layers whose config carries code or reaches outside the file: refused unless trusted.
UNSAFE_LAYERS = {
    "Lambda": "runs Python code stored in the file",
    "TFOpLambda": "calls a TensorFlow function named in the file",
    "SlicingOpLambda": "calls a TensorFlow function named in the file",
    "TFSMLayer": "loads another SavedModel from a path named in the file",
    "TorchModuleWrapper": "unpickles a PyTorch module (runs code)",
    "JaxLayer": "wraps a Python function",
    "FlaxLayer": "wraps a Python function",
}
UNSAFE_OBJECTS = {"__lambda__", "function"}  # serialized Python functions (Keras 3)
MODEL_CLASSES = {"Functional", "Sequential", "Model"}


@dataclass
class LoadedModel:
    """A user's model, ready for TFMOT, and how it was obtained (for the report)."""

    model: Any  # a tf_keras Model
    path: Path
    format: str  # "keras3" | "keras2" | "h5" | "savedmodel"
    bridged: bool = False  # rebuilt from Keras 3
    max_abs_diff: float | None = None  # measured, original vs bridged
    tolerance: float | None = None  # the bound max_abs_diff was checked against
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# load_model
# ---------------------------------------------------------------------------
def load_model(path, *, trust: bool = False) -> LoadedModel:
    """Load a ``.keras``, ``.h5`` or SavedModel-folder model as a tf_keras model.

    Keras 3 models are rebuilt as tf_keras models and checked output for output
    (see the module docstring). Raises ModelLoadError for a missing, corrupt,
    unsafe (unless ``trust``) or unmappable model.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"{path}: no such file or folder",
            hint="Check the model path (a .keras or .h5 file, or a SavedModel folder).",
        )
    if path.is_dir():
        return _load_savedmodel(path, trust=trust)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _load_keras_archive(path, trust=trust)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, trust=trust)
    raise ModelLoadError(
        f"{path}: unsupported model format {suffix or '(no extension)'!r}",
        hint="edgeslim reads Keras models: a .keras or .h5 file, or a SavedModel folder "
        "saved by Keras (e.g. model.save('model.keras')).",
    )


def _load_keras_archive(path: Path, *, trust: bool) -> LoadedModel:
    try:
        with zipfile.ZipFile(path, "r") as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelLoadError(
                    f"{path}: not a Keras model archive (no config.json inside)",
                    hint="Save the model with model.save('model.keras').",
                )
            config = json.loads(zf.read("config.json"))
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    except ModelLoadError:
        raise
    except RecursionError:
        raise _too_deep(path) from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"{path}: not a valid .keras file ({short_error(exc)})",
            hint="The file is damaged or is not a Keras model; save it again with "
            "model.save('model.keras').",
        ) from None
    version = str(meta.get("keras_version", ""))
    notes = [f"loaded {path.name} (.keras, saved with Keras {version or 'unknown version'})"]
    _refuse_unsafe(config, path=path, trust=trust, notes=notes)

    if version.startswith("2."):
        model = _call_loader(
            path, "tf_keras .keras",
            lambda: keras.models.load_model(path, compile=False, safe_mode=not trust),
        )
        return LoadedModel(model=model, path=path, format=KERAS2, notes=notes)

    import keras as keras3

    model3 = _call_loader(
        path, "Keras 3 .keras",
        lambda: keras3.saving.load_model(path, compile=False, safe_mode=not trust),
    )
    return _bridged(model3, path=path, fmt=KERAS3, notes=notes)


def _load_h5(path: Path, *, trust: bool) -> LoadedModel:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", b"")
    except OSError as exc:
        raise ModelLoadError(
            f"{path}: not a readable HDF5 file ({short_error(exc)})",
            hint="The file is damaged or truncated; save the model again.",
        ) from None
    if raw is None:
        raise ModelLoadError(
            f"{path}: this .h5 file holds weights only, no model architecture",
            hint="Save the whole model with model.save('model.keras') (or .h5), "
            "not model.save_weights().",
        )
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if isinstance(version, bytes):
        version = version.decode("utf-8")
    try:
        config = json.loads(raw)
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as exc:
        raise ModelLoadError(
            f"{path}: the model architecture stored in the .h5 file is not valid JSON "
            f"({short_error(exc)})",
            hint="The file is damaged; save the model again.",
        ) from None
    notes = [f"loaded {path.name} (.h5, saved with Keras {version or 'unknown version'})"]
    _refuse_unsafe(config, path=path, trust=trust, notes=notes)

    if str(version).startswith("3."):
        import keras as keras3

        model3 = _call_loader(
            path, "Keras 3 .h5",
            lambda: keras3.saving.load_model(path, compile=False, safe_mode=not trust),
        )
        return _bridged(model3, path=path, fmt=H5, notes=notes)
    model = _call_loader(path, "tf_keras .h5", lambda: keras.models.load_model(path, compile=False))
    return LoadedModel(model=model, path=path, format=H5, notes=notes)


def _load_savedmodel(path: Path, *, trust: bool) -> LoadedModel:
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(
            f"{path}: is a folder but not a SavedModel (no saved_model.pb)",
            hint="Give a .keras or .h5 file, or a SavedModel folder saved by Keras.",
        )
    meta_path = path / "keras_metadata.pb"
    if not meta_path.is_file():
        raise ModelLoadError(
            f"{path}: a SavedModel without Keras metadata (a bare tf.Module or an export "
            "artifact); edgeslim needs the Keras layers",
            hint="Save the Keras model itself: model.save('model.keras'), or with tf_keras "
            "model.save('folder', save_format='tf').",
        )
    from tf_keras.protobuf import saved_metadata_pb2

    try:
        saved = saved_metadata_pb2.SavedMetadata()
        saved.ParseFromString(meta_path.read_bytes())
        nodes = [json.loads(node.metadata) for node in saved.nodes]
    except Exception as exc:  # protobuf raises its own DecodeError; json raises ValueError
        raise ModelLoadError(
            f"{path}: the Keras metadata of the SavedModel is damaged ({short_error(exc)})",
            hint="Save the model again.",
        ) from None
    notes = [f"loaded {path.name} (SavedModel with Keras metadata)"]
    for node in nodes:
        cls = node.get("class_name")
        if cls:
            _refuse_unsafe(
                {"class_name": cls, "config": {"name": node.get("name", "?")}},
                path=path, trust=trust, notes=notes, nested=False,
            )
    model = _call_loader(
        path, "tf_keras SavedModel", lambda: keras.models.load_model(path, compile=False)
    )
    if not isinstance(model, keras.Model):
        raise ModelLoadError(
            f"{path}: the SavedModel did not load as a Keras model", hint=TRUST_HINT
        )
    return LoadedModel(model=model, path=path, format=SAVEDMODEL, notes=notes)


def _call_loader(path: Path, what: str, fn):
    try:
        return fn()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: could not be loaded as a {what} model ({short_error(exc)})",
            hint="Check that the file is complete and was saved with model.save(); "
            "models with custom layers need those layers registered and --trust-model.",
        ) from None


def _bridged(model3, *, path: Path, fmt: str, notes: list[str]) -> LoadedModel:
    result = rebuild_and_check(model3)
    notes.append(
        f"rebuilt the Keras 3 model as a tf_keras model ({len(result.pairs)} layers, weights "
        f"copied); outputs match: max abs diff {result.max_abs_diff:.2e} <= {result.tolerance:.1e} "
        f"on {CHECK_BATCH} seeded random inputs"
    )
    notes.extend(result.notes)
    return LoadedModel(
        model=result.model,
        path=path,
        format=fmt,
        bridged=True,
        max_abs_diff=result.max_abs_diff,
        tolerance=result.tolerance,
        notes=notes,
    )


# ---------------------------------------------------------------------------
# Safety scan (before anything is deserialized)
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _known_layer_classes() -> frozenset[str]:
    import keras as keras3

    names = set(MODEL_CLASSES)
    for module, base in ((keras.layers, keras.layers.Layer), (keras3.layers, keras3.layers.Layer)):
        for name in dir(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, base):
                names.add(name)
    return frozenset(names - set(UNSAFE_LAYERS))


def _iter_layer_entries(config, *, nested: bool = True):
    """Yield (class_name, layer_name, entry) for the model and every layer it holds."""
    if not isinstance(config, dict):
        return
    cls = config.get("class_name")
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    if cls:
        yield cls, inner.get("name", config.get("name", "?")), config
    if not nested:
        return
    for layer in inner.get("layers", []) or []:
        yield from _iter_layer_entries(layer)
    for key in ("layer", "backward_layer"):  # wrappers: TimeDistributed, Bidirectional
        if isinstance(inner.get(key), dict):
            yield from _iter_layer_entries(inner[key])


def _find_functions(obj) -> bool:
    if isinstance(obj, dict):
        if obj.get("class_name") in UNSAFE_OBJECTS:
            return True
        return any(_find_functions(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_find_functions(v) for v in obj)
    return False


# How deep a model's JSON configuration may nest. Keras models nested several levels deep
# stay well under 100; the readers here and in Keras recurse once or twice per level, so a
# crafted file nested ~500 deep would end in RecursionError instead of a message.
MAX_CONFIG_DEPTH = 200


def _too_deep(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: the model configuration is nested more than {MAX_CONFIG_DEPTH} levels deep; "
        "no Keras model is, so the file is damaged or crafted",
        hint="Save the model again with model.save('model.keras').")


def _check_nesting(config, *, path: Path) -> None:
    """Refuse a configuration nested deeper than MAX_CONFIG_DEPTH (walked without recursion)."""
    stack = [(config, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(path)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _refuse_unsafe(config, *, path: Path, trust: bool, notes: list[str], nested=True) -> None:
    """Refuse Lambda layers, custom layer classes and serialized functions unless trusted."""
    _check_nesting(config, path=path)
    known = _known_layer_classes()
    for cls, name, entry in _iter_layer_entries(config, nested=nested):
        if is_op_entry(entry):
            continue  # a keras.ops operation: looked up inside Keras, no code in the file
        if cls in UNSAFE_LAYERS:
            problem = f"layer {name!r} is a {cls} layer ({UNSAFE_LAYERS[cls]})"
        elif cls not in known:
            problem = f"layer {name!r} has the custom class {cls!r} (code not in edgeslim)"
        elif cls not in MODEL_CLASSES and _find_functions(entry.get("config")):
            problem = f"layer {name!r} ({cls}) holds a serialized Python function"
        else:
            continue
        if not trust:
            raise ModelLoadError(f"{path}: {problem}; refused by default", hint=TRUST_HINT)
        notes.append(f"trusted by the user: {problem}")


__all__ = ["LoadedModel", "load_model", "bridge_keras3_model", "save_model_atomic", "ABS_TOLERANCE"]


def save_model_atomic(model, path: str | Path) -> Path:
    """Save ``model`` to ``path`` via a temporary file in the same folder, then rename."""
    import os
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
