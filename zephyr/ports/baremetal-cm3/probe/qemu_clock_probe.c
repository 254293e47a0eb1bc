/*
 * QEMU lm3s6965evb clock probe: measures (does not assume) what QEMU does with the
 * RCC clock divider, SysTick and the GPTM under -icount shift=0 (1 instruction = 1 ns).
 * Prints "key=value" lines on semihosting stdout, exits 0. Built and checked by
 * tests/test_firmware.py::test_qemu_clock_facts; results in zephyr/README.md.
 *
 *   arm-none-eabi-gcc -O2 -mcpu=cortex-m3 -mthumb -ffreestanding -nostdlib \
 *       -T probe.ld qemu_clock_probe.c -o probe.elf -lgcc
 */
#include <stdint.h>

#define REG(a) (*(volatile uint32_t *)(a))
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define ICSR REG(0xE000ED04u)
#define RCC REG(0x400FE060u)
#define T0CFG REG(0x40030000u)
#define T0TAMR REG(0x40030004u)
#define T0CTL REG(0x4003000Cu)
#define T0IMR REG(0x40030018u)
#define T0ICR REG(0x40030024u)
#define T0TAILR REG(0x40030028u)
#define T0TAR REG(0x40030048u)
#define NVIC_ISER0 REG(0xE000E100u)

static int32_t semihost(uint32_t op, const void *arg)
{
	register uint32_t r0 __asm__("r0") = op;
	register const void *r1 __asm__("r1") = arg;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return (int32_t)r0;
}

static char buf[2048];
static uint32_t pos;

static void put_s(const char *s)
{
	while (*s) {
		buf[pos++] = *s++;
	}
}

static void put_u(uint32_t v)
{
	char t[12];
	int n = 0;

	do {
		t[n++] = (char)('0' + v % 10u);
		v /= 10u;
	} while (v);
	while (n) {
		buf[pos++] = t[--n];
	}
}

static void kv(const char *k, uint32_t v)
{
	put_s(k);
	put_s("=");
	put_u(v);
	put_s("\n");
}

static void finish(void)
{
	static const char tt[] = ":tt";
	uint32_t o[3] = {(uint32_t)tt, 4u, 3u};
	int32_t fd = semihost(0x01u, o);
	uint32_t w[3] = {(uint32_t)fd, (uint32_t)buf, pos};
	uint32_t e[2] = {0x20026u, 0u};

	(void)semihost(0x05u, w);
	(void)semihost(0x20u, e);
	for (;;) {
	}
}

/* Exactly 10000 instructions (1 ns each under -icount shift=0). */
__attribute__((noinline)) static void nops_10000(void)
{
	__asm__ volatile(".rept 9999\n\tnop\n\t.endr" ::: "memory"); /* + the bx lr */
}

static volatile uint32_t wraps, hits;
static volatile uint32_t stamps[16];

static uint32_t timebase(void) /* SysTick RVR = 0xFFFFFF */
{
	uint32_t v = SYST_CVR;
	uint32_t p = ICSR & (1u << 26);
	uint32_t t = wraps * 0x1000000u + (0xFFFFFFu - v);

	if (p && v > 0x7FFFFFu) {
		t += 0x1000000u;
	}
	return t;
}

void SysTick_Handler(void)
{
	wraps++;
}

void Timer0A_Handler(void)
{
	uint32_t t = timebase();

	T0ICR = 1u;
	if (hits < 16u) {
		stamps[hits] = t;
	}
	hits++;
	if (hits == 8u) {
		T0TAILR = 10000u; /* written in the ISR of assertion 7 */
	}
}

static uint32_t ticks_per_10000(uint32_t clksource)
{
	uint32_t a, b;

	SYST_CSR = 0;
	SYST_RVR = 0xFFFFFFu;
	SYST_CVR = 0;
	SYST_CSR = 1u | (clksource << 2);
	while (SYST_CVR == 0u) {
	}
	a = SYST_CVR;
	nops_10000();
	b = SYST_CVR;
	SYST_CSR = 0;
	return a - b;
}

static void set_sysdiv(uint32_t d)
{
	RCC = (RCC & ~(0xFu << 23)) | (d << 23) | (1u << 22);
}

int main(void)
{
	uint32_t i, v, prev, minv = 0xFFFFFFFFu, maxv = 0, n, s;

	kv("rcc_reset", RCC);
	kv("ticks_per_10000_insns_reset", ticks_per_10000(1));
	set_sysdiv(0);
	kv("ticks_per_10000_insns_sysdiv0", ticks_per_10000(1));
	set_sysdiv(1);
	kv("ticks_per_10000_insns_sysdiv1", ticks_per_10000(1));
	set_sysdiv(7);
	kv("ticks_per_10000_insns_sysdiv7", ticks_per_10000(1));
	set_sysdiv(3);
	kv("ticks_per_10000_insns_sysdiv3", ticks_per_10000(1));
	kv("ticks_per_10000_insns_sysdiv3_clksource0", ticks_per_10000(0));

	/* SysTick period with RVR = 99: the values VAL takes over > 2 periods */
	SYST_RVR = 99u;
	SYST_CVR = 0;
	SYST_CSR = 5u;
	while (SYST_CVR == 0u) {
	}
	prev = SYST_CVR;
	for (n = 0; n < 250u;) {
		v = SYST_CVR;
		if (v != prev) {
			minv = v < minv ? v : minv;
			maxv = v > maxv ? v : maxv;
			prev = v;
			n++;
		}
	}
	SYST_CSR = 0;
	kv("systick_rvr99_val_min", minv);
	kv("systick_rvr99_val_max", maxv);

	/* GPTM Timer0A, 32-bit periodic, TAILR = 5000 */
	SYST_RVR = 0xFFFFFFu;
	SYST_CVR = 0;
	SYST_CSR = 7u;
	while (SYST_CVR == 0u) {
	}
	T0CTL = 0;
	T0CFG = 0;
	T0TAMR = 2u;
	T0TAILR = 5000u;
	T0IMR = 1u;
	NVIC_ISER0 = 1u << 19;
	s = timebase();
	T0CTL = 1u;
	kv("gptm_tar_read", T0TAR);
	while (hits < 12u) {
	}
	kv("gptm_first_after_enable", stamps[0] - s);
	for (i = 1; i < 12u; i++) {
		put_s("gptm_interval_");
		put_u(i);
		put_s("=");
		put_u(stamps[i] - stamps[i - 1]);
		put_s("\n");
	}
	finish();
	return 0;
}

void Reset_Handler(void)
{
	main();
}

void Default_Handler(void)
{
	uint32_t e[2] = {0x20026u, 9u};

	(void)semihost(0x20u, e);
	for (;;) {
	}
}

__attribute__((section(".vectors"), used)) void (*const vectors[16 + 64])(void) = {
	(void (*)(void))0x20010000u, Reset_Handler, [2 ... 14] = Default_Handler,
	[15] = SysTick_Handler, [16 ... 16 + 63] = Default_Handler,
	[16 + 19] = Timer0A_Handler,
};
