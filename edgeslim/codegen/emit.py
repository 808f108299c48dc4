"""Emission: the memory plan's pointers and the steps, rendered through the Jinja2
templates in firmware_templates/c/ (the C text lives there, not here)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeslim.modelgraph import Graph
from edgeslim.codegen.lowering import CONV_CALL_SHAPES, DEPTHWISE_CALL_SHAPES, ConstArray, Step
from edgeslim.codegen.schedule import FUSE, INPLACE, PLAIN, REVERSE, Placement, Rows

# Kernel sources in dependency order (a kernel file may use any file listed before it).
KERNEL_ORDER = (
    "fixedpoint", "simd", "mve", "gemmlowp_math", "broadcast", "lut4", "conv", "conv_lut4",
    "conv_dsp", "conv_mve", "depthwise_conv", "depthwise_conv_lut4", "depthwise_conv_inplace",
    "depthwise_conv_dsp", "depthwise_conv_mve",
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


def io_names(graph: Graph) -> tuple[list[str], list[str]]:
    """The C parameter names of the model's inputs and outputs: ``input`` and ``output``
    for a single-input, single-output model (the API it always had), else ``input0``,
    ``input1``, ... and ``output0``, ..."""

    def names(role: str, n: int) -> list[str]:
        return [role] if n == 1 else [f"{role}{i}" for i in range(n)]

    return names("input", len(graph.inputs)), names("output", len(graph.outputs))


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
    if r not in plan_offsets:  # the caller's input or output (the C parameter's name)
        return r
    off = plan_offsets[r]
    if dtype == "FLOAT32":
        return f"(float *)(void *)(arena + {off})"
    if dtype != "INT8":
        return f"({CTYPES[dtype]} *)(void *)(arena + {off})"
    return f"(arena + {off})"


def specializations(steps: list[Step]) -> tuple[list[dict], dict[str, str]]:
    """One C function per optimized kernel and distinct set of constant arguments (shapes,
    offsets, flags), taking the op's constant arrays as parameters: the compiler specializes
    the always-inline kernel for those constants once, and ops of the same shape (the
    repeated blocks of a network) share that code instead of each inlining its own.
    Returns the functions and, per call (its params_name), the function it calls."""
    specs: dict[tuple, dict] = {}
    spec_of: dict[str, str] = {}
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
        if s.op.index not in specs[key]["ops"]:
            specs[key]["ops"].append(s.op.index)
        spec_of[s.params_name] = specs[key]["name"]
    return list(specs.values()), spec_of


def _shaped(step: Step, variant: str, **shape) -> Step:
    """The step's kernel called on a part of its tensors: the same constants, other shape
    fields (in the params struct, or in an optimized kernel's constant arguments)."""
    new = replace(step, variant=variant, params=dict(step.params))
    if step.call_args:
        names = CALL_SHAPES[step.function]
        args = list(step.call_args)
        first = 1 if args[0] == "NULL" else 0  # a kernel's absent scratch argument comes first
        for k, v in shape.items():
            args[first + names.index(k)] = str(int(v))
        new.call_args = args
    else:
        new.params.update(shape)
    return new


# the leading constant arguments of the optimized kernels, in order (lowering.py)
CALL_SHAPES = {
    "es_conv2d_s8_dsp": CONV_CALL_SHAPES,
    "es_conv2d_s8_mve": CONV_CALL_SHAPES,
    "es_depthwise_conv2d_s8_dsp": DEPTHWISE_CALL_SHAPES,
    "es_depthwise_conv2d_s8_mve": DEPTHWISE_CALL_SHAPES,
}


def fused_calls(dw: Step, pw: Step, rows: Rows, direction: str) -> list[dict]:
    """The band loops of a fused depthwise -> 1x1 pair: consecutive bands whose depthwise
    window has the same height and top padding (and the same number of rows) share one
    loop, with one call of each kernel per band (the depthwise kernel on the input rows the
    band reads, into the band buffer; the 1x1 kernel on the band, into the output rows)."""
    loops: list[dict] = []
    pws: dict[int, Step] = {}
    for r, n in rows.bands():
        y0 = r * rows.stride - rows.pad
        lo, hi = rows.first_row(r), rows.end_row(r + n - 1)
        key = (hi - lo, lo - y0, n)
        if loops and loops[-1]["key"] == key:
            loops[-1]["last"] = r
            continue
        if n not in pws:
            pws[n] = _shaped(pw, f"_band{len(pws)}", in_h=n, out_h=n)
        g = len(loops)
        loops.append(dict(key=key, first=r, last=r, step=rows.band,
                          base=(lo - y0) - rows.pad,  # first input row read = r * stride + base
                          dw=_shaped(dw, f"_rows{g}", in_h=hi - lo, out_h=n, pad_h=lo - y0),
                          pw=pws[n]))
    if direction == REVERSE:
        loops.reverse()
    return loops


def render(env, *, name: str, graph: Graph, steps: list[Step], placement: Placement, root: dict,
           sha256: str, macs: int, features=()) -> tuple[str, str, list[ConstArray]]:
    """The header and source text, and every constant array the source defines."""
    plan = placement.plan
    offsets = placement.offsets
    const_names: dict[int, str] = {}
    consts: list[ConstArray] = []
    for s in steps:
        for t in s.inputs:
            ten = graph.tensors[t]
            if ten.is_constant and t not in const_names:
                const_names[t] = f"t{t}_const"
                consts.append(ConstArray(f"t{t}_const", CTYPES[ten.dtype], ten.data.ravel()))

    def ptr(t: int) -> str:
        return pointer(graph, root, offsets, t, const_names)

    def scratch_of(s: Step) -> str | None:
        key = f"op{s.op.index}_scratch"
        return f"(arena + {offsets[key]})" if s.scratch_bytes else None

    # what runs, in order: a step, a step in place, or a fused pair's row loops
    program: list[tuple[str, object]] = []
    emitted: list[Step] = []
    skip = set()
    for i, s in enumerate(steps):
        if i in skip:
            continue
        mode = placement.modes.get(i, PLAIN)
        if mode == FUSE:
            pw, rows = steps[i + 1], placement.rows[i]
            skip.add(i + 1)
            loops = fused_calls(s, pw, rows, placement.directions[i])
            program.append(("fused", (s, pw, rows, loops, placement.directions[i])))
            emitted += [c for lp in loops for c in (lp["dw"], lp["pw"])]
        elif mode == INPLACE:
            ref = replace(s.reference or s, function="es_depthwise_conv2d_s8_inplace",
                          kernels=("depthwise_conv", "depthwise_conv_inplace"))
            program.append(("inplace", ref))
            emitted.append(ref)
        else:
            program.append(("step", s))
            emitted.append(s)

    arrays: list[ConstArray] = []
    seen_arrays = set()
    for s in emitted:
        for a in s.arrays:
            if a.name not in seen_arrays:
                seen_arrays.add(a.name)
                arrays.append(a)
    arrays += consts
    used = {k for s in emitted if not s.alias for k in s.kernels} | {"fixedpoint"}
    uses_math = any(s.function == "es_quantize_f32_s8" for s in emitted)
    specs, spec_of = specializations(emitted)

    def call(s: Step, args: list[str], out: str, scratch: str | None) -> dict:
        return dict(
            index=s.op.index, opcode=s.op.opcode,
            layer=graph.layer_name(s.op).replace("*/", "* /"),
            function=s.function, params_type=s.params_type, params_name=s.params_name,
            params=[(k, c_value(v)) for k, v in s.params.items()],
            args=args, out=out, alias=s.alias, input_list=s.input_list, size_arg=s.size_arg,
            lut4=s.lut4, lut4_params=[(k, c_value(v)) for k, v in s.extra_params.items()],
            scratch=scratch, call_args=s.call_args, spec=spec_of.get(s.params_name),
            spec_arrays=[a for a in (s.call_args or []) if a in {x.name for x in s.arrays}],
            inplace=False, fused=None,
        )

    step_ctx = []
    decls = []
    for kind, item in program:
        if kind == "step":
            s = item
            c = call(s, [ptr(t) for t in s.inputs], ptr(s.outputs[0]), scratch_of(s))
            step_ctx.append(c)
            decls.append(c)
        elif kind == "inplace":
            s = item
            c = call(s, [ptr(s.inputs[0])], ptr(s.outputs[0]),
                     f"(arena + {offsets[f'op{s.op.index}_temp']})")
            c["inplace"] = True
            step_ctx.append(c)
            decls.append(c)
        else:
            dw, pw, rows, loops, direction = item
            x, y = ptr(dw.inputs[0]), ptr(pw.outputs[0])
            band = f"(arena + {offsets[f'op{dw.op.index}_band']})"
            row_out = graph.tensors[pw.outputs[0]].nbytes // rows.out_h
            ctx_loops = []
            for lp in loops:
                start = f"r * {rows.stride}" + (f" + {lp['base']}" if lp["base"] > 0 else
                                                f" - {-lp['base']}" if lp["base"] < 0 else "")
                d = call(lp["dw"], [f"{x} + ({start}) * {rows.row_in}"], band, None)
                p = call(lp["pw"], [band], f"{y} + r * {row_out}", scratch_of(pw))
                ctx_loops.append(dict(first=lp["first"], last=lp["last"], step=lp["step"],
                                      dw=d, pw=p))
                for c in (d, p):
                    if c["params_name"] not in {x_["params_name"] for x_ in decls}:
                        decls.append(c)
            c = call(dw, [], "", None)
            c["fused"] = dict(pw_index=pw.op.index, pw_opcode=pw.op.opcode,
                              pw_layer=graph.layer_name(pw.op).replace("*/", "* /"),
                              reverse=direction == REVERSE, loops=ctx_loops,
                              band=rows.band_bytes, band_rows=rows.band)
            step_ctx.append(c)

    ios = []
    names = io_names(graph)
    for role, idxs, cnames in (("input", graph.inputs, names[0]), ("output", graph.outputs, names[1])):
        offset = 0
        for k, (idx, cname) in enumerate(zip(idxs, cnames)):
            t = graph.tensors[idx]
            quantized = t.dtype == "INT8" and t.scales.size > 0
            ios.append(dict(
                role=role, ROLE=cname.upper(), cname=cname, ctype=CTYPES[t.dtype],
                shape=list(t.shape), tensor=t.name.replace("*/", "* /"), size=t.size,
                nbytes=t.nbytes, quantized=quantized, offset=offset,
                const="const " if role == "input" else "",
                scale_c=c_float(t.scale) if quantized else "", scale_text=f"{t.scale:.9g}",
                zero_point=t.zero_point, first=k == 0,
            ))
            offset = (offset + t.nbytes + 3) // 4 * 4
    multi = len(ios) > 2
    ins = [io for io in ios if io["role"] == "input"]
    outs = [io for io in ios if io["role"] == "output"]
    ctx = dict(
        name=name, NAME=name.upper(), sha256=sha256, arena_size=plan.arena_size, macs=macs,
        ios=ios, ins=ins, outs=outs, multi=multi,
        io_params=", ".join(f"{io['const']}{io['ctype']} *{io['cname']}" for io in ios),
        io_args=", ".join(io["cname"] for io in ios),
        input_ctype=ins[0]["ctype"], output_ctype=outs[0]["ctype"],
        packed_inputs=ins[-1]["offset"] + ins[-1]["nbytes"],
        packed_outputs=outs[-1]["offset"] + outs[-1]["nbytes"],
        has_float_io=any(io["ctype"] == "float" for io in ios),
        uses_math=uses_math,
        kernels=kernel_paths(env, [k for k in KERNEL_ORDER if k in used], features),
        specs=specs,
        arrays=[dict(name=a.name, ctype=a.ctype, length=max(1, np.asarray(a.values).size),
                     rows=array_rows(a)) for a in arrays],
        steps=step_ctx, decls=decls,
    )
    header = env.get_template("model.h.j2").render(**ctx)
    source = env.get_template("model.c.j2").render(**ctx)
    return header, source, arrays
