/* MEAN over the middle axes of an [outer, reduced, inner] view, int8 (TFLite reference
 * QuantizedMeanOrSum): sum, remove the zero point, then one rescale that folds in
 * 1 / count (multiplier and shift prepared at generation time). */
typedef struct {
    int32_t outer, reduced, inner;
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift;
} es_mean_params_t;

ES_STATIC void es_mean_s8(const es_mean_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t o, r, i;
    for (o = 0; o < p->outer; o++) {
        for (i = 0; i < p->inner; i++) {
            int32_t sum = 0;
            int32_t v;
            for (r = 0; r < p->reduced; r++) {
                sum += input[(o * p->reduced + r) * p->inner + i];
            }
            v = es_mul_by_quantized_multiplier(sum - p->input_zero_point * p->reduced,
                                               p->multiplier, p->shift);
            output[o * p->inner + i] = (int8_t)es_clamp_offset(v, p->output_zero_point, INT8_MIN, INT8_MAX);
        }
    }
}
