"""Operands for the Armv7E-M DSP kernels (firmware_templates/c/kernels_dsp/), prepared at
generation time: weights reordered into the layout the inner loop reads, the input offset
folded into the bias, shapes as constant call arguments.

Each ``*_eligible`` check returns ``None`` when the optimized kernel computes exactly what
the reference kernel computes for this operator, else the reason it does not apply (the
reference kernel is used then); the reason is kept in the generation report.
"""

from __future__ import annotations

import numpy as np

# The DSP kernels' int32 sum of raw int8 products must not overflow, and neither may the
# reference kernel's sum of int8 * (int8 + offset) it must equal: |w * (x + offset)| <=
# 128 * 255, so at most 65535 terms per output.
MAX_DEPTH = 65535
INT32 = (-(2**31), 2**31 - 1)


# Below this bound on |accumulator| * 2^max(shift, 0), the kernels start the sum with the
# bias and use the short requantization (es_requantize_bounded in kernels_dsp/simd.c).
BOUND = 2**30


def bounded_mode(weights_abs_sum: np.ndarray, bias: np.ndarray, max_input: int, shift) -> int:
    """The kernels' ``bounded`` argument: 0 (exact requantization), 1 (bounded), 2 (bounded
    and every shift negative: no left-shift code at all)."""
    if not bounded(weights_abs_sum, bias, max_input, shift):
        return 0
    return 2 if np.all(np.asarray(shift) <= -1) else 1


def bounded(weights_abs_sum: np.ndarray, bias: np.ndarray, max_input: int, shift) -> bool:
    """Whether every channel's accumulator (bias + sum of weight * input, inputs at most
    ``max_input`` in magnitude) stays below BOUND after the requantization's left shift,
    every right shift is at most 31 and every left shift at most 29 (the kernel multiplies
    by 2^(shift + 1) in int32)."""
    sh = np.asarray(shift, dtype=np.int64)
    worst = (np.abs(np.asarray(bias, np.int64)) + np.asarray(weights_abs_sum, np.int64) * max_input)
    return bool(np.all(worst * (2 ** np.maximum(sh, 0)) < BOUND) and np.all(sh >= -31)
                and np.all(sh <= 29))


def has_dsp(features) -> bool:
    return "dsp" in set(features or ())


def _fits_int32(a: np.ndarray) -> bool:
    return bool(a.size == 0 or (a.min() >= INT32[0] and a.max() <= INT32[1]))


def matmul_operands(weights: np.ndarray, bias: np.ndarray | None, input_zero_point: int,
                    multiplier, shift) -> dict | str:
    """Operands of es_conv2d_s8_dsp for weights [out_c][k] (a CONV_2D filter flattened over
    filter_h, filter_w, in_c; or FULLY_CONNECTED weights), or why it cannot be used.

    - weights: per output channel, the depth zero-padded to a multiple of 4 (k4);
    - bias' = bias - zp * sum(w) per channel (the kernel multiplies raw inputs, and padded
      taps read the zero point);
    - multiplier and shift per channel (broadcast when per-tensor).
    """
    w = np.asarray(weights, dtype=np.int64)
    out_c, k = w.shape
    if k > MAX_DEPTH:
        return f"depth {k} > {MAX_DEPTH} (the int32 accumulator could overflow)"
    mult = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (out_c,))
    sh = np.broadcast_to(np.asarray(shift, dtype=np.int64), (out_c,))
    if np.any(mult <= 0):
        return "a zero requantization multiplier (a zero scale)"
    b = np.zeros(out_c, np.int64) if bias is None else np.asarray(bias, np.int64).ravel()
    folded = b - int(input_zero_point) * w.sum(axis=1)
    if not _fits_int32(folded):
        return "the bias with the input offset folded in leaves the int32 range"
    k4 = (k + 3) // 4 * 4
    padded = np.zeros((out_c, k4), np.int8)
    padded[:, :k] = w

    return dict(
        weights=padded.ravel(), k4=k4,
        # the kernel multiplies raw int8 inputs (|x| <= 128) with the folded bias
        bounded=bounded_mode(np.abs(w).sum(axis=1), folded, 128, sh),
        bias=folded.astype(np.int32),
        multiplier=np.array(mult, np.int32),
        shift=np.array(sh, np.int8),
    )


def by_multiplier_index(v, channels: int, depth_multiplier: int) -> np.ndarray:
    """Depthwise per-channel values [..., o], o = channel * dm + m, reordered to
    [..., m, channel]: for a fixed m, consecutive input channels are consecutive (one load
    of four inputs serves four output channels)."""
    v = np.asarray(v)
    return v.reshape(v.shape[:-1] + (channels, depth_multiplier)).swapaxes(-1, -2)


def depthwise_eligible(filter_taps: int, multiplier) -> str | None:
    if filter_taps > MAX_DEPTH:
        return f"{filter_taps} taps > {MAX_DEPTH}"
    if np.any(np.asarray(multiplier) <= 0):
        return "a zero requantization multiplier (a zero scale)"
    return None
