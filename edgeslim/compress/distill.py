"""Knowledge distillation: one or more big models (teachers) train a small one (the student).

Losses (all on the same mini-batches):

* response-based (Hinton et al.), classification:
  ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))``
  where ``t``/``s`` are teacher/student logits. With several teachers, their
  softened probabilities are combined (plain mean, or weighted).
  Regression/reconstruction: ``alpha * MSE(y, s) + (1 - alpha) * MSE(t, s)``,
  the teachers' (combined) outputs as targets.
* feature-based ("hints", FitNets): ``hint_weight * MSE(P(s_l), t_l)`` for each
  pair of named intermediate layers, ``P`` a learned 1x1 projection from the
  student's channels to the teacher's (trained with the student, then dropped).

Teacher outputs are computed once, before training, and cached: edgeslim's data
are arrays with no random augmentation, so the teacher's answer to a sample
never changes between epochs. Models that end in a softmax are trained on their
pre-softmax values (the softmax is switched off while training, and restored).

The scratch baseline (``compare_scratch``) trains a second copy of the student
from the same initial weights with ``alpha = 1`` and no hints, through the same
loop (same epochs, batches, optimizer, early stopping): the only difference is
the teacher. The report compares the two on the held-out test split.

``derive_student`` makes a student from the teacher's own architecture with
fewer filters/units and freshly initialised weights. Fewer repeated blocks
(``depth``) is not implemented: detecting repeatable blocks in an arbitrary
functional graph is not clean enough to do automatically; pass a student model.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2
from edgeslim._tf import keras, tf
from edgeslim.compress.context import StageContext, StageOutcome, count_params
from edgeslim.errors import ModelLoadError, RecipeError
from edgeslim.io.dataset import CLASSIFICATION, Dataset

COMBINE_MEAN = "mean"
COMBINE_WEIGHTED = "weighted"
# Teacher hint features are cached in memory up to this size, else recomputed per batch.
_CACHE_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DistillConfig:
    """The ``[distill]`` recipe table.

    ``alpha``: weight of the task loss (labels); ``1 - alpha`` goes to the
    teacher term. ``width``: derive the student from the model being built
    (which then becomes the teacher) with this fraction of filters/units.
    ``hints``: ``"teacher_layer:student_layer"`` pairs. ``teacher_weights``:
    one weight per teacher with ``combine = "weighted"``.
    ``learning_rate``: None uses the build's.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    epochs: int = 10
    learning_rate: float | None = None
    width: float | None = None
    hints: tuple[str, ...] = ()
    hint_weight: float = 1.0
    combine: str = COMBINE_MEAN
    teacher_weights: tuple[float, ...] = ()
    compare_scratch: bool = True

    def __post_init__(self):
        object.__setattr__(self, "hints", tuple(self.hints))
        object.__setattr__(self, "teacher_weights", tuple(self.teacher_weights))
        self.validate()

    def validate(self) -> None:
        if not _is_number(self.temperature) or self.temperature <= 0:
            raise RecipeError(
                f"distill.temperature = {self.temperature!r} must be a number > 0",
                hint="The softmax temperature T; 1-8 is usual (2 by default; small students do best low).",
            )
        if not _is_number(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(
                f"distill.alpha = {self.alpha!r} must be in [0, 1]",
                hint="alpha weighs the label loss, 1 - alpha the teacher's; e.g. 0.5.",
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise RecipeError(f"distill.epochs = {self.epochs!r} must be a whole number >= 1",
                              hint="e.g. epochs = 10")
        if self.learning_rate is not None and (
            not _is_number(self.learning_rate) or not 0 < self.learning_rate < 1
        ):
            raise RecipeError(f"distill.learning_rate = {self.learning_rate!r} must be in (0, 1)")
        if self.width is not None and (not _is_number(self.width) or not 0 < self.width <= 1):
            raise RecipeError(
                f"distill.width = {self.width!r} must be in (0, 1]",
                hint="The fraction of filters/units the derived student keeps, e.g. 0.5.",
            )
        for h in self.hints:
            if not isinstance(h, str) or h.count(":") != 1 or not all(h.split(":")):
                raise RecipeError(
                    f"distill.hints entry {h!r} is not \"teacher_layer:student_layer\"",
                    hint='Write e.g. hints = ["pw2:pw2"] (teacher layer name, colon, '
                    "student layer name).",
                )
        if not _is_number(self.hint_weight) or self.hint_weight < 0:
            raise RecipeError(f"distill.hint_weight = {self.hint_weight!r} must be >= 0")
        if self.combine not in (COMBINE_MEAN, COMBINE_WEIGHTED):
            raise RecipeError(
                f"distill.combine = {self.combine!r} is not \"mean\" or \"weighted\"",
                hint="How several teachers' soft targets are combined.",
            )
        if any(not _is_number(w) or w < 0 for w in self.teacher_weights) or (
            self.teacher_weights and sum(self.teacher_weights) <= 0
        ):
            raise RecipeError(
                f"distill.teacher_weights = {list(self.teacher_weights)} must be numbers >= 0 "
                "with a positive sum"
            )
        if self.combine == COMBINE_WEIGHTED and not self.teacher_weights:
            raise RecipeError(
                'distill.combine = "weighted" needs distill.teacher_weights',
                hint="Give one weight per teacher, e.g. teacher_weights = [0.7, 0.3].",
            )
        if not isinstance(self.compare_scratch, bool):
            raise RecipeError("distill.compare_scratch must be true or false")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- deriving a student -----------------------------------------------------------------

_WIDTH_KEYS = ("filters", "units")
# Layers that pass their input's channel count through (walked over to find output layers).
_PASS_THROUGH = {
    "Activation", "Softmax", "ReLU", "LeakyReLU", "PReLU", "ELU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "Flatten", "Reshape", "BatchNormalization", "LayerNormalization",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "AveragePooling2D", "MaxPooling2D", "AveragePooling1D", "MaxPooling1D", "Add", "Multiply",
    "Average", "Maximum", "Minimum", "Concatenate", "Rescaling", "ZeroPadding2D", "Cropping2D",
    "UpSampling2D", "DepthwiseConv2D", "InputLayer",
}


def _layer_entries(config: dict) -> list[dict]:
    return config["layers"]


def _inbound_names(entry: dict) -> list[str]:
    names: list[str] = []

    def walk(obj):
        if isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                names.append(obj[0])
                return
            for o in obj:
                walk(o)

    walk(entry.get("inbound_nodes", []))
    return names


def _output_layer_names(model, config: dict) -> set[str]:
    """The parameterised layers that produce the model's outputs (they keep their size)."""
    entries = _layer_entries(config)
    by_name = {e["config"]["name"]: e for e in entries}
    if isinstance(model, keras.Sequential):
        keep: set[str] = set()
        for e in reversed(entries):
            if any(k in e["config"] for k in _WIDTH_KEYS):
                keep.add(e["config"]["name"])
                break
            if e["class_name"] not in _PASS_THROUGH:
                break
        return keep
    start = [o[0] for o in config["output_layers"]]
    keep, seen = set(), set()
    stack = list(start)
    while stack:
        name = stack.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        e = by_name[name]
        if any(k in e["config"] for k in _WIDTH_KEYS):
            keep.add(name)
        elif e["class_name"] in _PASS_THROUGH:
            stack.extend(_inbound_names(e))
    return keep


def derive_student(teacher, width: float = 0.5, depth: int | None = None, *, seed: int | None = None):
    """The teacher's architecture with ``width`` x its filters/units, freshly initialised.

    Conv (incl. separable/transposed) ``filters`` and Dense ``units`` are scaled
    (rounded, at least 1); DepthwiseConv2D keeps its ``depth_multiplier`` (its
    channels follow its input); the layers producing the outputs keep their size.
    Layer names stay the same, so hints can name the same layer in both models.
    Weights come from the layers' own initialisers (seeded with ``seed``): slicing
    the teacher's weights would start the student at a point the teacher's training
    chose for a different width, and the scratch baseline needs a fresh start anyway.
    """
    dw.check_graph_model(teacher, "distill")
    if depth is not None:
        raise RecipeError(
            "fewer repeated blocks (depth) is not supported when deriving a student",
            hint="Pass your own smaller student model (--student) to change the depth.",
        )
    if not _is_number(width) or not 0 < width <= 1:
        raise RecipeError(f"student width {width!r} must be in (0, 1]", hint="e.g. --width 0.5")
    config = copy.deepcopy(teacher.get_config())
    keep = _output_layer_names(teacher, config)
    for e in _layer_entries(config):
        cfg = e["config"]
        if cfg.get("name") in keep:
            continue
        for key in _WIDTH_KEYS:
            if isinstance(cfg.get(key), int):
                cfg[key] = max(1, int(round(cfg[key] * width)))
    config["name"] = f"{teacher.name}_student"
    if seed is not None:
        keras.utils.set_random_seed(seed)
    try:
        with keras.utils.custom_object_scope(dw.CUSTOM_OBJECTS):
            student = teacher.__class__.from_config(config)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"could not derive a width-{width} student from {teacher.name!r}: {exc}",
            hint="Some layer ties channel counts together in a way scaling breaks (e.g. a "
            "residual Add with the input or a fixed Reshape); pass your own student model.",
        ) from None
    return student


# -- the training loop --------------------------------------------------------------------


@dataclass
class _Run:
    """One student training run: the result and what happened."""

    model: object
    epochs_run: int
    best_epoch: int
    val_metric: float
    history: list


def _final_layer(model):
    return model.layers[-1]


def _logits_view(model):
    """(output tensor to train on, restore function, outputs_are_probabilities).

    A final Softmax/Activation("softmax") layer is skipped by taking its input; a
    final layer with ``activation="softmax"`` has its activation switched to linear
    while training (its object is shared with ``model``; ``restore`` undoes it).
    """
    last = _final_layer(model)
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", "")
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and name == "softmax"
    ):
        return last.input, (lambda: None), True
    if name == "softmax":
        last.activation = keras.activations.linear

        def restore():
            last.activation = act

        return model.outputs[0], restore, True
    return model.outputs[0], (lambda: None), False


def _teacher_logits(teacher, x: np.ndarray, classification: bool) -> np.ndarray:
    """The teacher's outputs on ``x``; for classifiers, logits (log-probabilities if it
    ends in a softmax: softmax(log p / T) equals softmax(z / T) for any shift of z)."""
    y = np.asarray(teacher.predict(x, batch_size=256, verbose=0), dtype=np.float32)
    if classification and np.all(y >= 0) and np.allclose(y.sum(-1), 1.0, atol=1e-3):
        y = np.log(np.clip(y, 1e-12, 1.0)).astype(np.float32)
    return y


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _combine(outputs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return np.tensordot(weights, np.stack(outputs), axes=1).astype(np.float32)


def _check_hints(hints, teachers, student) -> list[tuple[str, str]]:
    pairs = []
    for h in hints:
        t_name, s_name = h.split(":")
        for model, name, who in [(t, t_name, "teacher") for t in teachers] + [
            (student, s_name, "student")
        ]:
            if name not in [layer.name for layer in model.layers]:
                names = [layer.name for layer in model.layers]
                raise RecipeError(
                    f"hint layer {name!r} does not exist in the {who} model {model.name!r}",
                    hint=f"Layers of {model.name}: {', '.join(names[:40])}.",
                )
        pairs.append((t_name, s_name))
    return pairs


def _fit_student(
    student,
    data: Dataset,
    *,
    soft: np.ndarray | None,
    hint_pairs: list[tuple[str, str]],
    hint_teacher,
    config: DistillConfig,
    alpha: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    seed: int,
    log,
    label: str,
) -> _Run:
    """Train ``student`` in place; returns the best-on-validation weights' run."""
    classification = data.task == CLASSIFICATION
    T = float(config.temperature)
    keras.utils.set_random_seed(seed)
    logits_t, restore, _ = _logits_view(student)
    s_feats = [student.get_layer(s).output for _, s in hint_pairs]
    train_model = keras.Model(student.inputs, [logits_t, *s_feats])

    # Teacher features for the hints: cached when they fit in memory.
    t_feat_cache = None
    t_feat_model = None
    projections, t_shapes = [], []
    if hint_pairs:
        t_feat_model = keras.Model(
            hint_teacher.inputs, [hint_teacher.get_layer(t).output for t, _ in hint_pairs]
        )
        for (t_name, s_name), sf in zip(hint_pairs, s_feats):
            t_shape = tuple(hint_teacher.get_layer(t_name).output.shape[1:])
            s_shape = tuple(sf.shape[1:])
            if t_shape[:-1] != s_shape[:-1]:
                raise RecipeError(
                    f"hint {t_name}:{s_name}: teacher layer output {t_shape} and student layer "
                    f"output {s_shape} differ in more than the channel count",
                    hint="Pair layers with the same spatial size (the projection only maps "
                    "channels).",
                )
            projections.append(
                keras.layers.Dense(int(t_shape[-1]), use_bias=False, name=f"hint_proj_{s_name}")
            )
            projections[-1].build((None, *s_shape))
            t_shapes.append(t_shape)
        n_bytes = sum(
            int(np.prod(hint_teacher.get_layer(t).output.shape[1:])) * 4 * len(data.x_train)
            for t, _ in hint_pairs
        )
        if n_bytes <= _CACHE_LIMIT_BYTES:
            out = t_feat_model.predict(data.x_train, batch_size=256, verbose=0)
            t_feat_cache = [np.asarray(o, np.float32) for o in (out if len(hint_pairs) > 1 else [out])]

    opt = keras.optimizers.Adam(learning_rate)
    variables = student.trainable_variables + [v for p in projections for v in p.trainable_variables]
    out_shape = tuple(int(d) for d in logits_t.shape[1:])

    use_soft = soft is not None and alpha < 1.0
    if soft is None:
        soft = np.zeros((len(data.x_train), *out_shape), np.float32)
    x_spec = tf.TensorSpec((None, *data.x_train.shape[1:]), tf.float32)
    y_spec = tf.TensorSpec((None, *np.asarray(data.y_train).shape[1:]), tf.as_dtype(data.y_train.dtype))
    s_spec = tf.TensorSpec((None, *out_shape), tf.float32)
    f_specs = tuple(tf.TensorSpec((None, *shape), tf.float32) for shape in t_shapes)

    # One fixed signature: traced once per run, whatever the last batch's size.
    @tf.function(input_signature=[x_spec, y_spec, s_spec, f_specs])
    def step(x, y, soft_b, t_feats):
        with tf.GradientTape() as tape:
            outs = train_model(x, training=True)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            z = outs[0]
            if classification:
                task = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    tf.reshape(y, [-1]), z, from_logits=True))
            else:
                task = tf.reduce_mean(tf.square(tf.cast(y, z.dtype) - z))
            loss = alpha * task
            if use_soft:
                if classification:
                    log_q = tf.nn.log_softmax(z / T, axis=-1)
                    kl = tf.reduce_sum(
                        soft_b * (tf.math.log(tf.maximum(soft_b, 1e-12)) - log_q), axis=-1
                    )
                    loss += (1.0 - alpha) * T * T * tf.reduce_mean(kl)
                else:
                    loss += (1.0 - alpha) * tf.reduce_mean(tf.square(soft_b - z))
            for proj, sf, tf_ in zip(projections, outs[1:], t_feats):
                loss += config.hint_weight * tf.reduce_mean(tf.square(proj(sf) - tf_))
            if train_model.losses:
                loss += tf.add_n(train_model.losses)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    def val_metric() -> float:
        pred = np.concatenate([
            np.asarray(_first(train_model(data.x_val[i : i + 256], training=False)))
            for i in range(0, len(data.x_val), 256)
        ])
        if classification:
            return float(np.mean(np.argmax(pred, -1) == np.asarray(data.y_val).reshape(-1)))
        return float(np.mean((pred - data.y_val.reshape(pred.shape)) ** 2))

    better = (lambda a, b: a > b) if classification else (lambda a, b: a < b)
    n = len(data.x_train)
    rng = np.random.default_rng(seed)
    best, best_w, best_epoch, waited, history = None, None, 0, 0, []
    t0 = time.monotonic()
    try:
        for epoch in range(epochs):
            order = rng.permutation(n)
            losses = []
            for start in range(0, n, batch_size):
                idx = np.sort(order[start : start + batch_size])
                xb = tf.constant(data.x_train[idx])
                yb = tf.constant(data.y_train[idx])
                sb = tf.constant(soft[idx])
                if not hint_pairs:
                    tfb = ()
                elif t_feat_cache is not None:
                    tfb = tuple(tf.constant(c[idx]) for c in t_feat_cache)
                else:
                    o = t_feat_model(xb, training=False)
                    tfb = tuple(o if isinstance(o, (list, tuple)) else [o])
                losses.append(float(step(xb, yb, sb, tfb)))
            v = val_metric()
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": v})
            per = (time.monotonic() - t0) / (epoch + 1)
            log(f"[distill] {label} epoch {epoch + 1}/{epochs}  loss={np.mean(losses):.4f}  "
                f"val_{data.metric_name}={v:.4f}  ETA {per * (epochs - epoch - 1):.0f}s")
            if best is None or better(v, best):
                best, best_w, best_epoch, waited = v, student.get_weights(), epoch + 1, 0
            else:
                waited += 1
                if waited > patience:
                    break
    finally:
        restore()
    student.set_weights(best_w)
    return _Run(model=student, epochs_run=len(history), best_epoch=best_epoch, val_metric=best,
                history=history)


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _fresh_copy(model):
    """An independent copy with the same (initial) weights."""
    return dw.rebuild(model, lambda layer: None)


def distill(teacher, student, ctx_or_data, config: DistillConfig = DistillConfig()) -> StageOutcome:
    """Train ``student`` (unchanged; a trained copy is returned) to mimic ``teacher``.

    ``teacher``: a tf_keras model or a list of them (their soft targets combined).
    ``ctx_or_data``: a StageContext, or a Dataset (then default training settings).
    Returns a StageOutcome: ``model`` is the distilled student, ``info`` holds the
    comparison on the test split (teacher, scratch student, distilled student).
    """
    ctx = ctx_or_data if isinstance(ctx_or_data, StageContext) else StageContext(data=ctx_or_data)
    config.validate()
    data = ctx.data
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise RecipeError("distillation needs at least one teacher model")
    dw.check_graph_model(student, "distill")
    for t in teachers:
        dw.check_graph_model(t, "distill")
    s_out = tuple(student.outputs[0].shape[1:])
    for t in teachers:
        t_out = tuple(t.outputs[0].shape[1:])
        if len(t.outputs) != 1 or len(student.outputs) != 1 or t_out != s_out:
            raise ModelLoadError(
                f"teacher {t.name!r} outputs {t_out} but student {student.name!r} outputs {s_out}",
                hint="Teacher and student must predict the same thing: the same output shape "
                "(e.g. the same number of classes).",
            )
        t_in, s_in = tuple(t.inputs[0].shape[1:]), tuple(student.inputs[0].shape[1:])
        if t_in != s_in:
            raise ModelLoadError(
                f"teacher {t.name!r} takes inputs {t_in} but student {student.name!r} takes {s_in}",
                hint="Teacher and student must read the same input shape.",
            )
    if config.teacher_weights and len(config.teacher_weights) != len(teachers):
        raise RecipeError(
            f"distill.teacher_weights has {len(config.teacher_weights)} weight(s) for "
            f"{len(teachers)} teacher(s)",
            hint="Give one weight per teacher, in the order the teachers are given.",
        )
    hint_pairs = _check_hints(config.hints, teachers, student)
    if hint_pairs and len(teachers) > 1:
        raise RecipeError(
            "hints with several teachers are ambiguous",
            hint="Use hints with a single teacher, or drop them.",
        )
    classification = data.task == CLASSIFICATION
    seed = 0 if ctx.seed is None else int(ctx.seed)
    lr = config.learning_rate or ctx.learning_rate

    # Teacher outputs: once, cached (the data have no random augmentation).
    t0 = time.monotonic()
    outs = [_teacher_logits(t, data.x_train, classification) for t in teachers]
    if config.combine == COMBINE_WEIGHTED:
        w = np.asarray(config.teacher_weights, np.float64)
    else:
        w = np.ones(len(teachers))
    w = w / w.sum()
    if classification:
        soft = _combine([_softmax(o / config.temperature) for o in outs], w)
    else:
        soft = _combine(outs, w)
    teacher_s = time.monotonic() - t0
    ctx.log(f"[distill] teacher outputs cached for {len(data.x_train)} training samples "
            f"x {len(teachers)} teacher(s) ({teacher_s:.1f}s)")

    common = dict(config=config, epochs=config.epochs, batch_size=ctx.batch_size,
                  learning_rate=lr, patience=ctx.patience, seed=seed, log=ctx.log)
    scratch_run = None
    if config.compare_scratch:
        scratch_run = _fit_student(_fresh_copy(student), data, soft=None, hint_pairs=[],
                                   hint_teacher=None, alpha=1.0, label="scratch", **common)
    run = _fit_student(_fresh_copy(student), data, soft=soft, hint_pairs=hint_pairs,
                       hint_teacher=teachers[0], alpha=float(config.alpha), label="student",
                       **common)

    teacher_metrics = [ctx.evaluate(t, "test") for t in teachers]
    distilled = ctx.evaluate(run.model, "test")
    scratch = ctx.evaluate(scratch_run.model, "test") if scratch_run else None
    higher = data.higher_is_better
    gain = None if scratch is None else (distilled - scratch if higher else scratch - distilled)
    info = {
        "metric": data.metric_name,
        "evaluated_on": "test",
        "teacher_metric": teacher_metrics[0] if len(teachers) == 1 else None,
        "teacher_metrics": teacher_metrics,
        "teachers": [t.name for t in teachers],
        "student": run.model.name,
        "teacher_params": [count_params(t) for t in teachers],
        "student_params": count_params(run.model),
        "scratch_metric": scratch,
        "distilled_metric": distilled,
        "gain_over_scratch": gain,
        "beat_scratch": None if gain is None else bool(gain > 0),
        "temperature": config.temperature,
        "alpha": config.alpha,
        "hints": [f"{t}:{s}" for t, s in hint_pairs],
        "combine": config.combine if len(teachers) > 1 else None,
        "budget": {"max_epochs": config.epochs, "batch_size": ctx.batch_size,
                   "learning_rate": lr, "patience": ctx.patience,
                   "epochs_run_distilled": run.epochs_run,
                   "epochs_run_scratch": scratch_run.epochs_run if scratch_run else None},
        "teacher_outputs_cached": True,
        "teacher_forward_samples": len(data.x_train) * len(teachers),
        "history": run.history,
    }
    return StageOutcome(model=run.model, info=info)


def distill_stage(model, config: DistillConfig, *, ctx: StageContext, teachers=None) -> StageOutcome:
    """The recipe stage. With ``teachers`` (from --teacher), ``model`` is the student;
    without, ``model`` is the teacher and the student is derived with ``config.width``."""
    if teachers:
        student = model
    else:
        if config.width is None:
            raise RecipeError(
                "the distill stage needs a teacher (--teacher big.keras) or a student width "
                "(--distill-width 0.5, distill.width)",
                hint="Give the teacher model, or let edgeslim derive the student from this model.",
            )
        teachers = [model]
        student = derive_student(model, config.width, seed=ctx.seed)
        ctx.log(f"[distill] derived a width-{config.width} student: {count_params(student)} "
                f"parameters (teacher {count_params(model)})")
    outcome = distill(teachers, student, ctx, config)
    outcome.info["derived_width"] = None if config.width is None or student is model else config.width
    return outcome


def distill_model(
    teacher,
    data,
    *,
    student=None,
    width: float | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 10,
    hints: tuple[str, ...] | list[str] = (),
    hint_weight: float = 1.0,
    teacher_weights: tuple[float, ...] | list[float] = (),
    compare_scratch: bool = True,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    patience: int = 2,
    trust_model: bool = False,
    log=None,
) -> StageOutcome:
    """Distil ``teacher`` (a path, a tf_keras model, or a list of them) into ``student``
    (a path or model) or into a student derived with ``width``; see ``edgeslim distill``.

    ``data``: a path (.npz, image folder) or a Dataset. ``out``: where to save the
    distilled student (.keras or .h5; written atomically; loads back into build).
    Returns the StageOutcome (``.model``, ``.info`` with the scratch comparison).
    """
    from edgeslim.io.data import check_data_fits_model, load_data
    from edgeslim.io.models import load_model

    if (student is None) == (width is None):
        raise RecipeError("give either a student model or a width to derive one",
                          hint="e.g. --student small.keras, or --width 0.5")
    if out is not None and Path(out).suffix.lower() not in (".keras", ".h5"):
        raise RecipeError(f"output {out}: the student is saved as .keras or .h5",
                          hint="Give a file name ending in .keras.")
    config = DistillConfig(temperature=temperature, alpha=alpha, epochs=epochs, hints=tuple(hints),
                           hint_weight=hint_weight, teacher_weights=tuple(teacher_weights),
                           combine=COMBINE_WEIGHTED if teacher_weights else COMBINE_MEAN,
                           width=width, compare_scratch=compare_scratch)

    def as_model(m):
        return load_model(m, trust=trust_model).model if isinstance(m, (str, Path)) else m

    teachers = [as_model(t) for t in (teacher if isinstance(teacher, (list, tuple)) else [teacher])]
    ds = data if isinstance(data, Dataset) else load_data(data, seed=seed or 0)
    check_data_fits_model(ds, teachers[0])
    if seed is not None:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    ctx = StageContext(data=ds, seed=seed, batch_size=batch_size, patience=patience,
                       learning_rate=learning_rate, log=log or (lambda m: None))
    if student is None:
        student_model = derive_student(teachers[0], width, seed=seed)
    else:
        student_model = as_model(student)
    check_data_fits_model(ds, student_model)
    outcome = distill(teachers, student_model, ctx, config)
    if out is not None:
        from edgeslim.io.models import save_model_atomic

        save_model_atomic(outcome.model, out)
    return outcome


__all__ = [
    "DistillConfig",
    "derive_student",
    "distill",
    "distill_stage",
    "distill_model",
]
