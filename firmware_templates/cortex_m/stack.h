/* Stack high-water mark: paint the free stack with a pattern, run, scan. */
#ifndef ESLM_STACK_H
#define ESLM_STACK_H

#include <stdint.h>

#define ESLM_STACK_PAINT 0x5AFE57ACu

extern uint32_t __stack_limit;
extern uint32_t __stack_top;

/* The current stack pointer. */
static inline __attribute__((always_inline)) uint32_t eslm_sp(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Paint every word from the bottom of the stack up to this call's frame. */
void eslm_stack_paint(void);

/* Bytes below `base_sp` written since the last paint (the deepest word that
 * no longer holds the pattern). */
uint32_t eslm_stack_used_below(uint32_t base_sp);

/* Bytes reserved for the stack by the linker script. */
uint32_t eslm_stack_size(void);

#endif /* ESLM_STACK_H */
