/* SysTick as a 64-bit tick counter: a 24-bit down counter whose wraps are counted
 * in its interrupt. Shared by timer.c (boards without a CMSDK APB timer) and the
 * harness port (port_mps.c). Header-only: each file that includes it owns its own
 * wrap count and defines SysTick_Handler as a call to eslm_systick_wrapped(). */
#ifndef ESLM_SYSTICK_H
#define ESLM_SYSTICK_H

#include <stdint.h>

#define ESLM_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define ESLM_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define ESLM_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define ESLM_SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define ESLM_SYST_CSR_ENABLE 0x1u
#define ESLM_SYST_CSR_TICKINT 0x2u
#define ESLM_SYST_CSR_CLKSOURCE_CPU 0x4u
#define ESLM_ICSR_PENDSTSET (1u << 26)
#define ESLM_SYST_MAX 0x00FFFFFFu

static volatile uint32_t eslm_systick_wraps;

/* The SysTick interrupt's whole work. */
static inline void eslm_systick_wrapped(void)
{
    eslm_systick_wraps = eslm_systick_wraps + 1u;
}

/* (Re)start counting from 0. */
static inline void eslm_systick_start(void)
{
    ESLM_SYST_CSR = 0;
    eslm_systick_wraps = 0;
    ESLM_SYST_RVR = ESLM_SYST_MAX;
    ESLM_SYST_CVR = 0; /* clears the counter; it reloads on the next tick */
    ESLM_SYST_CSR = ESLM_SYST_CSR_ENABLE | ESLM_SYST_CSR_TICKINT | ESLM_SYST_CSR_CLKSOURCE_CPU;
    while (ESLM_SYST_CVR == 0u) {
        /* wait for the first reload so that ticks only ever grow */
    }
}

/* Ticks since eslm_systick_start. */
static inline uint64_t eslm_systick_ticks(void)
{
    uint32_t hi, lo, again;
    do {
        hi = eslm_systick_wraps;
        lo = ESLM_SYST_CVR;
        if (ESLM_SCB_ICSR & ESLM_ICSR_PENDSTSET) {
            /* wrapped, interrupt not taken yet: the re-read is after the wrap */
            lo = ESLM_SYST_CVR;
            hi += 1u;
            again = eslm_systick_wraps + 1u;
        } else {
            again = eslm_systick_wraps;
        }
    } while (hi != again);
    return ((uint64_t)hi << 24) + (uint64_t)(ESLM_SYST_MAX - lo);
}

#endif /* ESLM_SYSTICK_H */
