#include "semihost.h"

#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

void eslm_semihost_exit(uint32_t code)
{
    volatile uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = code;
    register uint32_t r0 __asm__("r0") = SYS_EXIT_EXTENDED;
    register uint32_t r1 __asm__("r1") = (uint32_t)block;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {
        /* only reached without semihosting: stay here */
    }
}
