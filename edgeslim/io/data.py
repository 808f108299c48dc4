"""Loading users' data sets (.npz or a folder of images per class) into a :class:`Dataset`.

- ``.npz`` with ``x_train, y_train`` and optionally ``x_val, y_val`` / ``x_test, y_test``.
  A missing split is cut from the training data by a seeded split (stratified for
  classification); ``Dataset.notes`` says what was done.
- A folder with one sub-folder of images per class (Keras' ``image_dataset_from_directory``
  layout): sorted folder names are the labels; images are resized to ``image_size``
  (default: the first image's size) and scaled to [0, 1] float32.

The task is "classification" when labels are integers (shape (N,) or (N, 1)), or floats that
are all whole numbers with shape (N,); otherwise "regression" (e.g. an autoencoder, y = x).
Pass ``task=`` (Python API) to override. Files are opened read-only (``.npz`` without pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeslim.errors import DataError
from edgeslim.io.dataset import CARVED, CLASSIFICATION, GIVEN, REGRESSION, TEST_FILE, Dataset

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
NPZ_HINT = (
    "Save the data with np.savez(path, x_train=..., y_train=...) and optionally "
    "x_val/y_val and x_test/y_test."
)


def load_data(
    path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size=None,
    task: str | None = None,
    test_data=None,
) -> Dataset:
    """Load ``path`` (an .npz file or a folder of class sub-folders) as a :class:`Dataset`.

    ``val_fraction`` and ``test_fraction`` are fractions of the training samples given,
    used only for the splits the file lacks. ``test_data``: a separate .npz
    (``x_test, y_test`` or ``x, y``) or image folder scored as the test split instead
    (nothing is then carved from the training data for testing).
    Raises DataError for anything malformed.
    """
    path = Path(path)
    _check_fractions(val_fraction, test_fraction)
    if task not in (None, CLASSIFICATION, REGRESSION):
        raise DataError(
            f"unknown task {task!r}",
            hint=f"Use task={CLASSIFICATION!r} or task={REGRESSION!r}, or leave it out to detect it.",
        )
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder",
            hint="Give an .npz file or a folder with one sub-folder of images per class.",
        )
    if path.is_dir():
        if task == REGRESSION:
            raise DataError(
                f"{path}: an image folder describes a classification task, not regression",
                hint="Save regression data as an .npz (x_train, y_train, ...).",
            )
        arrays, notes, class_names = _read_image_folder(path, image_size)
        task = CLASSIFICATION
    elif path.suffix.lower() == ".npz":
        arrays, notes = _read_npz(path)
        class_names = None
    else:
        raise DataError(
            f"{path}: unsupported data format {path.suffix or '(no extension)'!r}",
            hint="Give an .npz file (arrays x_train, y_train and optionally x_val, y_val, "
            "x_test, y_test) or a folder with one sub-folder of images per class.",
        )

    origins = {s: GIVEN for s in ("val", "test") if s in arrays}
    sources = {s: path for s in SPLITS}  # the file each split's arrays came from
    if test_data is not None:
        sources["test"] = Path(test_data)
        size = image_size if image_size is not None else arrays["train"][0].shape[1:3]
        arrays["test"], test_notes = _read_test_data(sources["test"], class_names, size)
        if origins.get("test") == GIVEN:
            notes.append(f"x_test/y_test of {path.name} replaced by --test-data {test_data}")
        notes += test_notes
        origins["test"] = TEST_FILE
    for split in SPLITS:
        if split in arrays:
            _check_arrays(sources[split], split, *arrays[split])
    task, arrays, task_notes = _prepare_targets(path, arrays, task)
    notes += task_notes
    missing = [s for s in ("val", "test") if s not in arrays]
    arrays, split_notes = _make_missing_splits(
        path, arrays, task=task, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    notes += split_notes
    for split in missing:
        origins[split] = CARVED
    test_source = (f"carved from the training samples of {path.name}"
                   if origins["test"] == CARVED else str(sources["test"]))

    num_classes = None
    if task == CLASSIFICATION:
        num_classes = int(max(int(arrays[s][1].max()) for s in SPLITS)) + 1
        if class_names is not None:
            num_classes = len(class_names)
    return Dataset(
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        task=task,
        num_classes=num_classes,
        class_names=class_names,
        source=str(path),
        notes=tuple(notes),
        val_origin=origins["val"],
        test_origin=origins["test"],
        test_source=test_source,
    )


def _read_test_data(path: Path, class_names, image_size, what: str = "--test-data") -> tuple[tuple, list[str]]:
    """The arrays of ``--test-data``: an .npz with ``x_test, y_test`` (or ``x, y``), or an
    image folder whose class sub-folders match the training data's. ``what`` names the
    option in messages."""
    if not path.exists():
        raise DataError(f"{what} {path}: no such file or folder",
                        hint="Give an .npz (x_test, y_test) or a folder of class sub-folders.")
    if path.is_dir():
        arrays, notes, classes = _read_image_folder(path, image_size)
        if class_names is None or tuple(classes) != tuple(class_names):
            raise DataError(
                f"{what} {path}: its class folders ({', '.join(classes[:10])}) are not "
                "the training data's classes"
                + (f" ({', '.join(class_names[:10])})" if class_names else " (the training data "
                   "is an .npz with integer labels)"),
                hint="Use the same class sub-folder names for the test images as for training, "
                "or give the test set as an .npz with x_test, y_test.",
            )
        return arrays["train"], [f"test split from {what} {path}: " + notes[0]]
    if path.suffix.lower() != ".npz":
        raise DataError(f"{what} {path}: unsupported format {path.suffix or '(none)'!r}",
                        hint="Give an .npz (x_test, y_test) or a folder of class sub-folders.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            pair = next(((x, y) for x, y in (("x_test", "y_test"), ("x", "y"))
                         if x in keys and y in keys), None)
            if pair is None:
                raise DataError(
                    f"{what} {path}: needs arrays x_test and y_test (or x and y); "
                    f"keys found: {', '.join(sorted(keys)) or 'none'}",
                    hint="Save it with np.savez(path, x_test=..., y_test=...).",
                )
            x, y = npz[pair[0]], npz[pair[1]]
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError (pickled arrays)
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(f"{what} {path}: not a readable .npz file "
                        f"({type(exc).__name__}: {detail})",
                        hint="Save numeric arrays with np.savez(path, x_test=..., y_test=...).") from None
    if x.dtype.kind not in "iubf":
        raise DataError(f"{what} {path}: {pair[0]} has dtype {x.dtype}, not numbers",
                        hint="Save the inputs as a numeric array (float32 preferred).")
    return (x.astype(np.float32, copy=False), y), [
        f"test split from {what} {path}: arrays {pair[0]}, {pair[1]} ({len(x)} samples)"]


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(value) < 1.0:
            raise DataError(
                f"{name}={value} is not between 0 and 1",
                hint="Use a fraction of the training samples such as 0.1.",
            )
    if val_fraction + test_fraction >= 0.9:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:.2f} leaves too "
            "little data for training",
            hint="Keep the two fractions below 0.9 together (e.g. 0.1 and 0.2).",
        )


def _read_npz(path: Path) -> tuple[dict, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = sorted(npz.files)
            loaded = {}
            for key in found:
                try:
                    loaded[key] = npz[key]
                except ValueError:
                    raise DataError(
                        f"{path}: array {key!r} holds Python objects (pickled), which "
                        "edgeslim does not unpickle",
                        hint="Save numeric arrays (e.g. float32 images, int labels).",
                    ) from None
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError from numpy
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise DataError(
            f"{path}: not a readable .npz file ({type(exc).__name__}: {detail})",
            hint=NPZ_HINT,
        ) from None
    missing = [k for k in ("x_train", "y_train") if k not in loaded]
    if missing:
        raise DataError(
            f"{path}: missing {' and '.join(missing)}; keys found: {', '.join(found) or 'none'}",
            hint=NPZ_HINT,
        )
    arrays = {"train": (loaded["x_train"], loaded["y_train"])}
    notes = [f"loaded {path.name}: arrays {', '.join(found)}"]
    for split in ("val", "test"):
        has_x, has_y = f"x_{split}" in loaded, f"y_{split}" in loaded
        if has_x != has_y:
            present, absent = (f"x_{split}", f"y_{split}") if has_x else (f"y_{split}", f"x_{split}")
            raise DataError(
                f"{path}: has {present} but no {absent}; keys found: {', '.join(found)}",
                hint=f"Save both {present} and {absent}, or neither (edgeslim then makes the "
                "split from the training data).",
            )
        if has_x:
            arrays[split] = (loaded[f"x_{split}"], loaded[f"y_{split}"])
    for split in list(arrays):
        x, y = arrays[split]
        if x.dtype.kind in "iub":
            notes.append(f"x_{split}: {x.dtype} converted to float32 (values unchanged)")
        elif x.dtype.kind == "f" and x.dtype != np.float32:
            notes.append(f"x_{split}: {x.dtype} converted to float32")
        elif x.dtype.kind not in "f":
            raise DataError(
                f"{path}: x_{split} has dtype {x.dtype}, not numbers",
                hint="Save the inputs as a numeric array (float32 preferred).",
            )
        arrays[split] = (x.astype(np.float32, copy=False), y)
    return arrays, notes


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_image_folder(path: Path, image_size) -> tuple[dict, list[str], tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{path}: a folder without class sub-folders",
            hint="Put the images of each class in their own sub-folder "
            "(path/cat/*.png, path/dog/*.png).",
        )
    files = {c: _list_images(path / c) for c in classes}
    empty = [c for c in classes if not files[c]]
    if empty:
        raise DataError(
            f"{path}: class folder(s) {', '.join(repr(c) for c in empty)} hold no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})",
            hint="Remove empty class folders or add images to them.",
        )

    def open_image(file: Path):
        try:
            img = Image.open(file)
            img.load()
            return img
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{file}: cannot read this image ({type(exc).__name__})",
                hint="Remove or replace the damaged file.",
            ) from None

    images, labels = [], []
    for label, cls in enumerate(classes):
        for file in files[cls]:
            images.append(open_image(file))
            labels.append(label)
    grayscale = all(img.mode in ("1", "L", "LA", "I", "I;16", "F") for img in images)
    mode, channels = ("L", 1) if grayscale else ("RGB", 3)
    if image_size is None:
        width, height = images[0].size
        size_note = f"image_size {height}x{width} taken from the first image"
    else:
        height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        size_note = f"image_size {height}x{width} as given"
    resized = 0
    x = np.empty((len(images), height, width, channels), dtype=np.float32)
    for i, img in enumerate(images):
        img = img.convert(mode)
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
            resized += 1
        x[i] = np.asarray(img, dtype=np.float32).reshape(height, width, channels) / 255.0
    y = np.asarray(labels, dtype=np.int64)
    notes = [
        f"loaded {len(images)} images from {len(classes)} class folders (labels = sorted "
        f"folder names: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})",
        f"{size_note}; {'grayscale, 1 channel' if grayscale else 'RGB, 3 channels'}; "
        "pixel values scaled to [0, 1] float32",
    ]
    if resized:
        notes.append(f"{resized} images resized (bilinear) to {height}x{width}")
    return {"train": (x, y)}, notes, tuple(classes)


# ---------------------------------------------------------------------------
# Checking and preparing
# ---------------------------------------------------------------------------
def _check_arrays(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path}: x_{split} is empty", hint="Give at least one sample per split.")
    if y.ndim == 0 or len(y) == 0:
        raise DataError(f"{path}: y_{split} is empty", hint="Give one target per sample.")
    if len(x) != len(y):
        raise DataError(
            f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}",
            hint="Give exactly one target (label) per input sample.",
        )
    for name, arr in ((f"x_{split}", x), (f"y_{split}", y)):
        if arr.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                raise DataError(
                    f"{path}: {name} holds {bad} NaN or infinite value(s)",
                    hint="Remove or impute the missing values before compressing.",
                )
        elif arr.dtype.kind not in "iub":
            raise DataError(
                f"{path}: {name} has dtype {arr.dtype}, not numbers",
                hint="Save numeric arrays (float32 inputs, integer labels).",
            )


def _is_whole(y: np.ndarray) -> bool:
    return bool(np.all(np.equal(np.mod(y, 1), 0)))


def _detect_task(y: np.ndarray) -> str:
    if y.dtype.kind in "iub":
        return CLASSIFICATION if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1) else REGRESSION
    return CLASSIFICATION if y.ndim == 1 and _is_whole(y) else REGRESSION


# A class label above this is not a class index (np.bincount over it would allocate
# 8 bytes per possible class: 2**40 asks for 8 TiB).
MAX_CLASS_LABEL = 1 << 20
# The Python API's override of the task detection (the CLI has no such option).
_TASK_OVERRIDE = "from Python, load_data(..., task='regression') overrides the detection"


def _is_one_hot(y: np.ndarray) -> bool:
    """Rows of 0s with exactly one 1, at least two columns: one-hot class labels."""
    if y.ndim != 2 or y.shape[1] < 2 or len(y) == 0:
        return False
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        return False
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def _prepare_targets(path: Path, arrays: dict, task: str | None):
    """Settle the task and put targets in the form the stages use."""
    notes = []
    y_train = arrays["train"][1]
    one_hot = task != REGRESSION and all(_is_one_hot(y) for _, y in arrays.values())
    if one_hot:
        arrays = {s: (x, np.argmax(y, axis=1)) for s, (x, y) in arrays.items()}
        notes.append(f"one-hot labels ({y_train.shape[1]} columns) read as class indices "
                     "(argmax of each row)")
        y_train = arrays["train"][1]
        task = task or CLASSIFICATION
    if task is None:
        task = _detect_task(y_train)
        why = (
            f"y_train holds {'integer' if y_train.dtype.kind in 'iub' else 'whole-number'} labels"
            if task == CLASSIFICATION
            else f"y_train is {y_train.dtype} with shape {y_train.shape[1:]}"
        )
        notes.append(f"task detected: {task} ({why}); {_TASK_OVERRIDE}")
    out = {}
    for split, (x, y) in arrays.items():
        if task == CLASSIFICATION:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise DataError(
                    f"{path}: y_{split} has shape {y.shape} but classification labels must be "
                    "one integer per sample, shape (N,) or (N, 1), or one-hot rows",
                    hint="Save integer class labels (one-hot rows are read as y.argmax(axis=1)).",
                )
            if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and _is_whole(y)):
                raise DataError(
                    f"{path}: y_{split} holds fractional values (or NaN or infinite ones) but the task is "
                    "classification",
                    hint=f"Give integer class labels 0, 1, ..., num_classes - 1 ({_TASK_OVERRIDE}).",
                )
            if len(y) and float(y.min()) < 0:
                raise DataError(
                    f"{path}: y_{split} holds the negative label {int(y.min())}",
                    hint="Class labels must be 0, 1, ..., num_classes - 1.",
                )
            if len(y) and float(y.max()) >= MAX_CLASS_LABEL:
                raise DataError(
                    f"{path}: y_{split} holds the label {int(y.max())}, which is not a class index "
                    f"(labels must be 0, 1, ..., num_classes - 1, below {MAX_CLASS_LABEL})",
                    hint="Map the labels to 0..num_classes-1 first, e.g. "
                         "np.unique(y, return_inverse=True)[1].",
                )
            y = y.astype(np.int64)
        else:
            y = y.astype(np.float32)
            if y.ndim == 1:
                y = y[:, None]
                if split == "train":
                    notes.append("regression targets of shape (N,) reshaped to (N, 1)")
        out[split] = (x, y)
    if task == REGRESSION:
        shapes = {s: out[s][1].shape[1:] for s in out}
        if len(set(shapes.values())) > 1:
            raise DataError(
                f"{path}: regression targets differ in shape between splits: "
                + ", ".join(f"y_{s} {shp}" for s, shp in shapes.items()),
                hint="Give targets of the same shape in every split.",
            )
    shapes = {s: out[s][0].shape[1:] for s in out}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"{path}: inputs differ in shape between splits: "
            + ", ".join(f"x_{s} {shp}" for s, shp in shapes.items()),
            hint="Give inputs of the same shape in every split.",
        )
    return task, out, notes


def _split_off(x, y, n: int, *, task: str, seed: int):
    """Split ``n`` samples off (x, y): stratified for classification when possible."""
    from sklearn.model_selection import train_test_split

    stratify = None
    note = "random"
    if task == CLASSIFICATION:
        present = np.unique(y, return_counts=True)[1]
        if present.min() >= 2 and n >= len(present) and len(y) - n >= len(present):
            stratify, note = y, "stratified"
    x_keep, x_out, y_keep, y_out = train_test_split(
        x, y, test_size=n, random_state=seed, stratify=stratify
    )
    return x_keep, y_keep, x_out, y_out, note


def _make_missing_splits(path, arrays, *, task, seed, val_fraction, test_fraction):
    notes = []
    x, y = arrays["train"]
    total = len(x)
    wanted = [(s, f) for s, f in (("test", test_fraction), ("val", val_fraction)) if s not in arrays]
    sizes = {s: max(1, int(round(f * total))) for s, f in wanted}
    if wanted and total - sum(sizes.values()) < 1:
        raise DataError(
            f"{path}: {total} training samples are too few to split off "
            + " and ".join(f"a {s} set" for s, _ in wanted),
            hint="Give more samples, or give x_val/y_val and x_test/y_test in the file.",
        )
    for split, fraction in wanted:
        x, y, x_out, y_out, how = _split_off(x, y, sizes[split], task=task, seed=seed)
        arrays[split] = (x_out, y_out)
        notes.append(
            f"x_{split}/y_{split}: {len(x_out)} samples ({fraction:.0%} of the {total} "
            f"training samples), {how} split with seed {seed}"
        )
    arrays["train"] = (x, y)
    return arrays, notes


# ---------------------------------------------------------------------------
# Data against the model
# ---------------------------------------------------------------------------
def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _matches(data_shape, model_shape) -> bool:
    return len(data_shape) == len(model_shape) and all(
        m is None or int(m) == int(d) for d, m in zip(data_shape, model_shape)
    )


def check_data_fits_model(ds: Dataset, model) -> None:
    """Raise DataError when the data's inputs or targets do not fit ``model``'s input/output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DataError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; edgeslim's data sets feed models with one input and one output",
            hint="Merge the inputs/outputs into one tensor each.",
        )
    expected_in = tuple(model.inputs[0].shape)[1:]
    data_in = tuple(ds.x_train.shape[1:])
    if not _matches(data_in, expected_in):
        hint = "Reshape the data or give a model made for it."
        known = [d for d in expected_in if d is not None]
        if len(known) == len(expected_in) and int(np.prod(known)) == int(np.prod(data_in)):
            hint = (
                f"The sizes agree: reshape the arrays, e.g. x.reshape(-1, "
                f"{', '.join(str(d) for d in expected_in)})."
            )
        raise DataError(
            f"data samples have shape {_fmt(data_in)} but the model expects {_fmt(expected_in)}",
            hint=hint,
        )
    out_shape = tuple(model.outputs[0].shape)[1:]
    if ds.task == CLASSIFICATION:
        if len(out_shape) != 1 or out_shape[0] is None:
            raise DataError(
                f"classification labels need a model output of shape (num_classes,), "
                f"the model outputs {_fmt(out_shape)}",
                hint=f"Give one integer label per sample ({_TASK_OVERRIDE}).",
            )
        units = int(out_shape[0])
        if units == 1:
            raise DataError(
                "the model has a single output unit but the data has class labels; edgeslim "
                "needs one output unit per class",
                hint="End the model with Dense(num_classes) (softmax or logits), or pass "
                "task='regression'.",
            )
        top = max(int(np.max(getattr(ds, f"y_{s}"))) for s in SPLITS)
        if top >= units:
            raise DataError(
                f"the data has label {top} but the model's output has only {units} units "
                f"(labels 0..{units - 1})",
                hint="Give a model with one output unit per class, or fix the labels.",
            )
    else:
        targets = tuple(ds.y_train.shape[1:])
        if not _matches(targets, out_shape):
            raise DataError(
                f"regression targets have shape {_fmt(targets)} but the model outputs "
                f"{_fmt(out_shape)}",
                hint="Give targets shaped like the model's output (for an autoencoder, y = x).",
            )


__all__ = ["load_data", "check_data_fits_model"]
