/* Calls a library built with -D<NAME>_NO_STATIC_ARENA with an aligned and a misaligned
 * arena; prints the two return codes. Built by test_undefined_behaviour.py. */
#include <stdint.h>
#include <stdio.h>

#include MODEL_HEADER

static union {
    int8_t bytes[ARENA_BYTES + 8];
    int32_t align;
} arena;
static int8_t input[INPUT_BYTES];
static int8_t output[OUTPUT_BYTES];

int main(void)
{
    const int aligned = INVOKE(input, output, arena.bytes);
    const int misaligned = INVOKE(input, output, arena.bytes + 1);
    printf("%d %d\n", aligned, misaligned);
    return 0;
}
