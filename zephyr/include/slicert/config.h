/*
 * SliceRT compile-time options (Kconfig style).
 *
 * Every option is a SLICERT_* define with its default here, and only here.
 * The firmware build (slicert_ops.firmware) passes the run's options as -D flags;
 * the Zephyr port maps CONFIG_SLICERT_* (zephyr/Kconfig) onto the same names.
 * All times are microseconds of the modelled core clock (SLICERT_SYSCLK_HZ, the
 * manifest's runner.cpu_mhz): on the bare-metal port a timer tick is one modelled
 * cycle (the cycle plugin drives QEMU's virtual clock).
 */
#ifndef SLICERT_CONFIG_H_
#define SLICERT_CONFIG_H_

#include <stdint.h>

/* Zephyr: CONFIG_* come from autoconf.h, which the Zephyr build passes with -imacros. */
#if defined(__ZEPHYR__) && !defined(SLICERT_NO_KCONFIG)
#ifdef CONFIG_SLICERT_SLICE_US
#define SLICERT_SLICE_US CONFIG_SLICERT_SLICE_US
#endif
#ifdef CONFIG_SLICERT_IRQ_LOAD
#define SLICERT_IRQ_LOAD 1
#else
#define SLICERT_IRQ_LOAD 0
#endif
#ifdef CONFIG_SLICERT_IRQ_PERIOD_US
#define SLICERT_IRQ_PERIOD_US CONFIG_SLICERT_IRQ_PERIOD_US
#endif
#ifdef CONFIG_SLICERT_IRQ_JITTER_US
#define SLICERT_IRQ_JITTER_US CONFIG_SLICERT_IRQ_JITTER_US
#endif
#ifdef CONFIG_SLICERT_RT_WORK_ITERS
#define SLICERT_RT_WORK_ITERS CONFIG_SLICERT_RT_WORK_ITERS
#endif
#ifdef CONFIG_SLICERT_RT_DEADLINE_US
#define SLICERT_RT_DEADLINE_US CONFIG_SLICERT_RT_DEADLINE_US
#endif
#ifdef CONFIG_SLICERT_CAL_CHECKS
#define SLICERT_CAL_CHECKS CONFIG_SLICERT_CAL_CHECKS
#endif
#ifdef CONFIG_SLICERT_RT_STACK_SIZE
#define SLICERT_RT_STACK_SIZE CONFIG_SLICERT_RT_STACK_SIZE
#endif
/* Zephyr port: the timebase is k_cycle_get_32(); Zephyr owns the clock setup. */
#define SLICERT_SYSCLK_HZ CONFIG_SYS_CLOCK_HW_CYCLES_PER_SEC
#endif /* __ZEPHYR__ */

/* Slice budget of the kernel thread; 0 = no time slicing. Bare-metal: at most
 * 2^24 cycles (the 24-bit SysTick). */
#ifndef SLICERT_SLICE_US
#define SLICERT_SLICE_US 1000
#endif

/* Simulated interrupt load (periodic timer IRQ that releases the RT task): 0/1. */
#ifndef SLICERT_IRQ_LOAD
#define SLICERT_IRQ_LOAD 0
#endif

/* Nominal period of the IRQ load. Assertion k happens at (k+1)*period + J_k after
 * the load starts, J_k uniform in [0, SLICERT_IRQ_JITTER_US] (seeded xorshift32). */
#ifndef SLICERT_IRQ_PERIOD_US
#define SLICERT_IRQ_PERIOD_US 1000
#endif
#ifndef SLICERT_IRQ_JITTER_US
#define SLICERT_IRQ_JITTER_US 0
#endif

/* One RT job = this many iterations of a small integer loop (~4 instructions each). */
#ifndef SLICERT_RT_WORK_ITERS
#define SLICERT_RT_WORK_ITERS 100
#endif

/* Relative deadline of an RT job, counted from the IRQ assertion that released it. */
#ifndef SLICERT_RT_DEADLINE_US
#define SLICERT_RT_DEADLINE_US 500
#endif

/* Number of yield checks in the calibration run (before kernel_start). */
#ifndef SLICERT_CAL_CHECKS
#define SLICERT_CAL_CHECKS 64
#endif

/* Clock of the modelled core, Hz (runner.cpu_mhz); timer ticks per us follow from it. */
#ifndef SLICERT_SYSCLK_HZ
#define SLICERT_SYSCLK_HZ 50000000u
#endif
#define SLICERT_TICKS_PER_US (SLICERT_SYSCLK_HZ / 1000000u)
#define SLICERT_TICK_NS (1000u / SLICERT_TICKS_PER_US)

/* Stacks (bytes, multiples of 8). The kernel thread also hosts the harness. */
#ifndef SLICERT_KERNEL_STACK_SIZE
#define SLICERT_KERNEL_STACK_SIZE 4096
#endif
#ifndef SLICERT_RT_STACK_SIZE
#define SLICERT_RT_STACK_SIZE 1024
#endif
#ifndef SLICERT_ISR_STACK_SIZE
#define SLICERT_ISR_STACK_SIZE 1024
#endif

/* After the output frame, write one "SLICERT-STATS k=v ..." line to semihosting
 * stderr (never stdout, so the output frame stays the only thing on stdout). */
#ifndef SLICERT_STATS_STDERR
#define SLICERT_STATS_STDERR 1
#endif

/* Fixed flash address of the trace stubs (docs/contracts.md). */
#ifndef SLICERT_TRACE_BASE
#define SLICERT_TRACE_BASE 0x0003E000u
#endif

/* ---- derived values and sanity checks ---- */
#define SLICERT_SLICE_TICKS ((uint32_t)SLICERT_SLICE_US * SLICERT_TICKS_PER_US)
#define SLICERT_IRQ_PERIOD_TICKS ((uint32_t)SLICERT_IRQ_PERIOD_US * SLICERT_TICKS_PER_US)
#define SLICERT_IRQ_JITTER_TICKS ((uint32_t)SLICERT_IRQ_JITTER_US * SLICERT_TICKS_PER_US)
#define SLICERT_RT_DEADLINE_TICKS ((uint32_t)SLICERT_RT_DEADLINE_US * SLICERT_TICKS_PER_US)

#if SLICERT_IRQ_LOAD && (SLICERT_IRQ_PERIOD_US < 5)
#error "SLICERT_IRQ_PERIOD_US must be >= 5"
#endif
#if SLICERT_IRQ_LOAD && (SLICERT_IRQ_JITTER_US >= SLICERT_IRQ_PERIOD_US)
#error "SLICERT_IRQ_JITTER_US must be smaller than SLICERT_IRQ_PERIOD_US"
#endif
#if (SLICERT_KERNEL_STACK_SIZE % 8) || (SLICERT_RT_STACK_SIZE % 8) || (SLICERT_ISR_STACK_SIZE % 8)
#error "SliceRT stack sizes must be multiples of 8 bytes"
#endif

#endif /* SLICERT_CONFIG_H_ */
