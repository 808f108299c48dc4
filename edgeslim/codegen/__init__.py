"""Interpreter-free C code generation for int8 .tflite models.

``generate(model_bytes, out_dir, name=...)`` writes ``<name>.h`` and ``<name>.c``: a
self-contained C99 library (one entry point, weights as const arrays, one static
arena placed by a memory plan) whose outputs equal TFLite Micro's reference kernels
bit for bit. Stages, in order: read the graph (graph.py), lower each op to a kernel
call with its fixed-point parameters (lowering.py), plan the arena (memplan.py),
render the templates (emit.py, firmware_templates/c/).
"""

from __future__ import annotations

import functools
import math
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeslim.codegen import memplan, schedule
from edgeslim.codegen.emit import io_names
from edgeslim.modelgraph import Graph, read as read_graph
from edgeslim.codegen.lowering import SUPPORTED, Step, lower
from edgeslim.errors import CodegenError

__all__ = ["generate", "memory_plan", "CodegenResult", "OpInfo", "SUPPORTED"]

_C_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
    "typedef", "union", "unsigned", "void", "volatile", "while",
}


@dataclass
class OpInfo:
    index: int
    op: str
    layer: str  # the Keras layer (modelgraph's rule), else the output tensor's name
    function: str  # the C function called ("" for an aliasing RESHAPE)
    macs: int
    packed_weights: bool = False  # 4-bit indices into per-channel tables
    note: str = ""  # why the target's optimized kernel was not used, if it has one
    # "plain" (the whole layer at once), "inplace" (a depthwise layer over its input), or
    # "fused" (a depthwise layer and the 1x1 convolution after it, row by row)
    schedule: str = "plain"
    fused_with: int | None = None  # the other operator of a fused pair

    def as_dict(self) -> dict:
        return dict(index=self.index, op=self.op, layer=self.layer, function=self.function,
                    macs=self.macs, packed_weights=self.packed_weights, note=self.note,
                    schedule=self.schedule, fused_with=self.fused_with)


@dataclass
class CodegenResult:
    name: str
    header: Path
    source: Path
    arena_size: int
    plan: memplan.MemoryPlan
    ops: list[OpInfo]
    macs: int
    model_sha256: str
    input_bytes: int  # all inputs (several: packed as <name>_invoke_packed reads them)
    output_bytes: int
    const_bytes: int  # weights, parameters and constant operands, before the compiler's layout
    files: list[Path] = field(default_factory=list)
    features: tuple[str, ...] = ()  # the cpu.features that chose the kernels
    # the plan of executing one whole layer at a time, which the schedule went below
    layer_by_layer: memplan.MemoryPlan | None = None
    # per input / output: C name, tensor, dtype, shape, bytes, offset in the packed buffer
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    kernels: str = "optimized"  # or "reference": the scalar kernels whatever the core
    memory_plan_kind: str = "smallest"  # or "layer-by-layer"

    @property
    def peak(self) -> int:
        return self.plan.peak

    @property
    def lower_bound(self) -> int:
        return self.plan.lower_bound

    def report(self) -> dict:
        """Facts for report.json (paths relative to the output folder)."""
        return {
            "backend": "c",
            "name": self.name,
            "files": [p.name for p in self.files],
            "model_sha256": self.model_sha256,
            "arena_bytes": self.arena_size,
            "memory_plan": self._plan_report(),
            "scratch_buffers": sum(b.name.endswith("_scratch") for b in self.plan.buffers),
            "io_bytes": {"input": self.input_bytes, "output": self.output_bytes},
            "inputs": self.inputs,
            "outputs": self.outputs,
            "const_bytes": self.const_bytes,
            "features": list(self.features),
            "library": {"kernels": self.kernels, "memory_plan": self.memory_plan_kind},
            "macs": self.macs,
            "ops": [o.as_dict() for o in self.ops],
        }


    def _plan_report(self) -> dict:
        """The plan, and the layer-by-layer plan and lower bound it is compared with."""
        out = self.plan.as_dict()
        if self.layer_by_layer is not None:
            lbl = self.layer_by_layer
            out["layer_by_layer"] = {"arena_size": lbl.arena_size, "lower_bound": lbl.lower_bound}
            out["below_layer_by_layer_bound"] = self.plan.arena_size < lbl.lower_bound
        out["schedule"] = [dict(op=o.index, layer=o.layer, mode=o.schedule,
                                fused_with=o.fused_with)
                           for o in self.ops if o.schedule != "plain"]
        return out


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _C_NAME.match(name) or name in _C_KEYWORDS:
        raise CodegenError(
            f"'{name}' cannot prefix C identifiers",
            hint="use letters, digits and underscores, starting with a letter (e.g. 'kws_model')",
        )


def io_layout(graph: Graph) -> tuple[list[dict], list[dict]]:
    """Per input and output: its C name, tensor, type, shape, bytes and offset in the packed
    buffers of ``<name>_invoke_packed`` (concatenated in order, each 4-byte aligned)."""
    out = []
    for names, idxs in zip(io_names(graph), (graph.inputs, graph.outputs)):
        offset, items = 0, []
        for n, i in zip(names, idxs):
            t = graph.tensors[i]
            items.append(dict(name=n, tensor=t.name, dtype=t.dtype, shape=list(t.shape),
                              bytes=t.nbytes, offset=offset))
            offset = memplan.align(offset + t.nbytes)
        out.append(items)
    return out[0], out[1]


def _packed_bytes(items: list[dict]) -> int:
    return items[-1]["offset"] + items[-1]["bytes"]


def _check_io(graph: Graph) -> None:
    if not graph.inputs or not graph.outputs:
        raise CodegenError(
            f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; the C "
            "backend needs at least one of each", hint="check the model")
    for role, idxs in (("input", graph.inputs), ("output", graph.outputs)):
        if len(set(idxs)) != len(idxs):
            raise CodegenError(f"the model lists one tensor twice among its {role}s",
                               hint="check the model")
        for idx in idxs:
            t = graph.tensors[idx]
            if t.dtype not in ("INT8", "FLOAT32"):
                raise CodegenError(
                    f"the model's {role} '{t.name}' is {t.dtype}; the C backend takes int8 or float32",
                    hint="convert with inference_input_type/inference_output_type tf.int8",
                )
    both = set(graph.inputs) & set(graph.outputs)
    if both:
        name = graph.tensors[sorted(both)[0]].name
        raise CodegenError(f"the model's input '{name}' is also its output: nothing computes it",
                           hint="check the model")


def _resolve(graph: Graph, steps: list[Step]) -> tuple[dict, dict[str, int]]:
    """Map each activation tensor to its storage (input/output/an arena buffer) and give
    each storage its size. An aliasing step writing the model's output becomes a copy."""
    ins, outs = io_names(graph)
    root: dict[int, str] = {**dict(zip(graph.inputs, ins)), **dict(zip(graph.outputs, outs))}
    for s in steps:
        out = s.outputs[0]
        if s.alias and (out in graph.outputs or graph.tensors[s.inputs[0]].is_constant):
            s.alias = False  # the caller's buffer, or flash: copy (es_copy_bytes)
        if s.alias:
            root[out] = root.get(s.inputs[0], f"t{s.inputs[0]}")
        elif out not in root:
            root[out] = f"t{out}"
    size: dict[str, int] = {}
    for s in steps:
        for t in s.inputs:
            if not graph.tensors[t].is_constant and t not in root:
                raise CodegenError(
                    f"tensor '{graph.tensors[t].name}' is read before any operator writes it",
                    hint="the model's operators are not in execution order; regenerate it",
                )
        for t in s.outputs:
            size[root[t]] = max(size.get(root[t], 0), graph.tensors[t].nbytes)
    return root, size


def _nodes(graph: Graph, steps: list[Step], root: dict) -> list[schedule.Node]:
    """The steps as the scheduler sees them: buffers read and written, scratch, and which
    depthwise / 1x1 convolutions may run in place or fused (batch 1, reference-layout
    weights: not 4-bit packed)."""
    nodes = []
    for s in steps:
        reads = [root[t] for t in s.inputs if not graph.tensors[t].is_constant]
        n = schedule.Node(f"op{s.op.index}", reads, root[s.outputs[0]], scratch=s.scratch_bytes)
        g = s.shape
        if g and s.lut4 is None and g["batches"] == 1 and not s.alias:
            if s.op.opcode == "DEPTHWISE_CONV_2D":
                n.rows = schedule.Rows.of(g)
                if g["depth_multiplier"] == 1 and (g["in_h"], g["in_w"]) == (g["out_h"], g["out_w"]):
                    n.inplace = g["out_h"] * g["out_w"]
            elif s.op.opcode == "CONV_2D":
                n.pointwise = (g["filter_h"] == g["filter_w"] == 1 and g["stride_h"] == 1
                               and g["pad_h"] == 0 and g["in_h"] == g["out_h"]
                               and g["filter_in_c"] == g["in_c"])
        nodes.append(n)
    for i, n in enumerate(nodes[:-1]):
        if n.rows is not None and nodes[i + 1].pointwise and steps[i + 1].call_args:
            # the DSP 1x1 kernel computes four pixels per pass: fused, give it bands of
            # whole passes (a band of one 5-pixel row would leave one pixel to the slow path)
            width = steps[i + 1].shape["out_w"]
            n.rows = replace(n.rows, band=4 // math.gcd(width, 4))
    return nodes


@functools.lru_cache(maxsize=None)
def _environment():
    """One Jinja2 environment per process (it caches the compiled templates)."""
    import jinja2

    from edgeslim.resources import templates_dir

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "c")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def target_features(target) -> tuple[str, ...]:
    """The cpu.features that select kernels: from a Target, a profile name ("cortex-m4"),
    or a list of features; None: the reference kernels only."""
    if target is None:
        return ()
    if isinstance(target, str):
        from edgeslim.targets import load_target

        target = load_target(target)
    features = getattr(target, "features", target)
    if isinstance(features, str) or not all(isinstance(f, str) for f in features):
        raise CodegenError(f"cannot read CPU features from {target!r}",
                           hint="pass a target profile name, a Target or a list such as ['dsp']")
    return tuple(features)


KERNELS = ("optimized", "reference")
MEMORY_PLANS = ("smallest", "layer-by-layer")


def check_library_options(kernels: str = "optimized", memory_plan: str = "smallest") -> None:
    """``kernels`` and ``memory_plan`` name a variant of the C library (CodegenError if not)."""
    if kernels not in KERNELS:
        raise CodegenError(f"unknown kernel set {kernels!r}", hint=f"One of {', '.join(KERNELS)}.")
    if memory_plan not in MEMORY_PLANS:
        raise CodegenError(f"unknown memory plan {memory_plan!r}",
                           hint=f"One of {', '.join(MEMORY_PLANS)}.")


def _plan(model_bytes: bytes, *, pack_weights: bool, target, layer_by_layer: bool = False,
          kernels: str = "optimized"):
    """Read, lower, schedule and place: what generation needs before any C is rendered."""
    check_library_options(kernels)
    graph = read_graph(bytes(model_bytes))
    _check_io(graph)
    features = target_features(target) if kernels == "optimized" else ()
    steps = lower(graph, pack_weights=pack_weights, features=features)
    root, sizes = _resolve(graph, steps)
    nodes = _nodes(graph, steps, root)
    external = set(sum(io_names(graph), []))  # the caller's buffers, not in the arena
    layered = schedule.place(nodes, sizes, external, {})
    placement = layered if layer_by_layer else schedule.choose(nodes, sizes, external)
    return graph, features, steps, root, placement, layered


def memory_plan(model_bytes: bytes, *, pack_weights: bool = False, target=None,
                layer_by_layer: bool = False, kernels: str = "optimized") -> memplan.MemoryPlan:
    """The static arena plan ``generate`` would write, without writing anything
    (`edgeslim inspect`). CodegenError for a model the backend cannot handle."""
    return _plan(model_bytes, pack_weights=pack_weights, target=target,
                 layer_by_layer=layer_by_layer, kernels=kernels)[4].plan


def generate(model_bytes: bytes, out_dir: Path, *, name: str,
             pack_weights: bool = False, target=None,
             layer_by_layer: bool = False, kernels: str = "optimized") -> CodegenResult:
    """Write ``<name>.h`` and ``<name>.c`` for the int8 model into ``out_dir``.

    ``pack_weights``: store CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED weights whose
    output channels each hold at most 16 distinct values (clustered layers) as 4-bit
    indices into per-channel tables, decoded in the kernel (less flash, more
    instructions; same outputs).

    ``target``: a target profile (name or Target) or its ``cpu.features``; with ``dsp``
    (Cortex-M4/M7/M33/M55) CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED use SIMD kernels
    (firmware_templates/c/kernels_dsp/), bit-exact with the reference kernels, which the
    default (no target) and cores without DSP use.

    The memory plan runs a depthwise convolution in place, or fused with the 1x1
    convolution after it over rows, where that makes the arena smaller (schedule.py);
    ``layer_by_layer``: never (each layer whole, the arena at the layer-by-layer bound).
    Both trade: on the KWS DS-CNN for the Cortex-M4 the fused plan saves 3.4 KB of RAM
    and costs 1.9 KB of flash (the band loops), and ``kernels="reference"`` (the scalar
    kernels whatever the core) saves 2.6 KB of flash at 6.8x the instructions: a budget
    search (edgeslim.search) picks the fastest variant that fits.

    Raises CodegenError for a model the backend cannot handle (an unsupported op is
    named with its layer). Files appear in ``out_dir`` only when generation succeeded.
    """
    _check_name(name)
    graph, features, steps, root, placement, layered = _plan(
        model_bytes, pack_weights=pack_weights, target=target, layer_by_layer=layer_by_layer,
        kernels=kernels)
    plan = placement.plan
    sha = hashlib.sha256(bytes(model_bytes)).hexdigest()
    macs = sum(s.macs for s in steps)

    from edgeslim.codegen.emit import render

    header, source, arrays = render(_environment(), name=name, graph=graph, steps=steps,
                                    placement=placement, root=root, sha256=sha, macs=macs,
                                    features=features)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir.parent))
    try:
        (tmp / f"{name}.h").write_text(header)
        (tmp / f"{name}.c").write_text(source)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for fname in (f"{name}.h", f"{name}.c"):
            os.replace(tmp / fname, out_dir / fname)
            files.append(out_dir / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    inputs, outputs = io_layout(graph)
    # every array the source defines, the t{N}_const operands included
    const_bytes = sum(np.asarray(a.values).size * _ctype_size(a.ctype) for a in arrays)
    ops = [
        OpInfo(s.op.index, s.op.opcode, graph.layer_name(s.op), "" if s.alias else s.function,
               s.macs, s.lut4 is not None, s.note)
        for s in steps
    ]
    for i, mode in placement.modes.items():
        if mode == schedule.INPLACE:
            ops[i].schedule = "inplace"
            ops[i].function = "es_depthwise_conv2d_s8_inplace"
            ops[i].note = "in place (reference kernel)" if steps[i].call_args else ops[i].note
        elif mode == schedule.FUSE:
            for a, b in ((i, i + 1), (i + 1, i)):
                ops[a].schedule, ops[a].fused_with = "fused", ops[b].index
    return CodegenResult(
        name=name, header=files[0], source=files[1], arena_size=plan.arena_size, plan=plan,
        ops=ops, macs=macs, model_sha256=sha,
        input_bytes=_packed_bytes(inputs), output_bytes=_packed_bytes(outputs),
        inputs=inputs, outputs=outputs,
        const_bytes=int(const_bytes), files=files, features=features,
        layer_by_layer=layered.plan, kernels=kernels,
        memory_plan_kind="layer-by-layer" if layer_by_layer else "smallest",
    )


def _ctype_size(ctype: str) -> int:
    return {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4}[ctype]
