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

Students derived with a width start from the teacher by default (``init =
"teacher"``: ``channels.shrink`` keeps each channel group's most important
channels with the teacher's weights); ``init = "random"`` uses ``derive_student``
(the same narrower architecture, fresh initialisers). Either way the scratch
baseline starts from the very same weights. Fewer repeated blocks (``depth``) is
not implemented: detecting repeatable blocks in an arbitrary functional graph is
not clean enough to do automatically; pass a student model.

Training (both runs): a budget in optimizer steps (``step_budget``: given
``steps``, or ``epochs`` passes, or by default 40 passes with a floor of 1,500
steps), Adam with the learning rate on a cosine decay over the budget, validation
20 times a run (at most once a pass) after re-estimating the
batch-norm statistics, best-on-validation weights kept. Early stopping counts its
patience only once the student is clear of chance (``clear_of_chance``); a run
that never gets there is reported as failed (``info["student_failed"]``,
``info["failure"]``), not as a result. Nor does it stop in the first half of the
budget, while the learning rate is still high.

Why (measured on a 12-class keyword-spotting set, MFCC input (49, 10, 1) not
normalised, 3,240 training samples, a DS-CNN-S teacher at 0.947 test accuracy,
width-0.5 students, batch 32, Adam 1e-3, seed 0):

* students sat at chance because validation ran in inference mode on batch-norm
  moving averages (momentum 0.99, ~100 steps of memory) that trailed the fast-
  changing weights of a fresh student: 0.12 validation accuracy after 4 passes
  while the same weights with re-estimated statistics scored 0.62 (the teacher
  itself was at chance for 4 passes while at 0.84 training accuracy). Early
  stopping (patience 2 passes) then ended runs that were still at chance.
* re-estimated statistics + no stopping at chance: random-init students learn,
  but slowly (0.70 test after 10 passes); starting from the teacher's channels
  gives 0.78 validation after one pass, 0.915 test after 10 passes.
* cosine decay vs a constant rate, 20 passes: teacher-init 0.940 vs 0.915 test
  (constant: stopped at 10 passes on validation noise); random-init 0.872 vs 0.900
  (a fresh student needs more steps at a high rate).
* 20 vs 40 passes (teacher-init, 3 seeds, early stopping in the second half of the
  budget): 40 passes give distilled 0.948 / 0.940 / 0.949 test (teacher 0.947),
  scratch from the same start 0.940 / 0.946 / 0.952; validation 0.909 vs 0.904
  mean. A seed-1 run to 4,000 steps scored 0.945 where 20 passes scored 0.935.
  Hence 40 passes by default; ~2 minutes for both runs on 2 cores.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeslim._determinism import restores_op_determinism
from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2
from edgeslim._tf import keras, tf
from edgeslim.compress.context import StageContext, StageOutcome, count_params
from edgeslim.errors import ModelLoadError, RecipeError
from edgeslim.io.dataset import CLASSIFICATION, Dataset

COMBINE_MEAN = "mean"
COMBINE_WEIGHTED = "weighted"
INIT_TEACHER = "teacher"
INIT_RANDOM = "random"
# Teacher hint features are cached in memory up to this size, else recomputed per batch.
_CACHE_LIMIT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DistillConfig:
    """The ``[distill]`` recipe table.

    ``alpha``: weight of the task loss (labels); ``1 - alpha`` goes to the
    teacher term. ``width``: derive the student from the model being built
    (which then becomes the teacher) with this fraction of filters/units.
    ``init``: how a derived student starts: ``"teacher"`` (channels.shrink: the
    teacher's most important channels, its weights sliced) or ``"random"``.
    ``epochs`` (passes over the training data) or ``steps`` (optimizer steps): the
    budget; with neither it follows the data size (``step_budget``).
    ``hints``: ``"teacher_layer:student_layer"`` pairs. ``teacher_weights``:
    one weight per teacher with ``combine = "weighted"``.
    ``learning_rate``: None uses the build's (the peak of a cosine decay).
    """

    temperature: float = 2.0
    alpha: float = 0.5
    epochs: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    width: float | None = None
    init: str = INIT_TEACHER
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
        for key in ("epochs", "steps"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise RecipeError(f"distill.{key} = {v!r} must be a whole number >= 1",
                                  hint="e.g. epochs = 10 (passes over the training data) or "
                                  "steps = 2000 (optimizer steps); leave both out to let the "
                                  "data size decide.")
        if self.epochs is not None and self.steps is not None:
            raise RecipeError("give distill.epochs or distill.steps, not both",
                              hint="epochs counts passes over the training data, steps "
                              "optimizer updates; leave both out for the default budget.")
        if self.init not in (INIT_TEACHER, INIT_RANDOM):
            raise RecipeError(
                f"distill.init = {self.init!r} is not \"teacher\" or \"random\"",
                hint="How a student derived with distill.width starts: from the teacher's most "
                "important channels (teacher) or from fresh initialisers (random).",
            )
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


def student_from(teacher, width: float, *, init: str = INIT_TEACHER, seed: int | None = None):
    """A width-``width`` student of ``teacher``: with ``init="teacher"`` the teacher's
    architecture narrowed by channels.shrink (each channel group keeps its most
    important channels, the teacher's weights sliced), with ``"random"`` derive_student's
    fresh initialisers. The scratch baseline starts from the same weights either way."""
    if init == INIT_RANDOM:
        return derive_student(teacher, width, seed=seed)
    if init != INIT_TEACHER:
        raise RecipeError(f"student init {init!r} is not \"teacher\" or \"random\"")
    from edgeslim.compress.channels import shrink

    student, _ = shrink(teacher, width, seed=seed)
    return student


# -- the training budget -------------------------------------------------------------------

# Without ``epochs`` or ``steps`` the budget is DEFAULT_PASSES passes over the training data,
# at least MIN_STEPS optimizer steps (tiny data sets need updates more than passes).
# Measured on the 12-class keyword-spotting set (3,240 samples, batch 32: 102 steps a pass)
# with a width-0.5 DS-CNN-S student: see the module docstring.
DEFAULT_PASSES = 40
MIN_STEPS = 1500
# At most this many validation rounds per run (one per pass when passes are few): patience
# counts rounds, so on tiny data one round is several passes, not a handful of steps.
MAX_EVALS = 20
# Training samples used to re-estimate batch-norm statistics before each validation.
BN_SAMPLES = 1024
# The learning rate follows a cosine from the base rate down to this fraction of it.
LR_FLOOR = 0.02


@dataclass(frozen=True)
class Budget:
    """How long a student trains: ``steps`` optimizer updates, validated every ``eval_every``."""

    steps: int
    steps_per_epoch: int
    eval_every: int
    source: str  # "steps", "epochs" or "data" (derived from the data size)

    @property
    def epochs(self) -> float:
        """The budget in passes over the training data."""
        p = self.steps / self.steps_per_epoch
        return int(p) if p == int(p) else round(p, 2)


def step_budget(n_train: int, batch_size: int, *, epochs: int | None = None,
                steps: int | None = None) -> Budget:
    """The training budget for ``n_train`` samples in batches of ``batch_size``.

    ``steps`` is taken as given; ``epochs`` means passes over the data; with neither,
    ``max(MIN_STEPS, DEFAULT_PASSES * steps_per_epoch)``: it grows with the data, and a
    tiny data set still gets enough updates for a freshly started layer to settle.
    """
    per_epoch = max(1, math.ceil(n_train / batch_size))
    if steps is not None:
        total, source = int(steps), "steps"
    elif epochs is not None:
        total, source = int(epochs) * per_epoch, "epochs"
    else:
        total, source = max(MIN_STEPS, DEFAULT_PASSES * per_epoch), "data"
    eval_every = min(total, max(per_epoch, math.ceil(total / MAX_EVALS)))
    return Budget(steps=total, steps_per_epoch=per_epoch, eval_every=eval_every, source=source)


# -- chance level ----------------------------------------------------------------------------


def chance_level(data: Dataset) -> float:
    """What a model that learnt nothing scores on the validation split: the majority
    class's frequency (classification), or the MSE of predicting the training mean."""
    if data.task == CLASSIFICATION:
        y = np.asarray(data.y_val).reshape(-1).astype(np.int64)
        return float(np.bincount(y).max() / len(y))
    mean = np.asarray(data.y_train, np.float64).mean(axis=0)
    return float(np.mean((np.asarray(data.y_val, np.float64) - mean) ** 2))


def clear_of_chance(chance: float, teacher: float, higher_is_better: bool = True) -> float:
    """The validation score a student must reach to count as having learnt something:
    a quarter of the way from chance to the teacher, and at least 0.05 above chance
    (5 % below the constant predictor's MSE for regression). Early stopping only starts
    counting once a run got there; a run that never gets there has failed."""
    if higher_is_better:
        return chance + max(0.05, 0.25 * (teacher - chance))
    return chance - max(0.05 * chance, 0.25 * (chance - teacher))


# -- batch-norm statistics -------------------------------------------------------------------


def _bn_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _bn_probe(model):
    """A function x -> the inputs of every BatchNormalization layer (training mode), or
    None when there are none (or a layer is used more than once: no single input)."""
    bns = _bn_layers(model)
    if not bns:
        return None, []
    try:
        probe = keras.Model(model.inputs, [layer.input for layer in bns])
    except (AttributeError, ValueError):
        return None, []
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def moments(x):
        outs = probe(x, training=True)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        res = []
        for layer, o in zip(bns, outs):
            axes = [i for i in range(len(o.shape)) if i not in _bn_axes(layer, len(o.shape))]
            res.append((tf.reduce_mean(o, axis=axes), tf.reduce_mean(tf.square(o), axis=axes)))
        return res

    return moments, bns


def _bn_axes(layer, rank: int) -> list[int]:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return [a % rank for a in axis]


def _reestimate_bn(moments, bns, x: np.ndarray, batch_size: int = 256) -> None:
    """Set the BN layers' moving mean/variance to the statistics of the current weights
    on ``x`` (what the layers normalise with in training mode).

    The moving averages (momentum 0.99: a memory of ~100 steps) trail the weights while
    a fresh or re-sliced model changes fast; validation in inference mode then sees
    normalisations from older weights and can sit at chance while training accuracy
    is high (seen on unnormalised MFCC features). Re-estimating first makes validation,
    early stopping and the returned weights reflect the weights actually trained."""
    if moments is None or not len(x):
        return
    sums, n = None, 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        st = [(m.numpy().astype(np.float64), m2.numpy().astype(np.float64))
              for m, m2 in moments(tf.constant(xb, tf.float32))]
        w = len(xb)
        sums = [(w * m, w * m2) for m, m2 in st] if sums is None else [
            (a + w * m, b + w * m2) for (a, b), (m, m2) in zip(sums, st)]
        n += w
    for layer, (m, m2) in zip(bns, sums):
        mean, var = m / n, np.maximum(m2 / n - (m / n) ** 2, 0.0)
        layer.moving_mean.assign(np.reshape(mean, layer.moving_mean.shape).astype(np.float32))
        layer.moving_variance.assign(
            np.reshape(var, layer.moving_variance.shape).astype(np.float32))


# -- the training loop --------------------------------------------------------------------


@dataclass
class _Run:
    """One student training run: the result and what happened."""

    model: object
    steps_run: int
    epochs_run: float
    best_step: int
    val_metric: float
    left_chance: bool  # reached clear_of_chance on validation at some round
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
    budget: Budget,
    batch_size: int,
    learning_rate: float,
    patience: int,
    clear: float,
    seed: int,
    log,
    label: str,
) -> _Run:
    """Train ``student`` in place for ``budget``; returns the best-on-validation weights' run.

    Validation every ``budget.eval_every`` steps, after re-estimating the batch-norm
    statistics. Early stopping: ``patience`` rounds without a better validation score,
    counted only once the best score is ``clear`` of chance (see clear_of_chance): a
    slow start (a student still at chance after a few passes) is not a plateau; and only
    in the second half of the budget: while the learning rate is above half its peak a
    plateau is not final (measured: a run stopped at 12 of 20 passes scored 0.919, the
    same run to the end 0.935)."""
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

    # Cosine decay over the whole budget: large steps while the student is far from the
    # targets, small ones at the end (measured: see the module docstring).
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, budget.steps, alpha=LR_FLOOR)
    opt = keras.optimizers.Adam(schedule)
    moments, bns = _bn_probe(student)
    n_bn = min(len(data.x_train), BN_SAMPLES)
    bn_x = data.x_train[np.random.default_rng(seed).permutation(len(data.x_train))[:n_bn]]
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
        _reestimate_bn(moments, bns, bn_x)
        pred = np.concatenate([
            np.asarray(_first(train_model(data.x_val[i : i + 256], training=False)))
            for i in range(0, len(data.x_val), 256)
        ])
        if classification:
            return float(np.mean(np.argmax(pred, -1) == np.asarray(data.y_val).reshape(-1)))
        return float(np.mean((pred - data.y_val.reshape(pred.shape)) ** 2))

    def batches():
        """Index batches, a new shuffle every pass over the data."""
        rng = np.random.default_rng(seed)
        n = len(data.x_train)
        while True:
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                yield np.sort(order[start : start + batch_size])

    better = (lambda a, b: a > b) if classification else (lambda a, b: a < b)
    best, best_w, best_step, waited, history = None, None, 0, 0, []
    left_chance = False
    t0 = time.monotonic()
    losses: list[float] = []
    try:
        for step_i, idx in enumerate(batches(), start=1):
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
            if step_i % budget.eval_every and step_i < budget.steps:
                continue
            v = val_metric()
            history.append({"step": step_i, "epoch": round(step_i / budget.steps_per_epoch, 2),
                            "loss": float(np.mean(losses)), "val": v})
            losses = []
            per = (time.monotonic() - t0) / step_i
            log(f"[distill] {label} step {step_i}/{budget.steps} "
                f"(epoch {step_i / budget.steps_per_epoch:.1f})  loss={history[-1]['loss']:.4f}  "
                f"val_{data.metric_name}={v:.4f}  ETA {per * (budget.steps - step_i):.0f}s")
            if best is None or better(v, best):
                best, best_w, best_step, waited = v, student.get_weights(), step_i, 0
            elif left_chance and 2 * step_i > budget.steps:
                waited += 1
            left_chance = left_chance or not better(clear, best)
            if step_i >= budget.steps or (left_chance and waited > patience):
                break
    finally:
        restore()
    student.set_weights(best_w)
    steps_run = history[-1]["step"]
    return _Run(model=student, steps_run=steps_run,
                epochs_run=round(steps_run / budget.steps_per_epoch, 2), best_step=best_step,
                val_metric=best, left_chance=left_chance, history=history)


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

    budget = step_budget(len(data.x_train), ctx.batch_size, epochs=config.epochs,
                         steps=config.steps)
    higher = data.higher_is_better
    chance = chance_level(data)
    teacher_val = [ctx.evaluate(t, "val") for t in teachers]
    best_teacher_val = max(teacher_val) if higher else min(teacher_val)
    clear = clear_of_chance(chance, best_teacher_val, higher)
    ctx.log(f"[distill] budget {budget.steps} steps ({budget.epochs} passes of "
            f"{budget.steps_per_epoch} steps, from {budget.source}); validation every "
            f"{budget.eval_every} steps; chance {chance:.4f}, early stopping counts once "
            f"val_{data.metric_name} {'>=' if higher else '<='} {clear:.4f}")
    common = dict(config=config, budget=budget, batch_size=ctx.batch_size,
                  learning_rate=lr, patience=ctx.patience, clear=clear, seed=seed, log=ctx.log)
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
    gain = None if scratch is None else (distilled - scratch if higher else scratch - distilled)
    failure = None
    if not run.left_chance:
        failure = (
            f"the distilled student did not learn: its best validation {data.metric_name} "
            f"{run.val_metric:.4f} never got clear of chance ({chance:.4f}; needed "
            f"{clear:.4f}) in {run.steps_run} steps ({run.epochs_run} passes). Do not use "
            "it; try a lower learning rate, a longer budget (distill.steps), or a wider "
            "student."
        )
        ctx.log(f"[distill] FAILED: {failure}")
    scratch_failed = None if scratch_run is None else not scratch_run.left_chance
    info = {
        "metric": data.metric_name,
        "evaluated_on": "test",
        "teacher_metric": teacher_metrics[0] if len(teachers) == 1 else None,
        "teacher_metrics": teacher_metrics,
        "teacher_val_metrics": teacher_val,
        "teachers": [t.name for t in teachers],
        "student": run.model.name,
        "teacher_params": [count_params(t) for t in teachers],
        "student_params": count_params(run.model),
        "scratch_metric": scratch,
        "distilled_metric": distilled,
        "distilled_val_metric": run.val_metric,
        "scratch_val_metric": scratch_run.val_metric if scratch_run else None,
        "gain_over_scratch": gain,
        "beat_scratch": None if gain is None else bool(gain > 0),
        "chance_metric": chance,
        "clear_of_chance": clear,
        "student_failed": failure is not None,
        "scratch_failed": scratch_failed,
        "failure": failure,
        "temperature": config.temperature,
        "alpha": config.alpha,
        "hints": [f"{t}:{s}" for t, s in hint_pairs],
        "combine": config.combine if len(teachers) > 1 else None,
        "budget": {"max_steps": budget.steps, "max_epochs": budget.epochs,
                   "steps_per_epoch": budget.steps_per_epoch, "eval_every": budget.eval_every,
                   "from": budget.source, "lr_schedule": f"cosine to {LR_FLOOR} x",
                   "batch_size": ctx.batch_size, "learning_rate": lr, "patience": ctx.patience,
                   "steps_run_distilled": run.steps_run,
                   "steps_run_scratch": scratch_run.steps_run if scratch_run else None,
                   "epochs_run_distilled": run.epochs_run,
                   "epochs_run_scratch": scratch_run.epochs_run if scratch_run else None},
        "teacher_outputs_cached": True,
        "teacher_forward_samples": len(data.x_train) * len(teachers),
        "history": run.history,
    }
    info["summary"] = _summary(info)
    return StageOutcome(model=run.model, info=info)


def _summary(info: dict) -> str:
    """One paragraph for reports and the CLI: what distillation achieved, or that it failed."""
    m = info["metric"]
    if info["student_failed"]:
        return f"Distillation FAILED: {info['failure']}"
    text = (f"Distilled student {m} {info['distilled_metric']:.4f} on the test split "
            f"(teacher {', '.join(f'{v:.4f}' for v in info['teacher_metrics'])}).")
    if info["scratch_metric"] is not None:
        verdict = "beat" if info["beat_scratch"] else "did NOT beat"
        text += (f" Distillation {verdict} the same student trained from scratch "
                 f"({info['scratch_metric']:.4f}, {info['gain_over_scratch']:+.4f}).")
        if info["scratch_failed"]:
            text += " The scratch student never got clear of chance."
    return text


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
        student = student_from(model, config.width, init=config.init, seed=ctx.seed)
        ctx.log(f"[distill] derived a width-{config.width} student ({config.init} init): "
                f"{count_params(student)} parameters (teacher {count_params(model)})")
    outcome = distill(teachers, student, ctx, config)
    derived = config.width is not None and student is not model
    outcome.info["derived_width"] = config.width if derived else None
    outcome.info["init"] = config.init if derived else None
    return outcome


@restores_op_determinism
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
    epochs: int | None = None,
    steps: int | None = None,
    init: str = INIT_TEACHER,
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
    ``epochs`` (passes over the data) or ``steps`` (optimizer steps): the budget; with
    neither it follows the data size (see step_budget). ``init``: how a width-derived
    student starts ("teacher": the teacher's most important channels; "random").
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
    config = DistillConfig(temperature=temperature, alpha=alpha, epochs=epochs, steps=steps,
                           hints=tuple(hints), hint_weight=hint_weight,
                           teacher_weights=tuple(teacher_weights),
                           combine=COMBINE_WEIGHTED if teacher_weights else COMBINE_MEAN,
                           width=width, init=init, compare_scratch=compare_scratch)

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
        student_model = student_from(teachers[0], width, init=init, seed=seed)
        ctx.log(f"[distill] derived a width-{width} student ({init} init): "
                f"{count_params(student_model)} parameters (teacher {count_params(teachers[0])})")
    else:
        student_model = as_model(student)
    check_data_fits_model(ds, student_model)
    outcome = distill(teachers, student_model, ctx, config)
    outcome.info["init"] = init if student is None else None
    if out is not None:
        from edgeslim.io.models import save_model_atomic

        save_model_atomic(outcome.model, out)
    return outcome


__all__ = [
    "DistillConfig",
    "derive_student",
    "student_from",
    "step_budget",
    "chance_level",
    "clear_of_chance",
    "distill",
    "distill_stage",
    "distill_model",
]
