/* DEPTHWISE_CONV_2D, any depth multiplier dm, on the Armv7E-M DSP extension: four channels
 * per pass (four input channels i, one multiplier index m: output channels i * dm + m).
 * Per tap: one 32-bit load of four inputs, SXTB16 to the pairs (c0, c2) and (c1, c3),
 * SADD16 of the input offset; one 64-bit load of the tap's weights, stored by the
 * generator already widened to int16 in that same pair order; then SMLABB/SMLATT into four
 * accumulators. Output pixels whose whole window lies inside the input take a path with
 * constant tap loops (unrolled by the compiler) and raw inputs, the offset folded into
 * their bias (bias_interior = bias + offset * sum of the channel's taps); the others skip
 * the taps in the padding, as the reference kernel does (depthwise_conv.c, the oracle). Channels beyond a multiple of four read the int8
 * filter w. Every per-channel operand is ordered by (m, input channel) at generation time
 * (w16: [tap][m][channel / 4][pairs]; w: [tap][m][channel]; bias, bias_interior, multiplier,
 * shift: [m][channel]), so four input channels are one load for any dm. */

#if ES_HAVE_DSP
ES_INLINE int32_t es_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}

ES_INLINE int32_t es_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}
#else
ES_INLINE int32_t es_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return es_smlad(a & 0xFFFFu, b & 0xFFFFu, acc);
}

ES_INLINE int32_t es_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return es_smlad(a >> 16, b >> 16, acc);
}
#endif

/* One tap of four channels: inputs at xp (int8), widened weights at wp. */
#define ES_DW_TAP(xp, wp)                                                                    \
    do {                                                                                     \
        const uint32_t xv_ = es_read_u32(xp);                                                \
        const uint32_t x02_ = es_sadd16(es_sxtb16(xv_), offset2);                            \
        const uint32_t x13_ = es_sadd16(es_sxtb16_ror8(xv_), offset2);                       \
        const uint32_t w02_ = es_read_u32(wp), w13_ = es_read_u32((wp) + 2);                 \
        a0 = es_smlabb(x02_, w02_, a0);                                                      \
        a2 = es_smlatt(x02_, w02_, a2);                                                      \
        a1 = es_smlabb(x13_, w13_, a1);                                                      \
        a3 = es_smlatt(x13_, w13_, a3);                                                      \
    } while (0)

/* The same with the input offset folded into the bias (interior pixels). */
#define ES_DW_TAP_RAW(xp, wp)                                                                \
    do {                                                                                     \
        const uint32_t xv_ = es_read_u32(xp);                                                \
        const uint32_t x02_ = es_sxtb16(xv_), x13_ = es_sxtb16_ror8(xv_);                    \
        const uint32_t w02_ = es_read_u32(wp), w13_ = es_read_u32((wp) + 2);                 \
        a0 = es_smlabb(x02_, w02_, a0);                                                      \
        a2 = es_smlatt(x02_, w02_, a2);                                                      \
        a1 = es_smlabb(x13_, w13_, a1);                                                      \
        a3 = es_smlatt(x13_, w13_, a3);                                                      \
    } while (0)

ES_INLINE void es_depthwise_conv2d_s8_dsp(const int8_t *restrict input, int8_t *restrict output,
                                          int32_t batches, int32_t in_h, int32_t in_w,
                                          int32_t channels, int32_t out_h, int32_t out_w,
                                          int32_t dm, int32_t filter_h, int32_t filter_w,
                                          int32_t stride_h, int32_t stride_w, int32_t dil_h,
                                          int32_t dil_w, int32_t pad_h, int32_t pad_w,
                                          int32_t input_offset, int32_t output_offset,
                                          int32_t act_min, int32_t act_max,
                                          const int8_t *restrict w,
                                          const int16_t *restrict w16,
                                          const int32_t *restrict bias,
                                          const int32_t *restrict bias_interior,
                                          const int32_t *restrict multiplier,
                                          const int8_t *restrict shift, int32_t bounded)
{
    const uint32_t offset2 = ((uint32_t)input_offset & 0xFFFFu) * 0x10001u;
    const int32_t c4 = channels / 4 * 4;
    const int32_t tap_step = c4 * dm; /* w16: [tap][m][c4] */
    int32_t b, oy, ox, fy, fx, c, m;
    for (b = 0; b < batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * channels;
        for (oy = 0; oy < out_h; oy++) {
            const int32_t y0 = oy * stride_h - pad_h;
            int32_t fy0, fy1;
            es_tap_range(y0, in_h, dil_h, filter_h, &fy0, &fy1);
            for (ox = 0; ox < out_w; ox++) {
                const int32_t x0 = ox * stride_w - pad_w;
                int32_t fx0, fx1;
                es_tap_range(x0, in_w, dil_w, filter_w, &fx0, &fx1);
                const int interior = fy0 == 0 && fy1 == filter_h && fx0 == 0 && fx1 == filter_w;
                for (m = 0; m < dm; m++) {
                    /* operands of multiplier index m: channels [m][channels] */
                    const int32_t *const bm = bias + m * channels;
                    /* interior pixels multiply raw inputs: their bias has the offset folded in */
                    const int32_t *const bsel = (interior ? bias_interior : bias) + m * channels;
                    const int32_t *const mm = multiplier + m * channels;
                    const int8_t *const sm = shift + m * channels;
                    int8_t *const out_m = output + m;
                    for (c = 0; c < c4; c += 4) {
                        int32_t a0 = es_acc_start(bounded, bsel[c]);
                        int32_t a1 = es_acc_start(bounded, bsel[c + 1]);
                        int32_t a2 = es_acc_start(bounded, bsel[c + 2]);
                        int32_t a3 = es_acc_start(bounded, bsel[c + 3]);
                        const int8_t *in_c = in_b + (y0 * in_w + x0) * channels + c;
                        const int16_t *w_c = w16 + m * c4 + c;
                        if (interior) {
                            /* (unrolling the rows too made GCC hoist and spill the inputs) */
                            for (fy = 0; fy < filter_h; fy++) {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
                                for (fx = 0; fx < filter_w; fx++) {
                                    ES_DW_TAP_RAW(in_c + (fy * dil_h * in_w + fx * dil_w) * channels,
                                                  w_c + (fy * filter_w + fx) * tap_step);
                                }
                            }
                        } else {
                            for (fy = fy0; fy < fy1; fy++) {
                                for (fx = fx0; fx < fx1; fx++) {
                                    ES_DW_TAP(in_c + (fy * dil_h * in_w + fx * dil_w) * channels,
                                              w_c + (fy * filter_w + fx) * tap_step);
                                }
                            }
                        }
                        out_m[c * dm] = es_requantize_acc(bounded, a0, bsel[c], mm[c], sm[c],
                                                          output_offset, act_min, act_max);
                        out_m[(c + 1) * dm] = es_requantize_acc(bounded, a1, bsel[c + 1],
                                                                mm[c + 1], sm[c + 1],
                                                                output_offset, act_min, act_max);
                        out_m[(c + 2) * dm] = es_requantize_acc(bounded, a2, bsel[c + 2],
                                                                mm[c + 2], sm[c + 2],
                                                                output_offset, act_min, act_max);
                        out_m[(c + 3) * dm] = es_requantize_acc(bounded, a3, bsel[c + 3],
                                                                mm[c + 3], sm[c + 3],
                                                                output_offset, act_min, act_max);
                    }
                    for (; c < channels; c++) {
                        int32_t acc = es_acc_start(bounded, bm[c]);
                        for (fy = fy0; fy < fy1; fy++) {
                            for (fx = fx0; fx < fx1; fx++) {
                                const int32_t iy = y0 + fy * dil_h, ix = x0 + fx * dil_w;
                                /* w: [tap][m][channels] */
                                acc += (int32_t)w[((fy * filter_w + fx) * dm + m) * channels + c] *
                                       ((int32_t)in_b[(iy * in_w + ix) * channels + c] +
                                        input_offset);
                            }
                        }
                        out_m[c * dm] = es_requantize_acc(bounded, acc, bm[c], mm[c], sm[c],
                                                          output_offset, act_min, act_max);
                    }
                }
                output += channels * dm;
            }
        }
    }
}
