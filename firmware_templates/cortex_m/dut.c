/* MLPerf Tiny device-under-test protocol with edgeslim's extensions (see dut.h).
 * Every command, valid or not, is answered by zero or more m-/e- lines and closed
 * by m-ready. Nothing here allocates or uses printf: numbers are formatted by hand. */
#include "dut.h"

#include <stddef.h>
#include <string.h>

#include "port.h"

#define FIRMWARE_NAME "edgeslim-harness"
#define FIRMWARE_VERSION "1"
#define DEFAULT_INFER_RUNS 1u
#define DEFAULT_WARMUP_RUNS 10u
#define MAX_COUNT 1000000000u /* runs and byte counts above this are refused */
#define MAX_TOKENS 4

static const eslm_dut_model *model;
static uint32_t db_expected; /* bytes announced by db load */
static uint32_t db_received;
static int have_results;
static uint64_t last_t0, last_t1; /* ticks around the last timed runs */
static uint64_t last_sync;        /* where the counter restarted before them */
static uint32_t last_runs;

/* -- output -------------------------------------------------------------------- */

static void put_str(const char *s)
{
    while (*s) {
        eslm_port_uart_putc((uint8_t)*s++);
    }
}

static void put_line(const char *s)
{
    put_str(s);
    put_str("\r\n");
}

static void put_u64(uint64_t v)
{
    char digits[21];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n) {
        eslm_port_uart_putc((uint8_t)digits[--n]);
    }
}

static void put_hex_byte(uint8_t b)
{
    static const char hex[] = "0123456789abcdef";
    eslm_port_uart_putc((uint8_t)hex[b >> 4]);
    eslm_port_uart_putc((uint8_t)hex[b & 0xFu]);
}

static void put_hex32(uint32_t v)
{
    for (int shift = 24; shift >= 0; shift -= 8) {
        put_hex_byte((uint8_t)(v >> shift));
    }
}

/* A real value with 3 decimals (as the reference firmware's %.3f), rounded half away
 * from zero; no "-0.000". */
static void put_fixed3(double v)
{
    int negative = v < 0;
    uint64_t millis = (uint64_t)((negative ? -v : v) * 1e3 + 0.5);
    if (negative && millis) {
        eslm_port_uart_putc('-');
    }
    put_u64(millis / 1000u);
    eslm_port_uart_putc('.');
    uint32_t frac = (uint32_t)(millis % 1000u);
    for (uint32_t div = 100u; div; div /= 10u) {
        eslm_port_uart_putc((uint8_t)('0' + (frac / div) % 10u));
    }
}

static void error(const char *message)
{
    put_str("e-[");
    put_str(message);
    put_line("]");
}

/* e-[Unknown command: <the command's words>] */
static void unknown(char **tok, int ntok)
{
    put_str("e-[Unknown command:");
    for (int i = 0; i < ntok; ++i) {
        eslm_port_uart_putc(' ');
        put_str(tok[i]);
    }
    put_line("]");
}

static void put_lap(uint64_t ticks)
{
    put_str("m-lap-us-");
    put_u64(ticks * 1000000u / eslm_port_tick_hz());
    put_str("\r\n");
}

/* -- parsing ------------------------------------------------------------------- */

/* A decimal number in 1..MAX_COUNT (or 0 when allow_zero); -1 if it is not one. */
static int64_t parse_count(const char *s, int allow_zero)
{
    uint64_t v = 0;
    if (!*s) {
        return -1;
    }
    for (; *s; ++s) {
        if (*s < '0' || *s > '9') {
            return -1;
        }
        v = v * 10u + (uint64_t)(*s - '0');
        if (v > MAX_COUNT) {
            return -1;
        }
    }
    if (v == 0 && !allow_zero) {
        return -1;
    }
    return (int64_t)v;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* -- commands ------------------------------------------------------------------ */

static void cmd_db(char **tok, int ntok)
{
    if (ntok == 3 && strcmp(tok[1], "load") == 0) {
        int64_t n = parse_count(tok[2], 0);
        if (n < 0) {
            error("db load N must be > 0");
            return;
        }
        if ((uint64_t)n != model->input_bytes) {
            put_str("e-[db load ");
            put_u64((uint64_t)n);
            put_str(": the model's input is ");
            put_u64(model->input_bytes);
            put_line(" bytes]");
            return;
        }
        db_expected = (uint32_t)n;
        db_received = 0;
        put_str("m-[Expecting ");
        put_u64((uint64_t)n);
        put_line(" bytes]");
        return;
    }
    if (ntok == 2 && strcmp(tok[1], "print") == 0) {
        for (uint32_t i = 0; i < db_received; i += 8u) {
            put_str("m-buffer");
            for (uint32_t j = i; j < db_received && j < i + 8u; ++j) {
                eslm_port_uart_putc('-');
                put_hex_byte((uint8_t)model->input[j]);
            }
            put_str("\r\n");
        }
        return;
    }
    if (ntok != 2) {
        unknown(tok, ntok);
        return;
    }
    const char *hex = tok[1];
    size_t digits = strlen(hex);
    if (digits % 2u) {
        error("Insufficent number of hex digits");
        return;
    }
    for (size_t i = 0; i < digits; ++i) {
        if (hex_value(hex[i]) < 0) {
            char msg[] = "Invalid hex digit 'xx'";
            msg[19] = hex[i & ~(size_t)1];
            msg[20] = hex[i | 1u];
            error(msg);
            return;
        }
    }
    if (digits / 2u > db_expected - db_received) {
        put_str("e-[Too many bytes: expecting ");
        put_u64(db_expected - db_received);
        put_line(" more]");
        return;
    }
    for (size_t i = 0; i < digits; i += 2u) {
        model->input[db_received++] =
            (int8_t)(uint8_t)((hex_value(hex[i]) << 4) | hex_value(hex[i + 1u]));
    }
    if (db_received == db_expected) {
        put_line("m-load-done");
    }
}

static void put_results(void)
{
    const uint32_t esize = model->output_element_bytes == 2u ? 2u : 1u;
    put_str("m-results-[");
    for (uint32_t i = 0; i < model->output_bytes / esize; ++i) {
        if (i) {
            eslm_port_uart_putc(',');
        }
        int32_t raw = model->output[i];
        if (esize == 2u) { /* little-endian int16 */
            const uint8_t *b = (const uint8_t *)model->output + 2u * i;
            raw = (int16_t)(uint16_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8));
        }
        int32_t q = raw - model->output_zero_point;
        put_fixed3((double)model->output_scale * (double)q);
    }
    put_line("]");
}

static int run(uint32_t n)
{
    for (uint32_t i = 0; i < n; ++i) {
        int status = model->invoke(model->input, model->output);
        if (status != 0) {
            put_str("e-[Inference failed: status ");
            if (status < 0) {
                eslm_port_uart_putc('-');
                put_u64((uint64_t)(-(int64_t)status));
            } else {
                put_u64((uint64_t)status);
            }
            put_line("]");
            return -1;
        }
    }
    return 0;
}

static void cmd_infer(char **tok, int ntok)
{
    if (ntok > 3) {
        unknown(tok, ntok);
        return;
    }
    int64_t n = ntok > 1 ? parse_count(tok[1], 0) : (int64_t)DEFAULT_INFER_RUNS;
    int64_t w = ntok > 2 ? parse_count(tok[2], 1) : (int64_t)DEFAULT_WARMUP_RUNS;
    if (n < 0) {
        error("infer N must be > 0");
        return;
    }
    if (w < 0) {
        error("infer W must be >= 0");
        return;
    }
    if (db_expected != model->input_bytes || db_received != db_expected) {
        put_str("e-[No input loaded: send db load ");
        put_u64(model->input_bytes);
        put_line(" and the data first]");
        return;
    }
    have_results = 0;
    put_str("m-warmup-start-");
    put_u64((uint64_t)w);
    put_str("\r\n");
    if (run((uint32_t)w) != 0) {
        return;
    }
    put_line("m-warmup-done");
    put_str("m-infer-start-");
    put_u64((uint64_t)n);
    put_str("\r\n");
    /* Only the runs are timed: the lap lines are printed after the second reading. */
    uint64_t sync = eslm_port_timer_sync();
    uint64_t t0 = eslm_port_ticks();
    int status = run((uint32_t)n);
    uint64_t t1 = eslm_port_ticks();
    if (status != 0) {
        return;
    }
    last_sync = sync;
    last_t0 = t0;
    last_t1 = t1;
    last_runs = (uint32_t)n;
    have_results = 1;
    put_lap(t0);
    put_lap(t1);
    put_line("m-infer-done");
    put_results();
}

static void cmd_results(char **tok, int ntok)
{
    if (ntok > 2 || (ntok == 2 && strcmp(tok[1], "hex") != 0)) {
        unknown(tok, ntok);
        return;
    }
    if (!have_results) {
        error("No results: run infer first");
        return;
    }
    if (ntok == 1) {
        put_results();
        return;
    }
    put_str("m-results-hex-[");
    for (uint32_t i = 0; i < model->output_bytes; ++i) {
        put_hex_byte((uint8_t)model->output[i]);
    }
    put_line("]");
}

/* The instruction a tick reading was taken at under qemu -icount shift=s: instruction
 * k runs at k * 2^s ns and a tick is shorter than that, so one reading names one
 * instruction (edgeslim.harness.emulator.instruction_index), counted from the restart of
 * the counter (eslm_port_timer_sync), which is in phase with the instructions. */
static uint64_t instruction_index(uint64_t ticks)
{
    uint64_t den = (uint64_t)eslm_port_tick_hz() << model->icount_shift;
    return (ticks * 1000000000u + den - 1u) / den;
}

static void cmd_icount(void)
{
    if (model->icount_shift == 0) {
        error("No instruction count: this firmware was not built for an emulator");
        return;
    }
    if (!have_results) {
        error("No results: run infer first");
        return;
    }
    uint64_t total =
        instruction_index(last_t1 - last_sync) - instruction_index(last_t0 - last_sync);
    put_str("m-icount-[instructions=");
    put_u64(total);
    put_str(",runs=");
    put_u64(last_runs);
    put_str(",per_run=");
    put_u64(total / last_runs);
    put_str(",shift=");
    put_u64(model->icount_shift);
    put_line("]");
}

static uint32_t weights_crc;

static void cmd_info(void)
{
    put_str("m-info-[sha256=");
    put_str(model->sha256);
    put_str(",weights_crc=");
    put_hex32(weights_crc);
    put_str(",weights_crc_expected=");
    put_hex32(model->weights_crc_expected);
    put_str(",arena=");
    put_u64(model->arena_bytes);
    put_str(",clock=");
    put_u64(eslm_port_tick_hz());
    put_str(",counter=");
    put_str(eslm_port_counter());
    put_str(",protocol=");
    put_u64(ESLM_DUT_PROTOCOL);
    put_str(",input=");
    put_u64(model->input_bytes);
    put_str(",output=");
    put_u64(model->output_bytes);
    if (model->icount_shift != 0) {
        /* the clock is an emulator's (qemu -icount): icount% gives instruction counts */
        put_str(",icount_shift=");
        put_u64(model->icount_shift);
    }
    put_line("]");
}

static void dispatch(char *line)
{
    char *tok[MAX_TOKENS + 1];
    int ntok = 0;
    char *p = line;
    while (*p) {
        while (*p == ' ') {
            *p++ = '\0';
        }
        if (!*p) {
            break;
        }
        if (ntok > MAX_TOKENS) {
            break;
        }
        tok[ntok++] = p;
        while (*p && *p != ' ') {
            ++p;
        }
    }
    if (ntok == 0) {
        return; /* "%" alone: just m-ready */
    }
    if (ntok > MAX_TOKENS) {
        ntok = MAX_TOKENS;
    }
    const char *cmd = tok[0];
    if (strcmp(cmd, "name") == 0 && ntok == 1) {
        put_line("m-name-dut-[edgeslim]");
    } else if (strcmp(cmd, "profile") == 0 && ntok == 1) {
        put_line("m-profile-[" FIRMWARE_NAME " " FIRMWARE_VERSION "]");
        put_str("m-model-[");
        put_str(model->name);
        put_line("]");
    } else if (strcmp(cmd, "timestamp") == 0 && ntok == 1) {
        put_lap(eslm_port_ticks());
    } else if (strcmp(cmd, "db") == 0) {
        cmd_db(tok, ntok);
    } else if (strcmp(cmd, "infer") == 0) {
        cmd_infer(tok, ntok);
    } else if (strcmp(cmd, "results") == 0) {
        cmd_results(tok, ntok);
    } else if (strcmp(cmd, "info") == 0 && ntok == 1) {
        cmd_info();
    } else if (strcmp(cmd, "icount") == 0 && ntok == 1) {
        cmd_icount();
    } else {
        unknown(tok, ntok);
    }
}

uint32_t eslm_crc32(const uint8_t *data, uint32_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < n; ++i) {
        crc ^= data[i];
        for (int k = 0; k < 8; ++k) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

void eslm_dut_run(const eslm_dut_model *m)
{
    /* +1: the terminating NUL; the '%' is not stored. */
    static char line[ESLM_DUT_MAX_COMMAND + 1u];
    model = m;
    eslm_port_init();
    weights_crc = eslm_crc32(model->weights, model->weights_bytes);
    put_line("m-timestamp-mode-performance");
    put_lap(eslm_port_ticks());
    if (weights_crc != model->weights_crc_expected) {
        put_str("e-[Weight checksum mismatch: ");
        put_hex32(weights_crc);
        put_str(" != ");
        put_hex32(model->weights_crc_expected);
        put_line(" expected]");
    }
    put_line("m-init-done");
    put_line("m-ready");
    uint32_t len = 0;
    int discarding = 0; /* after an over-long line: drop bytes up to the next '%' */
    int in_garbage = 0; /* inside a run of bytes outside printable ASCII */
    for (;;) {
        uint8_t c = eslm_port_uart_getc();
        if (c == '\r' || c == '\n') {
            continue; /* terminals add line ends: not part of any command */
        }
        if (c < 0x20u || c > 0x7Eu) {
            if (!in_garbage) {
                put_str("e-[Invalid byte 0x");
                put_hex_byte(c);
                put_line(" in command; discarded]");
                put_line("m-ready");
            }
            in_garbage = 1;
            len = 0;
            discarding = 0;
            continue;
        }
        in_garbage = 0;
        if (discarding) {
            discarding = c != '%';
            continue;
        }
        if (c == '%') {
            line[len] = '\0';
            dispatch(line);
            put_line("m-ready");
            len = 0;
            continue;
        }
        line[len++] = (char)c;
        if (len >= ESLM_DUT_MAX_COMMAND) {
            put_str("e-[Command too long: more than ");
            put_u64(ESLM_DUT_MAX_COMMAND);
            put_line(" characters with the %]");
            put_line("m-ready");
            len = 0;
            discarding = 1;
        }
    }
}
