"""Operands for the Armv8.1-M MVE (Helium) kernels (firmware_templates/c/kernels_mve/),
prepared at generation time.

CONV_2D and FULLY_CONNECTED take the DSP kernels' operands (dsp.matmul_operands: weights
padded to a multiple of four per output channel, the input offset folded into the bias).
DEPTHWISE_CONV_2D takes any depth multiplier: its per-channel operands are ordered by
(multiplier index m, input channel i) so that four consecutive input channels are one load.
"""

from __future__ import annotations

import numpy as np

from edgeslim.codegen import dsp

INT32 = dsp.INT32


def has_mve(features) -> bool:
    return "mve-int" in set(features or ())


def has_left_shift(shift) -> int:
    """The kernels' ``has_left`` argument: 1 when some channel's requantization shifts left."""
    return int(np.any(np.asarray(shift) > 0))


def depthwise_operands(weights: np.ndarray, bias: np.ndarray, multiplier, shift, in_c: int,
                       depth_multiplier: int, input_offset: int) -> dict | str:
    """Operands of es_depthwise_conv2d_s8_mve for a filter [taps][out_c] (out_c = in_c *
    depth_multiplier, output channel o = i * dm + m), or why it cannot be used.

    - weights [m][i / 4][tap][i % 4], in_c zero-padded to in_c4 (a multiple of four);
    - bias, bias_interior (= bias + input_offset * sum of the channel's taps), multiplier
      and shift as [m][in_c4].
    """
    w = np.asarray(weights, np.int64)
    taps, out_c = w.shape
    dm = int(depth_multiplier)
    if taps > dsp.MAX_DEPTH:
        return f"{taps} taps > {dsp.MAX_DEPTH}"
    mult = np.broadcast_to(np.asarray(multiplier, np.int64), (out_c,))
    if np.any(mult <= 0):
        return "a zero requantization multiplier (a zero scale)"
    sh = np.broadcast_to(np.asarray(shift, np.int64), (out_c,))
    b = np.asarray(bias, np.int64).ravel()
    interior = b + int(input_offset) * w.sum(axis=0)
    if interior.min() < INT32[0] or interior.max() > INT32[1]:
        return "the bias with the input offset folded in leaves int32"
    in_c4 = (in_c + 3) // 4 * 4

    def by_m_i(v: np.ndarray, dtype) -> np.ndarray:
        # [o] with o = i * dm + m  ->  [m][in_c4]
        out = np.zeros((dm, in_c4), dtype)
        out[:, :in_c] = dsp.by_multiplier_index(v, in_c, dm)
        return out.ravel()

    wr = np.zeros((taps, dm, in_c4), np.int8)
    wr[:, :, :in_c] = dsp.by_multiplier_index(w, in_c, dm)
    # [tap][m][g][4] -> [m][g][tap][4]
    wr = wr.reshape(taps, dm, in_c4 // 4, 4).transpose(1, 2, 0, 3)
    return dict(
        weights=wr.ravel(),
        bias=by_m_i(b, np.int32), bias_interior=by_m_i(interior, np.int32),
        multiplier=by_m_i(mult, np.int32), shift=by_m_i(sh, np.int8),
        has_left=has_left_shift(sh),
    )
