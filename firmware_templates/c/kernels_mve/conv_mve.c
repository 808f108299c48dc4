/* CONV_2D (any kernel size, stride, dilation, padding; no groups) and FULLY_CONNECTED on
 * Armv8.1-M MVE (Helium): VMLADAVA, sixteen int8 x int8 products summed into an int32
 * per instruction. Bit-exact with the reference kernels (conv.c, fully_connected.c), which
 * stay the oracle.
 *
 * The operands are those of es_conv2d_s8_dsp (edgeslim/codegen/dsp.py): weights per output
 * channel with the depth zero-padded to k4 (a multiple of four), the input offset folded
 * into the bias (bias' = bias - zp * sum(w)), shapes as constant arguments. The sums run
 * over raw int8 inputs with no widening; the last partial vector of the depth loads with a
 * tail predicate (VCTP), so nothing past a column is read.
 *
 * Per pass: four output pixels x one output channel (one weight vector feeds four
 * VMLADAVAs); the four sums then form one vector, requantized with vector instructions
 * (es_mve_requantize_n, mve.c) and stored with a scatter of stride out_c. Pixels of a 1x1
 * filter without padding are read in place; others are gathered first (es_dsp_gather,
 * conv_dsp.c) into four int8 columns of k bytes in the scratch. */

#if ES_HAVE_MVE
/* acc + the products of the first n (1..16) int8 of x and w. */
#define ES_MVE_DOT_TAIL(acc, xp, wv, pred) (acc) = vmladavaq_s8((acc), vldrbq_z_s8((xp), (pred)), (wv))

/* Output channels of four pixels (columns x0..x3, each k int8), out advanced by out_c per
 * pixel. */
ES_INLINE void es_mve_four_pixels(const int8_t *x0, const int8_t *x1, const int8_t *x2,
                                  const int8_t *x3, int8_t *restrict out, int32_t out_c,
                                  int32_t k, int32_t k4, const int8_t *restrict w,
                                  const int32_t *restrict bias,
                                  const int32_t *restrict multiplier,
                                  const int8_t *restrict shift, int32_t output_offset,
                                  int32_t act_min, int32_t act_max, int32_t has_left)
{
    const uint32x4_t offsets = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)out_c);
    int32_t c, g;
    for (c = 0; c < out_c; c++) {
        /* pointers stepped by 16 (loads with writeback: MVE loads take no register offset) */
        const int8_t *wc = w + c * k4, *p0 = x0, *p1 = x1, *p2 = x2, *p3 = x3;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int32x4_t v;
        for (g = 0; g + 16 <= k; g += 16) {
            const int8x16_t wv = vldrbq_s8(wc);
            a0 = vmladavaq_s8(a0, vldrbq_s8(p0), wv);
            a1 = vmladavaq_s8(a1, vldrbq_s8(p1), wv);
            a2 = vmladavaq_s8(a2, vldrbq_s8(p2), wv);
            a3 = vmladavaq_s8(a3, vldrbq_s8(p3), wv);
            wc += 16;
            p0 += 16;
            p1 += 16;
            p2 += 16;
            p3 += 16;
        }
        if (g < k) {
            const mve_pred16_t p = vctp8q((uint32_t)(k - g));
            const int8x16_t wv = vldrbq_z_s8(wc, p);
            ES_MVE_DOT_TAIL(a0, p0, wv, p);
            ES_MVE_DOT_TAIL(a1, p1, wv, p);
            ES_MVE_DOT_TAIL(a2, p2, wv, p);
            ES_MVE_DOT_TAIL(a3, p3, wv, p);
        }
        v = vdupq_n_s32(a0);
        v = vsetq_lane_s32(a1, v, 1);
        v = vsetq_lane_s32(a2, v, 2);
        v = vsetq_lane_s32(a3, v, 3);
        v = es_mve_requantize_n(v, bias[c], multiplier[c], shift[c], output_offset, act_min,
                                act_max, has_left);
        vstrbq_scatter_offset_s32(out + c, offsets, v);
    }
}

/* Output channels of one pixel (column x, k int8). */
ES_INLINE void es_mve_one_pixel(const int8_t *x, int8_t *restrict out, int32_t out_c, int32_t k,
                                int32_t k4, const int8_t *restrict w,
                                const int32_t *restrict bias, const int32_t *restrict multiplier,
                                const int8_t *restrict shift, int32_t output_offset,
                                int32_t act_min, int32_t act_max, int32_t has_left)
{
    int32_t c, g;
    for (c = 0; c < out_c; c++) {
        const int8_t *wc = w + c * k4;
        int32_t a0 = 0;
        for (g = 0; g + 16 <= k; g += 16) {
            a0 = vmladavaq_s8(a0, vldrbq_s8(x + g), vldrbq_s8(wc + g));
        }
        if (g < k) {
            const mve_pred16_t p = vctp8q((uint32_t)(k - g));
            ES_MVE_DOT_TAIL(a0, x + g, vldrbq_z_s8(wc + g, p), p);
        }
        out[c] = (int8_t)vgetq_lane_s32(
            es_mve_requantize_n(vdupq_n_s32(a0), bias[c], multiplier[c], shift[c],
                                output_offset, act_min, act_max, has_left), 0);
    }
}

/* Output pixel n's column: in place for a 1x1 filter without padding, else gathered into
 * buf (k int8, the input zero point in the padding). */
ES_INLINE const int8_t *es_mve_column(const int8_t *input, int8_t *restrict buf, int32_t n,
                                      int32_t in_h, int32_t in_w, int32_t in_c, int32_t out_h,
                                      int32_t out_w, int32_t filter_h, int32_t filter_w,
                                      int32_t stride_h, int32_t stride_w, int32_t dil_h,
                                      int32_t dil_w, int32_t pad_h, int32_t pad_w,
                                      int32_t input_zp)
{
    const int32_t b = n / (out_h * out_w);
    const int32_t oy = (n / out_w) % out_h;
    const int32_t ox = n % out_w;
    const int8_t *in_b = input + b * in_h * in_w * in_c;
    if (filter_h == 1 && filter_w == 1 && pad_h == 0 && pad_w == 0) {
        return in_b + (oy * stride_h * in_w + ox * stride_w) * in_c;
    }
    es_dsp_gather(in_b, buf, in_h, in_w, in_c, filter_h, filter_w, dil_h, dil_w,
                  oy * stride_h - pad_h, ox * stride_w - pad_w, input_zp);
    return buf;
}

/* scratch: 4 * k bytes unless the filter is 1x1 without padding (then none). */
ES_INLINE void es_conv2d_s8_mve(const int8_t *restrict input, int8_t *restrict output,
                                void *restrict scratch, int32_t batches, int32_t in_h,
                                int32_t in_w, int32_t in_c, int32_t out_h, int32_t out_w,
                                int32_t out_c, int32_t filter_h, int32_t filter_w,
                                int32_t stride_h, int32_t stride_w, int32_t dil_h, int32_t dil_w,
                                int32_t pad_h, int32_t pad_w, int32_t input_zp,
                                int32_t output_offset, int32_t act_min, int32_t act_max,
                                const int8_t *restrict w, const int32_t *restrict bias,
                                const int32_t *restrict multiplier, const int8_t *restrict shift,
                                int32_t has_left)
{
    const int32_t k = filter_h * filter_w * in_c;
    const int32_t k4 = (k + 3) / 4 * 4;
    const int32_t pixels = batches * out_h * out_w;
    const int32_t in_fours = pixels / 4 * 4;
    int8_t *const buf = (int8_t *)scratch;
    int32_t n;
#define ES_MVE_COLUMN(i)                                                                     \
    es_mve_column(input, buf + (i) * k, n + (i), in_h, in_w, in_c, out_h, out_w, filter_h,   \
                  filter_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w, input_zp)
    for (n = 0; n < in_fours; n += 4) {
        const int8_t *x0 = ES_MVE_COLUMN(0), *x1 = ES_MVE_COLUMN(1);
        const int8_t *x2 = ES_MVE_COLUMN(2), *x3 = ES_MVE_COLUMN(3);
        es_mve_four_pixels(x0, x1, x2, x3, output + n * out_c, out_c, k, k4, w, bias,
                           multiplier, shift, output_offset, act_min, act_max, has_left);
    }
    for (n = in_fours; n < pixels; n++) {
        es_mve_one_pixel(ES_MVE_COLUMN(0), output + n * out_c, out_c, k, k4, w, bias,
                         multiplier, shift, output_offset, act_min, act_max, has_left);
    }
#undef ES_MVE_COLUMN
}
#else
/* Without MVE (a host build): the same operands in plain C, tap by tap; the input zero
 * point in the padding, as the gathered columns hold it. */
ES_INLINE void es_conv2d_s8_mve(const int8_t *restrict input, int8_t *restrict output,
                                void *restrict scratch, int32_t batches, int32_t in_h,
                                int32_t in_w, int32_t in_c, int32_t out_h, int32_t out_w,
                                int32_t out_c, int32_t filter_h, int32_t filter_w,
                                int32_t stride_h, int32_t stride_w, int32_t dil_h, int32_t dil_w,
                                int32_t pad_h, int32_t pad_w, int32_t input_zp,
                                int32_t output_offset, int32_t act_min, int32_t act_max,
                                const int8_t *restrict w, const int32_t *restrict bias,
                                const int32_t *restrict multiplier, const int8_t *restrict shift,
                                int32_t has_left)
{
    const int32_t k4 = (filter_h * filter_w * in_c + 3) / 4 * 4;
    int32_t b, oy, ox, c, fy, fx, i;
    (void)scratch;
    (void)has_left;
    for (b = 0; b < batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * in_c;
        for (oy = 0; oy < out_h; oy++) {
            for (ox = 0; ox < out_w; ox++) {
                for (c = 0; c < out_c; c++) {
                    const int8_t *wc = w + c * k4;
                    int32_t acc = 0;
                    for (fy = 0; fy < filter_h; fy++) {
                        const int32_t iy = oy * stride_h - pad_h + fy * dil_h;
                        for (fx = 0; fx < filter_w; fx++) {
                            const int32_t ix = ox * stride_w - pad_w + fx * dil_w;
                            const int inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                            for (i = 0; i < in_c; i++) {
                                const int32_t x = inside ? in_b[(iy * in_w + ix) * in_c + i]
                                                         : input_zp;
                                acc += (int32_t)wc[(fy * filter_w + fx) * in_c + i] * x;
                            }
                        }
                    }
                    acc = es_mul_by_quantized_multiplier(es_sat_add(acc, bias[c]),
                                                         multiplier[c], shift[c]);
                    *output++ = (int8_t)es_clamp_offset(acc, output_offset, act_min, act_max);
                }
            }
        }
    }
}
#endif
