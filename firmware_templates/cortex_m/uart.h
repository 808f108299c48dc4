/* CMSDK APB UART0, polled (no interrupts, no FIFO on this UART). */
#ifndef ESLM_UART_H
#define ESLM_UART_H

#include <stddef.h>
#include <stdint.h>

void eslm_uart_init(void);
void eslm_uart_putc(uint8_t c);
uint8_t eslm_uart_getc(void);
void eslm_uart_write(const void *buf, size_t n);
void eslm_uart_read(void *buf, size_t n);
void eslm_uart_write_u32(uint32_t v); /* little-endian */
uint32_t eslm_uart_read_u32(void);    /* little-endian */

#endif /* ESLM_UART_H */
