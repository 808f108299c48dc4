"""Depthwise-convolution support that TFMOT 0.8.1 leaves out, and layer plumbing.

TFMOT's prune and cluster registries list ``DepthwiseConv2D`` with no weights
(its comment cites accuracy loss), so "50% pruning" of a DS-CNN leaves every
depthwise kernel dense and unclustered. We use TFMOT's own extension points
instead: subclasses implementing ``PrunableLayer.get_prunable_weights`` and
``ClusterableLayer.get_clusterable_weights``. They exist only while a stage
trains; ``to_plain`` turns them back into plain ``DepthwiseConv2D`` because
TFMOT's quantization registry matches exact classes (a subclass would not be
quantize-annotated).

Also here: ``rebuild``, the one place a model is cloned layer by layer with
weights copied, so no stage trains (and so changes) the caller's model.
"""

from __future__ import annotations

from typing import Callable

from edgeslim._tf import keras  # first: sets up Keras 2 before TFMOT imports TensorFlow

import tensorflow_model_optimization as tfmot  # noqa: E402,I001

PrunableLayer = tfmot.sparsity.keras.PrunableLayer
ClusterableLayer = tfmot.clustering.keras.ClusterableLayer

CONV = "conv"
DEPTHWISE = "depthwise"
DENSE = "dense"
OTHER = "other"


class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D, PrunableLayer):
    """A DepthwiseConv2D whose depthwise kernel TFMOT's magnitude pruning may zero."""

    def get_prunable_weights(self):
        return [self.depthwise_kernel]


class ClusterableDepthwiseConv2D(keras.layers.DepthwiseConv2D, ClusterableLayer):
    """A DepthwiseConv2D whose depthwise kernel TFMOT may cluster (one codebook per layer)."""

    def get_clusterable_weights(self):
        return [("depthwise_kernel", self.depthwise_kernel)]


_TRAINING_CLASSES = (PrunableDepthwiseConv2D, ClusterableDepthwiseConv2D)

CUSTOM_OBJECTS = {
    "PrunableDepthwiseConv2D": PrunableDepthwiseConv2D,
    "ClusterableDepthwiseConv2D": ClusterableDepthwiseConv2D,
}


def layer_kind(layer) -> str:
    """CONV, DEPTHWISE, DENSE or OTHER (exact Keras classes and our subclasses)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return DEPTHWISE
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, keras.layers.Conv2DTranspose
    ):
        return CONV
    if isinstance(layer, keras.layers.Dense):
        return DENSE
    return OTHER


def main_kernel(layer):
    """The weight variable pruning/clustering acts on, or None."""
    kind = layer_kind(layer)
    if kind == DEPTHWISE:
        return layer.depthwise_kernel
    if kind in (CONV, DENSE):
        return layer.kernel
    return getattr(layer, "kernel", None)  # e.g. Conv1D, pruned/clustered through TFMOT


def input_channels(layer) -> int | None:
    """The input-channel count of a conv/dense kernel (the axis 2:4 groups run along)."""
    kernel = main_kernel(layer)
    if kernel is None or layer_kind(layer) == OTHER:
        return None
    # Keras: conv [H, W, I, O], dense [I, O], depthwise [H, W, C, M].
    return int(kernel.shape[-2])


def check_graph_model(model, section: str) -> None:
    from edgeslim.errors import ModelLoadError

    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelLoadError(
            f"[{section}] needs a Sequential or functional tf_keras model; "
            f"got a subclassed {type(model).__name__}",
            hint="Rebuild the model with the Sequential or functional API, or leave "
            f"'{section}' out of build.stages.",
        )


def rebuild(model, replace: Callable[[object], object | None]):
    """Clone ``model``; ``replace(layer)`` may return a new layer (or wrapper) for it.

    Every layer of the result is new and gets a copy of the original weights, so
    training the result leaves ``model`` untouched. A wrapper returned by
    ``replace`` must wrap a fresh layer (its ``.layer``), which receives the weights.
    """
    pairs: list[tuple[object, object]] = []

    def clone(layer):
        new = replace(layer)
        if new is None:
            if isinstance(layer, keras.Model):
                new = keras.models.clone_model(layer)
            else:
                new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    cloned = keras.models.clone_model(model, clone_function=clone)
    for old, new in pairs:
        weights = old.get_weights()
        if not weights:
            continue
        target = new.layer if isinstance(new, keras.layers.Wrapper) else new
        target.set_weights(weights)
    return cloned


def wrap_layers(model, wrap: Callable[[object], object | None]):
    """Clone ``model`` reusing its layer objects; ``wrap(layer)`` may return a wrapper.

    Unlike ``rebuild``, the wrappers see the layers' current weights when they are
    built (TFMOT's clustering computes its centroids then). Only call this on a
    model the stage owns (e.g. one returned by ``rebuild``).
    """

    def clone(layer):
        new = wrap(layer)
        return layer if new is None else new

    return keras.models.clone_model(model, clone_function=clone)


def swap_class(layer, cls):
    """A fresh layer of class ``cls`` with ``layer``'s config (weights copied by rebuild)."""
    return cls.from_config(layer.get_config())


def to_plain(model):
    """Replace our training-time depthwise subclasses by plain DepthwiseConv2D layers."""

    def replace(layer):
        if isinstance(layer, _TRAINING_CLASSES):
            return keras.layers.DepthwiseConv2D.from_config(layer.get_config())
        return None

    return rebuild(model, replace)


__all__ = [
    "PrunableDepthwiseConv2D",
    "ClusterableDepthwiseConv2D",
    "CUSTOM_OBJECTS",
    "layer_kind",
    "main_kernel",
    "input_channels",
    "rebuild",
    "swap_class",
    "wrap_layers",
    "to_plain",
    "check_graph_model",
]
