/*
 * SliceRT networks: layer-boundary trace events and the int8 requantisation helper the
 * generated layer kernels call (slicert_ops/network).
 *
 * Trace events (docs/networks.md; same numbers as slicert_ops/network/events.py):
 *   32 layer_start  before a layer's kernel is called   payload: op index in the network
 *   33 layer_end    after it returns                    payload: op index
 *
 * slicert_nn_requantize(x, m, shift) is TFLite's MultiplyByQuantizedMultiplier (the default,
 * double-rounding one of tensorflow/lite/kernels/internal/common.h):
 *   RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift,0), m),
 *                       max(-shift, 0)).
 * SaturatingRoundingDoublingHighMul divides (ab + nudge) by 2^31 truncating toward zero with
 * nudge = ab >= 0 ? 2^30 : 1 - 2^30; that equals (ab + 2^30) >> 31 (arithmetic shift) for
 * every ab, which is what is computed here (as CMSIS-NN's arm_nn_requantize does), keeping
 * gemmlowp's saturation of INT32_MIN * INT32_MIN. The numpy reference implements the
 * TFLite formula literally; the tests check both agree bit for bit.
 */
#ifndef SLICERT_NETWORK_H_
#define SLICERT_NETWORK_H_

#include <stdint.h>
#include "slicert/trace.h"

#define SLICERT_EV_LAYER_START 32
#define SLICERT_EV_LAYER_END 33

static inline __attribute__((always_inline)) int32_t slicert_nn_srdhm(int32_t a, int32_t b)
{
	if (a == b && a == INT32_MIN) {
		return INT32_MAX;
	}
	return (int32_t)(((int64_t)a * (int64_t)b + (int64_t)(1 << 30)) >> 31);
}

static inline __attribute__((always_inline)) int32_t slicert_nn_rdbypot(int32_t x, int32_t e)
{
	const int32_t mask = (int32_t)((1u << e) - 1u);
	const int32_t remainder = x & mask;
	const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);

	return (x >> e) + (remainder > threshold ? 1 : 0);
}

static inline __attribute__((always_inline)) int32_t slicert_nn_requantize(int32_t x, int32_t m,
									    int32_t shift)
{
	const int32_t left = shift > 0 ? shift : 0;
	const int32_t right = shift > 0 ? 0 : -shift;

	return slicert_nn_rdbypot(slicert_nn_srdhm((int32_t)((uint32_t)x << left), m), right);
}

/*
 * slicert_nn_requantize with the shift split at build time (left = max(shift, 0), right =
 * max(-shift, 0), mask = 2^right - 1), for a multiplier other than INT32_MIN (the block
 * form's packer checks it: the only multiplier for which the doubling high multiply
 * saturates). The same result, without branches: the requantisation of the register-blocked
 * kernels.
 */
static inline __attribute__((always_inline)) int32_t
slicert_nn_requantize_lr(int32_t x, int32_t m, int32_t left, int32_t right, int32_t mask)
{
	const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * (int64_t)m;
	const int32_t hi = (int32_t)((ab + (int64_t)(1 << 30)) >> 31);
	const int32_t threshold = (mask >> 1) + (int32_t)((uint32_t)hi >> 31);

	return (hi >> right) + ((hi & mask) > threshold ? 1 : 0);
}

/* Layer boundaries, emitted by the generated network function. */
static inline __attribute__((always_inline)) void slicert_nn_layer_start(uint32_t index)
{
	slicert_trace_payload(SLICERT_EV_LAYER_START, index);
}

static inline __attribute__((always_inline)) void slicert_nn_layer_end(uint32_t index)
{
	slicert_trace_payload(SLICERT_EV_LAYER_END, index);
}

#endif /* SLICERT_NETWORK_H_ */
