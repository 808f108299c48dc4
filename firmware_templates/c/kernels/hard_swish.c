/* HARD_SWISH, int8 (TFLite reference quantized HardSwish): x * relu6(x + 3) / 6 computed
 * in 16-bit fixed point with the "reluish" multiplier. */
typedef struct {
    int32_t size, input_zero_point, output_zero_point;
    int32_t output_multiplier_exponent, reluish_multiplier_exponent;
    int16_t output_multiplier, reluish_multiplier; /* Q15 */
} es_hard_swish_params_t;

ES_STATIC int16_t es_sat_left_shift_s16(int16_t value, int amount)
{
    return (int16_t)es_clamp((int32_t)value * ((int32_t)1 << amount), INT16_MIN, INT16_MAX);
}

ES_STATIC int16_t es_sat_rounding_doubling_high_mul_s16(int16_t a, int16_t b)
{
    const int32_t ab = (int32_t)a * (int32_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
    if (a == b && a == INT16_MIN) {
        return INT16_MAX;
    }
    return (int16_t)((ab + nudge) / (1 << 15));
}

/* Rounds toward zero (like SQDMULH), unlike the function above. */
ES_STATIC int16_t es_sat_doubling_high_mul_s16(int16_t a, int16_t b)
{
    if (a == b && a == INT16_MIN) {
        return INT16_MAX;
    }
    return (int16_t)(((int32_t)a * (int32_t)b) / (1 << 15));
}

ES_STATIC int16_t es_rounding_divide_by_pot_s16(int16_t x, int exponent)
{
    const int16_t mask = (int16_t)((1 << exponent) - 1);
    const int16_t remainder = (int16_t)(x & mask);
    const int16_t threshold = (int16_t)((mask >> 1) + (x < 0 ? 1 : 0));
    return (int16_t)((x >> exponent) + (remainder > threshold ? 1 : 0));
}

ES_STATIC void es_hard_swish_s8(const es_hard_swish_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t i;
    for (i = 0; i < p->size; i++) {
        const int16_t in_value = (int16_t)((int32_t)input[i] - p->input_zero_point);
        const int16_t in_hires = (int16_t)(in_value * (1 << 7));
        const int16_t in_preshift_out =
            es_sat_rounding_doubling_high_mul_s16(in_hires, p->output_multiplier);
        int16_t reluish = in_hires;
        int16_t preshift_out;
        int32_t out;
        if (p->reluish_multiplier_exponent > 0) {
            reluish = es_sat_left_shift_s16(reluish, (int)p->reluish_multiplier_exponent - 1);
        }
        reluish = es_sat_rounding_doubling_high_mul_s16(reluish, p->reluish_multiplier);
        if (p->reluish_multiplier_exponent > 0) {
            reluish = es_sat_left_shift_s16(reluish, 1);
        }
        if (p->reluish_multiplier_exponent < 0) {
            reluish = es_rounding_divide_by_pot_s16(reluish, (int)-p->reluish_multiplier_exponent);
        }
        reluish = (int16_t)(((int32_t)reluish + (1 << 15)) >> 1); /* [-1, 1] -> [0, 1] */
        preshift_out = es_sat_doubling_high_mul_s16(reluish, in_preshift_out);
        out = es_rounding_divide_by_pot_s16(preshift_out, (int)-p->output_multiplier_exponent);
        out = (int16_t)(out + p->output_zero_point);
        output[i] = (int8_t)es_clamp(out, INT8_MIN, INT8_MAX);
    }
}
