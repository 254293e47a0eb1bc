/*
 * The board-independent half of the bare-metal Cortex-M3 ports, shared by
 * ports/baremetal-cm3 (lm3s6965evb) and ports/baremetal-an385 (mps2-an385): stacks and
 * their guards, semihosting I/O, fault handling, the C half of PendSV, the DWT timebase,
 * the SysTick slice timer, the IRQ-load schedule and early init.
 *
 * Included once, at its end, by the port's port.c, after the board has defined:
 *   SLICERT_IRQLOAD_IRQ            NVIC line of the IRQ-load timer
 *   SLICERT_IRQLOAD_HANDLER        its handler (the vector table's entry for that line)
 *   SLICERT_IRQLOAD_ACK()          clear the timer's interrupt
 *   SLICERT_IRQLOAD_SET_FIRST(t)   (timer stopped) first assertion t ticks after the
 *                                  store that starts the timer
 *   SLICERT_IRQLOAD_SET_NEXT(t)    (timer running) the interval the next expiry reloads:
 *                                  the assertion after the coming one is t ticks after it
 *   SLICERT_IRQLOAD_EN_REG, SLICERT_IRQLOAD_EN_VAL   that store (register, value)
 *   SLICERT_IRQLOAD_DISABLE()      stop the timer
 *   static void board_clock_init(void)   the board clock, before the DWT is enabled
 *   static void board_timer_init(void)   the timer configured, stopped, its interrupt
 *                                        enabled in the timer (the NVIC line is set here)
 * A C fragment, not a separate object, so that each port is one translation unit as
 * before the split (the lm3s6965evb firmware is byte-identical to the unsplit port).
 */
#ifndef SLICERT_CM3_BAREMETAL_H_
#define SLICERT_CM3_BAREMETAL_H_

#include "slicert/runtime.h"
#include "slicert/semihost.h"

#define NVIC_ISER0 SLICERT_REG32(0xE000E100u)
#define NVIC_ICER0 SLICERT_REG32(0xE000E180u)
#define NVIC_ICPR0 SLICERT_REG32(0xE000E280u)
#define NVIC_IPR_BYTE(n) (*(volatile uint8_t *)(0xE000E400u + (n)))

/* DWT cycle counter */
#define DEMCR SLICERT_REG32(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL SLICERT_REG32(0xE0001000u)
#define DWT_CYCCNT SLICERT_REG32(0xE0001004u)
#define DWT_CTRL_CYCCNTENA 1u

#define PRIO_TIMERS 0x20u
#define PRIO_PENDSV 0xE0u

/* SysTick: CLKSOURCE=1 (processor clock; QEMU 7.2 leaves the reference clock
 * unconnected), TICKINT, ENABLE */
#define SYST_CSR_RUN 7u
#define SYST_RELOAD (SLICERT_SLICE_TICKS - 1u)

#if SLICERT_SLICE_US > 0 && (SLICERT_SLICE_US * SLICERT_TICKS_PER_US > 0x01000000)
#error "SLICERT_SLICE_US out of range for the 24-bit SysTick (2^24 cycles)"
#endif

#define STACK_FILL 0xA5A5A5A5u
#define STACK_GUARD_WORDS 8u

/* ---- stacks: the linker script puts the kernel stack at the bottom of RAM ---- */
__attribute__((section(".stack_kernel"), aligned(8))) uint32_t
	slicert_kernel_stack[SLICERT_KERNEL_STACK_SIZE / 4];
__attribute__((section(".stack_isr"), aligned(8))) uint32_t
	slicert_isr_stack[SLICERT_ISR_STACK_SIZE / 4];
__attribute__((section(".stack_rt"), aligned(8))) uint32_t
	slicert_rt_stack[SLICERT_RT_STACK_SIZE / 4];

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;

static uint32_t run_seed;
#if SLICERT_IRQ_LOAD
static uint32_t irq_base;   /* timebase when Timer0A was enabled */
static uint32_t irq_k;      /* index of the assertion being serviced next */
static uint32_t irq_a_cur;  /* its programmed assertion time (ticks) */
static uint32_t irq_a_next; /* the following one, already committed to the timer */
#endif

int main(void);
void *slicert_port_switch(void *sp);
void slicert_port_early_init(void);
void slicert_port_fault(uint32_t sp, uint32_t exc_return) __attribute__((noreturn));
void SysTick_Handler(void);
void SLICERT_IRQLOAD_HANDLER(void);

/* ---------------- host I/O: semihosting (ports/common/semihost.c) ---------------- */

void slicert_port_write_stdout(const void *buf, uint32_t n)
{
	slicert_semihost_stdout(buf, n);
}

void slicert_port_write_stderr(const void *buf, uint32_t n)
{
	slicert_semihost_stderr(buf, n);
}

void slicert_port_exit(int code)
{
	slicert_semihost_exit(code);
}

uint32_t slicert_port_seed(void)
{
	return run_seed;
}

/* ---------------- stacks ---------------- */

static void fill_words(uint32_t *p, uint32_t *end)
{
	while (p < end) {
		*p++ = STACK_FILL;
	}
}

static int guard_ok(const uint32_t *stack)
{
	uint32_t i;

	for (i = 0; i < STACK_GUARD_WORDS; i++) {
		if (stack[i] != STACK_FILL) {
			return 0;
		}
	}
	return 1;
}

void slicert_port_check_stacks(void)
{
	if (!guard_ok(slicert_kernel_stack) || !guard_ok(slicert_rt_stack) ||
	    !guard_ok(slicert_isr_stack)) {
		slicert_port_exit(SLICERT_EXIT_STACK);
	}
}

static uint32_t stack_used(const uint32_t *stack, uint32_t bytes)
{
	uint32_t i = 0;

	while (i < bytes / 4u && stack[i] == STACK_FILL) {
		i++;
	}
	return bytes - 4u * i;
}

void slicert_port_stack_usage(uint32_t *kernel, uint32_t *rt, uint32_t *isr)
{
	*kernel = stack_used(slicert_kernel_stack, sizeof(slicert_kernel_stack));
	*rt = stack_used(slicert_rt_stack, sizeof(slicert_rt_stack));
	*isr = stack_used(slicert_isr_stack, sizeof(slicert_isr_stack));
}

void slicert_port_fault(uint32_t sp, uint32_t exc_return)
{
	const uint32_t *base;

	if (exc_return & 4u) {
		base = (slicert_core.current == SLICERT_TASK_RT) ? slicert_rt_stack
								 : slicert_kernel_stack;
	} else {
		base = slicert_isr_stack;
	}
	if (sp < (uint32_t)(base + STACK_GUARD_WORDS) || !guard_ok(slicert_kernel_stack) ||
	    !guard_ok(slicert_rt_stack) || !guard_ok(slicert_isr_stack)) {
		slicert_port_exit(SLICERT_EXIT_STACK);
	}
	slicert_port_exit(SLICERT_EXIT_HARDFAULT);
}

/* ---------------- context switch (C half of PendSV, interrupts masked) ---------------- */

static void task_exit_trap(void)
{
	slicert_port_exit(SLICERT_EXIT_ASSERT);
}

static void rt_stack_init(void)
{
	uint32_t *sp = slicert_rt_stack + SLICERT_RT_STACK_SIZE / 4u;

	*--sp = 0x01000000u;                                   /* xPSR: Thumb */
	*--sp = (uint32_t)slicert_core_rt_main & ~1u;          /* pc */
	*--sp = (uint32_t)task_exit_trap;                      /* lr */
	sp -= 5;                                               /* r12, r3..r0 */
	sp[0] = sp[1] = sp[2] = sp[3] = sp[4] = 0u;
	sp -= 8;                                               /* r4..r11 */
	sp[0] = sp[1] = sp[2] = sp[3] = sp[4] = sp[5] = sp[6] = sp[7] = 0u;
	slicert_core.tasks[SLICERT_TASK_RT].sp = sp;
}

void *slicert_port_switch(void *sp)
{
	struct slicert_core *c = &slicert_core;
	const uint32_t *base =
		(c->current == SLICERT_TASK_RT) ? slicert_rt_stack : slicert_kernel_stack;
	uint32_t next;

	/* Cheap check at every switch (SP above the guard, lowest guard word intact); the
	 * whole guard is checked at the end and in the fault handler. */
	if ((uint32_t)sp < (uint32_t)(base + STACK_GUARD_WORDS) || base[0] != STACK_FILL) {
		slicert_port_exit(SLICERT_EXIT_STACK);
	}
	c->tasks[c->current].sp = sp;
	next = slicert_core_schedule();
	slicert_trace_payload_lanes(next);
	return c->tasks[next].sp;
}

/* ---------------- timebase (DWT cycle counter) ---------------- */

static inline __attribute__((always_inline)) uint32_t timebase_raw(void)
{
	return DWT_CYCCNT;
}

uint32_t slicert_timebase_now(void)
{
	return timebase_raw();
}

void SysTick_Handler(void)
{
	/* Bracketed so the host can exclude the slice timer's ISR from kernel-thread time. */
	slicert_trace(SLICERT_EV_TICK_ENTER);
	slicert_core_slice_tick();
	slicert_trace(SLICERT_EV_TICK_EXIT);
}
/* ---------------- IRQ load (the board's periodic timer) ---------------- */

#if SLICERT_IRQ_LOAD
/* Assertion k is programmed at irq_base + (k+1)*period + jitter_k. The board's timer
 * reloads at each expiry with the interval SLICERT_IRQLOAD_SET_NEXT gave it (no drift),
 * so the ISR for assertion k sets the interval k+1 -> k+2. */
void SLICERT_IRQLOAD_HANDLER(void)
{
	uint32_t now = timebase_raw();
	uint32_t lat = now - irq_a_cur;
	uint32_t a2;

	slicert_trace_payload(SLICERT_EV_IRQ_ENTER, lat);
	SLICERT_IRQLOAD_ACK();
	slicert_core_irq_stats(lat, now - irq_base);
	if ((int32_t)(now - irq_a_next) >= 0) {
		/* The next assertion already fired: the schedule would be wrong. */
		slicert_port_exit(SLICERT_EXIT_ASSERT);
	}
	slicert_core_rt_release(irq_a_cur);
	a2 = irq_base + (irq_k + 3u) * SLICERT_IRQ_PERIOD_TICKS + slicert_core_irq_jitter();
	SLICERT_IRQLOAD_SET_NEXT(a2 - irq_a_next);
	irq_k++;
	irq_a_cur = irq_a_next;
	irq_a_next = a2;
	slicert_trace(SLICERT_EV_IRQ_EXIT);
}
#else
void SLICERT_IRQLOAD_HANDLER(void)
{
	slicert_port_exit(SLICERT_EXIT_ASSERT);
}
#endif

void slicert_port_load_start(void)
{
	uint32_t key = slicert_port_irq_lock();

#if SLICERT_SLICE_US > 0
	SLICERT_SYST_CSR = 0;
	SLICERT_SYST_RVR = SYST_RELOAD;
	SLICERT_SYST_CVR = 0;
	SLICERT_SYST_CSR = SYST_CSR_RUN;
#endif
#if SLICERT_IRQ_LOAD
	{
		uint32_t t;

		irq_k = 0;
		irq_a_cur = SLICERT_IRQ_PERIOD_TICKS + slicert_core_irq_jitter();
		irq_a_next = 2u * SLICERT_IRQ_PERIOD_TICKS + slicert_core_irq_jitter();
		SLICERT_IRQLOAD_SET_FIRST(irq_a_cur);
		/* The timer counts from the store that enables it; the cycle counter is read
		 * by the instruction right before it (in asm, so nothing comes in between).
		 * Only the host's latency figures need exact assertion times, and those come
		 * from the simulator (qemu/cycle_model.md); this base is within a cycle. */
		__asm__ volatile("ldr %0, [%1]\n\t"
				 "str %2, [%3]"
				 : "=&r"(t)
				 : "r"(&DWT_CYCCNT), "r"(SLICERT_IRQLOAD_EN_VAL),
				   "r"(&SLICERT_IRQLOAD_EN_REG)
				 : "memory");
		irq_base = t;
		/* the interval used by the reload at assertion 0 */
		SLICERT_IRQLOAD_SET_NEXT(irq_a_next - irq_a_cur);
		irq_a_cur += irq_base;
		irq_a_next += irq_base;
	}
#endif
	slicert_port_irq_unlock(key);
}

void slicert_port_load_stop(void)
{
	uint32_t key = slicert_port_irq_lock();

	SLICERT_IRQLOAD_DISABLE();
	SLICERT_IRQLOAD_ACK();
	NVIC_ICPR0 = 1u << SLICERT_IRQLOAD_IRQ;
	slicert_port_irq_unlock(key);
}

void slicert_port_early_init(void)
{
	uint32_t *src = &__data_load, *dst = &__data_start;
	uint32_t msp;

	while (dst < &__data_end) {
		*dst++ = *src++;
	}
	for (dst = &__bss_start; dst < &__bss_end; dst++) {
		*dst = 0;
	}
	/* The kernel stack is not in use yet: borrow it for the command line. */
	run_seed = slicert_semihost_seed((char *)slicert_kernel_stack,
					  sizeof(slicert_kernel_stack));
	fill_words(slicert_kernel_stack, slicert_kernel_stack + SLICERT_KERNEL_STACK_SIZE / 4u);
	fill_words(slicert_rt_stack, slicert_rt_stack + SLICERT_RT_STACK_SIZE / 4u);
	__asm__ volatile("mrs %0, msp" : "=r"(msp));
	fill_words(slicert_isr_stack, (uint32_t *)(msp - 64u));

	board_clock_init();
	DEMCR |= DEMCR_TRCENA;
	DWT_CYCCNT = 0;
	DWT_CTRL |= DWT_CTRL_CYCCNTENA;

	SLICERT_SCB_SHPR3 = (PRIO_TIMERS << 24) | (PRIO_PENDSV << 16);
	NVIC_IPR_BYTE(SLICERT_IRQLOAD_IRQ) = PRIO_TIMERS;

	slicert_core_init(run_seed);
	rt_stack_init();

	board_timer_init();
#if SLICERT_IRQ_LOAD
	NVIC_ISER0 = 1u << SLICERT_IRQLOAD_IRQ;
#else
	NVIC_ICER0 = 1u << SLICERT_IRQLOAD_IRQ;
#endif
	slicert_port_init();
}

/* Nothing left to do after early init on these ports (kept for the port interface). */
void slicert_port_init(void)
{
}

#endif /* SLICERT_CM3_BAREMETAL_H_ */
