/* Test library for test_dsp.py (appended to kernels/prologue.c, kernels/fixedpoint.c,
 * kernels_dsp/simd.c and kernels_mve/mve.c): the MVE requantization against the reference
 * kernels' scalar one, case by case. Input: RQ_CASES cases of four int32 (accumulator, bias,
 * multiplier, shift); output per case three int32: es_mve_requantize (per-lane operands),
 * es_mve_requantize_n (scalar operands) and es_mul_by_quantized_multiplier, each after the
 * saturating bias and with the clamp at the int32 limits (offset 0). */
#include <string.h>

#include "rq.h"

#if !ES_HAVE_MVE
#error "build this driver for a core with MVE (-mcpu=cortex-m55)"
#endif

int rq_invoke(const int8_t *input, int8_t *output)
{
    int32_t c, j;
    for (c = 0; c < RQ_CASES; c += 4) {
        int32_t in[4][4], lanes[4][4], vec[4], res[4][3];
        memcpy(in, input + c * 16, sizeof(in));
        for (j = 0; j < 4; j++) { /* [operand][lane] */
            lanes[0][j] = in[j][0];
            lanes[1][j] = in[j][1];
            lanes[2][j] = in[j][2];
            lanes[3][j] = in[j][3];
        }
        vstrwq_s32(vec, es_mve_requantize(vldrwq_s32(lanes[0]), vldrwq_s32(lanes[1]),
                                          vldrwq_s32(lanes[2]), vldrwq_s32(lanes[3]), 0,
                                          INT32_MIN, INT32_MAX, 1));
        for (j = 0; j < 4; j++) {
            res[j][0] = vec[j];
            res[j][1] = vgetq_lane_s32(es_mve_requantize_n(vdupq_n_s32(in[j][0]), in[j][1],
                                                           in[j][2], in[j][3], 0, INT32_MIN,
                                                           INT32_MAX, 1), 0);
            res[j][2] = es_clamp_offset(es_mul_by_quantized_multiplier(
                                            es_sat_add(in[j][0], in[j][1]), in[j][2], in[j][3]),
                                        0, INT32_MIN, INT32_MAX);
        }
        memcpy(output + c * 12, res, sizeof(res));
    }
    return 0;
}
