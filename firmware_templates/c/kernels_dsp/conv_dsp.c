/* CONV_2D (any kernel size, stride, dilation, padding; no groups) and FULLY_CONNECTED on
 * the Armv7E-M DSP extension: SMLAD, two 16x16 multiply-accumulates per instruction.
 * Bit-exact with the reference kernels (conv.c, fully_connected.c), which stay the oracle.
 *
 * How the generator prepares the operands (edgeslim/codegen/dsp.py):
 * - weights per output channel with the depth zero-padded to a multiple of four (k4), so
 *   the inner loop reads one aligned word per step and needs no tail;
 * - the input offset folded into the bias: bias'[c] = bias[c] - zp * sum(w[c]), so the
 *   kernel multiplies raw int8 inputs; a padded tap reads the input zero point, which
 *   contributes w * (zp - zp) = 0 as the reference's skipped tap does;
 * - shapes passed as constants to always-inline functions, so each call site is compiled
 *   for its own shapes (constant trip counts and strides);
 * - bounded = 1 when no accumulator can reach 2^30 (checked from the weights and bias):
 *   the bias starts the sum and the short requantization applies (simd.c).
 *
 * Per pass: four output pixels x one output channel, four accumulators (more would spill
 * registers on a 13-register core: measured). Each pixel's inputs are first widened to
 * int16 in the order SXTB16 produces ([x0, x2, x1, x3] per four), so one SXTB16 of a
 * weight word lines up with one 32-bit load of inputs, and the two halves of that weight
 * word serve four pixels. */

/* k int8 values -> int16, [x0, x2, x1, x3] per group of four, the last group zero-padded;
 * group i at dst + i * step (step 4: contiguous; 16: four pixels' columns interleaved). */
ES_INLINE void es_dsp_widen(const int8_t *restrict src, int16_t *restrict dst, int32_t k,
                            int32_t step)
{
    int32_t g;
    for (g = 0; g + 4 <= k; g += 4) {
        const uint32_t v = es_read_u32(src + g);
        es_write_u32(dst, es_sxtb16(v));
        es_write_u32(dst + 2, es_sxtb16_ror8(v));
        dst += step;
    }
    if (g < k) {
        uint32_t v = 0;
        int32_t i;
        for (i = 0; g + i < k; i++) {
            v |= (uint32_t)(uint8_t)src[g + i] << (8 * i);
        }
        es_write_u32(dst, es_sxtb16(v));
        es_write_u32(dst + 2, es_sxtb16_ror8(v));
    }
}

/* The receptive field of one output pixel as k = filter_h * filter_w * in_c int8 values,
 * the input zero point where a tap falls in the padding. */
ES_INLINE void es_dsp_gather(const int8_t *restrict in_b, int8_t *restrict buf, int32_t in_h,
                             int32_t in_w, int32_t in_c, int32_t filter_h, int32_t filter_w,
                             int32_t dil_h, int32_t dil_w, int32_t y0, int32_t x0, int32_t zp)
{
    int32_t fy, fx, c;
    for (fy = 0; fy < filter_h; fy++) {
        const int32_t iy = y0 + fy * dil_h;
        for (fx = 0; fx < filter_w; fx++) {
            const int32_t ix = x0 + fx * dil_w;
            if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                const int8_t *src = in_b + (iy * in_w + ix) * in_c;
                for (c = 0; c < in_c; c++) {
                    buf[c] = src[c];
                }
            } else {
                for (c = 0; c < in_c; c++) {
                    buf[c] = (int8_t)zp;
                }
            }
            buf += in_c;
        }
    }
}

/* Per output channel c: requantize and store. */
#define ES_DSP_STORE(out, acc)                                                               \
    (out)[c] = es_requantize_acc(bounded, (acc), bias[c], multiplier[c], shift[c],            \
                                 output_offset, act_min, act_max)

/* All output channels of four pixels whose widened inputs are interleaved in cols: per group
 * of four depth values, pixel p's two words at cols[16 g + 4 p]. Per channel, one weight
 * word (SXTB16 to two pairs) feeds eight SMLADs; the eight input words of a group are
 * consecutive (LDRD pairs); the loop is unrolled twice (the trip count is a constant). */
ES_INLINE void es_dsp_four_pixels(const int16_t *restrict cols, int8_t *restrict out,
                                  int32_t out_c, int32_t k4, const int8_t *restrict w,
                                  const int32_t *restrict bias,
                                  const int32_t *restrict multiplier,
                                  const int8_t *restrict shift, int32_t output_offset,
                                  int32_t act_min, int32_t act_max, int32_t bounded)
{
    int32_t c, g;
#if defined(__GNUC__) || defined(__clang__)
    /* the columns start a 4-byte aligned scratch buffer and k4 is a multiple of 4 */
    cols = (const int16_t *)__builtin_assume_aligned(cols, 4);
#endif
    for (c = 0; c < out_c; c++) {
        int32_t a0 = es_acc_start(bounded, bias[c]), a1 = a0, a2 = a0, a3 = a0;
        const int16_t *x = cols;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 2
#endif
        for (g = 0; g < k4; g += 4) {
            const uint32_t wv = es_read_u32(w);
            const uint32_t lo = es_sxtb16(wv), hi = es_sxtb16_ror8(wv);
            uint32_t x0, x1;
            /* each pixel's two input words in one LDRD */
            es_ldrd_next(&x, &x0, &x1);
            a0 = es_smlad(lo, x0, a0);
            a0 = es_smlad(hi, x1, a0);
            es_ldrd_next(&x, &x0, &x1);
            a1 = es_smlad(lo, x0, a1);
            a1 = es_smlad(hi, x1, a1);
            es_ldrd_next(&x, &x0, &x1);
            a2 = es_smlad(lo, x0, a2);
            a2 = es_smlad(hi, x1, a2);
            es_ldrd_next(&x, &x0, &x1);
            a3 = es_smlad(lo, x0, a3);
            a3 = es_smlad(hi, x1, a3);
            w += 4;
        }
        ES_DSP_STORE(out, a0);
        ES_DSP_STORE(out + out_c, a1);
        ES_DSP_STORE(out + 2 * out_c, a2);
        ES_DSP_STORE(out + 3 * out_c, a3);
    }
}

/* All output channels of one pixel (the pixels after the last group of four). */
ES_INLINE void es_dsp_one_pixel(const int16_t *restrict col, int8_t *restrict out,
                                int32_t out_c, int32_t k4, const int8_t *restrict w,
                                const int32_t *restrict bias,
                                const int32_t *restrict multiplier,
                                const int8_t *restrict shift, int32_t output_offset,
                                int32_t act_min, int32_t act_max, int32_t bounded)
{
    int32_t c, g;
    for (c = 0; c < out_c; c++) {
        int32_t a0 = es_acc_start(bounded, bias[c]);
        for (g = 0; g < k4; g += 4) {
            const uint32_t wv = es_read_u32(w);
            a0 = es_smlad(es_sxtb16(wv), es_read_u32(col + g), a0);
            a0 = es_smlad(es_sxtb16_ror8(wv), es_read_u32(col + g + 2), a0);
            w += 4;
        }
        ES_DSP_STORE(out, a0);
    }
}

/* Widen output pixel n's receptive field into col (k4 int16, group i at col + i * step). */
ES_INLINE void es_dsp_conv_column(const int8_t *restrict input, int16_t *restrict col,
                                  int32_t step,
                                  int8_t *restrict gather, int32_t n, int32_t in_h,
                                  int32_t in_w, int32_t in_c, int32_t out_h, int32_t out_w,
                                  int32_t filter_h, int32_t filter_w, int32_t stride_h,
                                  int32_t stride_w, int32_t dil_h, int32_t dil_w, int32_t pad_h,
                                  int32_t pad_w, int32_t input_zp)
{
    const int32_t b = n / (out_h * out_w);
    const int32_t oy = (n / out_w) % out_h;
    const int32_t ox = n % out_w;
    const int8_t *in_b = input + b * in_h * in_w * in_c;
    const int32_t k = filter_h * filter_w * in_c;
    if (filter_h == 1 && filter_w == 1 && pad_h == 0 && pad_w == 0) {
        es_dsp_widen(in_b + (oy * stride_h * in_w + ox * stride_w) * in_c, col, k, step);
    } else {
        es_dsp_gather(in_b, gather, in_h, in_w, in_c, filter_h, filter_w, dil_h, dil_w,
                      oy * stride_h - pad_h, ox * stride_w - pad_w, input_zp);
        es_dsp_widen(gather, col, k, step);
    }
}

/* scratch: 8 * k4 bytes (four widened columns), plus k bytes unless the filter is 1x1
 * without padding; 4-byte aligned. */
ES_INLINE void es_conv2d_s8_dsp(const int8_t *restrict input, int8_t *restrict output,
                                void *restrict scratch, int32_t batches, int32_t in_h,
                                int32_t in_w, int32_t in_c, int32_t out_h, int32_t out_w,
                                int32_t out_c, int32_t filter_h, int32_t filter_w,
                                int32_t stride_h, int32_t stride_w, int32_t dil_h, int32_t dil_w,
                                int32_t pad_h, int32_t pad_w, int32_t input_zp,
                                int32_t output_offset, int32_t act_min, int32_t act_max,
                                const int8_t *restrict w, const int32_t *restrict bias,
                                const int32_t *restrict multiplier, const int8_t *restrict shift,
                                int32_t bounded)
{
    const int32_t k4 = (filter_h * filter_w * in_c + 3) / 4 * 4;
    const int32_t pixels = batches * out_h * out_w;
    int16_t *const cols = (int16_t *)scratch;
    int8_t *const gather = (int8_t *)scratch + 8 * k4;
    const int32_t in_fours = pixels / 4 * 4;
    int32_t n, i;
    for (n = 0; n < in_fours; n += 4) {
        for (i = 0; i < 4; i++) {
            es_dsp_conv_column(input, cols + 4 * i, 16, gather, n + i, in_h, in_w, in_c, out_h,
                               out_w, filter_h, filter_w, stride_h, stride_w, dil_h, dil_w,
                               pad_h, pad_w, input_zp);
        }
        es_dsp_four_pixels(cols, output + n * out_c, out_c, k4, w, bias, multiplier, shift,
                           output_offset, act_min, act_max, bounded);
    }
    for (n = in_fours; n < pixels; n++) {
        es_dsp_conv_column(input, cols, 4, gather, n, in_h, in_w, in_c, out_h, out_w, filter_h,
                           filter_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w, input_zp);
        es_dsp_one_pixel(cols, output + n * out_c, out_c, k4, w, bias, multiplier, shift,
                         output_offset, act_min, act_max, bounded);
    }
}
