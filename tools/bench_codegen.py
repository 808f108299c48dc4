#!/usr/bin/env python
"""Size and speed of the generated C library on the emulated Cortex-M, next to TFLite Micro.

For each whole model (the digits example, a DS-CNN, a small residual network, a MobileNet-style
network; all int8, trained briefly on scikit-learn's digits), this:

1. generates the C library (``edgeslim.codegen.generate``) twice: with the reference kernels
   and with the kernels the board core's target profile selects (``cpu.features``: ``dsp``
   on the M4/M7/M33/M55), measured side by side from the same run of this tool,
2. cross-compiles it for Cortex-M0+, M4, M7 and M55 (``-Wall -Wextra -Werror``) and reads the
   library's flash (``arm-none-eabi-size`` text + rodata) and static RAM (.data + .bss),
3. runs it in the test firmware on the emulated Cortex-M4 (``qemu-system-arm -M mps2-an386
   -icount shift=6``), compares every output with the TFLite Micro interpreter bit for bit,
   and reads the instructions per inference and the stack high-water mark,
4. measures the TFLite Micro arena for the same model (``edgeslim.micro.measure_arena``),

and prints one table. A second table goes beyond TFLite Micro: for weight-clustered models
(<= 16 values per output channel), the library with ``pack_weights=True`` (4-bit indices into
per-channel tables, decoded in the kernels) against the plain one: flash saved, instructions
spent, outputs still bit-exact, next to TFLite Micro's own LUT compression of the same model.

RAM of the generated code = arena + stack high-water mark of the call;
the goal is RAM <= the TFLite Micro arena (which excludes TFLM's own stack, so the comparison
favours TFLM). Instruction counts are deterministic; wall-clock times are shown for the host
side only.

The models are committed under tests/codegen/test_qemu_models/ (regenerate them with
``--write-models``: seeded, never edited by hand).

    .venv/bin/python tools/bench_codegen.py                  # the table
    .venv/bin/python tools/bench_codegen.py --inputs 20      # quicker
    .venv/bin/python tools/bench_codegen.py --json out.json  # also as JSON
    .venv/bin/python tools/bench_codegen.py --write-models   # retrain and rewrite the models
    .venv/bin/python tools/bench_codegen.py --board mps2-an385 --core cortex-m0plus
    .venv/bin/python tools/bench_codegen.py --models --packed --tflite kws.tflite \
        --inputs-npy kws_inputs.npy                           # any int8 model
    .venv/bin/python tools/bench_codegen.py --models --packed --tflite kws.tflite \
        --inputs-npy kws_inputs.npy --cores                   # per core, M0+ to M55

With ``--cores`` the table has one row per model, core (M0+, M4, M7, M33, M55, each on its
profile's QEMU board with its profile's compiler flags) and kernel set: the reference kernels
and the ones that core's profile selects (DSP on the M4/M7/M33, MVE on the M55), side by
side from the same run; flash is the library's text + rodata built for that core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "tests" / "codegen" / "test_qemu_models"
SEED = 1234
N_INPUTS = 200  # per model, from the digits test split
MODEL_NAMES = ("digits", "dscnn", "resnet", "mobilenet")
SIZE_CORES = ("cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m55")
ALL_CORES = ("cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- the models (seeded; written once with --write-models) ----------------------------------


def _digits_split(seed: int):
    from sklearn.model_selection import train_test_split

    from edgeslim import examples

    x, y = examples.load_digits_arrays()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test


def _upscale(x: np.ndarray) -> np.ndarray:
    """8x8 digits -> 16x16 (nearest neighbour), to give the deeper models room to downsample."""
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def _digits_model(keras):
    from edgeslim import examples

    return examples.build_digits_model(keras)  # the example's own architecture, in tf_keras


def _conv_bn_relu(keras, x, filters, kernel, *, strides=1, relu6=False, name):
    L = keras.layers
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(momentum=0.9, name=name + "_bn")(x)
    return L.ReLU(6.0 if relu6 else None, name=name + "_relu")(x)


def _dscnn_model(keras):
    """DS-CNN (keyword-spotting style): conv, 3 x (depthwise 3x3 + pointwise), GAP, dense."""
    L = keras.layers
    inputs = keras.Input((16, 16, 1), name="input")
    x = _conv_bn_relu(keras, inputs, 32, 3, strides=2, name="conv1")
    for i in range(1, 4):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = L.BatchNormalization(momentum=0.9, name=f"dw{i}_bn")(x)
        x = L.ReLU(name=f"dw{i}_relu")(x)
        x = _conv_bn_relu(keras, x, 32, 1, name=f"pw{i}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="dscnn")


def _resnet_model(keras):
    """A small residual network: two basic blocks (ADD), a strided stage, GAP, dense."""
    L = keras.layers
    inputs = keras.Input((16, 16, 1), name="input")
    x = _conv_bn_relu(keras, inputs, 16, 3, name="stem")

    def block(x, filters, name):
        y = _conv_bn_relu(keras, x, filters, 3, name=name + "_a")
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=name + "_b")(y)
        y = L.BatchNormalization(momentum=0.9, name=name + "_b_bn")(y)
        x = L.Add(name=name + "_add")([x, y])
        return L.ReLU(name=name + "_relu")(x)

    x = block(x, 16, "block1")
    x = _conv_bn_relu(keras, x, 24, 3, strides=2, name="down")
    x = block(x, 24, "block2")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="resnet")


def _mobilenet_model(keras):
    """MobileNetV2-style: inverted residuals (expand 1x1, depthwise 3x3, project 1x1, ReLU6)."""
    L = keras.layers
    inputs = keras.Input((16, 16, 1), name="input")
    x = _conv_bn_relu(keras, inputs, 16, 3, strides=2, relu6=True, name="stem")

    def inverted(x, expand, out, strides, name):
        c_in = x.shape[-1]
        y = _conv_bn_relu(keras, x, c_in * expand, 1, relu6=True, name=name + "_expand")
        y = L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                              name=name + "_dw")(y)  # fmt: skip
        y = L.BatchNormalization(momentum=0.9, name=name + "_dw_bn")(y)
        y = L.ReLU(6.0, name=name + "_dw_relu")(y)
        y = L.Conv2D(out, 1, use_bias=False, name=name + "_project")(y)
        y = L.BatchNormalization(momentum=0.9, name=name + "_project_bn")(y)
        if strides == 1 and c_in == out:
            y = L.Add(name=name + "_add")([x, y])
        return y

    x = inverted(x, 3, 16, 1, "ir1")
    x = inverted(x, 3, 24, 2, "ir2")
    x = inverted(x, 3, 24, 1, "ir3")
    x = _conv_bn_relu(keras, x, 64, 1, relu6=True, name="head")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="mobilenet")


_BUILDERS = {
    # name: (builder, upscale to 16x16, epochs, clustered)
    "digits": (_digits_model, False, 8, False),
    "dscnn": (_dscnn_model, True, 6, False),
    "resnet": (_resnet_model, True, 5, False),
    "mobilenet": (_mobilenet_model, True, 6, False),
    # weight clustering (16 values per layer, so <= 16 per output channel): for the 4-bit
    # packed weights of pack_weights=True, and TFLite Micro's own LUT compression
    "digits_clustered": (_digits_model, False, 8, True),
    "dscnn_clustered": (_dscnn_model, True, 6, True),
}
CLUSTERED_NAMES = tuple(n for n, b in _BUILDERS.items() if b[3])
CLUSTERS = 16


def _cluster(model, x, y, keras, *, epochs: int = 2):
    """Cluster every Conv2D, DepthwiseConv2D and Dense kernel to CLUSTERS values (TFMOT,
    k-means++ initialisation), fine-tune briefly, strip the wrappers."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    params = dict(number_of_clusters=CLUSTERS,
                  cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS)

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                              keras.layers.Dense)):  # fmt: skip
            return clustering.cluster_weights(layer, **params)
        return layer

    # the wrapper wraps the trained layer itself, and other layers are reused: weights are kept
    clustered = keras.models.clone_model(model, clone_function=wrap)
    clustered.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy")  # fmt: skip
    clustered.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return clustering.strip_clustering(clustered)


def _to_int8_tflite(model, calib: np.ndarray, tf) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def quantize_inputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Float inputs -> the model's int8 input (its scale and zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=model_bytes).get_input_details()[0]
    scale, zero = detail["quantization"]
    q = np.round(x / scale) + zero
    return np.clip(q, -128, 127).astype(np.int8).reshape(len(x), *detail["shape"][1:])


def build_models(seed: int = SEED, names=None) -> dict[str, tuple[bytes, np.ndarray]]:
    """Train each model briefly (seeded), convert to int8; name -> (.tflite, int8 test inputs)."""
    from edgeslim._tf import keras, tf

    x_train, y_train, x_test, y_test = _digits_split(seed)
    models = {}
    for name, (builder, upscale, epochs, clustered) in _BUILDERS.items():
        if names is not None and name not in names:
            continue
        keras.utils.set_random_seed(seed)
        xt, xv = (_upscale(x_train), _upscale(x_test)) if upscale else (x_train, x_test)
        model = builder(keras)
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss="sparse_categorical_crossentropy")  # fmt: skip
        model.fit(xt, y_train, epochs=epochs, batch_size=64, verbose=0)
        if clustered:
            model = _cluster(model, xt, y_train, keras)
        rng = np.random.default_rng(seed)
        calib = xt[np.sort(rng.choice(len(xt), 200, replace=False))].astype(np.float32)
        tflite = _to_int8_tflite(model, calib, tf)
        acc = float(np.mean(np.argmax(model.predict(xv, verbose=0), axis=1) == y_test))
        print(f"{name}: float test accuracy {acc:.3f}", file=sys.stderr)
        models[name] = (tflite, quantize_inputs(tflite, xv[:N_INPUTS]))
    return models


def write_models(out_dir: Path = MODELS_DIR, seed: int = SEED, names=None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (tflite, inputs) in build_models(seed, names).items():
        (out_dir / f"{name}.tflite").write_bytes(tflite)
        np.save(out_dir / f"{name}_inputs.npy", inputs)
        written.append(out_dir / f"{name}.tflite")
    return written


def load_model(name: str, models_dir: Path = MODELS_DIR) -> tuple[bytes, np.ndarray]:
    """A committed model and its int8 test inputs (N x input shape)."""
    return (models_dir / f"{name}.tflite").read_bytes(), np.load(models_dir / f"{name}_inputs.npy")


# -- measuring ------------------------------------------------------------------------------


@dataclass
class ModelFigures:
    model: str
    kernels: str  # "reference", or the target profile whose cpu.features chose them
    plan: str  # "scheduled" (in place / fused where smaller) or "layer-by-layer"
    macs: int
    arena_bytes: int  # the generated library's arena (<NAME>_ARENA_SIZE)
    stack_bytes: int  # high-water mark of <name>_invoke on the emulated board
    ram_bytes: int  # arena + stack
    tflm_arena_bytes: int
    library_static_ram: int  # .data + .bss of the compiled library (M4)
    board: str  # where instructions and stack were measured
    core: str
    flash: dict  # core -> text + rodata of the library
    tflite_bytes: int
    instructions: int  # per inference on the emulated board (mean over inputs)
    instructions_min: int
    instructions_max: int
    instructions_per_mac: float
    bit_exact: int  # inputs whose outputs equal TFLite Micro's, bit for bit
    inputs: int


def io_bytes(model_bytes: bytes) -> tuple[int, int]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    n_in = int(np.prod(it.get_input_details()[0]["shape"]))
    n_out = int(np.prod(it.get_output_details()[0]["shape"]))
    return n_in, n_out


def _flash(lib_dir: Path, work: Path, core: str):
    """Section sizes of the library compiled for ``core``."""
    from edgeslim.harness import toolchain

    objs = toolchain.cross_compile(sorted(lib_dir.glob("*.c")), work / "obj" / core, core=core,
                                   include_dirs=[lib_dir])  # fmt: skip
    return toolchain.section_sizes(objs)


def _run_on_board(result, lib_dir: Path, inputs: np.ndarray, work: Path, *, board, core):
    from edgeslim.harness import _testfw, firmware

    fw = firmware.firmware_for_library(lib_dir, work, name=result.name,
                                       input_bytes=result.input_bytes,
                                       output_bytes=result.output_bytes,
                                       arena_bytes=result.arena_size, board=board, core=core)
    return fw, _testfw.run_firmware(fw, inputs.reshape(len(inputs), -1), timeout=1200)


def measure_model(
    name: str,
    model_bytes: bytes,
    inputs: np.ndarray,
    work: Path,
    *,
    board: str = "mps2-an386",
    core: str | None = None,
    target: str | None = None,
    reference: np.ndarray | None = None,
    tflm_arena: int | None = None,
    layer_by_layer: bool = False,
    size_cores: tuple[str, ...] = SIZE_CORES,
) -> ModelFigures:
    """Generate (reference kernels, or those the ``target`` profile's cpu.features select),
    compile, run on the emulated board and compare with TFLite Micro."""
    from edgeslim import codegen, micro

    lib_dir = work / "c"
    result = codegen.generate(model_bytes, lib_dir, name=name, target=target,
                              layer_by_layer=layer_by_layer)
    sizes = {c: _flash(lib_dir, work, c) for c in size_cores}
    fw, run = _run_on_board(result, lib_dir, inputs, work / "fw", board=board, core=core)
    if reference is None:
        reference = micro.run(model_bytes, inputs).reshape(len(inputs), -1)
    exact = int(np.sum(np.all(run.outputs == reference, axis=1)))
    if tflm_arena is None:
        tflm_arena = micro.measure_arena(model_bytes)
    macs = int(result.macs)
    instr = int(round(float(np.mean(run.instructions))))
    return ModelFigures(
        model=name,
        kernels=target or "reference",
        plan="layer-by-layer" if layer_by_layer else "scheduled",
        macs=macs,
        arena_bytes=result.arena_size,
        stack_bytes=run.max_stack_bytes,
        ram_bytes=result.arena_size + run.max_stack_bytes,
        tflm_arena_bytes=tflm_arena,
        library_static_ram=next(iter(sizes.values())).ram if "cortex-m4" not in sizes
        else sizes["cortex-m4"].ram,
        board=fw.board.machine,
        core=fw.core.name,
        flash={c: s.text + s.rodata for c, s in sizes.items()},
        tflite_bytes=len(model_bytes),
        instructions=instr,
        instructions_min=min(run.instructions),
        instructions_max=max(run.instructions),
        instructions_per_mac=instr / macs if macs else float("nan"),
        bit_exact=exact,
        inputs=len(inputs),
    )


# -- beyond TFLite Micro: 4-bit packed weights ---------------------------------------------


@dataclass
class PackedFigures:
    model: str
    flash_plain: int  # text + rodata of the library on the M4, weights as int8
    flash_packed: int  # ... with pack_weights=True (4-bit indices + per-channel tables)
    arena_plain: int
    arena_packed: int
    instructions_plain: int  # per inference on the emulated board (mean)
    instructions_packed: int
    tflite_bytes: int
    tflm_compressed_bytes: int  # the same model through TFLite Micro's LUT compression
    bit_exact: int  # packed outputs equal to TFLite Micro on the (unpacked) model
    inputs: int


def tflm_compress(model_bytes: bytes) -> bytes:
    """TFLite Micro's own compression (``tflite_micro`` package): 4-bit per-channel lookup
    tables for every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED weight tensor with at most
    16 values per channel; DECODE operators are inserted."""
    from tflite_micro.tensorflow.lite.micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    from edgeslim.modelgraph import read as read_graph

    graph = read_graph(model_bytes)
    specs = []
    for op in graph.operators:
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        t = graph.tensors[op.inputs[1]]
        axis = t.quantized_dimension
        per_channel = np.moveaxis(t.data, axis, 0).reshape(t.data.shape[axis], -1)
        if max(len(np.unique(row)) for row in per_channel) <= 16:
            lut = spec.LookUpTableCompression(index_bitwidth=4, mode=spec.PerChannel(axis=axis))
            specs.append(spec.Tensor(subgraph=0, tensor=op.inputs[1], compression=[lut]))
    with warnings.catch_warnings():  # "compression resulted in expansion": shown in the table
        warnings.simplefilter("ignore")
        return bytes(compression.compress(model_bytes, specs))


def measure_packed(
    name: str,
    model_bytes: bytes,
    inputs: np.ndarray,
    work: Path,
    *,
    board: str = "mps2-an386",
    core: str | None = None,
) -> PackedFigures:
    from edgeslim import codegen, micro

    figures = {}
    for variant, pack in (("plain", False), ("packed", True)):
        lib_dir = work / variant / "c"
        result = codegen.generate(model_bytes, lib_dir, name=name, pack_weights=pack)
        size = _flash(lib_dir, work / variant, "cortex-m4")
        _, run = _run_on_board(result, lib_dir, inputs, work / variant / "fw", board=board,
                               core=core)  # fmt: skip
        figures[variant] = (result, size, run)
    reference = micro.run(model_bytes, inputs).reshape(len(inputs), -1)
    plain, packed = figures["plain"], figures["packed"]
    return PackedFigures(
        model=name,
        flash_plain=plain[1].text + plain[1].rodata,
        flash_packed=packed[1].text + packed[1].rodata,
        arena_plain=plain[0].arena_size,
        arena_packed=packed[0].arena_size,
        instructions_plain=int(round(float(np.mean(plain[2].instructions)))),
        instructions_packed=int(round(float(np.mean(packed[2].instructions)))),
        tflite_bytes=len(model_bytes),
        tflm_compressed_bytes=len(tflm_compress(model_bytes)),
        bit_exact=int(np.sum(np.all(packed[2].outputs == reference, axis=1))),
        inputs=len(inputs),
    )


def _packed_table(rows: list[PackedFigures]) -> str:
    head = ("model", "flash int8", "flash 4-bit", "saved", "arena int8", "arena 4-bit",
            "instr int8", "instr 4-bit", "cost", ".tflite", "TFLM compressed", "bit-exact")
    lines = [head]
    for r in rows:
        lines.append((
            r.model, f"{r.flash_plain:,}", f"{r.flash_packed:,}",
            f"{1 - r.flash_packed / r.flash_plain:.1%}", f"{r.arena_plain:,}",
            f"{r.arena_packed:,}", f"{r.instructions_plain:,}", f"{r.instructions_packed:,}",
            f"{r.instructions_packed / r.instructions_plain - 1:+.1%}", f"{r.tflite_bytes:,}",
            f"{r.tflm_compressed_bytes:,}", f"{r.bit_exact}/{r.inputs}",
        ))  # fmt: skip
    return _format(lines)


def _table(rows: list[ModelFigures]) -> str:
    head = ("model", "kernels", "plan", "MACs", "arena", "stack", "RAM", "TFLM arena", "RAM/TFLM",
            "flash M0+", "flash M4", "flash M7", "flash M55", ".tflite",
            "instr/inference", "instr/MAC", "bit-exact")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append((
            r.model, r.kernels, r.plan, f"{r.macs:,}", f"{r.arena_bytes:,}", f"{r.stack_bytes:,}",
            f"{r.ram_bytes:,}", f"{r.tflm_arena_bytes:,}",
            f"{r.ram_bytes / r.tflm_arena_bytes:.2f}",
            *(f"{r.flash[c]:,}" for c in SIZE_CORES), f"{r.tflite_bytes:,}",
            f"{r.instructions:,}", f"{r.instructions_per_mac:.2f}",
            f"{r.bit_exact}/{r.inputs}",
        ))  # fmt: skip
    return _format(lines)


def _kernel_set(features) -> str:
    """The optimized kernel folder the features select (emit.FEATURE_DIRS), by name."""
    from edgeslim.codegen.emit import kernel_dirs

    first = kernel_dirs(features)[0]
    return {"kernels_mve": "MVE", "kernels_dsp": "DSP"}.get(first, "reference")


def _cores_table(rows: list[ModelFigures]) -> str:
    head = ("model", "core", "board", "kernels", "MACs", "instr/inference", "instr/MAC",
            "opt/ref", "flash", "arena", "stack", "RAM", "bit-exact")
    lines = [head]
    ref = {(r.model, r.core): r.instructions for r in rows if r.kernels == "reference"}
    for r in rows:
        base = ref.get((r.model, r.core))
        lines.append((
            r.model, r.core, r.board, _kernel_set(r.features), f"{r.macs:,}",
            f"{r.instructions:,}",
            f"{r.instructions_per_mac:.2f}", f"{r.instructions / base:.3f}" if base else "",
            f"{next(iter(r.flash.values())):,}", f"{r.arena_bytes:,}", f"{r.stack_bytes:,}",
            f"{r.ram_bytes:,}", f"{r.bit_exact}/{r.inputs}",
        ))  # fmt: skip
    return _format(lines)


def _format(lines: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]))]
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=list(MODEL_NAMES), help="which models")
    ap.add_argument("--packed", nargs="*", default=list(CLUSTERED_NAMES),
                    help="clustered models to measure with and without 4-bit packed weights")
    ap.add_argument("--inputs", type=int, default=N_INPUTS, help="inputs per model on the board")
    ap.add_argument("--board", default="mps2-an386", help="QEMU board that runs the models")
    ap.add_argument("--core", default=None,
                    help="build for this core instead of the board's (cortex-m0plus on mps2-an385)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--kernels", choices=("both", "reference", "optimized"), default="both",
                    help="reference kernels, those the board core's profile selects "
                         "(cpu.features: dsp), or both side by side (default)")
    ap.add_argument("--plans", choices=("scheduled", "layer-by-layer", "both"),
                    default="scheduled",
                    help="the memory plan: depthwise layers in place / fused with the next 1x1 "
                         "convolution where that is smaller (default), each layer whole, or both")
    ap.add_argument("--cores", nargs="*", metavar="PROFILE",
                    help="measure on each of these cores' boards (default with no name: "
                         f"{' '.join(ALL_CORES)}), reference and optimized kernels per core")
    ap.add_argument("--tflite", type=Path, action="append", default=[],
                    help="also measure this int8 model (inputs from --inputs-npy, same order)")
    ap.add_argument("--inputs-npy", type=Path, action="append", default=[],
                    help="int8 inputs (N x input shape) for the --tflite model at the same position")
    ap.add_argument("--write-models", nargs="*", metavar="NAME",
                    help=f"retrain and rewrite these models (default: all) in "
                         f"{MODELS_DIR.relative_to(REPO)}")  # fmt: skip
    args = ap.parse_args(argv)
    if args.write_models is not None:
        for p in write_models(names=args.write_models or None):
            print(f"wrote {p.relative_to(REPO)} ({p.stat().st_size:,} bytes)")
        return 0
    from edgeslim import micro
    from edgeslim.codegen import target_features
    from edgeslim.harness import emulator

    if len(args.tflite) != len(args.inputs_npy):
        ap.error("give one --inputs-npy per --tflite")
    profile = args.core or emulator.board_for(args.board).core
    kernels = {"both": [None, profile], "reference": [None], "optimized": [profile]}[args.kernels]
    if not target_features(profile) and None in kernels and profile in kernels:
        kernels = [None]  # no optimized kernels for this core: the reference only
    models = [(name, *load_model(name)) for name in args.models]
    models += [(p.stem, p.read_bytes(), np.load(n)) for p, n in zip(args.tflite, args.inputs_npy)]
    rows = []
    if args.cores is not None:
        return _per_core(args, models)
    for name, model_bytes, inputs in models:
        inputs = inputs[: args.inputs]
        t0 = time.perf_counter()
        reference = micro.run(model_bytes, inputs).reshape(len(inputs), -1)
        tflm_arena = micro.measure_arena(model_bytes)
        plans = {"scheduled": [False], "layer-by-layer": [True], "both": [True, False]}
        for target in kernels:
            for layers in plans[args.plans]:
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                    rows.append(measure_model(name, model_bytes, inputs, Path(tmp),
                                              board=args.board, core=args.core, target=target,
                                              reference=reference, tflm_arena=tflm_arena,
                                              layer_by_layer=layers))  # fmt: skip
        print(f"{name}: measured in {time.perf_counter() - t0:.1f} s (host wall clock)",
              file=sys.stderr)  # fmt: skip
    packed = []
    for name in args.packed:
        model_bytes, inputs = load_model(name)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            packed.append(measure_packed(name, model_bytes, inputs[: args.inputs], Path(tmp),
                                         board=args.board, core=args.core))  # fmt: skip
    if rows:
        print(f"Generated C on the emulated {rows[0].core} ({rows[0].board}, -icount shift=6), "
              "bytes; kernels = reference or the ones the core's profile selects (same run); "
              "RAM = arena + stack high-water mark; flash = library text + rodata; "
              "TFLM arena = tflite-micro's host interpreter, smallest arena that runs")
        print(_table(rows))  # fmt: skip
    if packed:
        print("\nBeyond TFLite Micro: weights of clustered layers as 4-bit indices into "
              "per-channel tables (pack_weights=True), flash = library text + rodata on the M4, "
              "instructions per inference on the emulated board")
        print(_packed_table(packed))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"models": [asdict(r) for r in rows],
                                         "packed": [asdict(r) for r in packed]}, indent=2))
    return 0


def _per_core(args, models) -> int:
    """--cores: every model on every core's board, reference and that core's kernels."""
    from edgeslim import micro
    from edgeslim.codegen import target_features
    from edgeslim.harness import firmware

    cores = args.cores or list(ALL_CORES)
    rows = []
    for name, model_bytes, inputs in models:
        inputs = inputs[: args.inputs]
        t0 = time.perf_counter()
        reference = micro.run(model_bytes, inputs).reshape(len(inputs), -1)
        tflm_arena = micro.measure_arena(model_bytes)
        for core in cores:
            board, _ = firmware.board_for_target(core)
            targets = [None, core] if target_features(core) else [None]
            for target in targets:
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                    r = measure_model(name, model_bytes, inputs, Path(tmp), board=board.machine,
                                      core=core, target=target, reference=reference,
                                      tflm_arena=tflm_arena, size_cores=(core,))
                r.features = list(target_features(target)) if target else []
                rows.append(r)
        print(f"{name}: measured in {time.perf_counter() - t0:.1f} s (host wall clock)",
              file=sys.stderr)  # fmt: skip
    print("Generated C per core, each on its profile's QEMU board (-icount shift=6; the M0+ "
          "runs on the M3 board mps2-an385), reference kernels and the ones the core's profile "
          "selects from the same run; opt/ref = instructions against the reference kernels on "
          "that core; flash = library text + rodata built for that core; RAM = arena + stack "
          "high-water mark; bit-exact = outputs equal to TFLite Micro's")
    print(_cores_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"cores": [asdict(r) | {"features": r.features}
                                                   for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
