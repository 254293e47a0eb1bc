/*
 * SliceRT microbench harness (bare-metal and Zephyr).
 *
 * boot -> calibration (cal_start N / N yield checks / cal_end) -> kernel_start ->
 * kernel(inputs..., output) -> kernel_end -> wait for an in-flight RT job ->
 * output_ready -> "SLICERT-OUT <n>\n" + output bytes on stdout -> exit 0.
 *
 * "slicert_data.h" is generated per build (slicert_ops.firmware): the input and
 * weight arrays (const, in flash), the output buffer (.bss), the kernel prototype
 * and SLICERT_KERNEL_INVOKE().
 */
#include "slicert/runtime.h"
#include "slicert_data.h"

int main(void)
{
	slicert_calibrate();
	slicert_kernel_begin();
	SLICERT_KERNEL_INVOKE();
	slicert_kernel_finish();
	slicert_finish(slicert_output, SLICERT_OUTPUT_BYTES);
	return SLICERT_EXIT_ASSERT; /* not reached */
}
