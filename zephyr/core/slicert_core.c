/*
 * SliceRT portable core: task states, slice budget accounting, RT releases and jobs,
 * deadline accounting, statistics, seeded jitter. No allocation, no libc.
 *
 * Slice semantics (tick-aligned, like a tick-based round-robin kernel): the slice
 * timer expires every SLICERT_SLICE_US; an expiry that interrupts the kernel thread
 * inside the kernel window ends its slice (slice_expire, reason bit 1), and the kernel
 * gives up the CPU at its next micro-tile boundary. A task switched in starts a fresh
 * slice that lasts until the next expiry. An expiry while the RT task runs is not
 * charged to the kernel.
 */
#include "slicert/runtime.h"

volatile uint32_t slicert_pending;
struct slicert_core slicert_core;

/* RT job result sink, so the work loop cannot be optimised away. */
volatile uint32_t slicert_rt_sink;

void slicert_core_init(uint32_t seed)
{
	struct slicert_core *c = &slicert_core;
	uint8_t *p = (uint8_t *)c;
	uint32_t i;

	for (i = 0; i < sizeof(*c); i++) {
		p[i] = 0;
	}
	c->seed = seed;
	c->prng = slicert_prng_state_from_seed(seed);
	c->current = SLICERT_TASK_KERNEL;
	c->tasks[SLICERT_TASK_KERNEL].state = SLICERT_TS_RUNNING;
	c->tasks[SLICERT_TASK_RT].state = SLICERT_TS_BLOCKED;
	c->stats.irq_lat_min = 0xffffffffu;
	slicert_pending = 0;
}

uint32_t slicert_core_irq_jitter(void)
{
#if SLICERT_IRQ_JITTER_US > 0
	return slicert_xorshift32(&slicert_core.prng) % (SLICERT_IRQ_JITTER_TICKS + 1u);
#else
	return 0;
#endif
}

void slicert_core_slice_tick(void)
{
#if SLICERT_SLICE_US > 0
	struct slicert_core *c = &slicert_core;

	if (c->window && c->current == SLICERT_TASK_KERNEL) {
		slicert_trace(SLICERT_EV_SLICE_EXPIRE);
		c->stats.slices++;
		slicert_pending |= SLICERT_REASON_SLICE;
	}
#endif
}

void slicert_core_irq_stats(uint32_t ticks, uint32_t since_start)
{
	struct slicert_stats *st = &slicert_core.stats;

	if (st->irqs == 0u) {
		st->irq_first = since_start;
	}
	st->irq_last = since_start;
	st->irqs++;
	st->irq_lat_sum += ticks;
	if (ticks < st->irq_lat_min) {
		st->irq_lat_min = ticks;
	}
	if (ticks > st->irq_lat_max) {
		st->irq_lat_max = ticks;
	}
}

void slicert_core_rt_release(uint32_t assert_time)
{
	struct slicert_core *c = &slicert_core;
	uint32_t idx = c->released;

	if (idx - c->done >= SLICERT_RT_RING) {
		c->stats.rt_dropped++;
		return;
	}
	c->release_time[idx % SLICERT_RT_RING] = assert_time;
	c->released = idx + 1u;
	c->stats.rt_releases++;
	slicert_trace_payload(SLICERT_EV_RT_RELEASE, idx);
	slicert_pending |= SLICERT_REASON_RT;
}

uint32_t slicert_core_schedule(void)
{
	struct slicert_core *c = &slicert_core;
	uint32_t prev = c->current;
	uint32_t next = (c->released != c->done) ? SLICERT_TASK_RT : SLICERT_TASK_KERNEL;

	c->stats.switches++;
	if (prev != next) {
		c->tasks[prev].state =
			(prev == SLICERT_TASK_RT) ? SLICERT_TS_BLOCKED : SLICERT_TS_READY;
	}
	c->tasks[next].state = SLICERT_TS_RUNNING;
	c->current = next;
	/* The task switched in starts a fresh slice; the RT task consumes every release. */
	slicert_pending = 0;
	return next;
}

uint32_t slicert_yield_slow(void)
{
	uint32_t key = slicert_port_irq_lock();
	uint32_t reasons = slicert_pending & (SLICERT_REASON_SLICE | SLICERT_REASON_RT);

	if (reasons != 0u && slicert_core.current == SLICERT_TASK_KERNEL) {
		slicert_trace_payload_lanes(reasons);
		slicert_trace(SLICERT_EV_YIELD);
		slicert_core.stats.yields++;
		slicert_port_request_switch();
	}
	slicert_port_irq_unlock(key);
	slicert_port_switch_point();
	return reasons;
}

static uint32_t slicert_rt_work(uint32_t acc)
{
	uint32_t i;

	for (i = 0; i < (uint32_t)SLICERT_RT_WORK_ITERS; i++) {
		acc = acc * 1664525u + 1013904223u;
		__asm__ volatile("" : "+r"(acc));
	}
	return acc;
}

void slicert_core_rt_main(void)
{
	struct slicert_core *c = &slicert_core;

	for (;;) {
		uint32_t key = slicert_port_irq_lock();
		uint32_t idx, now, resp;

		while (c->done == c->released) {
			key = slicert_port_rt_block(key);
		}
		idx = c->done;
		slicert_port_irq_unlock(key);

		slicert_trace_payload(SLICERT_EV_RT_START, idx);
		slicert_rt_sink = slicert_rt_work(idx);
		now = slicert_timebase_now();
		slicert_trace_payload(SLICERT_EV_RT_END, idx);

		resp = now - c->release_time[idx % SLICERT_RT_RING];
		if (resp > SLICERT_RT_DEADLINE_TICKS) {
			c->stats.deadline_misses++;
		}
		if (resp > c->stats.rt_resp_max) {
			c->stats.rt_resp_max = resp;
		}
		c->stats.rt_jobs++;
		c->done = idx + 1u;
	}
}

void slicert_calibrate(void)
{
	uint32_t i;

	slicert_trace_payload(SLICERT_EV_CAL_START, SLICERT_CAL_CHECKS);
	/* Fully unrolled: the window holds the checks and nothing else. */
#pragma GCC unroll 4096
	for (i = 0; i < (uint32_t)SLICERT_CAL_CHECKS; i++) {
		(void)slicert_yield_check();
	}
	slicert_trace(SLICERT_EV_CAL_END);
}

void slicert_kernel_begin(void)
{
	slicert_core.window = 1;
	slicert_port_load_start();
	slicert_trace(SLICERT_EV_KERNEL_START);
}

void slicert_kernel_finish(void)
{
	struct slicert_core *c = &slicert_core;
	uint32_t key;

	slicert_trace(SLICERT_EV_KERNEL_END);
	key = slicert_port_irq_lock();
	c->window = 0;
	slicert_pending &= ~SLICERT_REASON_SLICE;
	slicert_port_irq_unlock(key);
	slicert_port_load_stop();

	/* Let an RT job that was released but has not finished run to its end. */
	key = slicert_port_irq_lock();
	while (c->done != c->released) {
		slicert_port_request_switch();
		slicert_port_irq_unlock(key);
		slicert_port_switch_point();
		key = slicert_port_irq_lock();
	}
	slicert_port_irq_unlock(key);
}

/* ---- output ---- */

static uint32_t put_str(char *buf, uint32_t pos, uint32_t size, const char *s)
{
	while (*s != '\0' && pos < size) {
		buf[pos++] = *s++;
	}
	return pos;
}

static uint32_t put_dec(char *buf, uint32_t pos, uint32_t size, uint32_t v)
{
	char tmp[10];
	uint32_t n = 0;

	do {
		tmp[n++] = (char)('0' + (v % 10u));
		v /= 10u;
	} while (v != 0u);
	while (n > 0u && pos < size) {
		buf[pos++] = tmp[--n];
	}
	return pos;
}

static uint32_t put_kv(char *buf, uint32_t pos, uint32_t size, const char *k, uint32_t v)
{
	pos = put_str(buf, pos, size, " ");
	pos = put_str(buf, pos, size, k);
	pos = put_str(buf, pos, size, "=");
	return put_dec(buf, pos, size, v);
}

uint32_t slicert_core_format_stats(char *buf, uint32_t size)
{
	const struct slicert_core *c = &slicert_core;
	const struct slicert_stats *st = &c->stats;
	uint32_t sk = 0, sr = 0, si = 0;
	uint32_t pos = 0;

	slicert_port_stack_usage(&sk, &sr, &si);
	pos = put_str(buf, pos, size, "SLICERT-STATS");
	pos = put_kv(buf, pos, size, "seed", c->seed);
	pos = put_kv(buf, pos, size, "tick_ns", SLICERT_TICK_NS);
	pos = put_kv(buf, pos, size, "slices", st->slices);
	pos = put_kv(buf, pos, size, "yields", st->yields);
	pos = put_kv(buf, pos, size, "switches", st->switches);
	pos = put_kv(buf, pos, size, "irqs", st->irqs);
	pos = put_kv(buf, pos, size, "irq_lat_min", st->irqs ? st->irq_lat_min : 0u);
	pos = put_kv(buf, pos, size, "irq_lat_max", st->irq_lat_max);
	pos = put_kv(buf, pos, size, "irq_lat_sum", st->irq_lat_sum);
	pos = put_kv(buf, pos, size, "irq_first", st->irq_first);
	pos = put_kv(buf, pos, size, "irq_last", st->irq_last);
	pos = put_kv(buf, pos, size, "rt_releases", st->rt_releases);
	pos = put_kv(buf, pos, size, "rt_dropped", st->rt_dropped);
	pos = put_kv(buf, pos, size, "rt_jobs", st->rt_jobs);
	pos = put_kv(buf, pos, size, "deadline_misses", st->deadline_misses);
	pos = put_kv(buf, pos, size, "rt_resp_max", st->rt_resp_max);
	pos = put_kv(buf, pos, size, "stack_kernel", sk);
	pos = put_kv(buf, pos, size, "stack_rt", sr);
	pos = put_kv(buf, pos, size, "stack_isr", si);
	return put_str(buf, pos, size, "\n");
}

void slicert_finish(const void *out, uint32_t nbytes)
{
	static const char hex[] = "0123456789abcdef";
	char head[21] = "SLICERT-OUT 00000000\n";
	uint32_t i;

	slicert_port_check_stacks();
	slicert_trace(SLICERT_EV_OUTPUT_READY);
	for (i = 0; i < 8u; i++) {
		head[12u + i] = hex[(nbytes >> (28u - 4u * i)) & 0xfu];
	}
	slicert_port_write_stdout(head, sizeof(head));
	slicert_port_write_stdout(out, nbytes);
#if SLICERT_STATS_STDERR
	{
		char line[400];
		uint32_t n = slicert_core_format_stats(line, sizeof(line));

		slicert_port_write_stderr(line, n);
	}
#endif
	slicert_port_exit(SLICERT_EXIT_OK);
}
