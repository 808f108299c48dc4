/* A RESHAPE/SQUEEZE that cannot alias its input (it writes the caller's output). */
ES_STATIC void es_copy_bytes(int32_t size, const void *input, void *output)
{
    const uint8_t *src = (const uint8_t *)input;
    uint8_t *dst = (uint8_t *)output;
    int32_t i;
    for (i = 0; i < size; i++) {
        dst[i] = src[i];
    }
}
