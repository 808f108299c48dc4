#!/usr/bin/env python3
"""Does compression pay? Accuracy, size, RAM and latency of each recipe next to plain int8.

For each task (the built-in digits example; keyword spotting on
``../shared/data/spoken_digits_kws.npz`` with a DS-CNN-S trained here with Keras 3), this
builds the same float model with every variant in ``VARIANTS`` (same seed, same run), then
measures every bundle's ``model.tflite`` itself (the build report is not trusted):

- accuracy on the dataset's own val and test splits: LiteRT for every variant, TFLite Micro's
  reference kernels (``edgeslim.evaluate.run_micro``) for Cortex-M variants; drops in points
  from the float model and from ``plain-int8``;
- ``.tflite`` bytes; flash of the generated C library compiled with ``arm-none-eabi-gcc -Os``
  for Cortex-M4 (text + rodata + data); RAM: the TFLite Micro arena (measured,
  ``edgeslim.micro.measure_arena``) and the C backend's static arena plan; MACs;
- host LiteRT latency per inference (batch 1, median; variants interleaved with plain-int8);
- wall time of each build (a child ``edgeslim build`` process each, TensorFlow start-up included).

Ratios are against ``plain-int8`` (no compression stage) measured in the same run, never
against figures from another run. Latency is the host's LiteRT (x86-64), not a device.

    .venv/bin/python tools/bench_compress.py --task digits --quick      # smoke run, minutes
    .venv/bin/python tools/bench_compress.py --task kws                 # the real figures
    .venv/bin/python tools/bench_compress.py --task kws --variants plain-int8,rpi4-default
    .venv/bin/python tools/bench_compress.py --variant mine=my_recipe.toml@cortex-m4

The trained float models are cached under ``--work`` (default /tmp/edgeslim-bench):
``<work>/full/<task>/model-seed<S>-e<E>.keras`` (``quick/`` for --quick) with ``.json`` beside
it (float val/test accuracy); reruns skip training (delete the file to retrain after changing
the model). Results: ``results.json`` and ``results.md`` in the same folder;
``--render results.json`` prints the tables again.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KWS_NPZ = REPO.parent / "shared" / "data" / "spoken_digits_kws.npz"
DEFAULT_WORK = Path("/tmp/edgeslim-bench")


# -- the variants: add one by adding a line ---------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One build of the task's float model. ``recipe`` is a dict of recipe tables (layered
    over the target's default recipe, as ``--recipe`` is) or a path to a TOML file; None
    means the target's default recipe."""

    name: str
    target: str = "cortex-m4"
    recipe: dict | str | None = None
    backend: str = "c"  # "c" also writes the C library; "tflm" for TFLite Micro only
    pack_weights: bool = False
    note: str = ""


REFERENCE = "plain-int8"
VARIANTS: list[Variant] = [
    Variant(REFERENCE, recipe={"build": {"stages": []}},
            note="no compression stage: post-training int8 conversion only (THE reference)"),
    Variant("cm4-default", note="cortex-m4's default recipe, --backend c, accuracy guard on "
                                "(what a user gets)"),
    Variant("rpi4-default", target="rpi4", backend="tflm",
            note="rpi4's default recipe, accuracy guard on (what a user gets)"),
    Variant("channels-0.55-sensitivity", recipe={
        "build": {"stages": ["channels"], "guard": False},
        "channels": {"ratio": 0.55, "importance": "taylor", "allocation": "sensitivity"}},
            note="more channels removed, per-group ratios from a measured scan, guard off"),
    Variant("prune-cluster-qat", recipe={
        "build": {"stages": ["prune", "cluster", "qat"], "guard": False},
        "prune": {"sparsity": 0.5, "depthwise_sparsity": 0.25, "epochs": 2},
        "cluster": {"clusters": 16, "epochs": 2}, "qat": {"epochs": 2}},
            note="the round-1 cortex-m default (unstructured pruning, clustering, QAT), guard off"),
    Variant("prune-cluster-qat-packed", pack_weights=True, recipe={
        "build": {"stages": ["prune", "cluster", "qat"], "guard": False},
        "prune": {"sparsity": 0.5, "depthwise_sparsity": 0.25, "epochs": 2},
        "cluster": {"clusters": 16, "epochs": 2}, "qat": {"epochs": 2}},
            note="the same with --pack-weights (4-bit indices in the C library), guard off"),
    Variant("distill-0.5", recipe={
        "build": {"stages": ["distill"], "guard": False}, "distill": {"width": 0.5}},
            note="a width-0.5 student started from the model's own channels and distilled from "
                 "it; the build report compares it with the same student trained from scratch"),
]


# -- the tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    model_name: str  # also the C identifier prefix
    train_epochs: int
    quick_epochs: int
    val_label: str
    test_label: str
    labels: tuple[str, ...] | None = None


TASKS = {
    "digits": Task("digits", "digits_dscnn", 20, 5,
                   val_label="val (10% of train)", test_label="test (held-out 20%)"),
    "kws": Task("kws", "dscnn_s", 36, 3,
                val_label="val (unseen speakers)", test_label="test (unseen speakers)"),
}


def edgeslim_root() -> Path:
    """The checkout whose ``edgeslim`` this process imports (PYTHONPATH may point at a clean
    snapshot); every child process runs from it."""
    import edgeslim

    return Path(edgeslim.__file__).resolve().parents[1]


def edgeslim_source() -> dict:
    """Which edgeslim code the figures are for: its folder, git commit and whether the tree
    had uncommitted changes (or a SOURCE_COMMIT file in a ``git archive`` snapshot)."""
    root = edgeslim_root()
    out = {"root": str(root), "commit": None, "dirty": None}
    try:
        out["commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                       capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "edgeslim",
                                 "targets", "firmware_templates"], check=True, capture_output=True,
                                text=True).stdout
        out["dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        marker = root / "SOURCE_COMMIT"
        if marker.is_file():
            out["commit"], out["dirty"] = marker.read_text().strip(), False
    return out


def child_env(**extra: str) -> dict:
    root = str(edgeslim_root())
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data ---------------------------------------------------------------------------------


def prepare_data(task: Task, folder: Path, seed: int) -> tuple[Path, dict, list[str] | None]:
    """The .npz every variant gets (all three splits explicit, so no build makes its own)
    and its arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    if task.name == "kws":
        with np.load(KWS_NPZ) as d:
            arrays = {k: d[k] for k in d.files}
        labels = [str(s) for s in arrays.pop("labels")] if "labels" in arrays else None
        return KWS_NPZ, arrays, labels
    from sklearn.model_selection import train_test_split

    from edgeslim import examples

    path = folder / f"digits-seed{seed}.npz"
    if not path.exists():
        raw = examples.write_digits_npz(folder / f"digits-raw-seed{seed}.npz", seed=seed)
        with np.load(raw) as d:
            x_tr, x_val, y_tr, y_val = train_test_split(
                d["x_train"], d["y_train"], test_size=0.1, random_state=seed, stratify=d["y_train"])
            np.savez(path, x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val,
                     x_test=d["x_test"], y_test=d["y_test"])
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    return path, arrays, None


# -- the float model: trained with Keras 3 in a child process -------------------------------


def build_dscnn_s(keras3, *, num_classes: int = 12):
    """DS-CNN-S, MLPerf Tiny's keyword-spotting reference (about 24 k parameters, 2.66 M MACs).

    BatchNormalization momentum 0.9, not Keras' 0.99: with 3,240 training samples an epoch is
    33 steps, and at 0.99 the moving statistics still lag the batch statistics after a dozen
    epochs (the model then scores chance in inference mode while training accuracy is 99%).
    """
    L = keras3.layers
    inputs = keras3.Input((49, 10, 1), name="input")
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(momentum=0.9, name="conv1_bn")(x)
    x = L.ReLU(name="conv1_relu")(x)
    for i in range(1, 5):
        x = L.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"dw{i}_bn")(x)
        x = L.ReLU(name=f"dw{i}_relu")(x)
        x = L.Conv2D(64, 1, name=f"pw{i}")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"pw{i}_bn")(x)
        x = L.ReLU(name=f"pw{i}_relu")(x)
    x = L.Dropout(0.4, name="dropout")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="output")(x)
    return keras3.Model(inputs, outputs, name="dscnn_s")


def _child_train(task_name: str, npz: str, out: str, epochs: int, seed: int, info_path: str) -> int:
    """Runs in a process without TF_USE_LEGACY_KERAS: train with Keras 3, save .keras, write
    the float val/test accuracy. The weights kept are those of the best validation epoch."""
    import keras as keras3

    t0 = time.monotonic()
    with np.load(npz) as d:
        x_tr, y_tr, x_val, y_val, x_te, y_te = (d[k] for k in (
            "x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    history = None
    if task_name == "digits":
        from edgeslim import examples

        examples.train_digits_model(out, npz, seed=seed, epochs=epochs)
        model = keras3.models.load_model(out)
        recipe = f"edgeslim.examples.train_digits_model(epochs={epochs}, seed={seed})"
    else:
        import tensorflow as tf

        keras3.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        model = build_dscnn_s(keras3, num_classes=int(max(y_tr.max(), y_val.max(), y_te.max())) + 1)
        batch = 100
        steps = epochs * int(np.ceil(len(x_tr) / batch))
        schedule = keras3.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.01)
        model.compile(optimizer=keras3.optimizers.Adam(schedule),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

        class KeepBest(keras3.callbacks.Callback):
            best, weights, epoch = -1.0, None, -1

            def on_epoch_end(self, epoch, logs=None):
                acc = float(logs["val_accuracy"])
                print(f"  epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} "
                      f"acc {logs['accuracy']:.4f} val_acc {acc:.4f}", flush=True)
                if acc > self.best:
                    self.best, self.weights, self.epoch = acc, self.model.get_weights(), epoch + 1

        keep = KeepBest()
        h = model.fit(x_tr, y_tr, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch,
                      shuffle=True, verbose=0, callbacks=[keep])
        model.set_weights(keep.weights)
        history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
        recipe = (f"Adam, cosine-decayed lr 3e-3 -> 3e-5 over {epochs} epochs, batch {batch}, "
                  f"seed {seed}; weights of the best val epoch ({keep.epoch})")
        from edgeslim.io.models import save_model_atomic

        save_model_atomic(model, Path(out))

    def acc(x, y):
        return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))

    info = {"float_val": acc(x_val, y_val), "float_test": acc(x_te, y_te),
            "params": int(model.count_params()), "keras": keras3.__version__, "epochs": epochs,
            "seed": seed, "training": recipe, "history": history,
            "train_s": time.monotonic() - t0}
    Path(info_path).write_text(json.dumps(info, indent=2) + "\n")
    return 0


def float_model(task: Task, npz: Path, folder: Path, *, seed: int, epochs: int) -> tuple[Path, dict]:
    """The cached Keras 3 model and its float accuracy; trained (in a child) when absent."""
    path = folder / f"model-seed{seed}-e{epochs}.keras"
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        _log(f"{task.name}: cached float model {path}")
        return path, json.loads(info_path.read_text())
    _log(f"{task.name}: training the float model with Keras 3 ({epochs} epochs, seed {seed}) "
         f"in a child process")
    env = child_env()
    env.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3, as users train
    cmd = [sys.executable, str(Path(__file__).resolve()), "_train", task.name, str(npz), str(path),
           str(epochs), str(seed), str(info_path)]
    proc = subprocess.run(cmd, env=env, cwd=edgeslim_root())
    if proc.returncode != 0 or not info_path.exists():
        raise SystemExit(f"training the {task.name} model failed (exit {proc.returncode})")
    return path, json.loads(info_path.read_text())


# -- builds ----------------------------------------------------------------------------------


@dataclass
class BuildOutcome:
    variant: Variant
    status: str  # "ok", "skipped", "failed"
    message: str = ""
    bundle: Path | None = None
    wall_s: float | None = None
    report: dict = field(default_factory=dict)


def _recipe_problem(v: Variant, seed: int) -> str | None:
    """A RecipeError the variant's recipe raises here (e.g. a stage that does not exist
    yet), before a build is started for it."""
    from edgeslim import recipe as recipe_mod
    from edgeslim import targets
    from edgeslim.errors import EdgeslimError

    try:
        tgt = targets.load_target(v.target)
        recipe_mod.resolve(target_recipe=tgt.recipe,
                           recipe_file=v.recipe if isinstance(v.recipe, (str, Path)) else None,
                           recipe_table=v.recipe if isinstance(v.recipe, dict) else None,
                           flags={"build": {"seed": seed}})
    except EdgeslimError as exc:
        return " ".join(str(exc).split())  # the message already ends with the hint
    except ImportError as exc:  # a stage listed in recipe.STAGES whose module is not there yet
        return f"a stage of this recipe cannot be loaded: {exc}"
    return None


def run_build(v: Variant, task: Task, model: Path, npz: Path, folder: Path, *, seed: int,
              quick: bool, labels: list[str] | None) -> BuildOutcome:
    problem = _recipe_problem(v, seed)
    if problem:
        return BuildOutcome(v, "skipped", f"recipe error: {problem}")
    out = folder / "builds" / v.name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "edgeslim.cli", "build", str(model), "--data", str(npz),
           "--target", v.target, "--out", str(out), "--backend", v.backend, "--seed", str(seed),
           "--name", task.model_name]
    if v.recipe is not None:
        recipe_path = Path(v.recipe) if isinstance(v.recipe, (str, Path)) else out / "recipe.toml"
        if isinstance(v.recipe, dict):
            import tomli_w

            recipe_path.write_text(tomli_w.dumps(v.recipe))
        cmd += ["--recipe", str(recipe_path)]
    if v.pack_weights:
        cmd.append("--pack-weights")
    if quick:
        cmd += ["--epochs", "1"]
    if labels:
        (out / "labels.txt").write_text("\n".join(labels) + "\n")
        cmd += ["--labels", str(out / "labels.txt")]
    env = child_env(TF_USE_LEGACY_KERAS="1")
    log_path = out / "build.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=edgeslim_root(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if line.startswith("["):  # the build's progress lines
                print(f"    {v.name}: {line.rstrip()}", flush=True)
        rc = proc.wait()
    wall = time.monotonic() - t0
    if rc != 0:
        lines = log_path.read_text().splitlines()
        errors = [ln for ln in lines if ln.startswith("error:")]
        msg = errors[-1] if errors else f"exit {rc}; last lines: " + " | ".join(lines[-3:])
        status = "skipped" if "recipe" in msg.lower() else "failed"
        return BuildOutcome(v, status, f"{msg} (log: {log_path})", wall_s=wall)
    from edgeslim.pipeline import _safe_dir_name

    bundle = out / _safe_dir_name(v.target)
    report = json.loads((bundle / "report.json").read_text())
    return BuildOutcome(v, "ok", bundle=bundle, wall_s=wall, report=report)


# -- measurements ------------------------------------------------------------------------------


def c_library(model_bytes: bytes, outcome: BuildOutcome, work: Path, name: str):
    """(library folder, arena bytes of the static plan, MACs): the bundle's own C library when
    the variant built one, else generated here with ``edgeslim.codegen.generate``."""
    lib = outcome.bundle / "c"
    cg = outcome.report.get("codegen")
    if lib.is_dir() and cg:
        return lib, int(cg["arena_bytes"]), int(cg["macs"]), "bundle"
    from edgeslim import codegen

    res = codegen.generate(model_bytes, work / "c", name=name,
                           pack_weights=outcome.variant.pack_weights)
    return work / "c", int(res.arena_size), int(res.macs), "generated here"


def flash_m4_os(lib: Path, work: Path) -> dict:
    """Section sizes of the C library compiled for Cortex-M4 with -Os (flash = text + rodata
    + data). The compile and size helpers are the ones tools/bench_codegen.py uses
    (edgeslim.harness._testfw); its ``_flash`` is fixed at the default -O2, hence the call here."""
    from edgeslim.harness import toolchain

    objs = toolchain.cross_compile(sorted(lib.glob("*.c")), work / "obj-m4-Os", core="cortex-m4",
                              include_dirs=[lib], opt="-Os")
    s = toolchain.section_sizes(objs)
    return {**s.as_dict(), "flash": s.flash}


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(pred, -1) == np.asarray(y).reshape(-1)))


def measure(outcome: BuildOutcome, arrays: dict, work: Path, name: str, *, max_eval: int | None):
    from edgeslim import evaluate, micro, targets

    model_bytes = (outcome.bundle / "model.tflite").read_bytes()
    n = max_eval or None
    xv, yv, xt, yt = (arrays["x_val"][:n], arrays["y_val"][:n],
                      arrays["x_test"][:n], arrays["y_test"][:n])
    m: dict = {"tflite_bytes": len(model_bytes),
               # what a download or OTA update carries: where zeros and shared values pay
               "tflite_gzip_bytes": len(gzip.compress(model_bytes, compresslevel=9, mtime=0))}
    for split, x, y in (("val", xv, yv), ("test", xt, yt)):
        pred = evaluate.run_litert(model_bytes, x)
        m[f"litert_{split}"] = accuracy(pred, y)
        # which samples it gets wrong: for the paired comparison with plain-int8
        m[f"litert_{split}_wrong"] = np.flatnonzero(np.argmax(pred, -1) != y).tolist()
    if targets.load_target(outcome.variant.target).kind == "mcu":
        m["tflm_val"] = accuracy(evaluate.run_micro(model_bytes, xv), yv)
        m["tflm_test"] = accuracy(evaluate.run_micro(model_bytes, xt), yt)
    m["tflm_arena_bytes"] = micro.measure_arena(model_bytes)
    lib, arena, macs, source = c_library(model_bytes, outcome, work, name)
    m.update(c_arena_bytes=arena, macs=macs, c_library=source,
             c_sections_m4_Os=flash_m4_os(lib, work))
    m["c_flash_m4_Os"] = m["c_sections_m4_Os"]["flash"]
    # What the build's own report says, kept only to show whether it agrees.
    rm = outcome.report.get("metric", {})
    m["report_int8_test"] = rm.get("int8")
    m["report_tflm_test"] = rm.get("int8_tflm")
    return m


def latency(models: dict[str, bytes], x: np.ndarray, *, runs: int, warmup: int) -> dict:
    """Host LiteRT time per inference (batch 1), median over ``runs``. Every round times one
    invoke of each model, in an order rotated each round, so drifts in machine load hit
    all variants alike. Threads: LiteRT's default (EDGESLIM_THREADS if set)."""
    from edgeslim._quiet import native_stderr_to
    from edgeslim import evaluate

    names = list(models)
    interps = {}
    for name, data in models.items():
        it = evaluate.litert_interpreter(data)
        with native_stderr_to([]):
            it.allocate_tensors()
        inp = it.get_input_details()[0]
        qin = evaluate._io(inp)
        it.set_tensor(inp["index"], qin.quantize(x[:1]).reshape(inp["shape"]))
        interps[name] = it
    for it in interps.values():
        for _ in range(warmup):
            it.invoke()
    times: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for r in range(runs):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            it = interps[name]
            t = clock()
            it.invoke()
            times[name].append((clock() - t) / 1e3)
    return {n: {"median_us": statistics.median(v), "p10_us": float(np.percentile(v, 10)),
                "p90_us": float(np.percentile(v, 90)), "runs": len(v)} for n, v in times.items()}


# -- the table ---------------------------------------------------------------------------------


def _pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def _pts(a, b):
    return "—" if a is None or b is None else f"{100 * (a - b):+.2f}"


def _num(x, ref=None):
    if x is None:
        return "—"
    s = f"{x:,.0f}" if isinstance(x, (int, np.integer)) or float(x).is_integer() else f"{x:,.1f}"
    if ref:
        s += f" ({x / ref:.2f}x)"
    return s


def sign_test(row: dict, ref: dict, split: str) -> dict | None:
    """Paired comparison with plain-int8 on the same samples: how many it gets wrong that
    plain-int8 gets right (``worse``) and the reverse (``better``), and the two-sided exact
    sign-test p-value of that split (a small test set makes 1-point differences noise)."""
    a, b = row.get(f"litert_{split}_wrong"), ref.get(f"litert_{split}_wrong")
    if a is None or b is None:
        return None
    worse, better = len(set(a) - set(b)), len(set(b) - set(a))
    n, k = worse + better, min(worse, better)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"worse": worse, "better": better, "p": p}


def _paired(row: dict, ref: dict, split: str) -> str:
    st = sign_test(row, ref, split)
    return "—" if st is None else f"{st['worse']}/{st['better']} (p={st['p']:.2f})"


def _stages(row: dict) -> str:
    """The compression stages the build ran, and whether QAT's model or plain int8 conversion
    of the model before QAT was shipped (the build decides on val)."""
    stages = [s for s in row.get("report_stages", []) if s not in ("baseline", "int8")]
    text = ", ".join(stages) or "none"
    choice = row.get("qat_choice")
    if choice:
        text += f" ({'QAT' if choice['shipped'] == 'qat' else 'PTQ'} model shipped)"
    return text


def markdown(task: Task, res: dict) -> str:
    fl = res["float"]
    rows = [r for r in res["variants"] if r["status"] == "ok"]
    ref = next((r for r in rows if r["name"] == REFERENCE), None)
    rm = ref["measured"] if ref else {}
    v, t = task.val_label, task.test_label
    out = []
    out.append(f"### {task.name}: accuracy (%), LiteRT and TFLite Micro on the dataset's own splits")
    out.append("")
    head = ["variant", "stages run", f"LiteRT {v}", f"LiteRT {t}", f"TFLM {v}", f"TFLM {t}",
            f"drop from float, {v} (pts)", f"drop from float, {t} (pts)",
            f"drop from plain-int8, {v} (pts)", f"drop from plain-int8, {t} (pts)",
            f"{v}: samples worse/better than plain-int8 (sign test)",
            f"{t}: samples worse/better than plain-int8 (sign test)"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out.append(f"| float (Keras 3) | — | {_pct(fl['float_val'])} | {_pct(fl['float_test'])} | — | — "
               "| — | — | — | — | — | — |")
    for r in rows:
        m = r["measured"]
        out.append("| " + " | ".join([
            r["name"], _stages(r), _pct(m["litert_val"]), _pct(m["litert_test"]), _pct(m.get("tflm_val")),
            _pct(m.get("tflm_test")), _pts(fl["float_val"], m["litert_val"]),
            _pts(fl["float_test"], m["litert_test"]),
            _pts(rm.get("litert_val"), m["litert_val"]), _pts(rm.get("litert_test"), m["litert_test"]),
            _paired(m, rm, "val"), _paired(m, rm, "test"),
        ]) + " |")
    out.append("")
    out.append(f"### {task.name}: cost, bytes (ratio to plain-int8 in this run)")
    out.append("")
    head = ["variant", "target", ".tflite", ".tflite gzip -9", "C flash M4 -Os", "TFLM arena (measured)",
            "C arena (static plan)", "MACs", "LiteRT µs/inference (host, median)", "build wall s"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["measured"]
        lat = r.get("latency", {}).get("median_us")
        rlat = ref.get("latency", {}).get("median_us") if ref else None
        out.append("| " + " | ".join([
            r["name"], r["target"] + (" (c, packed)" if r["pack_weights"] else
                                      " (c)" if r["backend"] == "c" else ""),
            _num(m["tflite_bytes"], rm.get("tflite_bytes")),
            _num(m.get("tflite_gzip_bytes"), rm.get("tflite_gzip_bytes")),
            _num(m["c_flash_m4_Os"], rm.get("c_flash_m4_Os")),
            _num(m["tflm_arena_bytes"], rm.get("tflm_arena_bytes")),
            _num(m["c_arena_bytes"], rm.get("c_arena_bytes")),
            _num(m["macs"], rm.get("macs")),
            "—" if lat is None else f"{lat:,.1f}" + (f" ({lat / rlat:.2f}x)" if rlat else ""),
            f"{r['wall_s']:.0f}" + (f" ({r['wall_s'] / ref['wall_s']:.1f}x)" if ref else ""),
        ]) + " |")
    others = [r for r in res["variants"] if r["status"] != "ok"]
    if others:
        out.append("")
        for r in others:
            out.append(f"- **{r['name']}** {r['status']}: {r['message']}")
    return "\n".join(out) + "\n"


def header(task: Task, res: dict) -> str:
    fl = res["float"]
    m = res["machine"]
    src = res["edgeslim"]
    return (
        f"## {task.name}: does compression pay?  (seed {res['seed']}"
        f"{', QUICK smoke run: not figures to quote' if res['quick'] else ''})\n\n"
        f"- edgeslim: {src['root']} at commit {(src['commit'] or 'unknown')[:12]}"
        f"{' WITH UNCOMMITTED CHANGES' if src['dirty'] else ''}.\n"
        f"- Float model: {res['model']} ({fl['params']:,} parameters, Keras {fl['keras']}; "
        f"{fl['training']}).\n"
        f"- Splits: {task.val_label} = {res['n_val']} samples, {task.test_label} = "
        f"{res['n_test']} samples; train only for training. Val is for model selection (the "
        f"float model's epoch, early stopping and QAT-vs-plain-int8 inside the builds); test "
        f"is used by nothing but these figures.\n"
        f"- Every accuracy is measured here on each bundle's model.tflite (int8 in/out), not "
        f"read from the build report. worse/better: samples of the split a variant gets wrong "
        f"and plain-int8 right, and the reverse (LiteRT); p: two-sided exact sign test on "
        f"them (large p: the difference is within noise of a test set this size).\n"
        f"- Ratios are to plain-int8 built in this same run. Latency: host LiteRT on this "
        f"machine ({m['machine']}, nproc {m['nproc']}, {m['cpu']}), batch 1, median of "
        f"{res['latency_runs']} interleaved runs after {res['latency_warmup']} warm-up runs; "
        f"NOT a device figure (a Cortex-M or a Pi will rank differently).\n"
        f"- C flash: the generated C library (no TFLM runtime needed) compiled with "
        f"arm-none-eabi-gcc -Os -mcpu=cortex-m4, text + rodata + data. TFLM arena: smallest "
        f"arena the tflite-micro host interpreter runs with (64-bit build). MACs: from the C "
        f"code generator. Build wall time: one `edgeslim build` child process, start-up "
        f"included.\n\n")


# -- driver -------------------------------------------------------------------------------------


def _machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "machine": platform.machine(),
            "python": platform.python_version(), "EDGESLIM_THREADS": os.environ.get("EDGESLIM_THREADS")}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow", "tf_keras", "keras", "tensorflow-model-optimization", "ai-edge-litert",
                "tflite-micro"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run_task(task: Task, variants: list[Variant], args) -> dict:
    folder = args.work / ("quick" if args.quick else "full") / task.name
    folder.mkdir(parents=True, exist_ok=True)
    npz, arrays, labels = prepare_data(task, folder, args.seed)
    epochs = task.quick_epochs if args.quick else task.train_epochs
    model, fl = float_model(task, npz, folder, seed=args.seed, epochs=epochs)
    _log(f"{task.name}: float val {fl['float_val']:.4f}, float test {fl['float_test']:.4f}")
    max_eval = 300 if args.quick else None
    rows = []
    for v in variants:
        _log(f"{task.name}: building {v.name} ({v.target}, {v.note or 'user recipe'})")
        o = run_build(v, task, model, npz, folder, seed=args.seed, quick=args.quick, labels=labels)
        row = {"name": v.name, "target": v.target, "backend": v.backend,
               "pack_weights": v.pack_weights, "recipe": v.recipe, "note": v.note,
               "status": o.status, "message": o.message, "wall_s": o.wall_s}
        if o.status == "ok":
            _log(f"{task.name}: {v.name} built in {o.wall_s:.0f} s; measuring")
            row["measured"] = measure(o, arrays, folder / "measure" / v.name, task.model_name,
                                      max_eval=max_eval)
            row["bundle"] = str(o.bundle)
            row["report_stages"] = [s["name"] for s in o.report.get("stages", [])]
            row["qat_choice"] = o.report.get("qat", {}).get("choice") if isinstance(
                o.report.get("qat"), dict) else None
            m = row["measured"]
            _log(f"{task.name}: {v.name}: LiteRT val {m['litert_val']:.4f} test {m['litert_test']:.4f}"
                 + (f", TFLM test {m['tflm_test']:.4f}" if "tflm_test" in m else "")
                 + f", .tflite {m['tflite_bytes']:,} B, C flash {m['c_flash_m4_Os']:,} B")
        else:
            _log(f"{task.name}: {v.name} {o.status.upper()}: {o.message}")
        rows.append(row)
    ok = {r["name"]: Path(r["bundle"]) / "model.tflite" for r in rows if r["status"] == "ok"}
    if ok:
        _log(f"{task.name}: host LiteRT latency, {args.latency_runs} interleaved runs per variant")
        lat = latency({n: p.read_bytes() for n, p in ok.items()}, arrays["x_test"],
                      runs=args.latency_runs, warmup=args.latency_warmup)
        for r in rows:
            if r["name"] in lat:
                r["latency"] = lat[r["name"]]
    res = {"task": task.name, "seed": args.seed, "quick": args.quick, "model": str(model),
           "data": str(npz), "float": fl, "n_val": int(min(len(arrays["y_val"]), max_eval or 1 << 30)),
           "n_test": int(min(len(arrays["y_test"]), max_eval or 1 << 30)),
           "latency_runs": args.latency_runs, "latency_warmup": args.latency_warmup,
           "machine": _machine(), "versions": _versions(), "edgeslim": edgeslim_source(),
           "variants": rows}
    text = header(task, res) + markdown(task, res)
    (folder / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (folder / "results.md").write_text(text)
    print("\n" + text, flush=True)
    _log(f"{task.name}: results in {folder / 'results.json'} and {folder / 'results.md'}")
    return res


def _parse_variant(spec: str) -> Variant:
    """NAME=path.toml or NAME=path.toml@target (default cortex-m4 with the C backend)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--variant {spec!r}: expected NAME=recipe.toml[@target]")
    path, _, target = rest.partition("@")
    if not Path(path).is_file():
        raise SystemExit(f"--variant {spec!r}: no such recipe file {path}")
    target = target or "cortex-m4"
    backend = "c" if target.startswith("cortex-m") else "tflm"
    return Variant(name, target=target, recipe=str(Path(path).resolve()), backend=backend,
                   note=f"user recipe {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_train"]:
        return _child_train(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["digits", "kws", "all"], default="all")
    ap.add_argument("--variants", help="comma-separated subset of the variant names "
                    f"({', '.join(v.name for v in VARIANTS)}); {REFERENCE} is always built")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=path.toml[@target]",
                    help="an extra variant from a recipe file (repeatable; target default cortex-m4)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-runs", type=int, default=None, help="default 2000 (200 with --quick)")
    ap.add_argument("--latency-warmup", type=int, default=100)
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                    help="print the tables of an earlier run's results.json and exit")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: few training epochs, 1 epoch per stage, 300 eval samples")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads(args.render.read_text())
        print(header(TASKS[res["task"]], res) + markdown(TASKS[res["task"]], res), end="")
        return 0
    if args.latency_runs is None:
        args.latency_runs = 200 if args.quick else 2000
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # this process validates recipes (tf_keras configs)

    variants = VARIANTS + [_parse_variant(s) for s in args.variant]
    if args.variants:
        wanted = [w.strip() for w in args.variants.split(",") if w.strip()]
        known = {v.name for v in variants}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if REFERENCE not in wanted:
            _log(f"adding {REFERENCE}: every ratio is against it")
        variants = [v for v in variants if v.name in wanted or v.name == REFERENCE]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise SystemExit(f"variant names must be unique: {names}")
    tasks = ["digits", "kws"] if args.task == "all" else [args.task]
    m = _machine()
    _log(f"bench_compress: tasks {tasks}, variants {names}, seed {args.seed}, nproc {m['nproc']}, "
         f"work {args.work}{' (quick)' if args.quick else ''}")
    for t in tasks:
        run_task(TASKS[t], variants, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
