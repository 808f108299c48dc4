/* MUL, int8 (TFLite reference integer Mul): product of the offset inputs, one rescale. */
typedef struct {
    es_broadcast_t shape;
    int32_t input1_offset, input2_offset, output_offset;
    int32_t output_multiplier, output_shift, act_min, act_max;
} es_mul_params_t;

ES_STATIC void es_mul_s8(const es_mul_params_t *p, const int8_t *restrict input1, const int8_t *restrict input2,
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
                    const int32_t raw = es_mul_by_quantized_multiplier(
                        (a + p->input1_offset) * (b + p->input2_offset),
                        p->output_multiplier, p->output_shift);
                    *out++ = (int8_t)es_clamp_offset(raw, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}
