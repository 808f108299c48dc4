/* A free-running tick counter for timing calls. On the MPS2 boards it is the
 * CMSDK APB timer 0, read by polling: no interrupt fires, so nothing is added to
 * the timed code or its stack. On boards without one (mps3-an547) it is SysTick
 * plus a wrap count kept in its interrupt. Under qemu -icount the ticks are
 * deterministic. */
#ifndef ESLM_TIMER_H
#define ESLM_TIMER_H

#include <stdint.h>

/* (Re)start counting from 0. */
void eslm_timer_start(void);
/* Ticks since eslm_timer_start, or ESLM_TIMER_OVERFLOW once the CMSDK timer has
 * counted past 2^32 - 1 ticks (about 2.7 G instructions under -icount shift=6). */
uint64_t eslm_timer_ticks(void);
#define ESLM_TIMER_OVERFLOW UINT64_MAX
void SysTick_Handler(void);

#endif /* ESLM_TIMER_H */
