"""Quantization-aware training, preserving what pruning and clustering left.

TFMOT's ``quantize_apply`` wraps annotated layers with fake-quantizers; the
model fine-tunes (``ctx.fit``) and is returned *quantize-aware* (not stripped):
the TFLite converter reads its learnt ranges.

Which TFMOT scheme runs depends on which earlier stages ran (``preserve``):

=======================  ===================================================
preserve                 scheme
=======================  ===================================================
{}                       Default8BitQuantizeScheme
{"sparsity"}             Default8BitPrunePreserveQuantizeScheme
{"clusters"}             Default8BitClusterPreserveQuantizeScheme(False)
{"sparsity","clusters"}  Default8BitClusterPreserveQuantizeScheme(True)
=======================  ===================================================

Two gaps in TFMOT 0.8.1 that this module closes:

* Its collaborative schemes disable preservation for ``DepthwiseConv2D`` (the
  registries list it in ``_DISABLE_PRUNE_PRESERVE`` / ``_DISABLE_CLUSTER_PRESERVE``),
  so QAT would refill the zeros and spread the clusters that edgeslim put into
  depthwise kernels. When preserving, depthwise layers are held fixed
  (non-trainable) during QAT; their activations are still quantize-aware.
* A layer outside TFMOT's QAT registry (e.g. ``PReLU``) makes ``quantize_model``
  fail. Here only the layers TFMOT accepts are annotated; the others are left
  float in the QAT model, reported in ``skipped``, and quantized by the
  converter from the representative data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgeslim._tf import tf  # first: imports TensorFlow with Keras 2

import tensorflow_model_optimization as tfmot  # noqa: I001
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (  # noqa: E501
    default_8bit_cluster_preserve_quantize_scheme as cqat,
)
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E501
    default_8bit_prune_preserve_quantize_scheme as pqat,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry,
    default_8bit_quantize_scheme,
)

from edgeslim.compress import _depthwise as dw
from edgeslim.compress.context import StageContext, StageOutcome
from edgeslim.compress.overrides import check_epochs
from edgeslim.errors import ConversionError, RecipeError

PRESERVABLE = frozenset({"sparsity", "clusters"})
_UNSUPPORTED = re.compile(r"Layer (?P<name>[^:\s]+):<class '[^']*'> is not supported")
_UNSUPPORTED_CLASS = re.compile(r"Layer <class '(?P<cls>[^']*)'> is not supported")

# Layers TFMOT's default 8-bit transforms handle although its registry omits them.
_HANDLED_BY_TRANSFORMS = ("BatchNormalization", "SeparableConv1D", "SeparableConv2D")


@dataclass(frozen=True)
class QATConfig:
    """The ``[qat]`` recipe table.

    ``fallback_to_ptq``: after QAT, the build compares the int8 model from QAT with
    plain post-training int8 conversion of the model QAT started from, on the
    validation split, and ships the better one (QAT wins ties); the report says
    which shipped and why. False always ships the QAT model.
    """

    epochs: int = 2
    fallback_to_ptq: bool = True

    def __post_init__(self):
        check_epochs(self.epochs, "qat.epochs", minimum=1)


def scheme_for(preserve: set[str] | frozenset[str]):
    """The TFMOT scheme (and its name) that keeps what ``preserve`` names."""
    unknown = set(preserve) - PRESERVABLE
    if unknown:
        raise RecipeError(
            f"qat cannot preserve {sorted(unknown)}",
            hint="QAT preserves 'sparsity' (after prune) and 'clusters' (after cluster).",
        )
    if "clusters" in preserve:
        keep_zeros = "sparsity" in preserve
        return (
            cqat.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=keep_zeros),
            f"Default8BitClusterPreserveQuantizeScheme(preserve_sparsity={keep_zeros})",
        )
    if "sparsity" in preserve:
        return (
            pqat.Default8BitPrunePreserveQuantizeScheme(),
            "Default8BitPrunePreserveQuantizeScheme",
        )
    return default_8bit_quantize_scheme.Default8BitQuantizeScheme(), "Default8BitQuantizeScheme"


def _annotatable(layer) -> bool:
    """Whether TFMOT 0.8.1's default 8-bit registry (or its transforms) covers the layer."""
    if isinstance(layer, dw.keras.layers.InputLayer):
        return False
    if type(layer).__name__ in _HANDLED_BY_TRANSFORMS:
        return True
    return default_8bit_quantize_registry.Default8BitQuantizeRegistry().supports(layer)


def _annotate(model, names: set[str]):
    def wrap(layer):
        if layer.name in names:
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return None

    return dw.wrap_layers(model, wrap)


def _unsupported_in(exc: Exception, model, names: set[str]) -> set[str]:
    """The annotated layers a quantize_apply error blames (by name or by class)."""
    text = str(exc)
    m = _UNSUPPORTED.search(text)
    if m and m.group("name") in names:
        return {m.group("name")}
    m = _UNSUPPORTED_CLASS.search(text)
    if m:
        cls = m.group("cls").rsplit(".", 1)[-1]
        return {l.name for l in model.layers if l.name in names and type(l).__name__ == cls}
    return set()


def _is_plain_relu(layer) -> bool:
    if type(layer).__name__ == "ReLU":
        cfg = layer.get_config()
        return (
            cfg.get("max_value") is None
            and float(cfg.get("negative_slope") or 0.0) == 0.0
            and float(cfg.get("threshold") or 0.0) == 0.0
        )
    if type(layer).__name__ == "Activation":
        return getattr(layer.activation, "__name__", "") == "relu"
    return False


def _weight_producer(layer):
    """The Conv/Depthwise/Dense layer that is ``layer``'s only input, or None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return None
    inbound = tf.nest.flatten(nodes[0].inbound_layers)
    if len(inbound) != 1 or dw.layer_kind(inbound[0]) == dw.OTHER:
        return None
    return inbound[0]


def _is_relu_like(layer) -> bool:
    """What TFMOT's LayerReLUQuantize / LayerReluActivationQuantize patterns match."""
    if type(layer).__name__ == "ReLU":
        return True
    return type(layer).__name__ == "Activation" and getattr(
        layer.activation, "__name__", "") == "relu"


def _relu_producer(layer):
    """The producer a plain ReLU can be fused into (linear, feeding only it), or None."""
    producer = _weight_producer(layer)
    if producer is None or len(producer._outbound_nodes) != 1:
        return None
    if getattr(producer.activation, "__name__", "") != "linear":
        return None
    return producer


def fold_relu(model):
    """Rewrite Conv/Depthwise/Dense -> ReLU into Conv(activation="relu") -> Activation("linear").

    Why: with a separate ReLU layer after it, TFMOT 0.8.1's LayerReLUQuantize
    transform gives the producer a NoOpQuantizeConfig: its weights are then not
    fake-quantized in QAT at all, and the collaborative schemes neither keep
    its zeros nor its clusters. A fused ReLU is what the TFLite converter makes
    of the pair anyway. The ReLU's place and name are kept by a linear
    Activation (no quantizer, no op after conversion).
    Returns (new model, {relu layer: producer layer}).
    """
    folded = {}
    for layer in model.layers:
        if _is_plain_relu(layer):
            producer = _relu_producer(layer)
            if producer is not None:
                folded[layer.name] = producer.name
    if not folded:
        return model, folded
    producers = set(folded.values())

    def replace(layer):
        if layer.name in folded:
            return dw.keras.layers.Activation("linear", name=layer.name)
        if layer.name in producers:
            cfg = layer.get_config()
            cfg["activation"] = "relu"
            return layer.__class__.from_config(cfg)
        return None

    return dw.rebuild(model, replace), folded


def _compressed(kernel, preserve) -> bool:
    """Whether an earlier stage left zeros or shared values in a depthwise kernel."""
    if "sparsity" in preserve and float(np.mean(kernel == 0.0)) > 0.01:
        return True
    if "clusters" in preserve:
        unique = np.unique(kernel).size
        return unique <= 256 and unique <= kernel.size // 2
    return False


def _hold_fixed(quantized, names: list[str]) -> None:
    """Keep the kernels of the named (non-trainable) layers out of QAT's optimizer.

    Why: QuantizeWrapper appends every quantized weight to its own trainable list
    ("so unquantized weights get trained") even when the wrapped layer is
    non-trainable; ``trainable = False`` alone would not hold a kernel fixed.
    """
    for layer in quantized.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or inner.name not in names:
            continue
        # The wrapper swapped the kernel attribute for its fake-quantized tensor;
        # the variable itself is in its (weight, quantizer, vars) list.
        held = {id(w) for w in inner.weights} | {id(v[0]) for v in layer._weight_vars}
        moved = [w for w in layer._trainable_weights if id(w) in held]
        layer._trainable_weights = [w for w in layer._trainable_weights if id(w) not in held]
        # Still a weight of the model (saved, converted), just not a trained one.
        layer._non_trainable_weights.extend(moved)


def qat(
    model,
    config: QATConfig,
    *,
    ctx: StageContext,
    preserve: set[str] | frozenset[str] = frozenset(),
) -> StageOutcome:
    """Fine-tune ``model`` quantization-aware; returns the QAT model for the converter."""
    dw.check_graph_model(model, "qat")
    scheme, scheme_name = scheme_for(preserve)
    skipped: dict[str, str] = {}
    # Our copy (never train the caller's model), with ReLUs fused where TFMOT needs it.
    work, folded = fold_relu(model)
    if not folded:
        work = dw.rebuild(model, lambda layer: None)

    frozen = [
        layer.name
        for layer in work.layers
        if dw.layer_kind(layer) == dw.DEPTHWISE
        and layer.trainable
        and _compressed(layer.depthwise_kernel.numpy(), preserve)
    ]
    for name in frozen:
        work.get_layer(name).trainable = False

    names = set()
    unannotated_relu = []
    for layer in work.layers:
        if _is_relu_like(layer) and _weight_producer(layer) is not None:
            # A ReLU we could not fuse (e.g. ReLU6): annotated, TFMOT would switch off
            # its producer's weight quantization (see fold_relu). Left alone, its
            # output is still fake-quantized (TFMOT's output-only config).
            unannotated_relu.append(layer.name)
        elif _annotatable(layer):
            names.add(layer.name)
        elif not isinstance(layer, dw.keras.layers.InputLayer):
            skipped[layer.name] = (
                f"{type(layer).__name__} is not in TFMOT's QAT registry: left float in QAT, "
                "quantized by the converter"
            )

    # TFMOT decides some support only inside quantize_apply (after its layout
    # transforms): drop each layer it rejects and retry, one layer at a time.
    quantized = None
    for _ in range(len(work.layers) + 1):
        if not names:
            break
        annotated = _annotate(work, names)
        try:
            with tfmot.quantization.keras.quantize_scope(dw.CUSTOM_OBJECTS):
                quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme)
            break
        except (RuntimeError, ValueError) as exc:
            blamed = _unsupported_in(exc, work, names)
            if not blamed:
                raise ConversionError(
                    f"TFMOT could not make the model quantization-aware: {exc}",
                    hint="Leave 'qat' out of build.stages; post-training int8 conversion "
                    "still runs.",
                ) from exc
            for name in blamed:
                names.discard(name)
                skipped[name] = (
                    f"{type(work.get_layer(name)).__name__} is not supported here by TFMOT's "
                    f"{scheme_name} (quantize_apply refused it): left float in QAT, "
                    "quantized by the converter"
                )
    if quantized is None:
        raise ConversionError(
            "no layer of this model can be made quantization-aware by TFMOT",
            hint="Leave 'qat' out of build.stages; post-training int8 conversion still runs.",
        )

    _hold_fixed(quantized, frozen)
    ctx.log(
        f"qat: {len(names)} layer(s) quantize-aware ({scheme_name}), "
        f"{len(skipped)} left to the converter, {config.epochs} epoch(s)"
    )
    history = ctx.fit(quantized, config.epochs, stage="qat")
    info = {
        "scheme": scheme_name,
        "preserve": sorted(preserve),
        "annotated_layers": sorted(names),
        "depthwise_held_fixed": frozen,
        "relu_fused_into": folded,
        "relu_not_annotated": unannotated_relu,
        "epochs_run": len(history.epoch) if history is not None else 0,
        "skipped": dict(skipped),
    }
    if frozen:
        info["note"] = (
            "TFMOT's collaborative QAT does not preserve DepthwiseConv2D kernels; "
            "they were held fixed so their sparsity and clusters survive."
        )
    return StageOutcome(model=quantized, info=info, skipped=skipped)


__all__ = ["QATConfig", "qat", "scheme_for", "PRESERVABLE"]
