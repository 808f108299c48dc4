/* ADD, int8 (TFLite reference integer Add): both inputs are brought to a common
 * scale with 20 bits of headroom, added, then rescaled to the output. */
typedef struct {
    es_broadcast_t shape;
    int32_t input1_offset, input2_offset, output_offset, left_shift;
    int32_t input1_multiplier, input1_shift, input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift, act_min, act_max;
} es_add_params_t;

ES_STATIC void es_add_s8(const es_add_params_t *p, const int8_t *restrict input1, const int8_t *restrict input2,
                      int8_t *restrict output)
{
    const es_broadcast_t *s = &p->shape;
    int32_t i0, i1, i2, i3;
    int8_t *out = output;
    for (i0 = 0; i0 < s->shape[0]; i0++) {
        for (i1 = 0; i1 < s->shape[1]; i1++) {
            for (i2 = 0; i2 < s->shape[2]; i2++) {
                for (i3 = 0; i3 < s->shape[3]; i3++) {
                    const int32_t a = input1[i0 * s->stride1[0] + i1 * s->stride1[1]
                                             + i2 * s->stride1[2] + i3 * s->stride1[3]];
                    const int32_t b = input2[i0 * s->stride2[0] + i1 * s->stride2[1]
                                             + i2 * s->stride2[2] + i3 * s->stride2[3]];
                    const int32_t sa = (int32_t)((uint32_t)(a + p->input1_offset) << p->left_shift);
                    const int32_t sb = (int32_t)((uint32_t)(b + p->input2_offset) << p->left_shift);
                    const int32_t ra = es_rounding_divide_by_pot(
                        es_sat_rounding_doubling_high_mul(sa, p->input1_multiplier), -p->input1_shift);
                    const int32_t rb = es_rounding_divide_by_pot(
                        es_sat_rounding_doubling_high_mul(sb, p->input2_multiplier), -p->input2_shift);
                    const int32_t raw = es_rounding_divide_by_pot(
                        es_sat_rounding_doubling_high_mul(ra + rb, p->output_multiplier),
                        -p->output_shift);
                    *out++ = (int8_t)es_clamp_offset(raw, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}
