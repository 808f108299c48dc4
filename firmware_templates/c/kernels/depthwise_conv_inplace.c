/* DEPTHWISE_CONV_2D in place (TinyEngine's in-place depthwise): the output overwrites
 * the input. Needs depth multiplier 1, one batch and the output shape equal to the input
 * shape; channel c of the output depends on channel c of the input only, so each channel
 * is computed into a temporary of out_h * out_w bytes, then copied over the input's
 * channel c, which no later channel reads. Same arithmetic as es_depthwise_conv2d_s8
 * (the same per-channel function): only the order of the writes differs. */
ES_STATIC void es_depthwise_conv2d_s8_inplace(const es_depthwise_conv_params_t *p, int8_t *data,
                                              int8_t *restrict temp)
{
    const int32_t channels = p->in_c, pixels = p->out_h * p->out_w;
    int32_t c, i;
    for (c = 0; c < channels; c++) {
        es_depthwise_conv2d_s8_channel(p, data, temp, c, p->filter + c, channels, 1);
        for (i = 0; i < pixels; i++) {
            data[i * channels + c] = temp[i];
        }
    }
}
