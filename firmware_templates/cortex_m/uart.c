#include "uart.h"

#include "board.h"

#define UART_DATA (*(volatile uint32_t *)(ESLM_UART0_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(ESLM_UART0_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(ESLM_UART0_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(ESLM_UART0_BASE + 0x10u))

#define STATE_TX_FULL 0x1u
#define STATE_RX_FULL 0x2u
#define CTRL_TX_EN 0x1u
#define CTRL_RX_EN 0x2u

void eslm_uart_init(void)
{
    /* 25 MHz / 115200 baud; QEMU ignores the rate but a divisor < 16 is invalid. */
    UART_BAUDDIV = 217u;
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN;
}

void eslm_uart_putc(uint8_t c)
{
    while (UART_STATE & STATE_TX_FULL) {
    }
    UART_DATA = c;
}

uint8_t eslm_uart_getc(void)
{
    while (!(UART_STATE & STATE_RX_FULL)) {
    }
    return (uint8_t)UART_DATA;
}

void eslm_uart_write(const void *buf, size_t n)
{
    const uint8_t *p = (const uint8_t *)buf;
    for (size_t i = 0; i < n; ++i) {
        eslm_uart_putc(p[i]);
    }
}

void eslm_uart_read(void *buf, size_t n)
{
    uint8_t *p = (uint8_t *)buf;
    for (size_t i = 0; i < n; ++i) {
        p[i] = eslm_uart_getc();
    }
}

void eslm_uart_write_u32(uint32_t v)
{
    for (int i = 0; i < 4; ++i) {
        eslm_uart_putc((uint8_t)(v >> (8 * i)));
    }
}

uint32_t eslm_uart_read_u32(void)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
        v |= (uint32_t)eslm_uart_getc() << (8 * i);
    }
    return v;
}
