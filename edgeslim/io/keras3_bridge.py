"""Rebuild a Keras 3 Sequential/Functional model as a tf_keras (Keras 2) model, and prove it.

TFMOT only works with tf_keras. The bridge maps every layer's config to its tf_keras form
(dtype policies, initializers, regularizers, constraints and activations from Keras 3's
``{"module", "class_name", "config"}`` dicts; ``batch_shape`` -> ``batch_input_shape``;
renamed arguments such as LeakyReLU's ``negative_slope`` -> ``alpha``), rebuilds the graph
node by node (raw ``keras.ops`` nodes become the equivalent TensorFlow ops, i.e. tf_keras
TFOpLambda layers), copies the weights by name, and compares both models' outputs on
seeded random inputs (a batch of 4):

    max |y_keras3 - y_tf_keras| <= 1e-5 * max(1, max |y_keras3|)

Both run the same TensorFlow kernels on the CPU, so the difference is usually exactly 0.
Anything it cannot map raises ModelLoadError naming the layer, its class and what to do.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeslim._tf import keras, tf
from edgeslim.errors import ModelLoadError

ABS_TOLERANCE = 1e-5
CHECK_BATCH = 4
CHECK_SEED = 0


def short_error(exc: BaseException) -> str:
    """One line describing an exception from a library."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# Layer classes the bridge rebuilds (same class name in tf_keras unless renamed here).
BRIDGED_LAYERS = {
    "InputLayer", "Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "Flatten", "Reshape", "Permute", "RepeatVector", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU",
    "ELU", "Softmax", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "UpSampling1D", "UpSampling2D", "Rescaling", "Normalization", "Identity", "Embedding",
    "Lambda",
}
RENAMED_ARGS = {"LeakyReLU": {"negative_slope": "alpha"}}
RENAMED_INITIALIZERS = {"OrthogonalInitializer": "Orthogonal", "IdentityInitializer": "Identity"}
# Activation names that compute the same function in Keras 3 and tf_keras (checked numerically).
SAME_ACTIVATIONS = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "tanh",
    "softmax", "log_softmax", "softplus", "softsign", "swish", "silu", "mish", "exponential",
}
# Keras 3 activations tf_keras lacks or computes differently (tf_keras's hard_sigmoid is
# clip(0.2 x + 0.5), Keras 3's is relu6(x + 3) / 6): rebuilt from TF ops with Keras 3's formula.
EXPANDED_ACTIVATIONS = {
    "hard_sigmoid": lambda x: _hard_sigmoid(x),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
}
FLOAT_POLICIES = {"float16", "bfloat16", "float32", "float64"}
BASE_LAYER_ARGS = {"name", "trainable", "dtype", "dynamic", "input_shape", "input_dim",
                   "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                   "autocast"}


class _Unmappable(Exception):
    """A config value with no tf_keras equivalent (turned into a ModelLoadError naming the layer)."""


@dataclass
class BridgeResult:
    model: Any
    max_abs_diff: float
    tolerance: float
    pairs: list
    notes: list[str]


def bridge_keras3_model(model3):
    """Rebuild an in-memory Keras 3 Sequential/Functional model as a tf_keras model.

    Returns ``(tf_keras_model, max_abs_diff)``; raises ModelLoadError when a layer
    cannot be mapped or the outputs differ by more than the tolerance (module docstring).
    A model that already is a tf_keras model is returned as is (difference 0.0).
    """
    if isinstance(model3, keras.Model):
        return model3, 0.0
    result = rebuild_and_check(model3)
    return result.model, result.max_abs_diff


def rebuild_and_check(model3) -> BridgeResult:
    """Rebuild ``model3`` in tf_keras, copy its weights, and check the outputs agree."""
    import keras as keras3

    if not isinstance(model3, keras3.Model):
        raise ModelLoadError(
            f"expected a Keras model, got {type(model3).__name__}",
            hint="Pass a keras.Model (Sequential or Functional).",
        )
    pairs: list = []
    notes: list[str] = []
    model2 = _rebuild(model3, pairs, notes)
    for layer3, layer2 in pairs:
        _copy_weights(layer3, layer2)
    max_diff, tol = _compare_outputs(model3, model2)
    if not max_diff <= tol:
        raise ModelLoadError(
            f"the tf_keras rebuild of Keras 3 model {model3.name!r} does not reproduce its "
            f"outputs: max abs diff {max_diff:.3g} > tolerance {tol:.3g}",
            hint="Please report this model to edgeslim; meanwhile save the model with "
            "tf_keras (Keras 2) so it loads without rebuilding.",
        )
    return BridgeResult(model2, max_diff, tol, pairs, notes)


def _is_sequential(model3) -> bool:
    import keras as keras3

    return isinstance(model3, keras3.Sequential)


def _is_functional(model3) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model3, Functional)


def _rebuild(model3, pairs: list, notes: list[str]):
    """A tf_keras model with the same graph as ``model3`` (weights copied later)."""
    if _is_sequential(model3):
        return _rebuild_sequential(model3, pairs, notes)
    if _is_functional(model3):
        return _rebuild_functional(model3, pairs, notes)
    raise ModelLoadError(
        f"model {model3.name!r} is a subclassed keras.Model ({type(model3).__name__}); "
        "edgeslim can rebuild only Sequential and Functional models",
        hint="Build the model with keras.Sequential or the functional API "
        "(keras.Model(inputs, outputs)), or save it with tf_keras (Keras 2).",
    )


def _input_from_config(cfg: dict, notes: list[str]):
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if shape is None:
        raise _Unmappable("an input without a shape")
    if cfg.get("sparse") or cfg.get("ragged"):
        raise _Unmappable("a sparse or ragged input")
    if shape[0] is not None:
        # A model built by calling it on data records that call's batch size; Keras 3
        # ignores it, tf_keras would enforce it (and break training): drop it.
        notes.append(f"input {cfg.get('name') or ''!r}: fixed batch size {shape[0]} dropped")
    return keras.Input(
        batch_shape=(None, *shape[1:]), dtype=cfg.get("dtype") or "float32", name=cfg.get("name")
    )


def _rebuild_sequential(model3, pairs, notes):
    config = model3.get_config()
    entries = config["layers"]
    layers3 = list(model3.layers)
    if entries and entries[0]["class_name"] == "InputLayer":
        input_cfg = entries[0]["config"]
        entries = entries[1:]
    elif config.get("build_input_shape"):
        input_cfg = {"batch_shape": config["build_input_shape"], "name": None}
    else:
        raise ModelLoadError(
            f"Sequential model {model3.name!r} was never built, so its input shape is unknown",
            hint="Start the model with keras.Input(shape=...) or call it on data once "
            "before saving.",
        )
    try:
        inputs = _input_from_config(input_cfg, notes)
    except _Unmappable as exc:
        raise _unmappable_error(input_cfg.get("name") or "input", "InputLayer", str(exc))
    steps = [_convert_layer(entry, layer3, pairs, notes) for entry, layer3 in zip(entries, layers3)]
    if all(isinstance(step, keras.layers.Layer) for step in steps):
        model2 = keras.Sequential(name=model3.name)
        model2.add(inputs)
        for step in steps:
            model2.add(step)
        return model2
    # Some layers became TF ops (see EXPANDED_ACTIVATIONS): a functional chain instead.
    x = inputs
    for step in steps:
        x = step(x)
    notes.append(f"Sequential model {model3.name!r} rebuilt as a functional tf_keras model")
    return keras.Model(inputs, x, name=model3.name)


def _rebuild_functional(model3, pairs, notes):
    config = model3.get_config()
    built: dict[tuple[str, int], list] = {}  # (layer name, node index) -> output tensors
    pending = []
    tf_layers: dict[str, Any] = {}
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        if entry["class_name"] == "InputLayer":
            try:
                built[(name, 0)] = [_input_from_config(entry["config"], notes)]
            except _Unmappable as exc:
                raise _unmappable_error(name, "InputLayer", str(exc))
            continue
        if is_op_entry(entry):
            tf_layers[name] = _convert_op(entry, notes)
        else:
            tf_layers[name] = _convert_layer(entry, model3.get_layer(name), pairs, notes)
        for index, node in enumerate(entry.get("inbound_nodes", [])):
            pending.append((name, index, node))

    while pending:
        progress = False
        waiting = []
        for name, index, node in pending:
            try:
                args = _resolve(node.get("args", []), built)
                kwargs = {
                    k: _resolve(v, built) for k, v in node.get("kwargs", {}).items()
                    if v is not None
                }
            except KeyError:
                waiting.append((name, index, node))
                continue
            outputs = tf_layers[name](*args, **kwargs)
            built[(name, index)] = tf.nest.flatten(outputs)
            progress = True
        if not progress:
            raise ModelLoadError(
                f"could not rebuild the graph of model {model3.name!r}: layers "
                f"{sorted({p[0] for p in waiting})} wait for inputs that never appear",
                hint="Please report this model to edgeslim.",
            )
        pending = waiting

    def lookup(struct):
        if _is_history(struct):
            return built[(struct[0], struct[1])][struct[2]]
        if isinstance(struct, dict):
            return {k: lookup(v) for k, v in struct.items()}
        return [lookup(s) for s in struct]

    inputs = lookup(config["input_layers"])
    outputs = lookup(config["output_layers"])
    return keras.Model(inputs, outputs, name=model3.name)


def _is_history(obj) -> bool:
    return (
        isinstance(obj, (list, tuple)) and len(obj) == 3 and isinstance(obj[0], str)
        and isinstance(obj[1], int) and isinstance(obj[2], int)
    )


def _resolve(obj, built):
    """Replace serialized Keras 3 tensors in node arguments by the rebuilt tf_keras tensors."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            name, node, index = obj["config"]["keras_history"]
            return built[(name, node)][index]
        if obj.get("class_name") == "__tuple__":
            return tuple(_resolve(v, built) for v in obj["config"]["value"])
        return {k: _resolve(v, built) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, built) for v in obj)
    return obj


# ---- keras.ops nodes (``x + 1.0``, ``ops.mean(x, axis=1)`` in a functional model) ---------
# Each is rebuilt with the TensorFlow function computing the same thing; called on tf_keras
# tensors it becomes a TFOpLambda layer, tf_keras's own form for raw TF ops in a model.
def _hard_sigmoid(x):
    return tf.nn.relu6(x + 3.0) / 6.0  # Keras 3 semantics


def _op_table() -> dict:
    def unary(fn):
        return lambda a, c: fn(a[0])

    def binary(fn):
        return lambda a, c: fn(a[0], a[1])

    def reduce(fn):
        return lambda a, c: fn(a[0], axis=c.get("axis"), keepdims=bool(c.get("keepdims")))

    return {
        "Add": (binary(tf.add), ()),
        "Subtract": (binary(tf.subtract), ()),
        "Multiply": (binary(tf.multiply), ()),
        "Divide": (binary(tf.math.truediv), ()),
        "TrueDivide": (binary(tf.math.truediv), ()),
        "Maximum": (binary(tf.maximum), ()),
        "Minimum": (binary(tf.minimum), ()),
        "Matmul": (binary(tf.linalg.matmul), ()),
        "Negative": (unary(tf.negative), ()),
        "Abs": (unary(tf.abs), ()),
        "Square": (unary(tf.square), ()),
        "Sqrt": (unary(tf.sqrt), ()),
        "Exp": (unary(tf.exp), ()),
        "Log": (unary(tf.math.log), ()),
        "Tanh": (unary(tf.tanh), ()),
        "Relu": (unary(tf.nn.relu), ()),
        "Relu6": (unary(tf.nn.relu6), ()),
        "Sigmoid": (unary(tf.sigmoid), ()),
        "Silu": (unary(tf.nn.silu), ()),
        "HardSigmoid": (unary(_hard_sigmoid), ()),
        "HardSilu": (unary(lambda x: x * _hard_sigmoid(x)), ()),
        "Softmax": (lambda a, c: tf.nn.softmax(a[0], axis=c.get("axis", -1)), ("axis",)),
        "Clip": (lambda a, c: tf.clip_by_value(a[0], c["x_min"], c["x_max"]), ("x_min", "x_max")),
        "Reshape": (lambda a, c: tf.reshape(a[0], [-1 if d is None else d for d in c["newshape"]]),
                    ("newshape",)),
        "Transpose": (lambda a, c: tf.transpose(a[0], c.get("axes")), ("axes",)),
        "ExpandDims": (lambda a, c: tf.expand_dims(a[0], c["axis"]), ("axis",)),
        "Squeeze": (lambda a, c: tf.squeeze(a[0], axis=c.get("axis")), ("axis",)),
        "Concatenate": (lambda a, c: tf.concat(list(a[0]), axis=c.get("axis", 0)), ("axis",)),
        "Mean": (reduce(tf.reduce_mean), ("axis", "keepdims")),
        "Sum": (reduce(tf.reduce_sum), ("axis", "keepdims")),
        "Max": (reduce(tf.reduce_max), ("axis", "keepdims")),
        "Min": (reduce(tf.reduce_min), ("axis", "keepdims")),
    }


def is_op_entry(entry: dict) -> bool:
    return str(entry.get("module") or "").startswith(("keras.src.ops", "keras.ops"))


def _convert_op(entry: dict, notes: list[str]):
    cls = entry["class_name"]
    name = entry.get("name") or entry["config"].get("name", cls)
    table = _op_table()
    if cls not in table:
        raise _unmappable_error(
            name, f"keras.ops {cls}", "edgeslim has no TensorFlow equivalent for this operation"
        )
    fn, keys = table[cls]
    config = dict(entry.get("config") or {})
    config.pop("name", None)
    extra = {k: v for k, v in config.items() if k not in keys and v not in (None, False)}
    if extra:
        raise _unmappable_error(name, f"keras.ops {cls}", f"unsupported options {extra}")

    def call(*args, **kwargs):
        if kwargs:
            raise _unmappable_error(name, f"keras.ops {cls}", f"keyword arguments {sorted(kwargs)}")
        return fn(args, config)

    return call


def _unmappable_error(name: str, cls: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"layer {name!r} ({cls}) cannot be rebuilt for tf_keras: {why}",
        hint="Replace it with standard Keras layers, or save the model with tf_keras "
        "(Keras 2, `import tf_keras`) so edgeslim can load it without rebuilding.",
    )


def _convert_layer(entry: dict, layer3, pairs: list, notes: list[str]):
    """The tf_keras layer for one Keras 3 layer entry of a model config."""
    cls = entry["class_name"]
    name = entry["config"].get("name", layer3.name)
    if _is_sequential(layer3) or _is_functional(layer3):
        sub_pairs: list = []
        sub = _rebuild(layer3, sub_pairs, notes)
        pairs.extend(sub_pairs)
        return sub
    if cls not in BRIDGED_LAYERS or type(layer3).__module__.split(".")[0] != "keras":
        why = (
            "it is a custom layer class (its code is not part of Keras)"
            if type(layer3).__module__.split(".")[0] != "keras"
            else "edgeslim has no tf_keras equivalent for this layer class"
        )
        raise _unmappable_error(name, type(layer3).__name__, why)
    if cls == "Lambda":
        layer2 = keras.layers.Lambda(
            layer3.function, arguments=getattr(layer3, "arguments", None) or None, name=name
        )
        notes.append(f"Lambda layer {name!r}: its Python function is reused as is")
        return layer2  # no weights
    config3 = dict(entry["config"])
    post = EXPANDED_ACTIVATIONS.get(config3.get("activation"))
    if post is not None:
        # tf_keras lacks (or computes differently) this activation: rebuild the layer with
        # a linear activation followed by the same formula as TensorFlow ops.
        notes.append(f"layer {name!r}: activation {config3['activation']!r} rebuilt as TF ops")
        if cls == "Activation":
            return post
        config3["activation"] = "linear"
    try:
        config = _convert_config(cls, config3)
        layer2 = getattr(keras.layers, cls).from_config(config)
    except _Unmappable as exc:
        raise _unmappable_error(name, cls, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _unmappable_error(name, cls, short_error(exc)) from None
    pairs.append((layer3, layer2))
    if post is not None:
        return lambda *args, **kwargs: post(layer2(*args, **kwargs))
    return layer2


def _accepted_args(cls) -> set[str]:
    """Keyword arguments ``cls`` accepts, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names |= {
            p.name for p in params.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _filter_args(config: dict, cls, *, extra: set[str] = frozenset(), what: str) -> dict:
    """Keep the keys ``cls`` accepts; drop unknown keys only when they are unset."""
    allowed = _accepted_args(cls) | set(extra)
    out = {}
    for key, value in config.items():
        if key in allowed:
            out[key] = value
        elif value is None or value is False or value == {} or value == []:
            continue  # a Keras 3 option left at its "off" value
        else:
            raise _Unmappable(f"{what} option {key}={value!r} has no tf_keras equivalent")
    return out


def _convert_config(cls: str, config: dict) -> dict:
    target = getattr(keras.layers, cls)
    config = dict(config)
    for old, new in RENAMED_ARGS.get(cls, {}).items():
        if old in config:
            config[new] = config.pop(old)
    out = {}
    for key, value in config.items():
        if key == "dtype":
            out[key] = _convert_dtype(value)
        elif key == "activation" or key.endswith("_activation"):
            out[key] = _convert_activation(value)
        elif key.endswith("_initializer"):
            out[key] = _convert_object(value, keras.initializers, "initializer", key)
        elif key.endswith("_regularizer"):
            out[key] = _convert_object(value, keras.regularizers, "regularizer", key)
        elif key.endswith("_constraint"):
            out[key] = _convert_object(value, keras.constraints, "constraint", key)
        elif isinstance(value, dict) and "class_name" in value:
            if value["class_name"] == "__tuple__":
                out[key] = tuple(value["config"]["value"])
            else:
                raise _Unmappable(f"option {key} holds a {value['class_name']} object")
        else:
            out[key] = value
    return _filter_args(out, target, extra=BASE_LAYER_ARGS, what="layer")


def _convert_dtype(value):
    if value is None or isinstance(value, str):
        name = value
    elif isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
        name = value.get("config", {}).get("name")
    else:
        cls = value.get("class_name") if isinstance(value, dict) else type(value).__name__
        raise _Unmappable(f"dtype policy {cls} (quantized layers are not supported; give the float model)")
    if name is None or name in FLOAT_POLICIES:
        return name
    if name in ("mixed_float16", "mixed_bfloat16"):
        return {"class_name": "Policy", "config": {"name": name}}
    raise _Unmappable(f"dtype policy {name!r}")


def _convert_activation(value):
    if value is None:
        return None
    if isinstance(value, str):
        if value in SAME_ACTIVATIONS:
            return value
        raise _Unmappable(f"activation {value!r} does not exist in tf_keras")
    raise _Unmappable(f"activation {value!r} is not a built-in activation")


def _convert_object(value, module, kind: str, key: str):
    """Map a Keras 3 serialized initializer/regularizer/constraint to tf_keras's form."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            module.get(value)
        except (ValueError, TypeError):
            raise _Unmappable(f"{key}: {kind} {value!r} does not exist in tf_keras") from None
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise _Unmappable(f"{key}: cannot read {kind} {value!r}")
    if value.get("module") and not str(value["module"]).startswith("keras"):
        raise _Unmappable(f"{key}: custom {kind} {value['class_name']!r}")
    cls_name = RENAMED_INITIALIZERS.get(value["class_name"], value["class_name"])
    target = getattr(module, cls_name, None)
    if not inspect.isclass(target):
        raise _Unmappable(f"{key}: {kind} {value['class_name']!r} does not exist in tf_keras")
    cfg = _filter_args(dict(value.get("config") or {}), target, what=f"{key} {cls_name}")
    return {"class_name": cls_name, "config": cfg}


def _weight_key(variable) -> str:
    name = getattr(variable, "path", None) or variable.name
    return name.split("/")[-1].split(":")[0]


def _copy_weights(layer3, layer2) -> None:
    """Copy weights by variable name (kernel, bias, gamma, moving_mean, ...)."""
    vars3 = list(layer3.weights)
    vars2 = list(layer2.weights)
    name = layer3.name
    if len(vars3) != len(vars2):
        raise _unmappable_error(
            name, type(layer3).__name__,
            f"it has {len(vars3)} weights in Keras 3 but {len(vars2)} in tf_keras",
        )
    by_name = {_weight_key(v): v for v in vars3}
    if len(by_name) == len(vars3) and {_weight_key(v) for v in vars2} == set(by_name):
        ordered = [by_name[_weight_key(v)] for v in vars2]
    else:
        ordered = vars3
    values = []
    for v3, v2 in zip(ordered, vars2):
        value = np.asarray(v3.numpy() if hasattr(v3, "numpy") else v3)
        if tuple(value.shape) != tuple(v2.shape):
            raise _unmappable_error(
                name, type(layer3).__name__,
                f"weight {_weight_key(v2)} has shape {tuple(value.shape)} in Keras 3 but "
                f"{tuple(v2.shape)} in tf_keras",
            )
        values.append(value)
    layer2.set_weights(values)


def check_inputs(model, *, batch: int = CHECK_BATCH, seed: int = CHECK_SEED) -> list[np.ndarray]:
    """Seeded random inputs for ``model`` (unknown non-batch dimensions become 8)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = [batch] + [d if d is not None else 8 for d in tuple(tensor.shape)[1:]]
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _compare_outputs(model3, model2) -> tuple[float, float]:
    import keras as keras3

    inputs = check_inputs(model2)
    feed = inputs[0] if len(inputs) == 1 else inputs
    try:
        y3 = [np.asarray(t) for t in keras3.tree.flatten(model3(feed, training=False))]
        y2 = [np.asarray(t) for t in tf.nest.flatten(model2(feed, training=False))]
    except Exception as exc:
        raise ModelLoadError(
            f"running Keras 3 model {model3.name!r} and its tf_keras rebuild on random inputs "
            f"failed ({short_error(exc)})",
            hint="Please report this model to edgeslim; meanwhile save it with tf_keras (Keras 2).",
        ) from None
    if len(y3) != len(y2) or any(a.shape != b.shape for a, b in zip(y3, y2)):
        shapes3 = [a.shape for a in y3]
        shapes2 = [b.shape for b in y2]
        raise ModelLoadError(
            f"the tf_keras rebuild of {model3.name!r} has outputs {shapes2}, the original {shapes3}",
            hint="Please report this model to edgeslim.",
        )
    max_diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(y3, y2))
    scale = max(1.0, max(float(np.max(np.abs(a))) for a in y3))
    return max_diff, ABS_TOLERANCE * scale


__all__ = [
    "BridgeResult",
    "bridge_keras3_model",
    "rebuild_and_check",
    "check_inputs",
    "is_op_entry",
    "short_error",
    "ABS_TOLERANCE",
    "CHECK_BATCH",
]
