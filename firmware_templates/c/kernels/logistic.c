/* LOGISTIC, int8 in, int8 out with scale 1/256 and zero point -128 (TFLite reference
 * integer Logistic: input rescaled to Q4.27, gemmlowp logistic). */
typedef struct {
    int32_t size, input_zero_point, input_range_radius, input_multiplier, input_left_shift;
} es_logistic_params_t;

ES_STATIC void es_logistic_s8(const es_logistic_params_t *p, const int8_t *restrict input, int8_t *restrict output)
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
            int32_t result; /* F0 */
            if (q4 == 0) {
                result = (int32_t)1 << 30;
            } else {
                const int32_t abs_q4 = q4 > 0 ? q4 : -q4;
                const int32_t positive = es_one_over_one_plus_x_for_x_in_0_1(
                    es_exp_on_negative_values(-abs_q4, 4));
                result = q4 > 0 ? positive : INT32_MAX - positive;
            }
            output[i] = (int8_t)es_clamp(es_rounding_divide_by_pot(result, 23) - 128,
                                         INT8_MIN, INT8_MAX);
        }
    }
}
