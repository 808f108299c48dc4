/* The harness port for the MPS2/MPS3 boards (QEMU's and the FPGA images they model):
 * CMSDK APB UART0 (uart.c) and a 64-bit tick counter at the core clock:
 * - the DWT cycle counter (CYCCNT) where the core has one and it runs: Cortex-M3/M4/M7/
 *   M33/M55 silicon. Its 32-bit wraps are caught from the SysTick interrupt, which fires
 *   every 2^24 cycles, so the extension never misses one;
 * - SysTick otherwise, its 24-bit wraps counted in its interrupt: ARMv6-M (Cortex-M0+),
 *   and QEMU, whose DWT does not count. Under qemu -icount these ticks follow the
 *   instruction count exactly.
 * eslm_port_counter() says which ("dwt" or "systick"), and info% reports it. */
#include "port.h"

#include "board.h"
#include "systick.h"
#include "uart.h"

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
#define ESLM_HAVE_DWT 1
#define ESLM_DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define ESLM_DEMCR_TRCENA (1u << 24)
#define ESLM_DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define ESLM_DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define ESLM_DWT_LAR (*(volatile uint32_t *)0xE0001FB0u) /* Cortex-M7: writes need the key */
#define ESLM_DWT_LAR_KEY 0xC5ACCE55u
#define ESLM_DWT_CTRL_CYCCNTENA 0x1u
#define ESLM_DWT_CTRL_NOCYCCNT (1u << 25)

static int use_dwt;
static uint32_t dwt_last;  /* CYCCNT at the last extension */
static uint32_t dwt_wraps; /* its 2^32 wraps since the start */

/* Start CYCCNT from 0; 1 if it counts (0 on cores built without it, and under QEMU). */
static int dwt_start(void)
{
    ESLM_DEMCR |= ESLM_DEMCR_TRCENA;
    ESLM_DWT_LAR = ESLM_DWT_LAR_KEY;
    if (ESLM_DWT_CTRL & ESLM_DWT_CTRL_NOCYCCNT) {
        return 0;
    }
    ESLM_DWT_CYCCNT = 0u;
    ESLM_DWT_CTRL |= ESLM_DWT_CTRL_CYCCNTENA;
    for (volatile int i = 0; i < 16; i++) {
        /* a few cycles for the counter to move */
    }
    return ESLM_DWT_CYCCNT != 0u;
}

/* CYCCNT extended to 64 bits; called with interrupts masked or from the SysTick handler. */
static uint64_t dwt_extend(void)
{
    uint32_t now = ESLM_DWT_CYCCNT;
    if (now < dwt_last) {
        dwt_wraps++;
    }
    dwt_last = now;
    return ((uint64_t)dwt_wraps << 32) | now;
}

static uint64_t dwt_ticks(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    uint64_t t = dwt_extend();
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
    return t;
}
#else
#define use_dwt 0
#endif

static uint64_t offset; /* SysTick: ticks counted before the last restart */

void SysTick_Handler(void)
{
    eslm_systick_wrapped();
#ifdef ESLM_HAVE_DWT
    if (use_dwt) {
        (void)dwt_extend();
    }
#endif
}

void eslm_port_init(void)
{
    eslm_uart_init();
    offset = 0;
#ifdef ESLM_HAVE_DWT
    use_dwt = dwt_start();
    dwt_last = 0u;
    dwt_wraps = 0u;
#endif
    eslm_systick_start();
}

uint8_t eslm_port_uart_getc(void)
{
    return eslm_uart_getc();
}

void eslm_port_uart_putc(uint8_t c)
{
    eslm_uart_putc(c);
}

uint64_t eslm_port_ticks(void)
{
#ifdef ESLM_HAVE_DWT
    if (use_dwt) {
        return dwt_ticks();
    }
#endif
    return offset + eslm_systick_ticks();
}

uint64_t eslm_port_timer_sync(void)
{
    if (use_dwt) {
        return eslm_port_ticks(); /* silicon: no instruction grid to get in phase with */
    }
    offset += eslm_systick_ticks();
    eslm_systick_start();
    return offset;
}

uint32_t eslm_port_tick_hz(void)
{
    return ESLM_TIMER_HZ;
}

const char *eslm_port_counter(void)
{
    return use_dwt ? "dwt" : "systick";
}
