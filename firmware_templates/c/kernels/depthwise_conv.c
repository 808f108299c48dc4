/* DEPTHWISE_CONV_2D, int8 (TFLite reference DepthwiseConvPerChannel):
 * output channel oc = input channel * depth_multiplier + m reads input channel
 * oc / depth_multiplier. Computed one output channel at a time. */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, depth_multiplier; /* out_c = in_c * depth_multiplier */
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    const int8_t *filter;      /* [filter_h][filter_w][out_c], or NULL (lut4) */
    const int32_t *bias;       /* [out_c], or NULL */
    const int32_t *multiplier; /* [out_c], Q31 */
    const int8_t *shift;       /* [out_c] */
} es_depthwise_conv_params_t;

/* All output pixels of channel oc; tap (fy, fx) of its filter is w[(fy * filter_w + fx) * w_step].
 * Only the taps inside the input are visited (ranges computed per row and column). The
 * pixels go to output[0], output[out_step], ... (out_step: out_c into the output tensor,
 * 1 into the in-place kernel's one-channel temporary). */
ES_STATIC void es_depthwise_conv2d_s8_channel(const es_depthwise_conv_params_t *p,
                                              const int8_t *restrict input, int8_t *restrict output, int32_t oc,
                                              const int8_t *w, int32_t w_step, int32_t out_step)
{
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c;
    const int32_t fw = p->filter_w, dil_h = p->dilation_h, dil_w = p->dilation_w;
    const int32_t input_offset = p->input_offset;
    const int32_t bias = p->bias != NULL ? p->bias[oc] : 0;
    const int32_t multiplier = p->multiplier[oc];
    const int32_t shift = p->shift[oc];
    int32_t b, oy, ox, fy, fx;
    for (b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + b * in_h * in_w * in_c + oc / p->depth_multiplier;
        int8_t *out = output + b * p->out_h * p->out_w * out_step;
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
                    const int8_t *w_px = w + (fy * fw + fx0) * w_step;
                    for (fx = fx0; fx < fx1; fx++) {
                        acc += (int32_t)*w_px * ((int32_t)*in_px + input_offset);
                        in_px += dil_w * in_c;
                        w_px += w_step;
                    }
                }
                acc = es_mul_by_quantized_multiplier(es_sat_add(acc, bias), multiplier, shift);
                *out = (int8_t)es_clamp_offset(acc, p->output_offset, p->act_min, p->act_max);
                out += out_step;
            }
        }
    }
}

ES_STATIC void es_depthwise_conv2d_s8(const es_depthwise_conv_params_t *p, const int8_t *restrict input,
                                      int8_t *restrict output)
{
    const int32_t out_c = p->in_c * p->depth_multiplier;
    int32_t oc;
    for (oc = 0; oc < out_c; oc++) {
        es_depthwise_conv2d_s8_channel(p, input, output + oc, oc, p->filter + oc, out_c, out_c);
    }
}
