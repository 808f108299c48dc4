#include "stack.h"

/* Assembly, because it must not push anything: a C version may save registers
 * after reading sp (shrink-wrapping) and paint over its own return address.
 * Only r0-r2, Thumb-1 instructions (runs on ARMv6-M too). */
__attribute__((naked, noinline)) void eslm_stack_paint(void)
{
    __asm__(".syntax unified\n"
            "    ldr r0, =__stack_limit\n"
            "    ldr r1, =0x5AFE57AC\n"
            "    mov r2, sp\n"
            "1:  cmp r0, r2\n"
            "    bhs 2f\n"
            "    str r1, [r0]\n"
            "    adds r0, r0, #4\n"
            "    b 1b\n"
            "2:  bx lr\n"
            "    .ltorg\n");
}

uint32_t eslm_stack_used_below(uint32_t base_sp)
{
    const volatile uint32_t *p = &__stack_limit;
    const volatile uint32_t *end = (const volatile uint32_t *)(base_sp & ~3u);
    while (p < end && *p == ESLM_STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)end - (uintptr_t)p);
}

uint32_t eslm_stack_size(void)
{
    return (uint32_t)((uintptr_t)&__stack_top - (uintptr_t)&__stack_limit);
}
