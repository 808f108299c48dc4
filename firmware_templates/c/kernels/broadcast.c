/* Element-wise binary ops over a 4-D output shape; each input has its own strides,
 * 0 along the dimensions it is broadcast over. */
typedef struct {
    int32_t shape[4];
    int32_t stride1[4];
    int32_t stride2[4];
} es_broadcast_t;
