"""Emission: the memory plan's pointers and the steps, rendered through the Jinja2
templates in firmware_templates/c/ (the C text lives there, not here)."""

from __future__ import annotations

import numpy as np

from edgeslim.codegen.graph import Graph
from edgeslim.codegen.lowering import ConstArray, Step
from edgeslim.codegen.memplan import MemoryPlan

# Kernel sources in dependency order (a kernel file may use any file listed before it).
KERNEL_ORDER = (
    "fixedpoint", "simd", "mve", "gemmlowp_math", "broadcast", "lut4", "conv", "conv_lut4",
    "conv_dsp", "conv_mve", "depthwise_conv", "depthwise_conv_lut4", "depthwise_conv_dsp",
    "depthwise_conv_mve",
    "fully_connected", "fully_connected_lut4", "pooling", "mean", "add", "mul", "softmax",
    "logistic", "tanh", "hard_swish", "pad", "concatenation", "quantize", "copy",
)
# Kernel folders searched in order for each kernel source, by target feature: an optimized
# folder first when the target's cpu.features has its feature, the reference kernels last.
FEATURE_DIRS = (("mve-int", "kernels_mve"), ("dsp", "kernels_dsp"))
REFERENCE_DIR = "kernels"


def kernel_dirs(features) -> list[str]:
    """The kernel search path for a target's cpu.features (e.g. ["kernels_dsp", "kernels"])."""
    have = set(features or ())
    return [d for f, d in FEATURE_DIRS if f in have] + [REFERENCE_DIR]


def kernel_paths(env, kernels, features) -> list[str]:
    """Template paths of the kernel sources, each from the first folder on the search path
    that has it."""
    known = set(env.list_templates())
    dirs = kernel_dirs(features)
    paths = []
    for k in kernels:
        for d in dirs:
            if f"{d}/{k}.c" in known:
                paths.append(f"{d}/{k}.c")
                break
        else:
            raise FileNotFoundError(f"kernel source {k}.c is in none of {dirs}")
    return paths
CTYPES = {"INT8": "int8_t", "FLOAT32": "float", "INT32": "int32_t", "INT16": "int16_t",
          "UINT8": "uint8_t"}
ROW = 16


def c_float(x) -> str:
    """An exact C99 float literal (hexadecimal), e.g. 0x1.0p-8f."""
    v = float(np.float32(x))
    return f"{v.hex()}f"


def c_value(v) -> str:
    """A C initializer for a params field: int, float32, identifier, list or nested dict."""
    if isinstance(v, (np.floating, float)):
        return c_float(v)
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return "{ " + ", ".join(f".{k} = {c_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "{ " + ", ".join(c_value(x) for x in v) + " }"
    raise TypeError(type(v))


def array_rows(a: ConstArray) -> list[str]:
    vals = np.asarray(a.values).ravel()
    if vals.dtype.kind == "f":
        text = [c_float(x) for x in vals]
    else:
        text = [str(int(x)) for x in vals.tolist()]
    return [", ".join(text[i : i + ROW]) for i in range(0, len(text), ROW)] or ["0"]


def pointer(graph: Graph, root: dict, plan_offsets: dict, tensor: int, const_names: dict) -> str:
    """The C expression for tensor ``tensor``'s data."""
    if tensor in const_names:
        return const_names[tensor]
    r = root[tensor]
    dtype = graph.tensors[tensor].dtype
    if r == "input":
        return "input"
    if r == "output":
        return "output"
    off = plan_offsets[r]
    if dtype == "FLOAT32":
        return f"(float *)(void *)(arena + {off})"
    if dtype != "INT8":
        return f"({CTYPES[dtype]} *)(void *)(arena + {off})"
    return f"(arena + {off})"


def specializations(steps: list[Step]) -> tuple[list[dict], dict[int, str]]:
    """One C function per optimized kernel and distinct set of constant arguments (shapes,
    offsets, flags), taking the op's constant arrays as parameters: the compiler specializes
    the always-inline kernel for those constants once, and ops of the same shape (the
    repeated blocks of a network) share that code instead of each inlining its own."""
    specs: dict[tuple, dict] = {}
    spec_of: dict[int, str] = {}
    for s in steps:
        if not s.call_args:
            continue
        types = {a.name: a.ctype for a in s.arrays}
        args, array_types = [], []
        for a in s.call_args:
            if a in types:
                args.append(f"a{len(array_types)}")
                array_types.append(types[a])
            else:
                args.append(a)
        key = (s.function, bool(s.scratch_bytes), tuple(args), tuple(array_types))
        if key not in specs:
            specs[key] = dict(name=f"{s.function}_{len(specs)}", function=s.function,
                              scratch=bool(s.scratch_bytes), args=args,
                              array_types=array_types, ops=[])
        specs[key]["ops"].append(s.op.index)
        spec_of[s.op.index] = specs[key]["name"]
    return list(specs.values()), spec_of


def render(env, *, name: str, graph: Graph, steps: list[Step], plan: MemoryPlan, root: dict,
           sha256: str, macs: int, features=()) -> tuple[str, str, list[ConstArray]]:
    """The header and source text, and every constant array the source defines."""
    offsets = {b.name: b.offset for b in plan.buffers}
    arrays: list[ConstArray] = [a for s in steps for a in s.arrays]
    const_names: dict[int, str] = {}
    for s in steps:
        for t in s.inputs:
            ten = graph.tensors[t]
            if ten.is_constant and t not in const_names:
                const_names[t] = f"t{t}_const"
                arrays.append(ConstArray(f"t{t}_const", CTYPES[ten.dtype], ten.data.ravel()))
    used = {k for s in steps if not s.alias for k in s.kernels} | {"fixedpoint"}
    uses_math = any(s.function == "es_quantize_f32_s8" for s in steps)
    specs, spec_of = specializations(steps)
    step_ctx = []
    for s in steps:
        step_ctx.append(dict(
            index=s.op.index, opcode=s.op.opcode, layer=graph.layer_name(s.op).replace("*/", "* /"),
            function=s.function, params_type=s.params_type, params_name=s.params_name,
            params=[(k, c_value(v)) for k, v in s.params.items()],
            args=[pointer(graph, root, offsets, t, const_names) for t in s.inputs],
            out=pointer(graph, root, offsets, s.outputs[0], const_names),
            alias=s.alias, input_list=s.input_list, size_arg=s.size_arg,
            lut4=s.lut4, lut4_params=[(k, c_value(v)) for k, v in s.extra_params.items()],
            scratch=(f"(arena + {offsets[f'op{s.op.index}_scratch']})" if s.scratch_bytes
                     else None),
            call_args=s.call_args,
            spec=spec_of.get(s.op.index),
            spec_arrays=[a for a in (s.call_args or []) if a in {x.name for x in s.arrays}],
        ))
    ios = []
    for role, idx in (("input", graph.inputs[0]), ("output", graph.outputs[0])):
        t = graph.tensors[idx]
        quantized = t.dtype == "INT8" and t.scales.size > 0
        ios.append(dict(
            role=role, ROLE=role.upper(), ctype=CTYPES[t.dtype], shape=list(t.shape),
            tensor=t.name.replace("*/", "* /"), size=t.size, nbytes=t.nbytes, quantized=quantized,
            scale_c=c_float(t.scale) if quantized else "", scale_text=f"{t.scale:.9g}",
            zero_point=t.zero_point,
        ))
    ctx = dict(
        name=name, NAME=name.upper(), sha256=sha256, arena_size=plan.arena_size, macs=macs,
        ios=ios, input_ctype=ios[0]["ctype"], output_ctype=ios[1]["ctype"],
        uses_math=uses_math,
        kernels=kernel_paths(env, [k for k in KERNEL_ORDER if k in used], features),
        specs=specs,
        arrays=[dict(name=a.name, ctype=a.ctype, length=max(1, np.asarray(a.values).size),
                     rows=array_rows(a)) for a in arrays],
        steps=step_ctx,
    )
    header = env.get_template("model.h.j2").render(**ctx)
    source = env.get_template("model.c.j2").render(**ctx)
    return header, source, arrays
