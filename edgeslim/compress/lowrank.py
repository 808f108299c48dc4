"""Low-rank factorization: a Dense or Conv2D layer becomes two thinner layers (truncated SVD).

A kernel reshaped to a matrix ``W`` (``m x n``: Dense ``in x out``; Conv2D
``k*k*in x out``, the flattened receptive field) is replaced by its best rank-r
approximation ``W ~ U_r diag(s_r) V_r^T`` (Eckart-Young), split into

* ``<name>_lr``: the first factor ``U_r sqrt(s_r)``, no bias and no activation;
  for a Conv2D a ``k x k`` conv with ``r`` filters and the original strides,
  padding and dilation (a convolution is linear in its flattened patch);
* ``<name>``: the second factor ``sqrt(s_r) V_r^T`` (a 1x1 conv for Conv2D), with
  the original bias and activation. It keeps the layer's name, so per-layer
  overrides of later stages and the report still find it.

Parameters go from ``m*n`` to ``r*(m+n)``; a layer is factorized only where that
saves parameters. The rank is the smallest that keeps ``rank_energy`` of the
squared singular values (``sum s_i^2``), or a fixed ``rank``. The model is then
fine-tuned (``ctx.fit``). The report lists per layer the rank, the parameters
before/after and the relative weight error ``||W - W_r||_F / ||W||_F``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2
from edgeslim._tf import keras
from edgeslim.compress.context import StageContext, StageOutcome, count_params
from edgeslim.errors import RecipeError


@dataclass(frozen=True)
class LowRankConfig:
    """The ``[lowrank]`` recipe table.

    ``rank``: a fixed rank for every layer (overrides ``rank_energy``).
    ``layers``: only these layers (exact names; empty: every Dense/Conv2D).
    ``skip``: never these layers. ``convs``: also factorize k x k Conv2D layers.
    ``min_saving``: factorize only when the layer loses at least this fraction
    of its kernel parameters (0: any saving).
    """

    rank_energy: float = 0.9
    rank: int | None = None
    epochs: int = 2
    layers: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    convs: bool = True
    min_saving: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "skip", tuple(self.skip))
        self.validate()

    def validate(self) -> None:
        e = self.rank_energy
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 1:
            raise RecipeError(
                f"lowrank.rank_energy = {e!r} must be in (0, 1]",
                hint="The fraction of the squared singular values each layer keeps, e.g. 0.9.",
            )
        if self.rank is not None and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1
        ):
            raise RecipeError(f"lowrank.rank = {self.rank!r} must be a whole number >= 1",
                              hint="Or leave it out and set rank_energy.")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise RecipeError(f"lowrank.epochs = {self.epochs!r} must be a whole number >= 0")
        for key in ("layers", "skip"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise RecipeError(f"lowrank.{key} must be a list of layer names")
        if not isinstance(self.convs, bool):
            raise RecipeError("lowrank.convs must be true or false")
        m = self.min_saving
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1:
            raise RecipeError(f"lowrank.min_saving = {m!r} must be in [0, 1)")


def choose_rank(s: np.ndarray, energy: float, fixed: int | None) -> int:
    """The smallest rank keeping ``energy`` of ``sum(s**2)``, or ``fixed`` (capped)."""
    if fixed is not None:
        return int(min(fixed, len(s)))
    e = np.cumsum(s.astype(np.float64) ** 2)
    if e[-1] <= 0:
        return 1
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def _candidates(model, config: LowRankConfig) -> tuple[list, dict]:
    names = [layer.name for layer in model.layers]
    for key in ("layers", "skip"):
        missing = [n for n in getattr(config, key) if n not in names]
        if missing:
            raise RecipeError(
                f"lowrank.{key} names layer(s) not in the model: {', '.join(missing)}",
                hint=f"Layers of {model.name}: {', '.join(names)}.",
            )
    out, skipped = [], {}
    for layer in model.layers:
        if config.layers and layer.name not in config.layers:
            continue
        if type(layer) is keras.layers.Dense:
            kind = "dense"
        elif type(layer) is keras.layers.Conv2D:
            if not config.convs and tuple(layer.kernel_size) != (1, 1):
                continue
            if getattr(layer, "groups", 1) != 1:
                skipped[layer.name] = "grouped convolution"
                continue
            if layer.data_format != "channels_last":
                skipped[layer.name] = "channels_first convolution"
                continue
            kind = "conv"
        else:
            if config.layers:
                raise RecipeError(
                    f"lowrank.layers names {layer.name!r}, a {type(layer).__name__}",
                    hint="Low-rank factorization applies to Dense and Conv2D layers.",
                )
            continue
        if layer.name in config.skip:
            skipped[layer.name] = "skipped by lowrank.skip"
            continue
        if len(layer._inbound_nodes) != 1:
            skipped[layer.name] = "layer is shared (called more than once)"
            continue
        out.append((layer, kind))
    return out, skipped


def _unique(name: str, taken: set[str]) -> str:
    new, i = f"{name}_lr", 1
    while new in taken:
        i += 1
        new = f"{name}_lr{i}"
    taken.add(new)
    return new


def _rewrite_config(model, plans: dict) -> dict:
    """The model config with ``<name>_lr`` inserted before each planned layer, which
    becomes the second (1x1 / Dense) factor."""
    cfg = copy.deepcopy(model.get_config())
    entries = cfg["layers"]
    sequential = isinstance(model, keras.Sequential)
    new_entries = []
    for e in entries:
        name = e["config"]["name"]
        plan = plans.get(name)
        if plan is None:
            new_entries.append(e)
            continue
        first_cfg = copy.deepcopy(e["config"])
        first_cfg.update(name=plan["first"], use_bias=False, activation="linear",
                         kernel_regularizer=None, bias_regularizer=None,
                         activity_regularizer=None, kernel_constraint=None,
                         bias_constraint=None)
        second_cfg = e["config"]
        if plan["kind"] == "dense":
            first_cfg["units"] = plan["rank"]
        else:
            first_cfg["filters"] = plan["rank"]
            second_cfg.update(kernel_size=(1, 1), strides=(1, 1), padding="valid",
                              dilation_rate=(1, 1))
        first = {"class_name": e["class_name"], "config": first_cfg}
        if not sequential:
            first["name"] = plan["first"]
            first["inbound_nodes"] = e["inbound_nodes"]
            e["inbound_nodes"] = [[[plan["first"], 0, 0, {}]]]
        if "module" in e:
            first["module"] = e["module"]
            first["registered_name"] = e.get("registered_name")
        new_entries += [first, e]
    cfg["layers"] = new_entries
    return cfg


def factorize(model, config: LowRankConfig) -> tuple[object, dict, dict]:
    """The factorized (not fine-tuned) model, per-layer facts, skipped layers."""
    dw.check_graph_model(model, "lowrank")
    candidates, skipped = _candidates(model, config)
    taken = {layer.name for layer in model.layers}
    plans, layers_info, weights = {}, {}, {}
    for layer, kind in candidates:
        kernel = layer.kernel.numpy()
        m, n = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])
        W = kernel.reshape(m, n).astype(np.float64)
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        r = choose_rank(s, config.rank_energy, config.rank)
        before, after = m * n, r * (m + n)
        if after >= before * (1.0 - config.min_saving) or after >= before:
            skipped[layer.name] = (
                f"rank {r} would not save parameters ({after} >= {before} kernel weights)"
                if after >= before else
                f"rank {r} saves less than lowrank.min_saving ({after} vs {before} weights)"
            )
            continue
        root = np.sqrt(s[:r])
        A = (U[:, :r] * root).astype(np.float32)
        B = (root[:, None] * Vt[:r]).astype(np.float32)
        err = float(np.sqrt(np.sum(s[r:] ** 2) / max(np.sum(s ** 2), 1e-30)))
        first = _unique(layer.name, taken)
        plans[layer.name] = {"kind": kind, "rank": r, "first": first}
        bias = [layer.bias.numpy()] if layer.use_bias else []
        if kind == "dense":
            weights[first] = [A]
            weights[layer.name] = [B, *bias]
        else:
            weights[first] = [A.reshape(*kernel.shape[:-1], r)]
            weights[layer.name] = [B.reshape(1, 1, r, n), *bias]
        nb = len(bias[0]) if bias else 0
        layers_info[layer.name] = {
            "kind": kind, "shape": list(kernel.shape), "rank": r, "max_rank": int(min(m, n)),
            "energy_kept": round(float(np.sum(s[:r] ** 2) / max(np.sum(s ** 2), 1e-30)), 4),
            "params_before": before + nb, "params_after": after + nb,
            "weight_error": round(err, 4), "first_factor": first,
        }
    if not plans:
        return dw.rebuild(model, lambda layer: None), layers_info, skipped
    cfg = _rewrite_config(model, plans)
    with keras.utils.custom_object_scope(dw.CUSTOM_OBJECTS):
        new = model.__class__.from_config(cfg)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new, layers_info, skipped


def lowrank(model, config: LowRankConfig, *, ctx: StageContext) -> StageOutcome:
    """Factorize ``model``'s Dense/Conv2D layers (``model`` unchanged), then fine-tune."""
    new, layers_info, skipped = factorize(model, config)
    before = ctx.evaluate(model, "val")
    factored = ctx.evaluate(new, "val")
    ctx.log(f"lowrank: {len(layers_info)} layer(s) factorized, {len(skipped)} skipped; "
            f"val {ctx.data.metric_name} {before:.4f} -> {factored:.4f} before fine-tuning")
    history = ctx.fit(new, config.epochs, stage="lowrank") if layers_info else None
    tuned = ctx.evaluate(new, "val")
    info = {
        "rank_energy": None if config.rank is not None else config.rank_energy,
        "rank": config.rank,
        "params_before": count_params(model),
        "params_after": count_params(new),
        "val_metric_before": before,
        "val_metric_factorized": factored,
        "val_metric_finetuned": tuned,
        "epochs_run": len(history.epoch) if history is not None else 0,
        "layers": layers_info,
        "skipped": dict(skipped),
    }
    return StageOutcome(model=new, info=info, skipped=skipped)


__all__ = ["LowRankConfig", "lowrank", "factorize", "choose_rank"]
