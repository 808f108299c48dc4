/* The harness port for QEMU's MPS2/MPS3 boards: CMSDK APB UART0 (uart.c) and SysTick
 * as a 64-bit tick counter (its 24-bit wraps are counted in its interrupt). Under
 * qemu -icount the ticks follow the instruction count exactly. */
#include "port.h"

#include "board.h"
#include "systick.h"
#include "uart.h"

static uint64_t offset; /* ticks counted before the last restart */

void SysTick_Handler(void)
{
    eslm_systick_wrapped();
}

void eslm_port_init(void)
{
    eslm_uart_init();
    offset = 0;
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
    return offset + eslm_systick_ticks();
}

uint64_t eslm_port_timer_sync(void)
{
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
    return "systick";
}
