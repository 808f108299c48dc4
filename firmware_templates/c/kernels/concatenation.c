/* CONCATENATION of int8 tensors viewed as [outer, axis * inner]: bytes are copied
 * (TFLite Micro does not rescale int8 inputs either). */
typedef struct {
    int32_t outer, count, out_row;
    const int32_t *in_row; /* [count] bytes per outer index for each input */
} es_concatenation_params_t;

ES_STATIC void es_concatenation_s8(const es_concatenation_params_t *p, const int8_t *const *inputs,
                                int8_t *restrict output)
{
    int32_t o, k, i;
    for (o = 0; o < p->outer; o++) {
        int8_t *dst = output + o * p->out_row;
        for (k = 0; k < p->count; k++) {
            const int8_t *src = inputs[k] + o * p->in_row[k];
            for (i = 0; i < p->in_row[k]; i++) {
                *dst++ = src[i];
            }
        }
    }
}
