/* DEPTHWISE_CONV_2D with 4-bit packed weights (see lut4.c). */
ES_STATIC void es_depthwise_conv2d_s8_lut4(const es_depthwise_conv_params_t *p,
                                           const es_lut4_t *w, int8_t *scratch,
                                           const int8_t *restrict input, int8_t *restrict output)
{
    const int32_t out_c = p->in_c * p->depth_multiplier;
    int32_t oc;
    for (oc = 0; oc < out_c; oc++) {
        es_lut4_decode(w, oc, scratch);
        es_depthwise_conv2d_s8_channel(p, input, output + oc, oc, scratch, 1, out_c);
    }
}
