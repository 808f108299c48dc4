/* The harness port for QEMU's MPS2/MPS3 boards: CMSDK APB UART0 (uart.c) and SysTick
 * as a 64-bit tick counter (its 24-bit wraps are counted in its interrupt). Under
 * qemu -icount the ticks follow the instruction count exactly. */
#include "port.h"

#include "board.h"
#include "timer.h"
#include "uart.h"

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
static uint64_t offset; /* ticks counted before the last restart */

void SysTick_Handler(void)
{
    wraps = wraps + 1u;
}

static void systick_start(void)
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

void eslm_port_init(void)
{
    eslm_uart_init();
    offset = 0;
    systick_start();
}

uint8_t eslm_port_uart_getc(void)
{
    return eslm_uart_getc();
}

void eslm_port_uart_putc(uint8_t c)
{
    eslm_uart_putc(c);
}

static uint64_t systick_ticks(void)
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

uint64_t eslm_port_ticks(void)
{
    return offset + systick_ticks();
}

uint64_t eslm_port_timer_sync(void)
{
    offset += systick_ticks();
    systick_start();
    return offset;
}

uint32_t eslm_port_tick_hz(void)
{
    return ESLM_TIMER_HZ;
}

const char *eslm_port_counter(void)
{
    return "systick";
}
