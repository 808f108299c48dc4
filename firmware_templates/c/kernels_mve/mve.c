/* Armv8.1-M MVE (Helium) helpers for the optimized kernels, selected when the target
 * profile lists the "mve-int" feature (Cortex-M55). On a core with MVE (__ARM_FEATURE_MVE,
 * e.g. -mcpu=cortex-m55) the kernels use the <arm_mve.h> intrinsics; elsewhere (a host
 * build for testing) each MVE kernel is plain C over the same operands and layouts, so the
 * generator's reordering and folding are checked on any machine. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#define ES_HAVE_MVE 1
#else
#define ES_HAVE_MVE 0
#endif

#if ES_HAVE_MVE
/* es_clamp_offset (fixedpoint.c) lane for lane: clamped to [lo - offset, hi - offset]
 * before the offset is added, so a sum near the int32 limits cannot wrap. */
ES_INLINE int32x4_t es_mve_clamp_offset(int32x4_t v, int32_t offset, int32_t lo, int32_t hi)
{
    v = vmaxq_s32(v, vdupq_n_s32(lo - offset));
    v = vminq_s32(v, vdupq_n_s32(hi - offset));
    return vaddq_n_s32(v, offset);
}

/* TFLite's requantization of four int32 sums (bias not yet added), lane for lane
 * es_clamp_offset(es_mul_by_quantized_multiplier(es_sat_add(acc, bias), m, shift), ...):
 * - the bias added with saturation (VQADD), the left shift saturating (VQSHL);
 * - SaturatingRoundingDoublingHighMul is VQRDMULH: sat((2 a b + 2^31) >> 32) is
 *   floor((a b + 2^30) / 2^31), TFLite's ties-toward-+infinity rounding;
 * - RoundingDivideByPOT (ties away from zero) is VRSHL by -r (ties toward +infinity)
 *   of x - 1 for negative x (the fixup: (x & right) >> 31 is -1 exactly when x < 0 and
 *   right < 0). x - 1 cannot saturate: VQRDMULH with a positive multiplier never returns
 *   INT32_MIN.
 * has_left: 0 when the generator knows every shift of the layer is <= 0 (no VQSHL). */
ES_INLINE int32x4_t es_mve_requantize(int32x4_t acc, int32x4_t bias, int32x4_t multiplier,
                                      int32x4_t shift, int32_t output_offset, int32_t act_min,
                                      int32_t act_max, int32_t has_left)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t right = vminq_s32(shift, zero);
    acc = vqaddq_s32(acc, bias);
    if (has_left) {
        acc = vqshlq_s32(acc, vmaxq_s32(shift, zero));
    }
    acc = vqrdmulhq_s32(acc, multiplier);
    acc = vqaddq_s32(acc, vshrq_n_s32(vandq_s32(acc, right), 31));
    acc = vrshlq_s32(acc, right);
    return es_mve_clamp_offset(acc, output_offset, act_min, act_max);
}

/* The same for four sums sharing one channel's bias, multiplier and shift (scalars). */
ES_INLINE int32x4_t es_mve_requantize_n(int32x4_t acc, int32_t bias, int32_t multiplier,
                                        int32_t shift, int32_t output_offset, int32_t act_min,
                                        int32_t act_max, int32_t has_left)
{
    const int32_t right = shift > 0 ? 0 : shift;
    acc = vqaddq_n_s32(acc, bias);
    if (has_left) {
        acc = vqshlq_r_s32(acc, shift > 0 ? shift : 0);
    }
    acc = vqrdmulhq_n_s32(acc, multiplier);
    if (right < 0) {
        acc = vqaddq_s32(acc, vshrq_n_s32(acc, 31));
        acc = vrshlq_n_s32(acc, right);
    }
    return es_mve_clamp_offset(acc, output_offset, act_min, act_max);
}
#endif
