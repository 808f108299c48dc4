/* AVERAGE_POOL_2D and MAX_POOL_2D, int8 (TFLite reference integer pooling): only taps
 * inside the input count; input and output share scale and zero point. */
typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    int32_t filter_h, filter_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
} es_pool_params_t;

ES_STATIC void es_pool_window(const es_pool_params_t *p, int32_t oy, int32_t ox, int32_t *y0,
                           int32_t *y1, int32_t *x0, int32_t *x1, int32_t *in_y0, int32_t *in_x0)
{
    *in_y0 = oy * p->stride_h - p->pad_h;
    *in_x0 = ox * p->stride_w - p->pad_w;
    *y0 = *in_y0 < 0 ? -*in_y0 : 0;
    *x0 = *in_x0 < 0 ? -*in_x0 : 0;
    *y1 = p->in_h - *in_y0 < p->filter_h ? p->in_h - *in_y0 : p->filter_h;
    *x1 = p->in_w - *in_x0 < p->filter_w ? p->in_w - *in_x0 : p->filter_w;
}

ES_STATIC void es_average_pool_s8(const es_pool_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0, y1, x0, x1, in_y0, in_x0;
                es_pool_window(p, oy, ox, &y0, &y1, &x0, &x1, &in_y0, &in_x0);
                for (c = 0; c < p->channels; c++) {
                    int32_t acc = 0;
                    int32_t count = 0;
                    for (fy = y0; fy < y1; fy++) {
                        for (fx = x0; fx < x1; fx++) {
                            acc += input[((b * p->in_h + in_y0 + fy) * p->in_w + in_x0 + fx)
                                         * p->channels + c];
                            count++;
                        }
                    }
                    if (count == 0) {
                        count = 1; /* cannot happen for valid shapes */
                    }
                    /* Round half away from zero. */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    acc = es_clamp(acc, p->act_min, p->act_max);
                    output[((b * p->out_h + oy) * p->out_w + ox) * p->channels + c] = (int8_t)acc;
                }
            }
        }
    }
}

ES_STATIC void es_max_pool_s8(const es_pool_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t y0, y1, x0, x1, in_y0, in_x0;
                es_pool_window(p, oy, ox, &y0, &y1, &x0, &x1, &in_y0, &in_x0);
                for (c = 0; c < p->channels; c++) {
                    int32_t max = INT8_MIN;
                    for (fy = y0; fy < y1; fy++) {
                        for (fx = x0; fx < x1; fx++) {
                            const int32_t v = input[((b * p->in_h + in_y0 + fy) * p->in_w
                                                     + in_x0 + fx) * p->channels + c];
                            max = v > max ? v : max;
                        }
                    }
                    max = es_clamp(max, p->act_min, p->act_max);
                    output[((b * p->out_h + oy) * p->out_w + ox) * p->channels + c] = (int8_t)max;
                }
            }
        }
    }
}
