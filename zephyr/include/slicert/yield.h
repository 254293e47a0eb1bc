/*
 * The yield check the generated kernel calls once per micro-tile.
 *
 *     int32_t slicert_yield_check(void);
 *
 * returns 0 when nothing happened, else the reason bits of the switch it requested
 * (SLICERT_REASON_SLICE = 1: the slice budget expired, SLICERT_REASON_RT = 2: the RT
 * task is ready). The kernel ignores the value; the switch itself happens right after
 * the check (PendSV on the bare-metal port, k_yield() on the Zephyr port), and the
 * kernel resumes exactly where it stopped.
 *
 * Fast path (nothing pending): the tile_end event (one `bl`, clobbers only lr), one
 * load of slicert_pending, one branch. The decision path (slicert_yield_slow) runs
 * with interrupts masked, emits `yield` with the reason bits and pends the switch.
 *
 * It is a `static inline` function (not a macro), so a TVM-emitted declaration
 *     int32_t slicert_yield_check(void);      (or with `extern`)
 * is accepted *after* `#include "slicert/yield.h"`: by C99 6.2.2p4 the later
 * declaration takes the internal linkage of the inline definition. Include this
 * header before any such declaration (a declaration *before* the include is a
 * "static declaration follows non-static" error).
 */
#ifndef SLICERT_YIELD_H_
#define SLICERT_YIELD_H_

#include <stdint.h>
#include "slicert/trace.h"

#define SLICERT_REASON_SLICE 1u
#define SLICERT_REASON_RT 2u

#ifdef __cplusplus
extern "C" {
#endif

/* Reason bits set by the slice timer / IRQ load, consumed by the switch. */
extern volatile uint32_t slicert_pending;

/* Decision path: masked; emits `yield`, pends the switch; returns the reason bits. */
uint32_t slicert_yield_slow(void);

static inline __attribute__((always_inline)) int32_t slicert_yield_check(void)
{
	slicert_trace(SLICERT_EV_TILE_END);
	if (__builtin_expect(slicert_pending != 0u, 0)) {
		return (int32_t)slicert_yield_slow();
	}
	return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* SLICERT_YIELD_H_ */
