/* STAND-IN, for testing the harness only: a hand-written "model library" with the
 * entry-point shape edgeslim.codegen generates, whose cost and stack use are known
 * in advance, so the firmware's instruction counting and stack high-water mark can
 * be checked against exact expectations. Real models are tested with the real
 * generated code (test_qemu_models.py). */
#ifndef STANDIN_H
#define STANDIN_H

#include <stdint.h>

#define STANDIN_INPUT_SIZE 16
#define STANDIN_OUTPUT_SIZE 16
#define STANDIN_ARENA_SIZE 64

/* Compile-time knobs (-D):
 * STANDIN_SPIN        iterations of a fixed loop (default 1000)
 * STANDIN_STACK_BYTES bytes of a local array written in full (default 0: none)
 * STANDIN_HANG        never return
 * STANDIN_FAULT       read an unmapped address (HardFault on the MPS2 boards) */

/* output[i] = saturate_int8((3 * input[i] + 5 * i - 7) >> 1). */
int standin_invoke(const int8_t *input, int8_t *output);

#endif /* STANDIN_H */
