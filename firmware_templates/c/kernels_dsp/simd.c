/* Armv7E-M DSP helpers for the optimized kernels (selected when the target profile lists
 * the "dsp" feature). On a core with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7,
 * M33, M55) these are the ACLE intrinsics of <arm_acle.h>, one instruction each; elsewhere
 * (a host build for testing) plain C with the same results, so the kernels' layouts and
 * arithmetic are checked on any machine.
 *
 * Packed values are two int16 halves in a 32-bit word, low half first. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define ES_HAVE_DSP 1
#else
#define ES_HAVE_DSP 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ES_INLINE static inline __attribute__((always_inline, unused))
#else
#define ES_INLINE static
#endif

/* Four int8 (or two int16) from memory of any alignment. */
ES_INLINE uint32_t es_read_u32(const void *p)
{
    uint32_t v;
    const uint8_t *b = (const uint8_t *)p;
#if defined(__GNUC__) || defined(__clang__)
    __builtin_memcpy(&v, b, 4);
#else
    v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
#endif
    return v;
}

ES_INLINE void es_write_u32(void *p, uint32_t v)
{
    uint8_t *b = (uint8_t *)p;
#if defined(__GNUC__) || defined(__clang__)
    __builtin_memcpy(b, &v, 4);
#else
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
#endif
}

#if ES_HAVE_DSP
/* Bytes 0 and 2 sign-extended to the two halves. */
ES_INLINE uint32_t es_sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int32_t)x);
}

/* Bytes 1 and 3 sign-extended to the two halves: SXTB16 with its operand rotated by 8
 * (GCC 12's arm_acle.h has no __ror, and a separate ROR costs an instruction). */
ES_INLINE uint32_t es_sxtb16_ror8(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return (uint32_t)__sxtb16((int32_t)((x >> 8) | (x << 24)));
#endif
}

/* Two words from the 4-byte aligned *p, which then advances by 8 bytes: one LDRD with
 * post-increment (GCC does not pair the two loads itself). The memory operand tells the
 * compiler which bytes the instruction reads. */
typedef struct {
    uint32_t w[2];
} es_two_words_t;

ES_INLINE void es_ldrd_next(const int16_t **p, uint32_t *lo, uint32_t *hi)
{
#if defined(__GNUC__) || defined(__clang__)
    __asm__("ldrd %0, %1, [%2], #8"
            : "=r"(*lo), "=r"(*hi), "+r"(*p)
            : "m"(*(const es_two_words_t *)*p));
#else
    *lo = es_read_u32(*p);
    *hi = es_read_u32(*p + 2);
    *p += 4;
#endif
}

/* acc + lo(a) * lo(b) + hi(a) * hi(b) */
ES_INLINE int32_t es_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int32_t)a, (int32_t)b, acc);
}

/* Two int16 additions, one per half (wrapping; the kernels keep them in range). */
ES_INLINE uint32_t es_sadd16(uint32_t a, uint32_t b)
{
    return (uint32_t)__sadd16((int32_t)a, (int32_t)b);
}

/* a + b saturated to the int32 range. */
ES_INLINE int32_t es_qadd(int32_t a, int32_t b)
{
    return __qadd(a, b);
}

/* round(a * b / 2^32), ties toward +infinity (SMMULR; ACLE has no intrinsic for it). */
ES_INLINE int32_t es_smmulr(int32_t a, int32_t b)
{
#if defined(__GNUC__) || defined(__clang__)
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}
#else
ES_INLINE int32_t es_lo16(uint32_t x)
{
    return (int32_t)((x & 0xFFFFu) ^ 0x8000u) - 0x8000;
}

ES_INLINE int32_t es_hi16(uint32_t x)
{
    return es_lo16(x >> 16);
}

ES_INLINE uint32_t es_pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16);
}

ES_INLINE int32_t es_s8_at(uint32_t x, int byte)
{
    return (int32_t)(((x >> (8 * byte)) & 0xFFu) ^ 0x80u) - 0x80;
}

ES_INLINE uint32_t es_sxtb16(uint32_t x)
{
    return es_pack16(es_s8_at(x, 0), es_s8_at(x, 2));
}

ES_INLINE uint32_t es_sxtb16_ror8(uint32_t x)
{
    return es_pack16(es_s8_at(x, 1), es_s8_at(x, 3));
}

ES_INLINE void es_ldrd_next(const int16_t **p, uint32_t *lo, uint32_t *hi)
{
    *lo = es_read_u32(*p);
    *hi = es_read_u32(*p + 2);
    *p += 4;
}

ES_INLINE int32_t es_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    /* SMLAD wraps on overflow (and sets the Q flag); so does this. */
    const uint32_t sum = (uint32_t)acc + (uint32_t)(es_lo16(a) * es_lo16(b)) +
                         (uint32_t)(es_hi16(a) * es_hi16(b));
    return sum <= (uint32_t)INT32_MAX ? (int32_t)sum
                                      : (int32_t)(sum - 0x80000000u) - INT32_MAX - 1;
}

ES_INLINE uint32_t es_sadd16(uint32_t a, uint32_t b)
{
    return es_pack16(es_lo16(a) + es_lo16(b), es_hi16(a) + es_hi16(b));
}

ES_INLINE int32_t es_qadd(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + (int64_t)b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
}

ES_INLINE int32_t es_smmulr(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
#endif

/* The requantization of TFLite's reference kernels for one int32 accumulator already
 * holding the bias: es_mul_by_quantized_multiplier (fixedpoint.c) with the multiplier
 * known positive (the generator checks it), so the doubling high multiply needs neither
 * the INT32_MIN case nor a division: round(x * m / 2^31) with ties toward +infinity is
 * floor((x * m + 2^30) / 2^31). Then the output offset and the activation clamp. */
ES_INLINE int8_t es_requantize_dsp(int32_t acc, int32_t multiplier, int32_t shift,
                                   int32_t output_offset, int32_t act_min, int32_t act_max)
{
    int32_t high;
    if (shift > 0) {
        acc = es_sat_shift_left(acc, (int)shift);
        shift = 0;
    }
    high = (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << 30)) >> 31);
    high = es_rounding_divide_by_pot(high, (int)-shift);
    return (int8_t)es_clamp_offset(high, output_offset, act_min, act_max);
}

/* The same result in fewer instructions when the generator has proved
 * |acc| * 2^max(shift, 0) < 2^30 for every input (the "bounded" layers):
 * - x * m / 2^31 rounded with ties up is SMMULR(2x, m): 2x * m / 2^32, same rounding;
 * - rounding x / 2^r with ties away from zero (r >= 1) is (x + 2^(r-1) - [x < 0]) >> r,
 *   which cannot overflow since |x| < 2^30. */
ES_INLINE int8_t es_requantize_bounded(int32_t acc, int32_t multiplier, int32_t shift,
                                       int32_t output_offset, int32_t act_min, int32_t act_max)
{
    const int32_t left = shift > 0 ? shift : 0;
    int32_t high = es_smmulr(acc * ((int32_t)2 << left), multiplier);
    if (shift < 0) {
        const int right = (int)-shift;
        high = (high + ((int32_t)1 << (right - 1)) + (high < 0 ? -1 : 0)) >> right;
    }
    return (int8_t)es_clamp_offset(high, output_offset, act_min, act_max);
}

/* es_requantize_bounded for a shift known negative (every channel of the layer shifts
 * right): no left shift, no branch on the shift's sign. */
ES_INLINE int8_t es_requantize_right(int32_t acc, int32_t multiplier, int32_t shift,
                                     int32_t output_offset, int32_t act_min, int32_t act_max)
{
    const int32_t high = es_smmulr(acc * 2, multiplier);
    const int right = (int)-shift;
    const int32_t v = (high + ((int32_t)1 << (right - 1)) + (high < 0 ? -1 : 0)) >> right;
    return (int8_t)es_clamp_offset(v, output_offset, act_min, act_max);
}

/* The accumulator's start and its requantization, by the layer's "bounded" mode (set by the
 * generator, a constant at each call site): 0, the exact form with a saturating bias;
 * 1, no accumulator reaches 2^30 (the bias starts the sum, es_requantize_bounded);
 * 2, as 1 and every shift is negative (es_requantize_right). */
ES_INLINE int32_t es_acc_start(int32_t bounded, int32_t bias)
{
    return bounded ? bias : 0;
}

ES_INLINE int8_t es_requantize_acc(int32_t bounded, int32_t acc, int32_t bias, int32_t multiplier,
                                   int32_t shift, int32_t output_offset, int32_t act_min,
                                   int32_t act_max)
{
    if (bounded == 2) {
        return es_requantize_right(acc, multiplier, shift, output_offset, act_min, act_max);
    }
    if (bounded) {
        return es_requantize_bounded(acc, multiplier, shift, output_offset, act_min, act_max);
    }
    return es_requantize_dsp(es_qadd(acc, bias), multiplier, shift, output_offset, act_min,
                             act_max);
}
