/* The port layer of the device-under-test harness: the few board functions the
 * protocol module (dut.c) needs. port_mps.c implements them for QEMU's MPS2/MPS3
 * boards (CMSDK UART0, SysTick); for a real board, write your own port_<board>.c
 * with the same five functions and link it instead.
 *
 * Timing on real silicon: a core with a DWT cycle counter (Cortex-M3/M4/M7/M33/M55,
 * not M0+) returns DWT->CYCCNT extended to 64 bits from eslm_port_ticks() (the
 * 32-bit counter must then be read at least once per wrap, e.g. from a periodic
 * interrupt) and "dwt" from eslm_port_counter(); port_mps.c does so when the counter
 * runs. Under QEMU the DWT does not count, so the same port falls back to SysTick and
 * counts its 24-bit wraps in its interrupt. */
#ifndef ESLM_PORT_H
#define ESLM_PORT_H

#include <stdint.h>

/* Bring up the UART and start the free-running tick counter. */
void eslm_port_init(void);
/* One byte from the host; blocks until it arrives. */
uint8_t eslm_port_uart_getc(void);
/* One byte to the host; blocks while the transmitter is busy. */
void eslm_port_uart_putc(uint8_t c);
/* Ticks of the free-running counter since eslm_port_init (monotonic, 64-bit). */
uint64_t eslm_port_ticks(void);
/* Restart the counter hardware from zero and return the eslm_port_ticks() value it now
 * counts from; eslm_port_ticks() stays continuous to within the few ticks the restart
 * takes. The protocol calls it before timed runs: under qemu -icount a counter started
 * from zero is in phase with the instruction grid, so readings relative to the returned
 * value convert to exact instruction counts. A port for a real board may just return
 * eslm_port_ticks(). */
uint64_t eslm_port_timer_sync(void);
/* The counter's rate in Hz (the core clock for SysTick and DWT). */
uint32_t eslm_port_tick_hz(void);
/* What eslm_port_ticks counts: "systick" or "dwt". */
const char *eslm_port_counter(void);

#endif /* ESLM_PORT_H */
