/*
 * SliceRT trace events: code-address markers (docs/contracts.md).
 *
 * An event is marked by *calling* a one-instruction stub (`bx lr`) at a fixed flash
 * address: event `id` at SLICERT_TRACE_BASE + 2*id, payload byte `b` of lane `l`
 * (bits 8l..8l+7) at SLICERT_TRACE_BASE + 0x100 + l*0x200 + 2*b. The cycle plugin
 * watches only those addresses. The stubs are in ports/<port>/trace_stubs.S.
 *
 * Cost: an event is one `bl` (+ the stub's `bx lr`) and clobbers only lr, so it does
 * not disturb the caller's registers. A payload adds one `blx` per non-zero byte
 * (a zero byte ORs nothing, so it is skipped) and runs with interrupts masked, so
 * an interrupt cannot slip its own event between our lane stubs and our event.
 */
#ifndef SLICERT_TRACE_H_
#define SLICERT_TRACE_H_

#include <stdint.h>
#include "slicert/config.h"

/* Event ids: the same numbers as slicert_ops/sim/events.py. */
#define SLICERT_EV_KERNEL_START 0
#define SLICERT_EV_KERNEL_END 1
#define SLICERT_EV_TILE_END 2
#define SLICERT_EV_SLICE_EXPIRE 3
#define SLICERT_EV_PENDSV_ENTER 4
#define SLICERT_EV_PENDSV_EXIT 5
#define SLICERT_EV_IRQ_ENTER 6
#define SLICERT_EV_IRQ_EXIT 7
#define SLICERT_EV_RT_RELEASE 8
#define SLICERT_EV_RT_START 9
#define SLICERT_EV_RT_END 10
#define SLICERT_EV_YIELD 11
#define SLICERT_EV_CAL_START 12
#define SLICERT_EV_CAL_END 13
#define SLICERT_EV_BOOT 14
#define SLICERT_EV_OUTPUT_READY 15
#define SLICERT_EV_TICK_ENTER 16
#define SLICERT_EV_TICK_EXIT 17

#define SLICERT_TRACE_MAX_ID 127
#define SLICERT_TRACE_LANE_OFFSET 0x100u
#define SLICERT_TRACE_LANE_STRIDE 0x200u
#define SLICERT_TRACE_SIZE 0x900u

#define SLICERT_STR_(x) #x
#define SLICERT_STR(x) SLICERT_STR_(x)

#if defined(__arm__) && !defined(SLICERT_TRACE_DISABLE)

/*
 * Event without payload: `bl slicert_trace_base + 2*id`. `id` must be a compile-time
 * constant and the code built with optimisation (-O1 or more: the firmware uses -O2),
 * so that the constant reaches the "i" operand through the always_inline call.
 */
static inline __attribute__((always_inline)) void slicert_trace(uint32_t id)
{
	__asm__ volatile("bl slicert_trace_base + %c0" : : "i"(2u * id) : "lr", "memory");
}

/* Call one payload lane stub; `addr` includes the Thumb bit. */
static inline __attribute__((always_inline)) void slicert_trace_lane_call_(uint32_t addr)
{
	__asm__ volatile("blx %0" : : "r"(addr) : "lr", "memory");
}

static inline __attribute__((always_inline)) uint32_t slicert_trace_mask_(void)
{
	uint32_t key;

	__asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(key) : : "memory");
	return key;
}

static inline __attribute__((always_inline)) void slicert_trace_unmask_(uint32_t key)
{
	__asm__ volatile("msr primask, %0" : : "r"(key) : "memory");
}

/* Set the pending payload (lanes), no event yet. Caller must have interrupts masked. */
static inline __attribute__((always_inline)) void slicert_trace_payload_lanes(uint32_t value)
{
	uint32_t lane;

#pragma GCC unroll 4
	for (lane = 0; lane < 4u; lane++) {
		uint32_t byte = (value >> (8u * lane)) & 0xffu;

		if (byte != 0u) {
			slicert_trace_lane_call_(SLICERT_TRACE_BASE + SLICERT_TRACE_LANE_OFFSET +
						 lane * SLICERT_TRACE_LANE_STRIDE + 2u * byte + 1u);
		}
	}
}

/* Event with a 32-bit payload, atomic with respect to interrupts. */
static inline __attribute__((always_inline)) void slicert_trace_payload(uint32_t id,
									 uint32_t value)
{
	uint32_t key = slicert_trace_mask_();

	slicert_trace_payload_lanes(value);
	slicert_trace(id);
	slicert_trace_unmask_(key);
}

#else /* host builds (unit tests of the core) or tracing compiled out */
static inline void slicert_trace(uint32_t id) { (void)id; }
static inline void slicert_trace_payload(uint32_t id, uint32_t value) { (void)id; (void)value; }
static inline void slicert_trace_payload_lanes(uint32_t value) { (void)value; }
#endif

#endif /* SLICERT_TRACE_H_ */
