"""Magnitude pruning: polynomial-decay schedule to a target sparsity, 2:4, depthwise.

TFMOT's ``prune_low_magnitude`` wraps each prunable layer; its
``PolynomialDecay`` schedule raises the sparsity from 0 to the target while the
model fine-tunes (``ctx.fit`` with TFMOT's ``UpdatePruningStep`` callback), and
``strip_pruning`` leaves a plain model whose pruned weights are exact zeros.

What edgeslim adds to TFMOT:

* Depthwise kernels are pruned too (TFMOT's registry lists no weights for
  ``DepthwiseConv2D``), at their own, lower default ``depthwise_sparsity``: a
  3x3 depthwise kernel has 9 weights per channel, far fewer than a pointwise one.
* ``structure = "2:4"``: at least 2 zeros in every group of 4 consecutive
  weights along the input-channel axis (TFMOT's ``sparsity_m_by_n``), for
  conv/dense layers whose input-channel count is a multiple of 4. Other layers
  are skipped and reported; depthwise kernels keep unstructured pruning.
* Per-layer overrides (``overrides.resolve``: exact name > regex > default).
* The schedule is sized so the target is reached before early stopping can end
  training (ctx.fit stops at the earliest after ``patience + 1`` epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2

import tensorflow_model_optimization as tfmot  # noqa: I001
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

from edgeslim.compress.context import StageContext, StageOutcome  # noqa: E402
from edgeslim.compress.overrides import (  # noqa: E402
    EXACT,
    LayerOverride,
    check_choice,
    check_epochs,
    check_fraction,
    check_unknown_layers,
    resolve,
    validate_overrides,
)
from edgeslim.errors import RecipeError

UNSTRUCTURED = "unstructured"
TWO_FOUR = "2:4"
STRUCTURES = (UNSTRUCTURED, TWO_FOUR)


@dataclass(frozen=True)
class PruneConfig:
    """The ``[prune]`` recipe table.

    ``end_fraction``: the target is reached after this fraction of the pruning
    steps; the rest fine-tunes at the target. ``frequency``: steps between mask
    updates (None: about ten updates over the schedule).
    """

    sparsity: float = 0.5
    structure: str = UNSTRUCTURED
    depthwise_sparsity: float = 0.25
    epochs: int = 2
    begin_step: int = 0
    end_fraction: float = 0.75
    frequency: int | None = None
    overrides: tuple[LayerOverride, ...] = ()

    def __post_init__(self):
        check_fraction(self.sparsity, "prune.sparsity")
        check_fraction(self.depthwise_sparsity, "prune.depthwise_sparsity")
        check_choice(self.structure, STRUCTURES, "prune.structure",
                     'Use "unstructured" (any pattern) or "2:4" (2 zeros in every 4 weights).')
        check_epochs(self.epochs, "prune.epochs", minimum=1)
        check_epochs(self.begin_step, "prune.begin_step", minimum=0)
        if (
            isinstance(self.end_fraction, bool)
            or not isinstance(self.end_fraction, (int, float))
            or not 0.0 < self.end_fraction <= 1.0
        ):
            raise RecipeError(
                f"prune.end_fraction = {self.end_fraction!r} is not in (0, 1]",
                hint="The fraction of the pruning steps after which the target is reached, "
                "e.g. 0.75.",
            )
        if self.frequency is not None:
            check_epochs(self.frequency, "prune.frequency", minimum=1)
        object.__setattr__(
            self,
            "overrides",
            validate_overrides(tuple(self.overrides), "prune", allowed=("sparsity",)),
        )


@dataclass(frozen=True)
class _Plan:
    kind: str
    sparsity: float
    structure: str
    source: str


def _registry_prunable(layer) -> bool:
    """Layers TFMOT itself prunes (Conv1D, Conv3D, ...), beyond conv/dense/depthwise."""
    try:
        return bool(
            prune_registry.PruneRegistry.supports(layer)
            and prune_registry.PruneRegistry._weight_names(layer)
        )
    except (KeyError, ValueError, AttributeError):
        return False


def plan_layers(model, config: PruneConfig) -> tuple[dict[str, _Plan], dict[str, str]]:
    """Which layers get which sparsity and structure; the rest with a reason."""
    plans: dict[str, _Plan] = {}
    skipped: dict[str, str] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = dw.layer_kind(layer)
        if isinstance(layer, dw.keras.Model):
            skipped[layer.name] = "nested model: its layers are not pruned"
            continue
        if kind == dw.OTHER:
            if not _registry_prunable(layer):
                if layer.trainable_weights and not isinstance(
                    layer, dw.keras.layers.BatchNormalization
                ):
                    skipped[layer.name] = (
                        f"{type(layer).__name__} has no pruning rule "
                        "(pruned: Conv, DepthwiseConv2D, Dense)"
                    )
                continue
            kind = "other"
        default = config.depthwise_sparsity if kind == dw.DEPTHWISE else config.sparsity
        res = resolve(layer.name, config.overrides, default, key="sparsity")
        if res.skip:
            skipped[layer.name] = f"skipped by {res.describe()}"
            continue
        structure = UNSTRUCTURED
        sparsity = float(res.value)
        if config.structure == TWO_FOUR and kind != dw.DEPTHWISE:
            channels = dw.input_channels(layer)
            if kind not in (dw.CONV, dw.DENSE) or channels is None or channels % 4:
                why = (
                    f"2:4 needs groups of 4 along the input-channel axis; "
                    f"{layer.name} has {channels} input channels"
                    if kind in (dw.CONV, dw.DENSE)
                    else f"2:4 is applied to Conv2D and Dense layers, not {type(layer).__name__}"
                )
                if res.source == EXACT:
                    raise RecipeError(
                        f"prune.structure = \"2:4\" cannot apply to layer {layer.name!r}: {why}",
                        hint="Add skip = true to its [[prune.override]] or use "
                        "structure = \"unstructured\".",
                    )
                skipped[layer.name] = why
                continue
            if res.override is not None and res.override.sparsity is not None:
                raise RecipeError(
                    f"prune.override ({res.override.describe()}) sets sparsity for "
                    f"{layer.name!r}, but prune.structure = \"2:4\" fixes it at 0.5",
                    hint="Remove `sparsity` from that override (use skip = true to leave the "
                    "layer dense) or use structure = \"unstructured\".",
                )
            structure, sparsity = TWO_FOUR, 0.5
        if sparsity <= 0.0:
            skipped[layer.name] = f"target sparsity 0 ({res.describe()})"
            continue
        plans[layer.name] = _Plan(kind, sparsity, structure, res.describe())
    return plans, skipped


def _schedule_steps(config: PruneConfig, ctx: StageContext) -> dict:
    """begin/end/frequency so the last mask update lands on the target before any early stop."""
    n = len(ctx.data.x_train)
    steps_per_epoch = max(1, math.ceil(n / ctx.batch_size))
    # EarlyStopping cannot stop before epoch patience + 1: finish pruning by then.
    prune_epochs = min(config.epochs, ctx.patience + 1)
    total = steps_per_epoch * prune_epochs
    begin = config.begin_step
    if begin + 2 > total:
        raise RecipeError(
            f"prune.begin_step = {begin} leaves no steps to prune in "
            f"({total} training steps within the first {prune_epochs} epoch(s))",
            hint=f"Use begin_step < {max(0, total - 2)}, or more data / a smaller batch size.",
        )
    span = max(1, int(config.end_fraction * (total - 1 - begin)))
    freq = config.frequency or max(1, span // 10)
    freq = min(freq, span)
    end = begin + freq * max(1, span // freq)
    return {
        "begin_step": begin,
        "end_step": end,
        "frequency": freq,
        "steps_per_epoch": steps_per_epoch,
        "pruning_epochs": prune_epochs,
    }


def prune(model, config: PruneConfig, *, ctx: StageContext) -> StageOutcome:
    """Prune ``model`` (unchanged) by magnitude; return a plain model with exact zeros."""
    dw.check_graph_model(model, "prune")
    unmatched = check_unknown_layers(config.overrides, [l.name for l in model.layers], "prune")
    plans, skipped = plan_layers(model, config)
    if config.structure == TWO_FOUR and not any(p.structure == TWO_FOUR for p in plans.values()):
        raise RecipeError(
            'prune.structure = "2:4" applies to no layer of this model: 2:4 needs Conv2D or '
            "Dense layers whose input-channel count is a multiple of 4",
            hint='Use structure = "unstructured".',
        )
    steps = _schedule_steps(config, ctx)

    def replace(layer):
        plan = plans.get(layer.name)
        if plan is None:
            return None
        fresh = (
            dw.swap_class(layer, dw.PrunableDepthwiseConv2D)
            if plan.kind == dw.DEPTHWISE
            else layer.__class__.from_config(layer.get_config())
        )
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=plan.sparsity,
            begin_step=steps["begin_step"],
            end_step=steps["end_step"],
            frequency=steps["frequency"],
        )
        return tfmot.sparsity.keras.prune_low_magnitude(
            fresh,
            pruning_schedule=schedule,
            sparsity_m_by_n=(2, 4) if plan.structure == TWO_FOUR else None,
        )

    ctx.log(
        f"prune: {len(plans)} layer(s) to prune, {len(skipped)} skipped, "
        f"{config.epochs} epoch(s)"
    )
    wrapped = dw.rebuild(model, replace)
    history = ctx.fit(
        wrapped,
        config.epochs,
        stage="prune",
        extra_callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = dw.to_plain(tfmot.sparsity.keras.strip_pruning(wrapped))

    layers_info = {}
    total_zeros = total_weights = 0
    for layer in stripped.layers:
        plan = plans.get(layer.name)
        if plan is None:
            continue
        w = dw.main_kernel(layer).numpy()
        reached = float((w == 0).mean())
        total_zeros += int((w == 0).sum())
        total_weights += int(w.size)
        layers_info[layer.name] = {
            "kind": plan.kind,
            "structure": plan.structure,
            "target_sparsity": plan.sparsity,
            "sparsity_keras": round(reached, 4),
            "from": plan.source,
        }
    info = {
        "structure": config.structure,
        "default_sparsity": config.sparsity,
        "depthwise_sparsity": config.depthwise_sparsity,
        "schedule": {"kind": "polynomial_decay", **steps},
        "epochs_run": len(history.epoch) if history is not None else 0,
        "layers": layers_info,
        "pruned_weights_sparsity_keras": round(total_zeros / total_weights, 4)
        if total_weights
        else 0.0,
        "targets": {
            name: {"sparsity": p.sparsity, "structure": p.structure} for name, p in plans.items()
        },
        "skipped": dict(skipped),
    }
    if unmatched:
        info["unmatched_regex"] = unmatched
    return StageOutcome(model=stripped, info=info, skipped=skipped)


__all__ = ["PruneConfig", "prune", "plan_layers", "UNSTRUCTURED", "TWO_FOUR"]
