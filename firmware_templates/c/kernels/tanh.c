/* TANH, int8 in, int8 out with scale 1/128 and zero point 0 (TFLite reference integer
 * Tanh: input rescaled to Q4.27, gemmlowp tanh). */
typedef struct {
    int32_t size, input_zero_point, input_range_radius, input_multiplier, input_left_shift;
} es_tanh_params_t;

ES_STATIC void es_tanh_s8(const es_tanh_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t i;
    for (i = 0; i < p->size; i++) {
        const int32_t x = (int32_t)input[i] - p->input_zero_point;
        if (x <= -p->input_range_radius) {
            output[i] = INT8_MIN;
        } else if (x >= p->input_range_radius) {
            output[i] = INT8_MAX;
        } else {
            const int32_t q4 = es_mul_by_quantized_multiplier(x, p->input_multiplier,
                                                              p->input_left_shift);
            int32_t result = 0; /* F0 */
            if (q4 != 0) {
                const int32_t neg_abs = q4 < 0 ? q4 : -q4;
                /* exp(2 * neg_abs): the same raw value read with 5 integer bits. */
                const int32_t t = es_one_minus_x_over_one_plus_x_for_x_in_0_1(
                    es_exp_on_negative_values(neg_abs, 5));
                result = q4 < 0 ? -t : t;
            }
            output[i] = (int8_t)es_clamp(es_rounding_divide_by_pot(result, 24), INT8_MIN, INT8_MAX);
        }
    }
}
