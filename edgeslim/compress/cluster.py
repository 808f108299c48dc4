"""Weight clustering (weight sharing): N centroids per layer, k-means++ initialised.

TFMOT's ``cluster_weights`` replaces each kernel by indices into N trainable
centroids (initialised with k-means++), the model fine-tunes (``ctx.fit``), and
``strip_clustering`` leaves a plain model whose kernels hold at most N distinct
values. With ``preserve_sparsity`` (TFMOT's own option) zeros left by an
earlier prune stay zero and one centroid is pinned at 0.

What edgeslim adds: depthwise kernels are clustered too (``depthwise = true``,
the default), which TFMOT's registry does not do; per-layer overrides
(``clusters`` or ``skip``, exact name > regex > default).

Per-tensor centroids stay at most N distinct values per output channel after
per-channel int8 quantization and BatchNorm folding (both scale a channel by
one factor); ``tflite_inspect`` measures that on the converted file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2

import tensorflow_model_optimization as tfmot  # noqa: I001
from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

from edgeslim.compress.context import StageContext, StageOutcome
from edgeslim.compress.overrides import (
    LayerOverride,
    check_clusters,
    check_epochs,
    check_unknown_layers,
    resolve,
    validate_overrides,
)
from edgeslim.errors import RecipeError

CentroidInitialization = tfmot.clustering.keras.CentroidInitialization

# A layer counts as sparse (and gets sparsity preservation) above this zero fraction.
_SPARSE = 0.01


@dataclass(frozen=True)
class ClusterConfig:
    """The ``[cluster]`` recipe table."""

    clusters: int = 16
    epochs: int = 2
    preserve_sparsity: bool = True
    depthwise: bool = True
    overrides: tuple[LayerOverride, ...] = ()

    def __post_init__(self):
        check_clusters(self.clusters, "cluster.clusters")
        check_epochs(self.epochs, "cluster.epochs", minimum=0)
        for key in ("preserve_sparsity", "depthwise"):
            if not isinstance(getattr(self, key), bool):
                raise RecipeError(
                    f"cluster.{key} = {getattr(self, key)!r} is not true or false",
                    hint=f"Write cluster.{key} = true or false.",
                )
        object.__setattr__(
            self,
            "overrides",
            validate_overrides(tuple(self.overrides), "cluster", allowed=("clusters",)),
        )


@dataclass(frozen=True)
class _Plan:
    kind: str
    clusters: int
    preserve_sparsity: bool
    source: str
    sparsity_before: float


def _registry_clusterable(layer) -> bool:
    try:
        return bool(
            clustering_registry.ClusteringRegistry.supports(layer)
            and clustering_registry.ClusteringRegistry._weight_names(layer)
        )
    except (KeyError, ValueError, AttributeError):
        return False


def plan_layers(model, config: ClusterConfig) -> tuple[dict[str, _Plan], dict[str, str]]:
    plans: dict[str, _Plan] = {}
    skipped: dict[str, str] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, dw.keras.Model):
            skipped[layer.name] = "nested model: its layers are not clustered"
            continue
        kind = dw.layer_kind(layer)
        if kind == dw.DEPTHWISE:
            if not config.depthwise:
                skipped[layer.name] = "depthwise kernels not clustered (cluster.depthwise = false)"
                continue
        elif kind == dw.OTHER:
            if not _registry_clusterable(layer):
                if layer.trainable_weights and not isinstance(
                    layer, dw.keras.layers.BatchNormalization
                ):
                    skipped[layer.name] = f"{type(layer).__name__} has no clustering rule"
                continue
            kind = "other"
        res = resolve(layer.name, config.overrides, config.clusters, key="clusters")
        if res.skip:
            skipped[layer.name] = f"skipped by {res.describe()}"
            continue
        clusters = int(res.value)
        kernel = dw.main_kernel(layer)
        if kernel is None:
            skipped[layer.name] = f"{type(layer).__name__}: no kernel to cluster"
            continue
        w = np.asarray(kernel.numpy())
        sparsity = float(np.mean(w == 0.0))
        preserve = config.preserve_sparsity and sparsity > _SPARSE
        if w.size <= clusters:
            skipped[layer.name] = (
                f"{w.size} weights, not more than the {clusters} clusters asked for"
            )
            continue
        if np.unique(w).size <= clusters:
            skipped[layer.name] = (
                f"already holds {np.unique(w).size} distinct values (<= {clusters})"
            )
            continue
        if preserve and clusters <= 2:
            raise RecipeError(
                f"cluster.clusters = {clusters} for sparse layer {layer.name!r}: preserving its "
                "zeros pins one cluster at 0 and needs at least 3",
                hint="Use clusters >= 3, or preserve_sparsity = false.",
            )
        plans[layer.name] = _Plan(kind, clusters, preserve, res.describe(), sparsity)
    return plans, skipped


def cluster(model, config: ClusterConfig, *, ctx: StageContext) -> StageOutcome:
    """Cluster ``model``'s weights (``model`` unchanged); return a plain model."""
    dw.check_graph_model(model, "cluster")
    unmatched = check_unknown_layers(config.overrides, [l.name for l in model.layers], "cluster")
    plans, skipped = plan_layers(model, config)
    if ctx.seed is not None:  # k-means++ draws its first centroids at random
        dw.keras.utils.set_random_seed(ctx.seed)

    def to_clusterable(layer):
        plan = plans.get(layer.name)
        if plan is not None and plan.kind == dw.DEPTHWISE:
            return dw.swap_class(layer, dw.ClusterableDepthwiseConv2D)
        return None

    def wrap(layer):
        plan = plans.get(layer.name)
        if plan is None:
            return None
        return tfmot.clustering.keras.cluster_weights(
            layer,
            number_of_clusters=plan.clusters,
            cluster_centroids_init=CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=plan.preserve_sparsity,
        )

    ctx.log(f"cluster: {len(plans)} layer(s), {len(skipped)} skipped, {config.epochs} epoch(s)")
    # Centroids are computed from the weights when a wrapper is built, so the
    # layers must hold their weights first: copy, then wrap the copy's layers.
    wrapped = dw.wrap_layers(dw.rebuild(model, to_clusterable), wrap)
    history = ctx.fit(wrapped, config.epochs, stage="cluster")
    stripped = dw.to_plain(tfmot.clustering.keras.strip_clustering(wrapped))

    layers_info = {}
    for layer in stripped.layers:
        plan = plans.get(layer.name)
        if plan is None:
            continue
        kernel = dw.main_kernel(layer)
        w = np.asarray(kernel.numpy()) if kernel is not None else None
        layers_info[layer.name] = {
            "kind": plan.kind,
            "clusters": plan.clusters,
            "preserve_sparsity": plan.preserve_sparsity,
            "unique_values_keras": int(np.unique(w).size) if w is not None else None,
            "sparsity_before": round(plan.sparsity_before, 4),
            "sparsity_keras": round(float(np.mean(w == 0.0)), 4) if w is not None else None,
            "from": plan.source,
        }
    info = {
        "default_clusters": config.clusters,
        "centroid_init": "kmeans++",
        "preserve_sparsity": config.preserve_sparsity,
        "epochs_run": len(history.epoch) if history is not None else 0,
        "layers": layers_info,
        "targets": {
            name: {"clusters": p.clusters, **({"sparsity": round(p.sparsity_before, 4)}
                                               if p.preserve_sparsity else {})}
            for name, p in plans.items()
        },
        "skipped": dict(skipped),
    }
    if unmatched:
        info["unmatched_regex"] = unmatched
    return StageOutcome(model=stripped, info=info, skipped=skipped)


__all__ = ["ClusterConfig", "cluster", "plan_layers", "CentroidInitialization"]
