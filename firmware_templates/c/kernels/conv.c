/* CONV_2D, int8 activations, int8 per-channel weights, int32 bias (TFLite reference
 * ConvPerChannel). Taps outside the input are skipped (zero padding in real terms).
 * Computed one output channel at a time, so a channel's weights can come from a
 * decoded buffer (see conv_lut4.c). */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t filter_h, filter_w, filter_in_c; /* filter_in_c < in_c: grouped convolution */
    int32_t stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *filter;      /* [out_c][filter_h][filter_w][filter_in_c], or NULL (lut4) */
    const int32_t *bias;       /* [out_c], or NULL */
    const int32_t *multiplier; /* [out_c], Q31 */
    const int8_t *shift;       /* [out_c], power of two */
} es_conv_params_t;

/* All output pixels of channel oc; w holds that channel's [filter_h][filter_w][filter_in_c].
 * Only the taps inside the input are visited (ranges computed per row and column).
 * (No restrict here, unlike the entry point: with it GCC's vectorizer grows this frame
 * from 200 to 272 bytes on the M4, for a kernel the DSP targets do not use.) */
ES_STATIC void es_conv2d_s8_channel(const es_conv_params_t *p, const int8_t *input,
                                    int8_t *output, int32_t oc, const int8_t *w)
{
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, fic = p->filter_in_c;
    const int32_t fw = p->filter_w, dil_h = p->dilation_h, dil_w = p->dilation_w;
    const int32_t input_offset = p->input_offset;
    const int32_t group_c0 = (oc / (p->out_c / (in_c / fic))) * fic;
    const int32_t bias = p->bias != NULL ? p->bias[oc] : 0;
    const int32_t multiplier = p->multiplier[oc];
    const int32_t shift = p->shift[oc];
    int32_t b, oy, ox, fy, fx, ic;
    for (b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * in_c + group_c0;
        int8_t *out = output + b * p->out_h * p->out_w * p->out_c + oc;
        for (oy = 0; oy < p->out_h; oy++) {
            const int32_t in_y0 = oy * p->stride_h - p->pad_h;
            int32_t fy0, fy1;
            es_tap_range(in_y0, in_h, dil_h, p->filter_h, &fy0, &fy1);
            for (ox = 0; ox < p->out_w; ox++) {
                const int32_t in_x0 = ox * p->stride_w - p->pad_w;
                int32_t fx0, fx1;
                int32_t acc = 0;
                es_tap_range(in_x0, in_w, dil_w, fw, &fx0, &fx1);
                for (fy = fy0; fy < fy1; fy++) {
                    const int8_t *in_px = in_b + ((in_y0 + dil_h * fy) * in_w + in_x0 + dil_w * fx0) * in_c;
                    const int8_t *w_px = w + (fy * fw + fx0) * fic;
                    for (fx = fx0; fx < fx1; fx++) {
                        for (ic = 0; ic < fic; ic++) {
                            acc += (int32_t)w_px[ic] * ((int32_t)in_px[ic] + input_offset);
                        }
                        in_px += dil_w * in_c;
                        w_px += fic;
                    }
                }
                acc = es_mul_by_quantized_multiplier(es_sat_add(acc, bias), multiplier, shift);
                *out = (int8_t)es_clamp_offset(acc, p->output_offset, p->act_min, p->act_max);
                out += p->out_c;
            }
        }
    }
}

ES_STATIC void es_conv2d_s8(const es_conv_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    const int32_t per_channel = p->filter_h * p->filter_w * p->filter_in_c;
    int32_t oc;
    for (oc = 0; oc < p->out_c; oc++) {
        es_conv2d_s8_channel(p, input, output, oc, p->filter + oc * per_channel);
    }
}
