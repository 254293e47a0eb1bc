/* Host test stub of the SliceRT yield check (the real one is zephyr/include/slicert/yield.h,
 * same prototype). Counts calls in a global that the test driver defines and prints. */
#ifndef SLICERT_YIELD_H_HOST_STUB
#define SLICERT_YIELD_H_HOST_STUB

#include <stdint.h>

extern unsigned long slicert_yield_count;

static inline int32_t slicert_yield_check(void)
{
	slicert_yield_count++;
	return 0;
}

#endif
