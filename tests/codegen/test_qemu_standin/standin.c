/* STAND-IN, for testing the harness only (see standin.h). */
#include "standin.h"

#ifndef STANDIN_SPIN
#define STANDIN_SPIN 1000
#endif
#ifndef STANDIN_STACK_BYTES
#define STANDIN_STACK_BYTES 0
#endif

static int32_t standin_arena[STANDIN_ARENA_SIZE / 4];

#if STANDIN_STACK_BYTES > 0
static int32_t __attribute__((noinline)) use_stack(void)
{
    volatile uint8_t local[STANDIN_STACK_BYTES];
    for (int i = 0; i < STANDIN_STACK_BYTES; ++i) {
        local[i] = (uint8_t)i;
    }
    return local[0];
}
#endif

int standin_invoke(const int8_t *input, int8_t *output)
{
    int8_t *scratch = (int8_t *)standin_arena;
    for (int i = 0; i < STANDIN_INPUT_SIZE; ++i) {
        int32_t v = (3 * (int32_t)input[i] + 5 * i - 7) >> 1;
        if (v < -128) {
            v = -128;
        }
        if (v > 127) {
            v = 127;
        }
        scratch[i] = (int8_t)v;
    }
    volatile int32_t spin = 0;
    for (int k = 0; k < STANDIN_SPIN; ++k) {
        spin = spin + k;
    }
#if STANDIN_STACK_BYTES > 0
    spin = spin + use_stack();
#endif
#ifdef STANDIN_HANG
    for (;;) {
        spin = spin + 1;
    }
#endif
#ifdef STANDIN_FAULT
    spin = *(volatile int32_t *)0xFFFFFFF0u;
#endif
    for (int i = 0; i < STANDIN_OUTPUT_SIZE; ++i) {
        output[i] = scratch[i];
    }
    return 0;
}
