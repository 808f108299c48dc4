/* FULLY_CONNECTED with 4-bit packed weights (see lut4.c). */
ES_STATIC void es_fully_connected_s8_lut4(const es_fully_connected_params_t *p,
                                          const es_lut4_t *w, int8_t *scratch,
                                          const int8_t *restrict input, int8_t *restrict output)
{
    int32_t o;
    for (o = 0; o < p->out_depth; o++) {
        es_lut4_decode(w, o, scratch);
        es_fully_connected_s8_row(p, input, output, o, scratch);
    }
}
