#include "timer.h"

#include "board.h"

#if ESLM_TIMER_IS_SYSTICK
/* SysTick (boards without a CMSDK APB timer, e.g. the SSE-300 of mps3-an547): a
 * 24-bit down counter; its wraps are counted in its interrupt, whose few
 * instructions then land in the measured code. */
#include "systick.h"

void SysTick_Handler(void)
{
    eslm_systick_wrapped();
}

void eslm_timer_start(void)
{
    eslm_systick_start();
}

uint64_t eslm_timer_ticks(void)
{
    return eslm_systick_ticks();
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
