/* Fixed-point exp, reciprocal, logistic and tanh of gemmlowp, as used by
 * TFLite's reference SOFTMAX, LOGISTIC and TANH kernels. Values are Q-format
 * int32: "F<n>" has n integer bits and 31 - n fractional bits. */

ES_STATIC int32_t es_count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    if (x == 0) {
        return 32;
    }
    while ((x & 0x80000000u) == 0) {
        x <<= 1;
        n++;
    }
    return n;
}

ES_STATIC int32_t es_rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    const int64_t sign = sum >= 0 ? 1 : -1;
    return (int32_t)((sum + sign) / 2);
}

/* exp(a) for a in [-1/4, 0), F0 in and out. */
ES_STATIC int32_t es_exp_on_interval_neg_quarter_to_0(int32_t a)
{
    const int32_t constant_term = 1895147668;     /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = a + ((int32_t)1 << 28);     /* a + 1/8 */
    const int32_t x2 = es_sat_rounding_doubling_high_mul(x, x);
    const int32_t x3 = es_sat_rounding_doubling_high_mul(x2, x);
    const int32_t x4 = es_sat_rounding_doubling_high_mul(x2, x2);
    const int32_t x4_over_4 = es_rounding_divide_by_pot(x4, 2);
    const int32_t poly = es_rounding_divide_by_pot(
        es_sat_rounding_doubling_high_mul(x4_over_4 + x3, constant_1_over_3) + x2, 1);
    return constant_term + es_sat_rounding_doubling_high_mul(constant_term, x + poly);
}

/* exp(a) for a <= 0 given in F<integer_bits>; the result is F0. */
ES_STATIC int32_t es_exp_on_negative_values(int32_t a, int integer_bits)
{
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535, 720401, 242};
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = es_exp_on_interval_neg_quarter_to_0(
        es_sat_rounding_mul_by_pot(a_mod_quarter_minus_quarter, integer_bits));
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    int exponent;
    for (exponent = -2; exponent <= 4; exponent++) {
        if (integer_bits > exponent) {
            const int32_t bit = (int32_t)1 << (fractional_bits + exponent);
            if (remainder & bit) {
                result = es_sat_rounding_doubling_high_mul(result, barrel[exponent + 2]);
            }
        }
    }
    if (integer_bits > 5) {
        const int32_t clamp = -((int32_t)1 << (36 - integer_bits)); /* -32.0 */
        if (a < clamp) {
            result = 0;
        }
    }
    if (a == 0) {
        result = INT32_MAX;
    }
    return result;
}

/* Newton-Raphson 1 / (1 + a) / 2 ... shared by the two functions below; F2 result. */
ES_STATIC int32_t es_newton_reciprocal_f2(int32_t half_denominator)
{
    const int32_t constant_48_over_17 = 1515870810;
    const int32_t constant_neg_32_over_17 = -1010580540;
    const int32_t f2_one = (int32_t)1 << 29;
    int32_t x = constant_48_over_17
        + es_sat_rounding_doubling_high_mul(half_denominator, constant_neg_32_over_17);
    int i;
    for (i = 0; i < 3; i++) {
        const int32_t half_denominator_times_x =
            es_sat_rounding_doubling_high_mul(half_denominator, x);
        const int32_t one_minus = f2_one - half_denominator_times_x;
        x = x + es_sat_rounding_mul_by_pot(es_sat_rounding_doubling_high_mul(x, one_minus), 2);
    }
    return x;
}

/* 1 / (1 + a) for a in [0, 1], F0 in and out. */
ES_STATIC int32_t es_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = es_newton_reciprocal_f2(es_rounding_half_sum(a, INT32_MAX));
    return es_sat_rounding_mul_by_pot(x, 1); /* F2 -> (exact /2) F1 -> F0 */
}

/* (1 - a) / (1 + a) for a in [0, 1], F0 in and out. */
ES_STATIC int32_t es_one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = es_newton_reciprocal_f2(es_rounding_half_sum(a, INT32_MAX));
    return es_sat_rounding_mul_by_pot(x - ((int32_t)1 << 29), 2);
}
