/* SOFTMAX over the last axis, int8 in, int8 out with scale 1/256 and zero point -128
 * (TFLite reference quantized Softmax, gemmlowp fixed point). */
typedef struct {
    int32_t outer, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} es_softmax_params_t;

ES_STATIC void es_softmax_s8(const es_softmax_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t row, c;
    for (row = 0; row < p->outer; row++) {
        const int8_t *in = input + row * p->depth;
        int8_t *out = output + row * p->depth;
        int32_t max_in_row = INT8_MIN;
        int32_t sum_of_exps = 0; /* F12 */
        int32_t num_bits_over_unit;
        int32_t shifted_scale;
        uint32_t shifted_sum_minus_one;
        int32_t headroom_plus_one;
        for (c = 0; c < p->depth; c++) {
            max_in_row = in[c] > max_in_row ? in[c] : max_in_row;
        }
        for (c = 0; c < p->depth; c++) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t rescaled = es_sat_rounding_doubling_high_mul(
                    (int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
                sum_of_exps += es_rounding_divide_by_pot(es_exp_on_negative_values(rescaled, 5), 12);
            }
        }
        /* GetReciprocal(sum_of_exps, 12 integer bits). */
        headroom_plus_one = es_count_leading_zeros((uint32_t)sum_of_exps);
        num_bits_over_unit = 12 - headroom_plus_one;
        shifted_sum_minus_one = ((uint32_t)sum_of_exps << headroom_plus_one) - ((uint32_t)1 << 31);
        shifted_scale = es_one_over_one_plus_x_for_x_in_0_1((int32_t)shifted_sum_minus_one);
        for (c = 0; c < p->depth; c++) {
            const int32_t diff = (int32_t)in[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t rescaled = es_sat_rounding_doubling_high_mul(
                    (int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
                const int32_t exp_in_0 = es_exp_on_negative_values(rescaled, 5);
                const int32_t unsat = es_rounding_divide_by_pot(
                    es_sat_rounding_doubling_high_mul(shifted_scale, exp_in_0),
                    (int)num_bits_over_unit + 31 - 8);
                out[c] = (int8_t)es_clamp(unsat - 128, INT8_MIN, INT8_MAX);
            } else {
                out[c] = INT8_MIN;
            }
        }
    }
}
