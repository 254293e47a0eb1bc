/*
 * SliceRT Zephyr port (qemu_cortex_m3 = QEMU lm3s6965evb; Zephyr >= 3.7 APIs).
 *
 *  - kernel thread: main(), cooperative; RT task: a cooperative k_thread of higher
 *    priority that waits on a semaphore. A switch requested by the yield check is
 *    carried out at slicert_port_switch_point(): core bookkeeping, k_sem_give to the
 *    RT thread when it has work, k_yield(). pendsv_enter is emitted by the side that
 *    gives up the CPU, pendsv_exit(<task id>) by the side that resumes.
 *  - slice timer and IRQ load: k_timer (expiry functions run in the system timer ISR).
 *    The IRQ load re-arms itself one-shot for the absolute schedule
 *    base + (k+1)*period + jitter_k, in k_cycle_get_32() cycles (the timebase).
 *  - host I/O, seed and exit: semihosting, as on bare metal.
 *
 * Timer resolution is CONFIG_SYS_CLOCK_TICKS_PER_SEC (prj.conf sets 100000): the
 * irq_enter latency includes the rounding of the expiry to a system tick.
 */
#include <zephyr/kernel.h>
#include <zephyr/init.h>
#include <zephyr/fatal.h>

#include "slicert/runtime.h"
#include "slicert/semihost.h"

volatile uint32_t slicert_zephyr_switch_req;

static K_SEM_DEFINE(rt_sem, 0, 1);
static K_THREAD_STACK_DEFINE(rt_stack, SLICERT_RT_STACK_SIZE);
static struct k_thread rt_thread;
static struct k_timer slice_timer;
static uint32_t run_seed;
static char cmdline[256];

#if SLICERT_IRQ_LOAD
static struct k_timer irq_timer;
static uint32_t irq_base, irq_k, irq_a_cur;
#endif

uint32_t slicert_timebase_now(void)
{
	return k_cycle_get_32();
}

uint32_t slicert_port_seed(void)
{
	return run_seed;
}

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

/* Stack overflows are caught by Zephyr (MPU guard / stack sentinel) and reported
 * through the fatal error handler below. */
void slicert_port_check_stacks(void)
{
}

void slicert_port_stack_usage(uint32_t *kernel, uint32_t *rt, uint32_t *isr)
{
	*kernel = 0;
	*isr = 0;
#if defined(CONFIG_INIT_STACKS) && defined(CONFIG_THREAD_STACK_INFO)
	{
		size_t unused = 0;

		*rt = (k_thread_stack_space_get(&rt_thread, &unused) == 0)
			      ? (uint32_t)(SLICERT_RT_STACK_SIZE - unused)
			      : 0u;
	}
#else
	*rt = 0;
#endif
}

void k_sys_fatal_error_handler(unsigned int reason, const struct arch_esf *esf)
{
	ARG_UNUSED(esf);
	slicert_port_exit(reason == K_ERR_STACK_CHK_FAIL ? SLICERT_EXIT_STACK
							 : SLICERT_EXIT_HARDFAULT);
}

/* Kernel thread: carry out a switch requested by the yield check. */
void slicert_port_switch_point(void)
{
	uint32_t key, next;

	if (slicert_zephyr_switch_req == 0u) {
		return;
	}
	key = slicert_port_irq_lock();
	slicert_zephyr_switch_req = 0u;
	slicert_trace(SLICERT_EV_PENDSV_ENTER);
	next = slicert_core_schedule();
	slicert_port_irq_unlock(key);
	if (next == SLICERT_TASK_RT) {
		k_sem_give(&rt_sem);
	}
	k_yield(); /* the RT thread (higher priority) runs its jobs, then blocks */
	slicert_trace(SLICERT_EV_PENDSV_EXIT); /* payload 0: back in the kernel thread */
}

/* RT thread, interrupts locked: block until the kernel thread switches to us. */
uint32_t slicert_port_rt_block(uint32_t key)
{
	static bool started;

	if (started) {
		slicert_trace(SLICERT_EV_PENDSV_ENTER);
		(void)slicert_core_schedule(); /* no work left: back to the kernel thread */
	}
	started = true;
	slicert_port_irq_unlock(key);
	(void)k_sem_take(&rt_sem, K_FOREVER);
	key = slicert_port_irq_lock();
	slicert_trace_payload_lanes(SLICERT_TASK_RT);
	slicert_trace(SLICERT_EV_PENDSV_EXIT);
	return key;
}

static void rt_entry(void *a, void *b, void *c)
{
	ARG_UNUSED(a);
	ARG_UNUSED(b);
	ARG_UNUSED(c);
	slicert_core_rt_main();
}

static void slice_expiry(struct k_timer *t)
{
	ARG_UNUSED(t);
	slicert_core_slice_tick();
}

#if SLICERT_IRQ_LOAD
static void irq_arm(struct k_timer *t, uint32_t now)
{
	int32_t delta = (int32_t)(irq_a_cur - now);

	k_timer_start(t, delta > 0 ? K_CYC(delta) : K_NO_WAIT, K_NO_WAIT);
}

static void irq_expiry(struct k_timer *t)
{
	uint32_t now = k_cycle_get_32();
	uint32_t lat = now - irq_a_cur;

	slicert_trace_payload(SLICERT_EV_IRQ_ENTER, lat);
	slicert_core_irq_stats(lat, now - irq_base);
	slicert_core_rt_release(irq_a_cur);
	irq_k++;
	irq_a_cur = irq_base + (irq_k + 1u) * SLICERT_IRQ_PERIOD_TICKS + slicert_core_irq_jitter();
	irq_arm(t, now);
	slicert_trace(SLICERT_EV_IRQ_EXIT);
}
#endif

void slicert_port_load_start(void)
{
#if SLICERT_SLICE_US > 0
	k_timer_start(&slice_timer, K_USEC(SLICERT_SLICE_US), K_USEC(SLICERT_SLICE_US));
#endif
#if SLICERT_IRQ_LOAD
	irq_k = 0;
	irq_base = k_cycle_get_32();
	irq_a_cur = irq_base + SLICERT_IRQ_PERIOD_TICKS + slicert_core_irq_jitter();
	irq_arm(&irq_timer, irq_base);
#endif
}

void slicert_port_load_stop(void)
{
	k_timer_stop(&slice_timer);
#if SLICERT_IRQ_LOAD
	k_timer_stop(&irq_timer);
#endif
}

void slicert_port_init(void)
{
	run_seed = slicert_semihost_seed(cmdline, sizeof(cmdline));
	slicert_core_init(run_seed);
	k_timer_init(&slice_timer, slice_expiry, NULL);
#if SLICERT_IRQ_LOAD
	k_timer_init(&irq_timer, irq_expiry, NULL);
#endif
	k_thread_create(&rt_thread, rt_stack, K_THREAD_STACK_SIZEOF(rt_stack), rt_entry, NULL,
			NULL, NULL, CONFIG_SLICERT_RT_PRIORITY, 0, K_NO_WAIT);
	k_thread_name_set(&rt_thread, "slicert_rt");
}

static int slicert_zephyr_init(void)
{
	slicert_port_init();
	slicert_trace(SLICERT_EV_BOOT);
	return 0;
}

SYS_INIT(slicert_zephyr_init, APPLICATION, CONFIG_APPLICATION_INIT_PRIORITY);

BUILD_ASSERT(CONFIG_MAIN_THREAD_PRIORITY < 0,
	     "SliceRT: the kernel (main) thread must be cooperative");
BUILD_ASSERT(CONFIG_SLICERT_RT_PRIORITY < CONFIG_MAIN_THREAD_PRIORITY,
	     "SliceRT: the RT thread must have a higher priority than main");
