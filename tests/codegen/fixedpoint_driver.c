/* Reads triples (op, a, b, c) from stdin and prints the fixed-point helper's result. */
#include <stdint.h>
#include <stdio.h>

#include "prologue.c"
#include "fixedpoint.c"

int main(void)
{
    long op, a, b, c;
    while (scanf("%ld %ld %ld %ld", &op, &a, &b, &c) == 4) {
        int32_t r = 0;
        if (op == 0) {
            r = es_rounding_divide_by_pot((int32_t)a, (int)b);
        } else if (op == 1) {
            r = es_sat_rounding_doubling_high_mul((int32_t)a, (int32_t)b);
        } else {
            r = es_mul_by_quantized_multiplier((int32_t)a, (int32_t)b, (int32_t)c);
        }
        printf("%ld\n", (long)r);
    }
    return 0;
}
