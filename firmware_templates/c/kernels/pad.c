/* PAD / PADV2 over up to 4 dimensions: the output is filled with the pad value
 * (the output zero point for PAD), then the input is copied row by row. */
typedef struct {
    int32_t in_shape[4], out_shape[4], before[4];
    int8_t pad_value;
} es_pad_params_t;

ES_STATIC void es_pad_s8(const es_pad_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    const int32_t *is = p->in_shape;
    const int32_t *os = p->out_shape;
    const int32_t total = os[0] * os[1] * os[2] * os[3];
    int32_t i, i0, i1, i2;
    for (i = 0; i < total; i++) {
        output[i] = p->pad_value;
    }
    for (i0 = 0; i0 < is[0]; i0++) {
        for (i1 = 0; i1 < is[1]; i1++) {
            for (i2 = 0; i2 < is[2]; i2++) {
                const int8_t *src = input + ((i0 * is[1] + i1) * is[2] + i2) * is[3];
                int8_t *dst = output
                    + (((i0 + p->before[0]) * os[1] + i1 + p->before[1]) * os[2] + i2 + p->before[2])
                          * os[3] + p->before[3];
                for (i = 0; i < is[3]; i++) {
                    dst[i] = src[i];
                }
            }
        }
    }
}
