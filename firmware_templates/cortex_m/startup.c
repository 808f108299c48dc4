/* Vector table and reset for the edgeslim test firmware (no CMSIS, no SDK). */
#include <stdint.h>
#include <string.h>

#include "semihost.h"
#include "stack.h"
#include "timer.h"
#include "uart.h"

extern uint32_t __data_load__;
extern uint32_t __data_start__;
extern uint32_t __data_end__;
extern uint32_t __bss_start__;
extern uint32_t __bss_end__;

int main(void);
void Reset_Handler(void);
void NMI_Handler(void);
void HardFault_Handler(void);
void Default_Handler(void);

/* Exit codes a fault ends the run with (the host reports them). */
#define EXIT_HARDFAULT 0xF1u
#define EXIT_UNEXPECTED_IRQ 0xF2u

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

typedef union {
    void (*handler)(void);
    const void *stack_top;
} eslm_vector;

__attribute__((section(".vectors"), used)) const eslm_vector eslm_vectors[16] = {
    {.stack_top = &__stack_top},
    {.handler = Reset_Handler},
    {.handler = NMI_Handler},
    {.handler = HardFault_Handler},
    {.handler = Default_Handler}, /* MemManage (ARMv7-M) */
    {.handler = Default_Handler}, /* BusFault */
    {.handler = Default_Handler}, /* UsageFault */
    {.handler = 0},
    {.handler = 0},
    {.handler = 0},
    {.handler = 0},
    {.handler = Default_Handler}, /* SVCall */
    {.handler = Default_Handler}, /* DebugMonitor */
    {.handler = 0},
    {.handler = Default_Handler}, /* PendSV */
    {.handler = SysTick_Handler},
};

void Reset_Handler(void)
{
    size_t data_bytes = (size_t)((uintptr_t)&__data_end__ - (uintptr_t)&__data_start__);
    size_t bss_bytes = (size_t)((uintptr_t)&__bss_end__ - (uintptr_t)&__bss_start__);
    memcpy(&__data_start__, &__data_load__, data_bytes);
    memset(&__bss_start__, 0, bss_bytes);
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* CP10/CP11 full access: the FPU (and MVE on Cortex-M55). */
    SCB_CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    eslm_stack_paint();
    eslm_semihost_exit((uint32_t)main());
}

void NMI_Handler(void)
{
    eslm_semihost_exit(EXIT_UNEXPECTED_IRQ);
}

/* The stacked exception frame is r0-r3, r12, lr, pc, xpsr: send the host a fault
 * frame ('F', u32 pc, lr, CFSR, HFSR, BFAR) and end the run. */
void eslm_fault_report(const uint32_t *frame);
void eslm_fault_report(const uint32_t *frame)
{
    eslm_uart_putc('F');
    eslm_uart_write_u32(frame[6]);
    eslm_uart_write_u32(frame[5]);
#if defined(__ARM_ARCH_6M__)
    /* ARMv6-M has no fault status registers */
    eslm_uart_write_u32(0);
    eslm_uart_write_u32(0);
    eslm_uart_write_u32(0);
#else
    eslm_uart_write_u32(*(volatile uint32_t *)0xE000ED28u); /* CFSR */
    eslm_uart_write_u32(*(volatile uint32_t *)0xE000ED2Cu); /* HFSR */
    eslm_uart_write_u32(*(volatile uint32_t *)0xE000ED38u); /* BFAR */
#endif
    eslm_semihost_exit(EXIT_HARDFAULT);
}

/* Only MSP is used (no RTOS), so the frame is at sp. */
__attribute__((naked)) void HardFault_Handler(void)
{
    __asm__(".syntax unified\n"
            "    mov r0, sp\n"
            "    ldr r1, =eslm_fault_report\n"
            "    bx r1\n"
            "    .ltorg\n");
}

void Default_Handler(void)
{
    eslm_semihost_exit(EXIT_UNEXPECTED_IRQ);
}

/* -nostartfiles: newlib's init/fini hooks are empty here. */
void _init(void);
void _fini(void);
void _init(void)
{
}
void _fini(void)
{
}
