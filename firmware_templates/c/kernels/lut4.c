/* 4-bit packed weights (clustered layers): for each output channel, a table of up to
 * 16 int8 values and the indices of the channel's weights, two per byte, low nibble
 * first. A channel is decoded into an arena scratch buffer, then the plain int8 kernel
 * for one channel runs on it: results are those of the unpacked weights, bit for bit. */
typedef struct {
    const uint8_t *indices; /* [channels][row_bytes] */
    const int8_t *tables;   /* [channels][16] */
    int32_t count;          /* weights per channel */
    int32_t row_bytes;      /* (count + 1) / 2 */
} es_lut4_t;

ES_STATIC void es_lut4_decode(const es_lut4_t *l, int32_t channel, int8_t *out)
{
    const uint8_t *src = l->indices + channel * l->row_bytes;
    const int8_t *table = l->tables + channel * 16;
    int32_t i;
    for (i = 0; i < l->count; i++) {
        const uint8_t byte = src[i >> 1];
        out[i] = table[(i & 1) ? (byte >> 4) : (byte & 15)];
    }
}
