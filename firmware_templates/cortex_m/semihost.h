/* Semihosting: end the emulator run with an exit code. */
#ifndef ESLM_SEMIHOST_H
#define ESLM_SEMIHOST_H

#include <stdint.h>

/* SYS_EXIT_EXTENDED with ADP_Stopped_ApplicationExit: qemu-system-arm run with
 * -semihosting-config enable=on,target=native exits with `code`. Never returns. */
void eslm_semihost_exit(uint32_t code) __attribute__((noreturn));

#endif /* ESLM_SEMIHOST_H */
