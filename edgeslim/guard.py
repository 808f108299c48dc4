"""The accuracy guard: a compressed model ships only within the user's accuracy budget.

Plain int8 conversion of the user's model is always a candidate. The recipe's
compressed model is the first compressed candidate; when its validation drop
exceeds the budget, the build backs off along a fixed ladder and tries again:

    rung k (k = 1, 2, ...), with f = 0.5 ** k
    - prune:    sparsity and depthwise_sparsity x f (per-layer overrides too)
    - channels: ratio (fraction of channels removed) x f
    - cluster:  clusters x 2 ** k (at most 256)
    - lowrank:  the energy left out x f  (rank_energy 0.9 -> 0.95 -> 0.975)
    - distill:  the width removed x f    (width 0.5 -> 0.75 -> 0.875)
    - every stage that fine-tunes: epochs x (1 + k)

If no compressed candidate fits, plain int8 ships and the report says why.

The budget is measured on the validation split, never on the test split (the
test split stays untouched for the report):
- classification: ``max_drop`` points of top-1 accuracy below the float model
  (default 1.0 point);
- regression: ``max_drop`` percent of MSE increase over the float model
  (default 10 %).
Candidates are scored with LiteRT, the int8 model exactly as it ships.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgeslim.io.dataset import CLASSIFICATION

DEFAULT_MAX_DROP = {"classification": 1.0, "regression": 10.0}
PLAIN = "plain-int8"
MAX_CLUSTERS = 256


@dataclass(frozen=True)
class Budget:
    """How much worse than the float model, on validation, a shipped model may be."""

    max_drop: float
    task: str

    @classmethod
    def for_task(cls, max_drop: float | None, task: str) -> "Budget":
        return cls(DEFAULT_MAX_DROP[task] if max_drop is None else float(max_drop), task)

    @property
    def unit(self) -> str:
        return "points" if self.task == CLASSIFICATION else "% MSE"

    def drop(self, float_metric: float, int8_metric: float) -> float:
        """Accuracy points lost, or percent of MSE gained (positive = worse)."""
        if self.task == CLASSIFICATION:
            return 100.0 * (float_metric - int8_metric)
        return 100.0 * (int8_metric - float_metric) / max(float_metric, 1e-12)

    def allows(self, drop: float) -> bool:
        return drop <= self.max_drop + 1e-9

    def describe(self) -> str:
        what = "accuracy points" if self.task == CLASSIFICATION else "percent of MSE increase"
        return f"{self.max_drop:g} {what} on the validation split"


@dataclass
class Candidate:
    """One model the build could ship, measured the way the guard decides."""

    name: str
    recipe: Any  # edgeslim.recipe.Recipe, or None for plain int8
    rung: int | None  # ladder rung (0 = the recipe as given), None for plain int8
    model: Any = None  # the float (or QAT) tf_keras model the int8 file came from
    tflite: bytes = b""
    val_metric: float | None = None
    val_drop: float | None = None
    within_budget: bool = False
    failed: str | None = None  # a stage's own failure (e.g. a student stuck at chance)
    run: Any = None  # what the stages recorded (pipeline._StagesRun)
    wall_s: float = 0.0
    changes: dict = field(default_factory=dict)
    converted: Any = None  # edgeslim.precision.Converted: tflite as it ships + its plain int8 twin

    def to_dict(self) -> dict:
        return {
            "name": self.name, "rung": self.rung, "changes": self.changes,
            "val_metric": self.val_metric, "val_drop": self.val_drop,
            "within_budget": self.within_budget, "failed": self.failed,
            "tflite_bytes": len(self.tflite), "wall_s": self.wall_s,
        }


def _scale_overrides(overrides, key: str, fn):
    out = []
    for o in overrides:
        value = getattr(o, key, None)
        out.append(dataclasses.replace(o, **{key: fn(value)}) if value is not None else o)
    return tuple(out)


def backoff(recipe, rung: int):
    """The recipe at ladder rung ``rung`` (0: unchanged), and what changed, per stage.

    Only fields a stage's config has are touched, so a stage added later backs off
    on the fields it shares with these (ratio, sparsity, clusters, width, epochs).
    """
    if rung == 0:
        return recipe, {}
    f = 0.5 ** rung
    more = 1 + rung
    rules = {
        "sparsity": lambda v: round(v * f, 4),
        "depthwise_sparsity": lambda v: round(v * f, 4),
        "ratio": lambda v: round(v * f, 4),
        "clusters": lambda v: min(MAX_CLUSTERS, int(v) * 2 ** rung),
        "rank_energy": lambda v: round(1.0 - (1.0 - v) * f, 4),
        "width": lambda v: round(1.0 - (1.0 - v) * f, 4),
        "epochs": lambda v: int(v) * more,
    }
    stages = dict(recipe.stages)
    changes: dict = {}
    for name in recipe.active_stages:
        cfg = stages[name]
        updates = {}
        for key, rule in rules.items():
            value = getattr(cfg, key, None)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key == "epochs" and value == 0:
                continue
            updates[key] = rule(value)
        overrides = getattr(cfg, "overrides", ())
        if overrides:
            for key in ("sparsity", "ratio", "clusters"):
                if key in rules:
                    overrides = _scale_overrides(overrides, key, rules[key])
            updates["overrides"] = overrides
        if updates:
            stages[name] = dataclasses.replace(cfg, **updates)
            changes[name] = {k: v for k, v in updates.items() if k != "overrides"
                             and getattr(cfg, k) != v}
    return dataclasses.replace(recipe, stages=stages), {k: v for k, v in changes.items() if v}


__all__ = ["Budget", "Candidate", "backoff", "DEFAULT_MAX_DROP", "PLAIN"]
