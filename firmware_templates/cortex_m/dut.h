/* The device-under-test protocol module: MLPerf Tiny's ASCII command set
 * (name%, profile%, timestamp%, db load N%, db <hex>%, db print%, infer N W%,
 * results%) and edgeslim's extensions (info%, results hex%, icount%), spoken over
 * the port layer (port.h). It knows nothing of the model's code: the firmware's
 * main fills an eslm_dut_model and calls eslm_dut_run, so the same module serves
 * the generated C library and a TFLite Micro build. Protocol: docs/protocol.md. */
#ifndef ESLM_DUT_H
#define ESLM_DUT_H

#include <stdint.h>

#define ESLM_DUT_PROTOCOL 1
/* Longest command, the terminating '%' included (MLPerf Tiny: 80 characters). */
#define ESLM_DUT_MAX_COMMAND 80u

typedef struct {
    const char *name;          /* model name (m-model-[...]) */
    const char *sha256;        /* SHA-256 of the .tflite the model was generated from */
    uint32_t input_bytes;      /* input tensor bytes (int8, or int16 little-endian) */
    uint32_t output_bytes;     /* output tensor bytes */
    uint32_t arena_bytes;      /* the model's RAM for tensors */
    float output_scale;        /* real = scale * (q - zero_point) */
    int32_t output_zero_point;
    /* One inference: input_bytes from `input` -> output_bytes into `output`; 0 = ok. */
    int (*invoke)(const int8_t *input, int8_t *output);
    int8_t *input;             /* input_bytes of RAM: the db buffer */
    int8_t *output;            /* output_bytes of RAM */
    const uint8_t *weights;    /* the model's constant data as linked in flash */
    uint32_t weights_bytes;
    uint32_t weights_crc_expected; /* CRC-32 the build computed over the same bytes */
    uint32_t icount_shift;     /* qemu -icount shift the firmware was built for; 0: none */
    uint32_t output_element_bytes; /* 2: int16 output elements (16x8 model); 0 or 1: int8 */
} eslm_dut_model;

/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32) of n bytes. */
uint32_t eslm_crc32(const uint8_t *data, uint32_t n);

/* Boot messages, then serve commands forever. */
void eslm_dut_run(const eslm_dut_model *model) __attribute__((noreturn));

#endif /* ESLM_DUT_H */
