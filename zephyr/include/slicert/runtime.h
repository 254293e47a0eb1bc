/*
 * SliceRT runtime API: the portable core (zephyr/core) and the interface a port
 * implements (zephyr/ports/<port>). Plain structs, no allocation, no libc.
 *
 * Tasks: the *kernel thread* (id 0: runs the harness and the generated kernel,
 * preemptible only at micro-tile boundaries) and the *RT task* (id 1: higher
 * priority, one job per IRQ-load release, then blocks).
 * Time: the port's free-running timebase, in timer ticks (SLICERT_TICK_NS each).
 */
#ifndef SLICERT_RUNTIME_H_
#define SLICERT_RUNTIME_H_

#include <stdint.h>
#include "slicert/config.h"
#include "slicert/trace.h"
#include "slicert/yield.h"
#include "slicert_port.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SLICERT_TASK_KERNEL 0u
#define SLICERT_TASK_RT 1u
#define SLICERT_NUM_TASKS 2u

/* Task states */
#define SLICERT_TS_READY 0u   /* may run, not running */
#define SLICERT_TS_RUNNING 1u /* owns the CPU in thread mode */
#define SLICERT_TS_BLOCKED 2u /* RT task waiting for a release */

/* Exit codes (docs/contracts.md) */
#define SLICERT_EXIT_OK 0
#define SLICERT_EXIT_ASSERT 1
#define SLICERT_EXIT_HARDFAULT 2
#define SLICERT_EXIT_STACK 3

/* Releases not yet run are remembered in a ring; a release that finds it full is dropped. */
#define SLICERT_RT_RING 16u

struct slicert_task {
	void *sp; /* saved stack pointer (port: context-switch frame); keep first */
	uint32_t state;
};

struct slicert_stats {
	uint32_t slices;          /* slice expiries while the kernel thread held the CPU */
	uint32_t yields;          /* yield checks that requested a switch */
	uint32_t switches;        /* context-switch handler runs (PendSV) */
	uint32_t irqs;            /* IRQ-load interrupts */
	uint32_t irq_lat_min;     /* IRQ latency, ticks (assertion -> timebase read in ISR) */
	uint32_t irq_lat_max;
	uint32_t irq_lat_sum;
	uint32_t irq_first;       /* ISR-entry timebase of the first / last IRQ, ticks after */
	uint32_t irq_last;        /* the IRQ load was started */
	uint32_t rt_releases;     /* releases accepted */
	uint32_t rt_dropped;      /* releases dropped (ring full) */
	uint32_t rt_jobs;         /* jobs completed */
	uint32_t deadline_misses; /* jobs that ended later than SLICERT_RT_DEADLINE_US */
	uint32_t rt_resp_max;     /* worst release -> rt_end, ticks */
};

struct slicert_core {
	volatile uint32_t current;  /* task id in thread mode */
	volatile uint32_t window;   /* 1 between kernel_start and kernel_end */
	volatile uint32_t released; /* RT releases so far (index of the next one) */
	volatile uint32_t done;     /* RT jobs completed */
	uint32_t release_time[SLICERT_RT_RING];
	uint32_t prng;
	uint32_t seed;
	struct slicert_task tasks[SLICERT_NUM_TASKS];
	struct slicert_stats stats;
};

extern struct slicert_core slicert_core;

/* ---------------- seeded PRNG (xorshift32, Marsaglia 13/17/5) ---------------- */

/* State from the run's seed: (seed + 1) * 0x9E3779B1, or 0x9E3779B1 if that is 0. */
static inline uint32_t slicert_prng_state_from_seed(uint32_t seed)
{
	uint32_t s = (seed + 1u) * 0x9E3779B1u;

	return s ? s : 0x9E3779B1u;
}

static inline uint32_t slicert_xorshift32(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

/* ---------------- portable core (zephyr/core/slicert_core.c) ---------------- */

void slicert_core_init(uint32_t seed);
/* Jitter of the next IRQ-load assertion, ticks in [0, SLICERT_IRQ_JITTER_TICKS]. */
uint32_t slicert_core_irq_jitter(void);
/* Slice timer expiry (slice-timer ISR). */
void slicert_core_slice_tick(void);
/* IRQ-load ISR: release the RT task; `assert_time` = programmed assertion, ticks. */
void slicert_core_rt_release(uint32_t assert_time);
/* IRQ statistics: latency (ticks) and entry time (ticks since the load started). */
void slicert_core_irq_stats(uint32_t latency, uint32_t since_start);
/* Context switch: called with interrupts masked; picks and returns the next task id. */
uint32_t slicert_core_schedule(void);
/* Body of the RT task (never returns). */
void slicert_core_rt_main(void);
/* Calibration: cal_start(N), N yield checks with nothing to yield to, cal_end. */
void slicert_calibrate(void);
/* Kernel window: start the slice timer and the IRQ load, emit kernel_start. */
void slicert_kernel_begin(void);
/* Emit kernel_end, stop slicing and the IRQ load, wait for an in-flight RT job. */
void slicert_kernel_finish(void);
/* Emit output_ready, send the output frame, the stats line; exit 0. */
void slicert_finish(const void *out, uint32_t nbytes) __attribute__((noreturn));
/* Format the stats line into buf (no libc); returns its length. */
uint32_t slicert_core_format_stats(char *buf, uint32_t size);

/* ---------------- port interface (zephyr/ports/<port>) ---------------- */

/* Boot-time init after the seed is known: clock, timers programmed (not started). */
void slicert_port_init(void);
/* Run's seed (bare-metal: "seed=<n>" from semihosting SYS_GET_CMDLINE; default 0). */
uint32_t slicert_port_seed(void);
/* Start / stop the slice timer and the IRQ load. */
void slicert_port_load_start(void);
void slicert_port_load_stop(void);
/* Free-running timebase, ticks (wraps at 2^32). */
uint32_t slicert_timebase_now(void);
/*
 * The port's "slicert_port.h" (ports/<port>/include, on the include path) provides,
 * usually as static inline:
 *   uint32_t slicert_port_irq_lock(void);      mask interrupts, return the old state
 *   void slicert_port_irq_unlock(uint32_t key);
 *   void slicert_port_request_switch(void);    ask for a context switch (PendSV)
 *   void slicert_port_switch_point(void);      called unmasked right after a request:
 *                                              the switch happens here (bare-metal: no-op,
 *                                              PendSV is taken on unmask; Zephyr: k_yield)
 *   uint32_t slicert_port_rt_block(uint32_t key);  RT task, interrupts masked (key):
 *                                              block until the next release or switch;
 *                                              return with interrupts masked (new key)
 */
/* Host I/O: output frame on stdout; one text line on stderr. */
void slicert_port_write_stdout(const void *buf, uint32_t n);
void slicert_port_write_stderr(const void *buf, uint32_t n);
/* Stack guard: exits with SLICERT_EXIT_STACK when a stack guard was overwritten. */
void slicert_port_check_stacks(void);
/* Highest stack use in bytes (kernel thread, RT task, ISRs) from the fill pattern. */
void slicert_port_stack_usage(uint32_t *kernel, uint32_t *rt, uint32_t *isr);
void slicert_port_exit(int code) __attribute__((noreturn));

#define SLICERT_ASSERT(cond)                                                               \
	do {                                                                               \
		if (!(cond)) {                                                             \
			slicert_port_exit(SLICERT_EXIT_ASSERT);                            \
		}                                                                          \
	} while (0)

#ifdef __cplusplus
}
#endif

#endif /* SLICERT_RUNTIME_H_ */
