/* FULLY_CONNECTED, int8 (TFLite reference FullyConnected / FullyConnectedPerChannel):
 * output[b][o] = requant(sum_d w[o][d] * (x[b][d] + input_offset) + bias[o]). */
typedef struct {
    int32_t batches, accum_depth, out_depth;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t per_channel; /* 1: multiplier/shift indexed by output, 0: element 0 for all */
    const int8_t *filter;      /* [out_depth][accum_depth], or NULL (lut4) */
    const int32_t *bias;       /* [out_depth], or NULL */
    const int32_t *multiplier;
    const int8_t *shift;
} es_fully_connected_params_t;

/* Output o of every batch row; w holds row o of the weights. */
ES_STATIC void es_fully_connected_s8_row(const es_fully_connected_params_t *p,
                                         const int8_t *restrict input, int8_t *restrict output, int32_t o,
                                         const int8_t *w)
{
    const int32_t q = p->per_channel ? o : 0;
    const int32_t depth = p->accum_depth, input_offset = p->input_offset;
    const int32_t bias = p->bias != NULL ? p->bias[o] : 0;
    int32_t b, d;
    for (b = 0; b < p->batches; b++) {
        const int8_t *x = input + b * depth;
        int32_t acc = 0;
        for (d = 0; d < depth; d++) {
            acc += (int32_t)w[d] * ((int32_t)x[d] + input_offset);
        }
        acc = es_mul_by_quantized_multiplier(es_sat_add(acc, bias), p->multiplier[q], p->shift[q]);
        acc = es_clamp_offset(acc, p->output_offset, p->act_min, p->act_max);
        output[b * p->out_depth + o] = (int8_t)acc;
    }
}

ES_STATIC void es_fully_connected_s8(const es_fully_connected_params_t *p, const int8_t *restrict input,
                                     int8_t *restrict output)
{
    int32_t o;
    for (o = 0; o < p->out_depth; o++) {
        es_fully_connected_s8_row(p, input, output, o, p->filter + o * p->accum_depth);
    }
}
