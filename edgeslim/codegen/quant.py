"""Fixed-point parameters computed at generation time, as TFLite Micro computes them in Prepare.

Every function here mirrors one helper of TFLite's ``quantization_util.cc`` or a
kernel's Prepare step, including where it works in float32 and where in double:
bit-exactness with the interpreter depends on those details.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def tflite_round(x: float) -> int:
    """std::round: halves away from zero (not Python's round-half-even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: real = q * 2^shift with q a Q31 integer in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = tflite_round(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_frexp(real: float) -> tuple[int, int]:
    """The LOGISTIC/TANH variant: frexp and a rounded Q31 without the 2^31 fix-up."""
    q, shift = math.frexp(real)
    return int(tflite_round(q * (1 << 31))), int(shift)


def downscale_multiplier_to_int16(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    if m >= (1 << 31) - 1 - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """CalculateInputRadius."""
    max_rescaled = (
        1.0 * ((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits)) / (1 << left_shift)
    )
    return int(math.floor(max_rescaled))


def f32(x) -> np.float32:
    return np.float32(x)


def activation_range(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 (the quantize step divides in float32)."""

    def q(v: float) -> int:
        return int(zero_point) + tflite_round(float(f32(v) / f32(scale)))

    if act == "NONE":
        return INT8_MIN, INT8_MAX
    if act == "RELU":
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if act == "RELU6":
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(INT8_MIN, q(-1.0)), min(INT8_MAX, q(1.0))
    raise ValueError(act)


def conv_multipliers(
    input_scale: float, filter_scales, output_scale: float, channels: int
) -> tuple[list[int], list[int]]:
    """PopulateConvolutionQuantizationParams: per output channel, in double."""
    scales = [float(s) for s in np.asarray(filter_scales, np.float32).ravel()]
    mult, shift = [], []
    for c in range(channels):
        s = scales[c] if len(scales) > 1 else scales[0]
        m, sh = quantize_multiplier(float(input_scale) * s / float(output_scale))
        mult.append(m)
        shift.append(sh)
    return mult, shift


def fc_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> tuple[int, int]:
    """GetQuantizedConvolutionMultipler: the scale product is taken in float32."""
    product = float(f32(input_scale) * f32(filter_scale))
    return quantize_multiplier(product / float(output_scale))
