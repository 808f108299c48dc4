#include "timer.h"

#include "board.h"

#if ESLM_TIMER_IS_SYSTICK
/* SysTick (boards without a CMSDK APB timer, e.g. the SSE-300 of mps3-an547): a
 * 24-bit down counter; its wraps are counted in its interrupt, whose few
 * instructions then land in the measured code. */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define CSR_ENABLE 0x1u
#define CSR_TICKINT 0x2u
#define CSR_CLKSOURCE_CPU 0x4u
#define ICSR_PENDSTSET (1u << 26)
#define SYST_MAX 0x00FFFFFFu

static volatile uint32_t wraps;

void SysTick_Handler(void)
{
    wraps = wraps + 1u;
}

void eslm_timer_start(void)
{
    SYST_CSR = 0;
    wraps = 0;
    SYST_RVR = SYST_MAX;
    SYST_CVR = 0; /* clears the counter; it reloads on the next tick */
    SYST_CSR = CSR_ENABLE | CSR_TICKINT | CSR_CLKSOURCE_CPU;
    while (SYST_CVR == 0u) {
        /* wait for the first reload so that ticks only ever grow */
    }
}

uint64_t eslm_timer_ticks(void)
{
    uint32_t hi, lo, again;
    do {
        hi = wraps;
        lo = SYST_CVR;
        if (SCB_ICSR & ICSR_PENDSTSET) {
            /* wrapped, interrupt not taken yet: the re-read is after the wrap */
            lo = SYST_CVR;
            hi += 1u;
            again = wraps + 1u;
        } else {
            again = wraps;
        }
    } while (hi != again);
    return ((uint64_t)hi << 24) + (uint64_t)(SYST_MAX - lo);
}

#else
/* CMSDK APB timer: a 32-bit down counter, polled. Its interrupt flag is enabled in
 * the timer (to see a wrap) but never in the NVIC, so no interrupt is taken. */
#define TIMER_CTRL (*(volatile uint32_t *)(ESLM_TIMER_BASE + 0x00u))
#define TIMER_VALUE (*(volatile uint32_t *)(ESLM_TIMER_BASE + 0x04u))
#define TIMER_RELOAD (*(volatile uint32_t *)(ESLM_TIMER_BASE + 0x08u))
#define TIMER_INTSTATUS (*(volatile uint32_t *)(ESLM_TIMER_BASE + 0x0Cu))
#define CTRL_ENABLE 0x1u
#define CTRL_IRQ_ENABLE 0x8u
#define TIMER_MAX 0xFFFFFFFFu

void SysTick_Handler(void)
{
}

void eslm_timer_start(void)
{
    TIMER_CTRL = 0;
    TIMER_RELOAD = TIMER_MAX;
    TIMER_VALUE = TIMER_MAX;
    TIMER_INTSTATUS = 1u; /* write 1 to clear */
    TIMER_CTRL = CTRL_ENABLE | CTRL_IRQ_ENABLE;
}

uint64_t eslm_timer_ticks(void)
{
    uint32_t value = TIMER_VALUE;
    if (TIMER_INTSTATUS & 1u) {
        return ESLM_TIMER_OVERFLOW;
    }
    return (uint64_t)(TIMER_MAX - value);
}
#endif
