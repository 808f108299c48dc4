/* libFuzzer harness for the firmware's serial command parser
 * (firmware_templates/cortex_m/dut.c), built on the HOST:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -I firmware_templates/cortex_m tests/fuzz/dut_fuzz.c -o dut_fuzz
 *
 * (tools/fuzz.py dut builds and runs it.) The host port layer below implements port.h
 * over the fuzzer's bytes: eslm_port_uart_getc() hands out the input one byte at a time
 * and, when it is used up, longjmps back here (eslm_dut_run never returns on a board).
 *
 * FAKES, stated: the model is a dummy (its invoke sums the input into the output; there is
 * no network), the clock is a counter that advances 977 ticks per reading at 25 MHz, and a
 * run stops after FAKE_INVOKE_BUDGET invocations so `infer 1000000000%` costs the fuzzer
 * microseconds, not minutes. What is real: dut.c itself, byte for byte, under ASan+UBSan.
 *
 * Every byte the firmware sends is checked: printable ASCII or CR/LF only, and every line
 * ends in CR LF; anything else aborts (a crash for libFuzzer).
 *
 * dut.c is #included so its static state (the db buffer counters, the last results) is
 * reset before each input: every input is one boot of the firmware, reproducible alone. */
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dut.c"

#define IN_BYTES 16u
#define OUT_BYTES 5u
#define FAKE_INVOKE_BUDGET 4096u

static const uint8_t *fz_data;
static size_t fz_size, fz_pos;
static jmp_buf fz_done;
static uint64_t fz_ticks;
static uint32_t fz_invokes;
static uint8_t fz_prev_out; /* the last byte sent, to check CR LF pairs */

void eslm_port_init(void) {}

uint8_t eslm_port_uart_getc(void)
{
    if (fz_pos >= fz_size) {
        longjmp(fz_done, 1);
    }
    return fz_data[fz_pos++];
}

void eslm_port_uart_putc(uint8_t c)
{
    int printable = c >= 0x20u && c <= 0x7Eu;
    if (!printable && c != '\r' && c != '\n') {
        abort(); /* the firmware sent a byte outside the protocol's alphabet */
    }
    if ((c == '\n') != (fz_prev_out == '\r')) {
        abort(); /* a line end that is not CR LF */
    }
    fz_prev_out = c;
}

uint64_t eslm_port_ticks(void) { return fz_ticks += 977u; }
uint64_t eslm_port_timer_sync(void) { return fz_ticks; }
uint32_t eslm_port_tick_hz(void) { return 25000000u; }
const char *eslm_port_counter(void) { return "systick"; }

static int fake_invoke(const int8_t *input, int8_t *output)
{
    if (++fz_invokes > FAKE_INVOKE_BUDGET) {
        longjmp(fz_done, 1);
    }
    int32_t acc = 0;
    for (uint32_t i = 0; i < IN_BYTES; ++i) {
        acc += input[i];
    }
    for (uint32_t i = 0; i < OUT_BYTES; ++i) {
        output[i] = (int8_t)(acc >> i);
    }
    return acc == -2048 ? 7 : 0; /* every input byte -128: a failing invoke, status 7 */
}

static const uint8_t weights[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int8_t input[IN_BYTES];
    static int8_t output[OUT_BYTES];
    static eslm_dut_model m;
    if (size == 0) {
        return 0;
    }
    /* byte 0 picks the build: emulator (icount) or not, and a good or a bad weights CRC */
    m.name = "fuzz";
    m.sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    m.input_bytes = IN_BYTES;
    m.output_bytes = OUT_BYTES;
    m.arena_bytes = 1234;
    m.output_scale = 0.00390625f;
    m.output_zero_point = -128;
    m.invoke = fake_invoke;
    m.input = input;
    m.output = output;
    m.weights = weights;
    m.weights_bytes = sizeof weights;
    m.weights_crc_expected = eslm_crc32(weights, sizeof weights) ^ (uint32_t)(data[0] & 1u);
    m.icount_shift = (data[0] >> 1) & 7u;
    memset(input, 0, sizeof input);
    memset(output, 0, sizeof output);
    /* a fresh boot: dut.c's state as at power-up */
    db_expected = db_received = 0;
    have_results = 0;
    last_t0 = last_t1 = last_sync = 0;
    last_runs = 0;
    weights_crc = 0;
    fz_data = data + 1;
    fz_size = size - 1;
    fz_pos = 0;
    fz_ticks = 0;
    fz_invokes = 0;
    fz_prev_out = 0;
    if (setjmp(fz_done) == 0) {
        eslm_dut_run(&m);
    }
    if (fz_prev_out != '\n' && fz_prev_out != 0 && fz_invokes <= FAKE_INVOKE_BUDGET) {
        /* input used up between commands: the last reply must be complete (m-ready\r\n) */
        abort();
    }
    return 0;
}
