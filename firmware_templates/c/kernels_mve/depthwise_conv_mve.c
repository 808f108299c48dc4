/* DEPTHWISE_CONV_2D, any depth multiplier, on Armv8.1-M MVE (Helium): eight output channels
 * per pass as two vectors of four int32 lanes (four in the last pass when fewer remain; the
 * two share the tap loop's address arithmetic and overhead). Per tap and vector: a
 * widening load of four inputs (VLDRB.S32), one of the four channels' weights, VMUL and
 * VADD. Bit-exact with the reference kernel (depthwise_conv.c, the oracle).
 *
 * Output channel o = i * dm + m reads input channel i. The generator (edgeslim/codegen/
 * mve.py) orders every per-channel operand by (m, i) so that four consecutive input channels
 * are one contiguous load for a fixed m, with in_c padded to in_c4 (a multiple of four):
 * - weights w[m][i / 4][tap][i % 4] (the four channels of one tap are one load, the taps
 *   of a pass consecutive), zero in the padding;
 * - bias, bias_interior, multiplier, shift as [m][in_c4].
 * Pixels whose whole window lies inside the input multiply raw inputs, the input offset
 * folded into bias_interior = bias + offset * sum of the channel's taps; the others add the
 * offset to each input and skip the taps in the padding, as the reference kernel does.
 * (MVE multiply-accumulates a vector by a scalar only: VMUL + VADD per tap.)
 * Results are stored four at a time (a scatter of stride dm when dm > 1); the channels past
 * the last multiple of four load and store with a tail predicate. */

#if ES_HAVE_MVE
/* Four int8 widened to int32, the lanes past the predicate zero. */
ES_INLINE int32x4_t es_mve_load4(const int8_t *p, int32_t full, mve_pred16_t pred)
{
    return full ? vldrbq_s32(p) : vldrbq_z_s32(p, pred);
}

/* Requantize and store four output channels (input channels i .. i + 3, index m). */
ES_INLINE void es_dw_mve_store(int32x4_t acc, int8_t *restrict out_px, int32_t in_c4, int32_t dm,
                               int32_t m, int32_t i, int32_t interior, int32_t output_offset,
                               int32_t act_min, int32_t act_max, const int32_t *restrict bias,
                               const int32_t *restrict bias_interior,
                               const int32_t *restrict multiplier, const int8_t *restrict shift,
                               int32_t has_left, int32_t full, mve_pred16_t pred)
{
    const int32_t pc = m * in_c4 + i;
    const int32x4_t v = es_mve_requantize(acc, vldrwq_s32((interior ? bias_interior : bias) + pc),
                                          vldrwq_s32(multiplier + pc), vldrbq_s32(shift + pc),
                                          output_offset, act_min, act_max, has_left);
    if (dm == 1) {
        if (full) {
            vstrbq_s32(out_px + i, v);
        } else {
            vstrbq_p_s32(out_px + i, v, pred);
        }
    } else {
        const uint32x4_t offsets = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)dm);
        if (full) {
            vstrbq_scatter_offset_s32(out_px + i * dm + m, offsets, v);
        } else {
            vstrbq_scatter_offset_p_s32(out_px + i * dm + m, offsets, v, pred);
        }
    }
}

/* Output channels of input channels i .. i + 4 * groups - 1 (groups 1 or 2, a constant),
 * multiplier index m, of one pixel. Two groups share the tap loop's address arithmetic and
 * overhead; the second group's weights follow the first's (w[m][i / 4][tap][4]). */
ES_INLINE void es_dw_mve_pass(const int8_t *restrict in_b, int8_t *restrict out_px,
                              int32_t in_w, int32_t in_c, int32_t in_c4, int32_t dm, int32_t m,
                              int32_t i, int32_t groups, int32_t y0, int32_t x0, int32_t fy0,
                              int32_t fy1, int32_t fx0, int32_t fx1, int32_t interior,
                              int32_t filter_h, int32_t filter_w, int32_t dil_h, int32_t dil_w,
                              int32_t input_offset, int32_t output_offset, int32_t act_min,
                              int32_t act_max, const int8_t *restrict w,
                              const int32_t *restrict bias, const int32_t *restrict bias_interior,
                              const int32_t *restrict multiplier, const int8_t *restrict shift,
                              int32_t has_left, int32_t full, mve_pred16_t pred)
{
    const int32_t taps = filter_h * filter_w;
    const int8_t *wp = w + (m * in_c4 + i) * taps;
    int32x4_t acc0 = vdupq_n_s32(0), acc1 = vdupq_n_s32(0);
    int32_t fy, fx;
    if (interior) {
        for (fy = 0; fy < filter_h; fy++) {
            const int8_t *row = in_b + ((y0 + fy * dil_h) * in_w + x0) * in_c + i;
            const int8_t *wr = wp + fy * filter_w * 4;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
            for (fx = 0; fx < filter_w; fx++) {
                const int8_t *xp = row + fx * dil_w * in_c;
                acc0 = vaddq_s32(acc0, vmulq_s32(es_mve_load4(xp, full, pred),
                                                 vldrbq_s32(wr + fx * 4)));
                if (groups == 2) {
                    acc1 = vaddq_s32(acc1, vmulq_s32(vldrbq_s32(xp + 4),
                                                     vldrbq_s32(wr + taps * 4 + fx * 4)));
                }
            }
        }
    } else {
        for (fy = fy0; fy < fy1; fy++) {
            const int8_t *row = in_b + ((y0 + fy * dil_h) * in_w + x0) * in_c + i;
            const int8_t *wr = wp + fy * filter_w * 4;
            for (fx = fx0; fx < fx1; fx++) {
                const int8_t *xp = row + fx * dil_w * in_c;
                acc0 = vaddq_s32(acc0, vmulq_s32(vaddq_n_s32(es_mve_load4(xp, full, pred),
                                                             input_offset),
                                                 vldrbq_s32(wr + fx * 4)));
                if (groups == 2) {
                    acc1 = vaddq_s32(acc1, vmulq_s32(vaddq_n_s32(vldrbq_s32(xp + 4),
                                                                 input_offset),
                                                     vldrbq_s32(wr + taps * 4 + fx * 4)));
                }
            }
        }
    }
    es_dw_mve_store(acc0, out_px, in_c4, dm, m, i, interior, output_offset, act_min, act_max,
                    bias, bias_interior, multiplier, shift, has_left, full, pred);
    if (groups == 2) {
        es_dw_mve_store(acc1, out_px, in_c4, dm, m, i + 4, interior, output_offset, act_min,
                        act_max, bias, bias_interior, multiplier, shift, has_left, 1, pred);
    }
}

ES_INLINE void es_depthwise_conv2d_s8_mve(const int8_t *restrict input, int8_t *restrict output,
                                          int32_t batches, int32_t in_h, int32_t in_w,
                                          int32_t in_c, int32_t out_h, int32_t out_w, int32_t dm,
                                          int32_t filter_h, int32_t filter_w, int32_t stride_h,
                                          int32_t stride_w, int32_t dil_h, int32_t dil_w,
                                          int32_t pad_h, int32_t pad_w, int32_t input_offset,
                                          int32_t output_offset, int32_t act_min,
                                          int32_t act_max, const int8_t *restrict w,
                                          const int32_t *restrict bias,
                                          const int32_t *restrict bias_interior,
                                          const int32_t *restrict multiplier,
                                          const int8_t *restrict shift, int32_t has_left)
{
    const int32_t in_c4 = (in_c + 3) / 4 * 4, c4 = in_c / 4 * 4;
    const mve_pred16_t tail = vctp32q((uint32_t)(in_c - c4));
    int32_t b, oy, ox, m, i;
    for (b = 0; b < batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * in_c;
        for (oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * stride_h - pad_h;
            int32_t fy0, fy1;
            es_tap_range(y0, in_h, dil_h, filter_h, &fy0, &fy1);
            for (ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * stride_w - pad_w;
                int32_t fx0, fx1;
                es_tap_range(x0, in_w, dil_w, filter_w, &fx0, &fx1);
                const int32_t interior =
                    fy0 == 0 && fy1 == filter_h && fx0 == 0 && fx1 == filter_w;
#define ES_DW_MVE_PASS(i, groups, full)                                                     \
    es_dw_mve_pass(in_b, output, in_w, in_c, in_c4, dm, m, (i), (groups), y0, x0, fy0, fy1,   \
                   fx0, fx1, interior, filter_h, filter_w, dil_h, dil_w, input_offset,        \
                   output_offset, act_min, act_max, w, bias, bias_interior, multiplier, shift, \
                   has_left, (full), tail)
                for (m = 0; m < dm; m++) {
                    for (i = 0; i + 8 <= c4; i += 8) {
                        ES_DW_MVE_PASS(i, 2, 1);
                    }
                    if (i < c4) {
                        ES_DW_MVE_PASS(i, 1, 1);
                    }
                    if (c4 < in_c) {
                        ES_DW_MVE_PASS(c4, 1, 0);
                    }
                }
#undef ES_DW_MVE_PASS
                output += in_c * dm;
            }
        }
    }
}
#else
/* Without MVE (a host build): the same operands in plain C, channel by channel. */
ES_INLINE void es_depthwise_conv2d_s8_mve(const int8_t *restrict input, int8_t *restrict output,
                                          int32_t batches, int32_t in_h, int32_t in_w,
                                          int32_t in_c, int32_t out_h, int32_t out_w, int32_t dm,
                                          int32_t filter_h, int32_t filter_w, int32_t stride_h,
                                          int32_t stride_w, int32_t dil_h, int32_t dil_w,
                                          int32_t pad_h, int32_t pad_w, int32_t input_offset,
                                          int32_t output_offset, int32_t act_min,
                                          int32_t act_max, const int8_t *restrict w,
                                          const int32_t *restrict bias,
                                          const int32_t *restrict bias_interior,
                                          const int32_t *restrict multiplier,
                                          const int8_t *restrict shift, int32_t has_left)
{
    const int32_t in_c4 = (in_c + 3) / 4 * 4, taps = filter_h * filter_w;
    int32_t b, oy, ox, m, i, fy, fx;
    (void)has_left;
    for (b = 0; b < batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * in_c;
        for (oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * stride_h - pad_h;
            int32_t fy0, fy1;
            es_tap_range(y0, in_h, dil_h, filter_h, &fy0, &fy1);
            for (ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * stride_w - pad_w;
                int32_t fx0, fx1;
                es_tap_range(x0, in_w, dil_w, filter_w, &fx0, &fx1);
                const int interior = fy0 == 0 && fy1 == filter_h && fx0 == 0 && fx1 == filter_w;
                const int32_t offset = interior ? 0 : input_offset;
                for (m = 0; m < dm; m++) {
                    for (i = 0; i < in_c; i++) {
                        const int32_t pc = m * in_c4 + i;
                        const int8_t *wp = w + (m * in_c4 + i / 4 * 4) * taps + i % 4;
                        int32_t acc = 0;
                        for (fy = fy0; fy < fy1; fy++) {
                            for (fx = fx0; fx < fx1; fx++) {
                                const int32_t iy = y0 + fy * dil_h, ix = x0 + fx * dil_w;
                                acc += (int32_t)wp[(fy * filter_w + fx) * 4] *
                                       ((int32_t)in_b[(iy * in_w + ix) * in_c + i] + offset);
                            }
                        }
                        acc = es_mul_by_quantized_multiplier(
                            es_sat_add(acc, (interior ? bias_interior : bias)[pc]),
                            multiplier[pc], shift[pc]);
                        output[i * dm + m] =
                            (int8_t)es_clamp_offset(acc, output_offset, act_min, act_max);
                    }
                }
                output += in_c * dm;
            }
        }
    }
}
#endif
