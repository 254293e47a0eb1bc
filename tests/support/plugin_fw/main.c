/*
 * Test firmware harness for qemu/slicert_cycles.c. Build-time options:
 *   -DFW_HANG          spin forever after boot (timeout test)
 *   -DFW_SPIN=N        run fw_spin(N) (4N instructions) between kernel_start/kernel_end
 *   -DFW_EXIT_CODE=K   exit code (default 0)
 *   -DFW_LOOP_N=N      iterations of fw_loop (default 1000)
 *   -DFW_TICKS=N       SysTick interrupts to take (default 5)
 * The seed from `-append seed=N` is echoed as the payload of event 12 (cal_start).
 */
#include <stdint.h>

#define TRACE_BASE 0x3E000u
#ifndef FW_EXIT_CODE
#define FW_EXIT_CODE 0
#endif
#ifndef FW_LOOP_N
#define FW_LOOP_N 1000
#endif
#ifndef FW_TICKS
#define FW_TICKS 5
#endif

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

extern int fw_semihost(int op, void *arg);
extern uint32_t fw_loop(uint32_t n, uint32_t *buf);
extern void fw_mix(uint32_t *buf);
extern void fw_spin(uint32_t n);

volatile uint32_t fw_ticks;
static uint32_t buf[8] __attribute__((unused));

typedef void (*stub_fn)(void);

static inline void trace(unsigned id)
{
    ((stub_fn)(TRACE_BASE + 2u * id + 1u))();
}

static inline void trace_payload(unsigned id, uint32_t v)
{
    for (unsigned lane = 0; lane < 4; lane++) {
        unsigned b = (v >> (8 * lane)) & 0xffu;
        if (b) {
            ((stub_fn)(TRACE_BASE + 0x100u + lane * 0x200u + 2u * b + 1u))();
        }
    }
    trace(id);
}

void __attribute__((noreturn)) fw_exit(int code)
{
    uint32_t block[2] = {0x20026u, (uint32_t)code};   /* ADP_Stopped_ApplicationExit */
    fw_semihost(0x20, block);                          /* SYS_EXIT_EXTENDED */
    for (;;) {
    }
}

static uint32_t read_seed(void)
{
    static char cmd[128];
    uint32_t block[2] = {(uint32_t)cmd, sizeof(cmd)};
    uint32_t seed = 0;
    const char *p;

    if (fw_semihost(0x15, block) != 0) {                /* SYS_GET_CMDLINE */
        return 0xFFFFFFFFu;
    }
    for (p = cmd; *p; p++) {
        if (p[0] == 's' && p[1] == 'e' && p[2] == 'e' && p[3] == 'd' && p[4] == '=') {
            for (p += 5; *p >= '0' && *p <= '9'; p++) {
                seed = seed * 10u + (uint32_t)(*p - '0');
            }
            return seed;
        }
    }
    return 0xFFFFFFFEu;
}

static void put_frame(const uint8_t *data, uint32_t n)
{
    static char head[21] = "SLICERT-OUT 00000000\n";
    static const char hex[] = "0123456789abcdef";
    static const char tt[] = ":tt";
    uint32_t open_blk[3] = {(uint32_t)tt, 4u, 3u};     /* mode 4 = "w" -> stdout */
    int fd;

    for (int i = 0; i < 8; i++) {
        head[12 + i] = hex[(n >> (28 - 4 * i)) & 0xfu];
    }
    fd = fw_semihost(0x01, open_blk);                  /* SYS_OPEN */
    uint32_t w1[3] = {(uint32_t)fd, (uint32_t)head, sizeof(head)};
    fw_semihost(0x05, w1);                              /* SYS_WRITE */
    uint32_t w2[3] = {(uint32_t)fd, (uint32_t)data, n};
    fw_semihost(0x05, w2);
}

int main(void)
{
    uint32_t out[4];
    uint32_t seed;

    trace(14);                                          /* boot */
    seed = read_seed();
    trace_payload(12, seed);                            /* echo the seed */
    trace(13);
#ifdef FW_HANG
    for (;;) {
        __asm__ volatile("nop");
    }
#endif
#ifdef FW_SPIN
    trace(0);
    fw_spin(FW_SPIN);
    trace(1);
    out[0] = out[1] = out[2] = out[3] = 0;
#else
    out[0] = fw_loop(FW_LOOP_N, buf);                   /* events 0, 1 */
    fw_mix(buf);                                        /* events 20, 21 */
    out[1] = buf[5];

    /* SysTick interrupts: events 6 / 7 in the handler. */
    SYST_RVR = 5000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;                                      /* enable, tickint, cpu clock */
    while (fw_ticks < FW_TICKS) {
    }
    SYST_CSR = 0;
    out[2] = fw_ticks;

    trace_payload(8, 0xDEADBEEFu);
    trace(9);                                           /* payload consumed: 0 */
    trace_payload(10, 0x00A50000u);                     /* a single middle lane */
    trace_payload(127, 0x80000001u);
    out[3] = seed;
#endif
    trace(15);                                          /* output_ready */
    put_frame((const uint8_t *)out, sizeof(out));
    fw_exit(FW_EXIT_CODE);
}
