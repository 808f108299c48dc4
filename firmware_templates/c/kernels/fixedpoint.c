/* Fixed-point arithmetic of TFLite's reference integer kernels (gemmlowp semantics).
 *
 * Rounding: es_sat_rounding_doubling_high_mul returns a * b / 2^31 rounded to
 * nearest with ties toward +infinity (-0.5 -> 0, 0.5 -> 1), saturating the one
 * overflow case; es_rounding_divide_by_pot returns x / 2^exponent rounded to
 * nearest with ties away from zero (-1.5 -> -2). Right shifts of negative values
 * are arithmetic (as on GCC and Clang for every target we build for). */

ES_STATIC int32_t es_sat_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

ES_STATIC int32_t es_rounding_divide_by_pot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * 2^exponent: saturating for exponent > 0, rounding for exponent < 0. */
ES_STATIC int32_t es_sat_rounding_mul_by_pot(int32_t x, int exponent)
{
    int32_t threshold;
    if (exponent < 0) {
        return es_rounding_divide_by_pot(x, -exponent);
    }
    if (exponent == 0) {
        return x;
    }
    threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* x * 2^exponent for 0 <= exponent < 31, saturated to the int32 range. TFLite computes
 * x * (1 << exponent) in int32, undefined behaviour (a wrap in practice) when it
 * overflows; saturating is the defined choice and equal wherever TFLite's is defined. */
ES_STATIC int32_t es_sat_shift_left(int32_t x, int exponent)
{
    const int32_t limit = (int32_t)(INT32_MAX >> exponent);
    if (x > limit) {
        return INT32_MAX;
    }
    if (x < -limit - 1) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* a + b saturated to the int32 range (the accumulator plus its bias: TFLite's int32 sum
 * overflows, undefined behaviour, with the huge biases of channels whose weight scale
 * is tiny). */
ES_STATIC int32_t es_sat_add(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + (int64_t)b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
}

/* MultiplyByQuantizedMultiplier: x * multiplier * 2^shift, multiplier in Q31. The left
 * shift saturates (see es_sat_shift_left). */
ES_STATIC int32_t es_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    const int left = shift > 0 ? (int)shift : 0;
    const int right = shift > 0 ? 0 : (int)-shift;
    return es_rounding_divide_by_pot(
        es_sat_rounding_doubling_high_mul(es_sat_shift_left(x, left), multiplier), right);
}

ES_STATIC int32_t es_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* The filter taps t in [*t0, *t1) whose input coordinate start + dilation * t lies in
 * [0, size): the taps that padding does not skip. */
/* clamp(v + offset, lo, hi) without computing v + offset when that would overflow:
 * v is clamped to [lo - offset, hi - offset] first (offset is an int8 zero point). */
ES_STATIC int32_t es_clamp_offset(int32_t v, int32_t offset, int32_t lo, int32_t hi)
{
    return es_clamp(v, lo - offset, hi - offset) + offset;
}

ES_STATIC void es_tap_range(int32_t start, int32_t size, int32_t dilation, int32_t taps,
                            int32_t *t0, int32_t *t1)
{
    const int32_t end = size - start; /* taps must satisfy dilation * t < end */
    *t0 = start < 0 ? (-start + dilation - 1) / dilation : 0;
    *t1 = end > 0 ? (end + dilation - 1) / dilation : 0;
    if (*t1 > taps) {
        *t1 = taps;
    }
}
