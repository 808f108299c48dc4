/* QUANTIZE (float -> int8, int8 -> int8 requantization) and DEQUANTIZE (int8 -> float),
 * as TFLite's reference AffineQuantize, Requantize and Dequantize. Rounding of the
 * float path: roundf, halves away from zero, like std::round; NaN becomes the zero point. */
typedef struct {
    int32_t size, input_zero_point, output_zero_point, multiplier, shift;
} es_requantize_params_t;

ES_STATIC void es_requantize_s8(const es_requantize_params_t *p, const int8_t *restrict input, int8_t *restrict output)
{
    int32_t i;
    for (i = 0; i < p->size; i++) {
        const int32_t v = es_mul_by_quantized_multiplier((int32_t)input[i] - p->input_zero_point,
                                                         p->multiplier, p->shift);
        output[i] = (int8_t)es_clamp_offset(v, p->output_zero_point, INT8_MIN, INT8_MAX);
    }
}

typedef struct {
    int32_t size, zero_point;
    float scale;
} es_affine_params_t;

ES_STATIC void es_quantize_f32_s8(const es_affine_params_t *p, const float *restrict input, int8_t *restrict output)
{
    int32_t i;
    for (i = 0; i < p->size; i++) {
        const float r = roundf(input[i] / p->scale);
        int32_t v;
        if (r != r) {
            /* NaN: converting it to an integer is undefined behaviour in C (TFLite
             * does just that); it becomes the zero point, real 0. */
            v = es_clamp(p->zero_point, INT8_MIN, INT8_MAX);
        } else if (r > 1e9f) {
            v = INT8_MAX;
        } else if (r < -1e9f) {
            v = INT8_MIN;
        } else {
            v = es_clamp((int32_t)r + p->zero_point, INT8_MIN, INT8_MAX);
        }
        output[i] = (int8_t)v;
    }
}

ES_STATIC void es_dequantize_s8_f32(const es_affine_params_t *p, const int8_t *restrict input, float *restrict output)
{
    int32_t i;
    for (i = 0; i < p->size; i++) {
        /* The product of a float and a 9-bit integer rounds once, exactly as the
         * reference's double product cast to float does. */
        output[i] = p->scale * (float)((int32_t)input[i] - p->zero_point);
    }
}
