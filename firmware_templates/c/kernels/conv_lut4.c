/* CONV_2D with 4-bit packed weights (see lut4.c). */
ES_STATIC void es_conv2d_s8_lut4(const es_conv_params_t *p, const es_lut4_t *w, int8_t *scratch,
                                 const int8_t *restrict input, int8_t *restrict output)
{
    int32_t oc;
    for (oc = 0; oc < p->out_c; oc++) {
        es_lut4_decode(w, oc, scratch);
        es_conv2d_s8_channel(p, input, output, oc, scratch);
    }
}
