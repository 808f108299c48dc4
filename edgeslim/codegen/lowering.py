"""One lowering per supported TFLite op: check it, compute its fixed-point parameters
the way TFLite Micro's Prepare does, and describe the kernel call.

Each lowering returns a ``Step`` (which C function, its params struct, the constant
arrays it reads, the activation tensors it reads and writes, its MAC count). The C
text itself lives in firmware_templates/c/.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from edgeslim.codegen import dsp, mve, quant
from edgeslim import modelgraph
from edgeslim.modelgraph import Graph, Operator, Tensor, activation_name, padding_name
from edgeslim.errors import CodegenError

# TFLite's int8 SOFTMAX sums exp(x - max) in Q12.19 (each term <= 2^19) in an int32: more
# than 4095 terms can overflow it (undefined behaviour in TFLite's own kernel).
MAX_SOFTMAX_DEPTH = 4095

HINT = (
    "build the TFLite Micro bundle instead (the default backend, without --backend c), "
    "or replace that layer with a supported one"
)


@dataclass
class ConstArray:
    name: str
    ctype: str  # "int8_t", "int32_t", ...
    values: np.ndarray  # flat


# The leading constant arguments of the optimized convolution kernels (DSP and MVE), in
# order: the shape fields a fused band changes (emit._shaped).
CONV_CALL_SHAPES = ("batches", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "filter_h",
                    "filter_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_h",
                    "pad_w")
DEPTHWISE_CALL_SHAPES = ("batches", "in_h", "in_w", "in_c", "out_h", "out_w", "depth_multiplier",
                         "filter_h", "filter_w", "stride_h", "stride_w", "dilation_h",
                         "dilation_w", "pad_h", "pad_w")


@dataclass
class Step:
    op: Operator
    function: str  # C function, e.g. "es_conv2d_s8"
    kernels: tuple[str, ...]  # kernel source files needed (firmware_templates/c/kernels)
    params_type: str | None = None
    params: dict = field(default_factory=dict)  # field -> int | float | str | list | dict
    arrays: list[ConstArray] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)  # tensor indices read (activations)
    outputs: list[int] = field(default_factory=list)
    macs: int = 0  # modelgraph.op_macs: conv, depthwise and FC only
    alias: bool = False  # RESHAPE-like: output is the input's bytes, no code
    input_list: bool = False  # inputs passed as an array of pointers (CONCATENATION)
    extra_params: dict = field(default_factory=dict)  # the es_lut4_t fields
    size_arg: int | None = None  # es_copy_bytes takes a byte count first
    lut4: str | None = None  # name of the es_lut4_t for 4-bit packed weights
    scratch_bytes: int = 0  # an arena scratch buffer live during this step only
    # Optimized kernels take their shapes as constant arguments (always-inline functions,
    # compiled per call site): the C expressions after (inputs, output[, scratch]).
    call_args: list[str] | None = None
    note: str = ""  # why an optimized kernel was not used for this op ("" if it was, or none exists)
    # CONV_2D / DEPTHWISE_CONV_2D: the reference kernel's shape fields (batches, in_h, ...),
    # kept when an optimized kernel replaces the params; the scheduler reads them
    shape: dict = field(default_factory=dict)
    # DEPTHWISE_CONV_2D on an optimized kernel: the reference step (the in-place kernel)
    reference: "Step | None" = None
    variant: str = ""  # a second call of the op's kernel with other shapes ("_rows0")

    @property
    def params_name(self) -> str:
        return f"op{self.op.index}{self.variant}_params"



@dataclass(frozen=True)
class _ConvCommon:
    geometry: tuple  # (stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w)
    act_min: int
    act_max: int
    prefix: str
    arrays: list
    bias: str

class Lowerer:
    def __init__(self, graph: Graph, *, pack_weights: bool = False, features=()):
        self.g = graph
        self.pack_weights = pack_weights
        self.dsp = dsp.has_dsp(features)
        self.mve = mve.has_mve(features)

    # -- optimized kernels (the target profile's cpu.features) ----------------------------
    def bias_values(self, op: Operator, channels: int) -> np.ndarray:
        if len(op.inputs) <= 2 or op.inputs[2] < 0:
            return np.zeros(channels, np.int64)
        return self.t(op.inputs[2]).data.ravel().astype(np.int64)

    def to_dsp_matmul(self, step: Step, weights: np.ndarray, geometry: dict) -> Step:
        """CONV_2D / FULLY_CONNECTED on es_conv2d_s8_dsp (kernels_dsp/conv_dsp.c) when it
        computes exactly what the reference kernel does; else the step unchanged. On an MVE
        core, es_conv2d_s8_mve (kernels_mve/conv_mve.c) with the same operands."""
        if not (self.dsp or self.mve) or step.lut4 is not None:
            return step
        op, P = step.op, step.params
        p = f"op{op.index}"
        arrays = {a.name: a for a in step.arrays}
        mult = arrays[f"{p}_multiplier"].values
        shift = arrays[f"{p}_shift"].values
        x = self.t(op.inputs[0])
        out_c = weights.shape[0]
        got = dsp.matmul_operands(weights.reshape(out_c, -1), self.bias_values(op, out_c),
                                  x.zero_point, mult, shift)
        if isinstance(got, str):
            step.note = f"reference kernel: {got}"
            return step
        g = geometry
        k = g["filter_h"] * g["filter_w"] * g["in_c"]
        direct = g["filter_h"] == 1 and g["filter_w"] == 1 and g["pad_h"] == 0 and g["pad_w"] == 0
        step.arrays = [
            ConstArray(f"{p}_filter", "int8_t", got["weights"]),
            ConstArray(f"{p}_bias", "int32_t", got["bias"]),
            ConstArray(f"{p}_multiplier", "int32_t", got["multiplier"]),
            ConstArray(f"{p}_shift", "int8_t", got["shift"]),
        ]
        step.function = "es_conv2d_s8_dsp"
        step.kernels = ("simd", "conv_dsp")
        step.params_type, step.params = None, {}
        step.scratch_bytes = 8 * got["k4"] + (0 if direct else k)
        mode = got["bounded"]
        if self.mve:
            # the MVE kernel (kernels_mve/conv_mve.c) reads the same operands: int8 columns
            # gathered into the scratch, none for a 1x1 filter without padding
            step.function = "es_conv2d_s8_mve"
            step.kernels = ("simd", "conv_dsp", "mve", "conv_mve")
            step.scratch_bytes = 0 if direct else 4 * k
            mode = mve.has_left_shift(got["shift"])
        step.call_args = [str(int(g[n])) for n in CONV_CALL_SHAPES] + [
            str(int(x.zero_point)), str(int(P["output_offset"])), str(int(P["act_min"])),
            str(int(P["act_max"])), f"{p}_filter", f"{p}_bias", f"{p}_multiplier", f"{p}_shift",
            str(int(mode))]
        if not step.scratch_bytes:
            step.call_args.insert(0, "NULL")  # the kernel's scratch argument: none needed
        return step

    def to_mve_depthwise(self, step: Step) -> Step:
        """DEPTHWISE_CONV_2D (any depth multiplier) on es_depthwise_conv2d_s8_mve
        (kernels_mve/depthwise_conv_mve.c) when it is exact; else the DSP kernel's rules."""
        if step.lut4 is not None:
            return step
        op, P = step.op, step.params
        p = f"op{op.index}"
        arrays = {a.name: a for a in step.arrays}
        in_c, dm = P["in_c"], P["depth_multiplier"]
        out_c = in_c * dm
        w = self.t(op.inputs[1]).data.reshape(-1, out_c)
        got = mve.depthwise_operands(w, self.bias_values(op, out_c),
                                     arrays[f"{p}_multiplier"].values,
                                     arrays[f"{p}_shift"].values, in_c, dm, P["input_offset"])
        if isinstance(got, str):
            step.note = f"reference kernel: {got}"
            return step
        step.arrays = [ConstArray(f"{p}_{name}", ctype, got[key]) for name, ctype, key in (
            ("filter", "int8_t", "weights"), ("bias", "int32_t", "bias"),
            ("bias_interior", "int32_t", "bias_interior"), ("multiplier", "int32_t", "multiplier"),
            ("shift", "int8_t", "shift"))]
        step.function = "es_depthwise_conv2d_s8_mve"
        step.kernels = ("simd", "mve", "depthwise_conv_mve")
        step.call_args = [str(int(P[n])) for n in DEPTHWISE_CALL_SHAPES + (
            "input_offset", "output_offset", "act_min", "act_max")] + [
            f"{p}_filter", f"{p}_bias", f"{p}_bias_interior", f"{p}_multiplier", f"{p}_shift",
            str(got["has_left"])]
        step.params_type, step.params = None, {}
        return step

    def to_dsp_depthwise(self, step: Step) -> Step:
        """DEPTHWISE_CONV_2D (any depth multiplier) on es_depthwise_conv2d_s8_dsp
        (kernels_dsp/depthwise_conv_dsp.c) when it is exact; else the step unchanged."""
        if not self.dsp or step.lut4 is not None:
            return step
        op, P = step.op, step.params
        p = f"op{op.index}"
        arrays = {a.name: a for a in step.arrays}
        taps = P["filter_h"] * P["filter_w"]
        why = dsp.depthwise_eligible(taps, arrays[f"{p}_multiplier"].values)
        if why:
            step.note = f"reference kernel: {why}"
            return step
        channels, dm = P["in_c"], P["depth_multiplier"]
        out_c = channels * dm
        w = self.t(op.inputs[1]).data.reshape(-1, out_c).astype(np.int64)  # [tap][o]
        bias = self.bias_values(op, out_c)
        interior = bias + int(P["input_offset"]) * w.sum(axis=0)
        if interior.min() < -(2**31) or interior.max() > 2**31 - 1:
            step.note = "reference kernel: the bias with the input offset folded in leaves int32"
            return step
        # edge pixels multiply inputs with their offset added (|x + offset| <= 255) from the
        # bias, interior ones raw inputs (|x| <= 128) from the folded bias
        shifts = np.broadcast_to(arrays[f"{p}_shift"].values, (out_c,))
        mults = np.broadcast_to(arrays[f"{p}_multiplier"].values, (out_c,))
        fits = min(dsp.bounded_mode(np.abs(w).sum(axis=0), bias, 255, shifts),
                   dsp.bounded_mode(np.abs(w).sum(axis=0), interior, 128, shifts))

        def by_m(v: np.ndarray) -> np.ndarray:
            return dsp.by_multiplier_index(v, channels, dm)

        wm = by_m(w)  # [tap][m][channel]
        c4 = channels // 4 * 4
        # [tap][m][channel / 4][c0, c2, c1, c3] as int16: the (c0, c2) and (c1, c3) pairs the
        # kernel's SXTB16 makes of four inputs
        w16 = wm[:, :, :c4].reshape(taps, dm, c4 // 4, 4)[..., [0, 2, 1, 3]].astype(np.int16)
        step.arrays = [
            ConstArray(f"{p}_filter", "int8_t", wm.astype(np.int8).ravel()),
            ConstArray(f"{p}_filter16", "int16_t", w16.ravel()),
            ConstArray(f"{p}_bias", "int32_t", by_m(bias).astype(np.int32).ravel()),
            ConstArray(f"{p}_bias_interior", "int32_t", by_m(interior).astype(np.int32).ravel()),
            ConstArray(f"{p}_multiplier", "int32_t", by_m(mults).astype(np.int32).ravel()),
            ConstArray(f"{p}_shift", "int8_t", by_m(shifts).astype(np.int8).ravel()),
        ]
        step.function = "es_depthwise_conv2d_s8_dsp"
        step.kernels = ("simd", "depthwise_conv_dsp")
        step.call_args = [str(int(P[n])) for n in DEPTHWISE_CALL_SHAPES + (
            "input_offset", "output_offset", "act_min", "act_max")] + [
            f"{p}_filter", f"{p}_filter16", f"{p}_bias", f"{p}_bias_interior",
            f"{p}_multiplier", f"{p}_shift", str(int(fits))]
        step.params_type, step.params = None, {}
        return step

    def maybe_pack(self, step: Step, channels: list[np.ndarray]) -> Step:
        """Store the weights as 4-bit indices into per-channel tables when every output
        channel holds at most 16 distinct values and that saves flash."""
        if not self.pack_weights:
            return step
        n = channels[0].size
        if any(np.unique(c).size > 16 for c in channels) or (n + 1) // 2 + 16 >= n:
            return step
        row = (n + 1) // 2
        tables = np.zeros((len(channels), 16), np.int8)
        indices = np.zeros((len(channels), row), np.uint8)
        for k, c in enumerate(channels):
            values, idx = np.unique(c, return_inverse=True)
            tables[k, : values.size] = values
            idx = np.concatenate([idx.astype(np.uint8), np.zeros(2 * row - n, np.uint8)])
            indices[k] = idx[0::2] | (idx[1::2] << 4)
        p = f"op{step.op.index}"
        step.arrays = [a for a in step.arrays if a.name != f"{p}_filter"] + [
            ConstArray(f"{p}_indices", "uint8_t", indices.ravel()),
            ConstArray(f"{p}_tables", "int8_t", tables.ravel()),
        ]
        step.params["filter"] = "NULL"
        step.function += "_lut4"
        step.kernels = step.kernels + ("lut4", step.kernels[0] + "_lut4")
        step.lut4 = f"{p}_lut4"
        step.scratch_bytes = n
        step.extra_params = {"indices": f"{p}_indices", "tables": f"{p}_tables", "count": n,
                             "row_bytes": row}
        return step

    # -- helpers -----------------------------------------------------------
    def t(self, idx: int) -> Tensor:
        return self.g.tensors[idx]

    def fail(self, op: Operator, why: str, hint: str = HINT) -> CodegenError:
        return CodegenError(
            f"the C backend cannot generate {op.opcode} (layer '{self.g.layer_name(op)}'): {why}",
            hint=hint,
        )

    def require_int8(self, op: Operator, *idx: int) -> None:
        for i in idx:
            t = self.t(i)
            if t.dtype != "INT8":
                raise self.fail(op, f"tensor '{t.name}' is {t.dtype}, only int8 is supported")
            if t.scales.size == 0:
                raise self.fail(op, f"tensor '{t.name}' has no quantization parameters")

    def act_range(self, op: Operator, out: Tensor) -> tuple[int, int]:
        act = activation_name(op.option("fusedActivationFunction", 0))
        if act not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
            raise self.fail(op, f"fused activation {act} is not supported")
        return quant.activation_range(act, out.scale, out.zero_point)

    @staticmethod
    def shape4(shape) -> list[int]:
        shape = list(shape)
        if len(shape) > 4:
            raise ValueError(shape)
        return [1] * (4 - len(shape)) + shape

    def padding(self, op, in_h, in_w, f_h, f_w, s_h, s_w, d_h, d_w, out_h, out_w):
        pad = padding_name(op.option("padding", 0))

        def one(stride, dil, in_size, f, out_size):
            eff = (f - 1) * dil + 1
            expected = (in_size + stride - 1) // stride if pad == "SAME" else (
                (in_size - eff + stride) // stride
            )
            if expected != out_size:
                raise self.fail(op, f"output size {out_size} does not follow {pad} padding")
            if pad == "VALID":
                return 0
            return max(0, ((out_size - 1) * stride + eff - in_size) // 2)

        if pad not in ("SAME", "VALID"):
            raise self.fail(op, f"padding {pad} is not supported")
        return one(s_h, d_h, in_h, f_h, out_h), one(s_w, d_w, in_w, f_w, out_w)

    def check_shift(self, op: Operator, shift) -> None:
        """A requantization scale of 2^31 or more (input scale x weight scale / output scale)
        would shift an int32 by 31 or more bits: undefined in C and in TFLite's kernel."""
        if len(shift) and max(int(s) for s in shift) > 30:
            raise self.fail(op, "the output scale is more than 2^30 times smaller than input "
                                "scale x weight scale: the requantization cannot be computed",
                            hint="re-quantize the model (its output range is degenerate)")

    def const(self, op: Operator, idx: int, what: str) -> Tensor:
        t = self.t(idx)
        if not t.is_constant:
            raise self.fail(op, f"the {what} must be a constant tensor")
        return t

    # -- lowerings ----------------------------------------------------------
    def conv_2d(self, op: Operator) -> Step:
        x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, x, w, out)
        wt = self.const(op, w, "filter")
        xt, ot = self.t(x), self.t(out)
        if len(xt.shape) != 4 or len(wt.shape) != 4:
            raise self.fail(op, "only 4-D NHWC inputs are supported")
        n, ih, iw, ic = xt.shape
        oc, fh, fw, fic = wt.shape
        _, oh, ow, _ = ot.shape
        if ic % fic or oc % (ic // fic):
            raise self.fail(op, "filter depth does not divide the input depth")
        win = self.conv_window(op, xt, wt, ot, ih, iw, fh, fw, oh, ow, oc)
        sh, sw, dh, dw, ph, pw = win.geometry
        lo, hi, p, arrays, bias = win.act_min, win.act_max, win.prefix, win.arrays, win.bias
        params = dict(
            batches=n, in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc,
            filter_h=fh, filter_w=fw, filter_in_c=fic, stride_h=sh, stride_w=sw,
            dilation_h=dh, dilation_w=dw, pad_h=ph, pad_w=pw,
            input_offset=-xt.zero_point, output_offset=ot.zero_point, act_min=lo, act_max=hi,
            filter=f"{p}_filter", bias=bias, multiplier=f"{p}_multiplier", shift=f"{p}_shift",
        )
        step = Step(op, "es_conv2d_s8", ("conv",), "es_conv_params_t", params, arrays,
                    [x], [out], shape=dict(params))
        step = self.maybe_pack(step, [wt.data[c].ravel() for c in range(oc)])
        if fic != ic:
            if self.dsp:
                step.note = "reference kernel: grouped convolution"
            return step
        return self.to_dsp_matmul(step, wt.data, params)

    def conv_window(self, op: Operator, xt, wt, ot, ih, iw, fh, fw, oh, ow, oc) -> "_ConvCommon":
        """What CONV_2D and DEPTHWISE_CONV_2D share: strides, dilation, padding, the fused
        activation range, and the filter, per-channel requantization and bias arrays."""
        sh, sw = op.option("strideH", 1), op.option("strideW", 1)
        dh, dw = op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)
        ph, pw = self.padding(op, ih, iw, fh, fw, sh, sw, dh, dw, oh, ow)
        lo, hi = self.act_range(op, ot)
        mult, shift = quant.conv_multipliers(xt.scale, wt.scales, ot.scale, oc)
        self.check_shift(op, shift)
        p = f"op{op.index}"
        arrays = [
            ConstArray(f"{p}_filter", "int8_t", wt.data.ravel()),
            ConstArray(f"{p}_multiplier", "int32_t", np.array(mult)),
            ConstArray(f"{p}_shift", "int8_t", np.array(shift)),
        ]
        bias = self.bias(op, 2, oc, arrays)
        return _ConvCommon((sh, sw, dh, dw, ph, pw), lo, hi, p, arrays, bias)

    def bias(self, op: Operator, slot: int, channels: int, arrays: list) -> str:
        if len(op.inputs) <= slot or op.inputs[slot] < 0:
            return "NULL"
        b = self.const(op, op.inputs[slot], "bias")
        if b.dtype != "INT32":
            raise self.fail(op, f"bias '{b.name}' is {b.dtype}, only int32 is supported")
        arrays.append(ConstArray(f"op{op.index}_bias", "int32_t", b.data.ravel()))
        if b.size != channels:
            raise self.fail(op, f"bias has {b.size} values for {channels} channels")
        return f"op{op.index}_bias"

    def depthwise_conv_2d(self, op: Operator) -> Step:
        x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, x, w, out)
        wt = self.const(op, w, "filter")
        xt, ot = self.t(x), self.t(out)
        n, ih, iw, ic = xt.shape
        _, fh, fw, oc = wt.shape
        _, oh, ow, _ = ot.shape
        if oc % ic:
            raise self.fail(op, "output depth is not a multiple of the input depth")
        dm = oc // ic
        win = self.conv_window(op, xt, wt, ot, ih, iw, fh, fw, oh, ow, oc)
        sh, sw, dh, dw, ph, pw = win.geometry
        lo, hi, p, arrays, bias = win.act_min, win.act_max, win.prefix, win.arrays, win.bias
        params = dict(
            batches=n, in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, depth_multiplier=dm,
            filter_h=fh, filter_w=fw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
            pad_h=ph, pad_w=pw, input_offset=-xt.zero_point, output_offset=ot.zero_point,
            act_min=lo, act_max=hi, filter=f"{p}_filter", bias=bias,
            multiplier=f"{p}_multiplier", shift=f"{p}_shift",
        )
        step = Step(op, "es_depthwise_conv2d_s8", ("depthwise_conv",),
                    "es_depthwise_conv_params_t", params, arrays, [x], [out],
                    shape=dict(params))
        step = self.maybe_pack(step, [wt.data[0, :, :, c].ravel() for c in range(oc)])
        reference = replace(step, arrays=list(step.arrays), params=dict(step.params))
        step = self.to_mve_depthwise(step) if self.mve else self.to_dsp_depthwise(step)
        if step.call_args:
            step.reference = reference
        return step

    def fully_connected(self, op: Operator) -> Step:
        x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, x, w, out)
        wt = self.const(op, w, "weights")
        xt, ot = self.t(x), self.t(out)
        if len(wt.shape) != 2:
            raise self.fail(op, "weights must be 2-D")
        if op.option("weightsFormat", 0):
            raise self.fail(op, "shuffled weights are not supported")
        out_depth, accum = wt.shape
        if xt.size % accum:
            raise self.fail(op, "input size is not a multiple of the weights' depth")
        batches = xt.size // accum
        lo, hi = self.act_range(op, ot)
        if wt.zero_points.size and np.any(wt.zero_points != 0):
            raise self.fail(op, "weights with a non-zero zero point are not supported")
        per_channel = wt.scales.size > 1
        if per_channel:
            mult, shift = quant.conv_multipliers(xt.scale, wt.scales, ot.scale, out_depth)
        else:
            m, s = quant.fc_multiplier(xt.scale, float(wt.scales[0]), ot.scale)
            mult, shift = [m], [s]
        self.check_shift(op, shift)
        p = f"op{op.index}"
        arrays = [
            ConstArray(f"{p}_filter", "int8_t", wt.data.ravel()),
            ConstArray(f"{p}_multiplier", "int32_t", np.array(mult)),
            ConstArray(f"{p}_shift", "int8_t", np.array(shift)),
        ]
        bias = self.bias(op, 2, out_depth, arrays)
        params = dict(
            batches=batches, accum_depth=accum, out_depth=out_depth,
            input_offset=-xt.zero_point, output_offset=ot.zero_point, act_min=lo, act_max=hi,
            per_channel=int(per_channel), filter=f"{p}_filter", bias=bias,
            multiplier=f"{p}_multiplier", shift=f"{p}_shift",
        )
        step = Step(op, "es_fully_connected_s8", ("fully_connected",),
                    "es_fully_connected_params_t", params, arrays, [x], [out])
        step = self.maybe_pack(step, [wt.data[o].ravel() for o in range(out_depth)])
        # rows of the input as the pixels of a 1x1 convolution
        geometry = dict(batches=1, in_h=batches, in_w=1, in_c=accum, out_h=batches, out_w=1,
                        out_c=out_depth, filter_h=1, filter_w=1, stride_h=1, stride_w=1,
                        dilation_h=1, dilation_w=1, pad_h=0, pad_w=0)
        step = self.to_dsp_matmul(step, wt.data, geometry)
        return step

    def _pool(self, op: Operator, function: str) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        if xt.scale != ot.scale or xt.zero_point != ot.zero_point:
            raise self.fail(op, "input and output quantization differ")
        n, ih, iw, c = xt.shape
        _, oh, ow, _ = ot.shape
        fh, fw = op.option("filterHeight", 1), op.option("filterWidth", 1)
        sh, sw = op.option("strideH", 1), op.option("strideW", 1)
        ph, pw = self.padding(op, ih, iw, fh, fw, sh, sw, 1, 1, oh, ow)
        lo, hi = self.act_range(op, ot)
        params = dict(batches=n, in_h=ih, in_w=iw, channels=c, out_h=oh, out_w=ow,
                      filter_h=fh, filter_w=fw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                      act_min=lo, act_max=hi)
        return Step(op, function, ("pooling",), "es_pool_params_t", params, [], [x], [out])

    def average_pool_2d(self, op):
        return self._pool(op, "es_average_pool_s8")

    def max_pool_2d(self, op):
        return self._pool(op, "es_max_pool_s8")

    def mean(self, op: Operator) -> Step:
        x, ax, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        axes = sorted({int(a) % len(xt.shape) for a in self.const(op, ax, "axis").data.ravel()})
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise self.fail(op, f"reducing over non-adjacent axes {axes} is not supported")
        shape = xt.shape
        outer = int(np.prod(shape[: axes[0]], dtype=np.int64))
        reduced = int(np.prod(shape[axes[0] : axes[-1] + 1], dtype=np.int64))
        inner = int(np.prod(shape[axes[-1] + 1 :], dtype=np.int64))
        m, s = quant.quantize_multiplier(float(xt.scale) / float(ot.scale))
        # QuantizedMeanOrSum folds 1/count into the multiplier.
        shift = int(reduced).bit_length() - 1
        shift = min(shift, 32, 31 + s)
        m = (m << shift) // reduced if shift >= 0 else m
        s = s - shift
        params = dict(outer=outer, reduced=reduced, inner=inner,
                      input_zero_point=xt.zero_point, output_zero_point=ot.zero_point,
                      multiplier=int(m), shift=int(s))
        return Step(op, "es_mean_s8", ("mean",), "es_mean_params_t", params, [], [x], [out])

    def _broadcast(self, op: Operator) -> dict:
        a, b, out = self.t(op.inputs[0]), self.t(op.inputs[1]), self.t(op.outputs[0])
        if max(len(a.shape), len(b.shape), len(out.shape)) > 4:
            raise self.fail(op, "tensors with more than 4 dimensions are not supported")
        oshape = self.shape4(out.shape)

        def strides(t: Tensor) -> list[int]:
            s = self.shape4(t.shape)
            st, acc = [0] * 4, 1
            for d in range(3, -1, -1):
                if s[d] == oshape[d]:
                    st[d] = acc if s[d] > 1 else 0
                elif s[d] == 1:
                    st[d] = 0
                else:
                    raise self.fail(op, f"shapes {a.shape} and {b.shape} do not broadcast")
                acc *= s[d]
            return st

        return {"shape": oshape, "stride1": strides(a), "stride2": strides(b)}

    def add(self, op: Operator) -> Step:
        a, b, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, a, b, out)
        at, bt, ot = self.t(a), self.t(b), self.t(out)
        left_shift = 20
        twice_max = 2.0 * float(max(np.float32(at.scale), np.float32(bt.scale)))
        m1, s1 = quant.quantize_multiplier(float(at.scale) / twice_max)
        m2, s2 = quant.quantize_multiplier(float(bt.scale) / twice_max)
        mo, so = quant.quantize_multiplier(twice_max / ((1 << left_shift) * float(ot.scale)))
        lo, hi = self.act_range(op, ot)
        params = dict(
            shape=self._broadcast(op), input1_offset=-at.zero_point,
            input2_offset=-bt.zero_point, output_offset=ot.zero_point, left_shift=left_shift,
            input1_multiplier=m1, input1_shift=s1, input2_multiplier=m2, input2_shift=s2,
            output_multiplier=mo, output_shift=so, act_min=lo, act_max=hi,
        )
        return Step(op, "es_add_s8", ("broadcast", "add"), "es_add_params_t", params, [],
                    [a, b], [out])

    def mul(self, op: Operator) -> Step:
        a, b, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, a, b, out)
        at, bt, ot = self.t(a), self.t(b), self.t(out)
        mo, so = quant.quantize_multiplier(
            float(at.scale) * float(bt.scale) / float(ot.scale)
        )
        lo, hi = self.act_range(op, ot)
        params = dict(
            shape=self._broadcast(op), input1_offset=-at.zero_point,
            input2_offset=-bt.zero_point, output_offset=ot.zero_point,
            output_multiplier=mo, output_shift=so, act_min=lo, act_max=hi,
        )
        return Step(op, "es_mul_s8", ("broadcast", "mul"), "es_mul_params_t", params, [],
                    [a, b], [out])

    def reshape(self, op: Operator) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        xt, ot = self.t(x), self.t(out)
        if xt.nbytes != ot.nbytes or xt.dtype != ot.dtype:
            raise self.fail(op, "input and output sizes differ")
        return Step(op, "es_copy_bytes", ("copy",), inputs=[x], outputs=[out], alias=True,
                    size_arg=ot.nbytes)

    squeeze = reshape
    expand_dims = reshape

    def softmax(self, op: Operator) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        if ot.zero_point != -128 or np.float32(ot.scale) != np.float32(1.0 / 256):
            raise self.fail(op, "int8 SOFTMAX needs output scale 1/256 and zero point -128")
        beta = float(np.float32(op.option("beta", 1.0)))
        max_real = float((1 << 31) - 1)
        real = min(beta * float(xt.scale) * float(1 << (31 - 5)), max_real)
        m, left = quant.quantize_multiplier(real)
        diff_min = -quant.input_radius(5, left)
        depth = xt.shape[-1]
        if depth > MAX_SOFTMAX_DEPTH:
            # sum_of_exps holds up to depth * 2^19 (exp(0) = 1.0 in Q12.19) in an int32.
            raise self.fail(op, f"depth {depth} > {MAX_SOFTMAX_DEPTH}: the int8 kernel's sum of "
                                "exponentials would overflow its 32-bit accumulator")
        params = dict(outer=xt.size // depth, depth=depth, input_multiplier=m,
                      input_left_shift=left, diff_min=diff_min)
        return Step(op, "es_softmax_s8", ("gemmlowp_math", "softmax"), "es_softmax_params_t",
                    params, [], [x], [out])

    def _sigmoid_like(self, op: Operator, function: str, kernel: str, ptype: str,
                      out_zp: int, out_scale: float) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        if ot.zero_point != out_zp or np.float32(ot.scale) != np.float32(out_scale):
            raise self.fail(op, f"output must have scale {out_scale} and zero point {out_zp}")
        real = float(xt.scale) * float(1 << (31 - 4))
        m, left = quant.quantize_multiplier_frexp(real)
        params = dict(size=xt.size, input_zero_point=xt.zero_point,
                      input_range_radius=quant.input_radius(4, left), input_multiplier=m,
                      input_left_shift=left)
        return Step(op, function, ("gemmlowp_math", kernel), ptype, params, [], [x], [out])

    def logistic(self, op):
        return self._sigmoid_like(op, "es_logistic_s8", "logistic", "es_logistic_params_t",
                                  -128, 1.0 / 256)

    def tanh(self, op):
        return self._sigmoid_like(op, "es_tanh_s8", "tanh", "es_tanh_params_t", 0, 1.0 / 128)

    def hard_swish(self, op: Operator) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        f = np.float32
        hires = f(1.0 / 128.0) * f(xt.scale)
        reluish_scale = f(3.0) / f(32768.0)
        om, oe = quant.quantize_multiplier(float(hires / f(ot.scale)))
        if oe > 0:
            raise self.fail(op, "output scale is too small for the int8 HARD_SWISH kernel")
        rm, re = quant.quantize_multiplier(float(hires / reluish_scale))
        params = dict(size=xt.size, input_zero_point=xt.zero_point,
                      output_zero_point=ot.zero_point, output_multiplier_exponent=oe,
                      reluish_multiplier_exponent=re,
                      output_multiplier=quant.downscale_multiplier_to_int16(om),
                      reluish_multiplier=quant.downscale_multiplier_to_int16(rm))
        return Step(op, "es_hard_swish_s8", ("hard_swish",), "es_hard_swish_params_t", params,
                    [], [x], [out])

    def pad(self, op: Operator) -> Step:
        x, pads, out = op.inputs[0], op.inputs[1], op.outputs[0]
        self.require_int8(op, x, out)
        xt, ot = self.t(x), self.t(out)
        pv = self.const(op, pads, "paddings").data.reshape(-1, 2)
        if len(xt.shape) > 4:
            raise self.fail(op, "more than 4 dimensions")
        if xt.scale != ot.scale or xt.zero_point != ot.zero_point:
            raise self.fail(op, "input and output quantization differ")
        value = ot.zero_point
        if len(op.inputs) > 2 and op.inputs[2] >= 0:  # PADV2
            value = int(self.const(op, op.inputs[2], "pad value").data.ravel()[0])
        before = [0] * (4 - len(xt.shape)) + [int(v) for v in pv[:, 0]]
        params = dict(in_shape=self.shape4(xt.shape), out_shape=self.shape4(ot.shape),
                      before=before, pad_value=value)
        return Step(op, "es_pad_s8", ("pad",), "es_pad_params_t", params, [], [x], [out])

    padv2 = pad

    def concatenation(self, op: Operator) -> Step:
        out = op.outputs[0]
        self.require_int8(op, out, *op.inputs)
        ot = self.t(out)
        axis = op.option("axis", 0) % len(ot.shape)
        lo, hi = self.act_range(op, ot)
        if (lo, hi) != (-128, 127):
            raise self.fail(op, "a fused activation on CONCATENATION is not supported")
        outer = int(np.prod(ot.shape[:axis], dtype=np.int64))
        rows = [self.t(i).size // outer for i in op.inputs]
        p = f"op{op.index}"
        arrays = [ConstArray(f"{p}_in_row", "int32_t", np.array(rows))]
        params = dict(outer=outer, count=len(rows), out_row=ot.size // outer,
                      in_row=f"{p}_in_row")
        return Step(op, "es_concatenation_s8", ("concatenation",), "es_concatenation_params_t",
                    params, arrays, list(op.inputs), [out], input_list=True)

    def quantize(self, op: Operator) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        xt, ot = self.t(x), self.t(out)
        self.require_int8(op, out)
        if xt.dtype == "FLOAT32":
            params = dict(size=xt.size, zero_point=ot.zero_point, scale=np.float32(ot.scale))
            return Step(op, "es_quantize_f32_s8", ("quantize",), "es_affine_params_t",
                        params, [], [x], [out])
        self.require_int8(op, x)
        m, s = quant.quantize_multiplier(float(xt.scale) / float(ot.scale))
        params = dict(size=xt.size, input_zero_point=xt.zero_point,
                      output_zero_point=ot.zero_point, multiplier=m, shift=s)
        return Step(op, "es_requantize_s8", ("quantize",), "es_requantize_params_t", params,
                    [], [x], [out])

    def dequantize(self, op: Operator) -> Step:
        x, out = op.inputs[0], op.outputs[0]
        xt, ot = self.t(x), self.t(out)
        self.require_int8(op, x)
        if ot.dtype != "FLOAT32":
            raise self.fail(op, f"output is {ot.dtype}, only float32 is supported")
        params = dict(size=xt.size, zero_point=xt.zero_point, scale=np.float32(xt.scale))
        return Step(op, "es_dequantize_s8_f32", ("quantize",), "es_affine_params_t", params,
                    [], [x], [out])


SUPPORTED = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
    "MEAN", "ADD", "MUL", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SOFTMAX", "LOGISTIC", "TANH",
    "HARD_SWISH", "PAD", "PADV2", "CONCATENATION", "QUANTIZE", "DEQUANTIZE",
)


def lower(graph: Graph, *, pack_weights: bool = False, features=()) -> list[Step]:
    """Lower every operator in execution order; CodegenError on the first unsupported one.

    ``features``: the target's ``cpu.features``; with ``dsp``, CONV_2D, DEPTHWISE_CONV_2D and
    FULLY_CONNECTED use the Armv7E-M DSP kernels where they are exact (kernels_dsp/)."""
    lw = Lowerer(graph, pack_weights=pack_weights, features=features)
    steps = []
    for op in graph.operators:
        if op.opcode not in SUPPORTED:
            raise CodegenError(
                f"the C backend does not support {op.opcode} "
                f"(layer '{graph.layer_name(op)}', operator {op.index})",
                hint=f"{HINT}. Supported ops: {', '.join(SUPPORTED)}",
            )
        fn: Callable[[Operator], Step] = getattr(lw, op.opcode.lower())
        try:
            step = fn(op)
        except CodegenError:
            raise
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            raise lw.fail(op, f"unexpected operator layout ({exc})") from exc
        step.macs = modelgraph.op_macs(graph, op)  # the one MAC rule (conv, depthwise, FC)
        steps.append(step)
    return steps
