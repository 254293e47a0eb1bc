/*
 * SliceRT trace stubs (docs/contracts.md), placed by the linker script at
 * SLICERT_TRACE_BASE = 0x0003E000:
 *   0x000..0x0FF  event stubs, id 0..127 at 2*id
 *   0x100..0x8FF  payload lane stubs, lane l (0..3), byte b (0..255) at 0x100 + l*0x200 + 2*b
 * Every stub is one 16-bit `bx lr`. The plugin watches these addresses only.
 */
	.syntax unified
	.thumb
	.section .slicert_trace, "ax", %progbits
	.global slicert_trace_base
	.type slicert_trace_base, %function
	.thumb_func
slicert_trace_base:
	.rept 128
	bx lr
	.endr
	.global slicert_trace_lanes
slicert_trace_lanes:
	.rept 4 * 256
	bx lr
	.endr
	.size slicert_trace_base, . - slicert_trace_base
