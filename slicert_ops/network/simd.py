"""The simd form's tensor intrinsic: four int8 MACs into one int32 accumulator.

``slicert_dot4_s8`` describes ``acc += sum(a[i] * b[i] for i in 0..3)`` on four consecutive
int8 values of each operand; its implementation is one ``call_extern`` of the static inline
``slicert_nn_dot4(acc, a, b)`` (:data:`DOT4_C`, emitted into each kernel that calls it, so
the kernel's C is self-contained and the runtime is unchanged). On a core with the DSP
extension (Cortex-M4: ``__ARM_FEATURE_DSP``) it is two 32-bit loads, SXTB16 of each word as
it is (bytes 0 and 2 as int16 lanes) and rotated by 8 (bytes 1 and 3) and two SMLADs, as
CMSIS-NN's DSP path does; elsewhere the same sum in plain C. The lanes need no reordering: a
dot product pairs byte i of one word with byte i of the other whichever lane they land in,
so weights packed at build time as 4-byte groups (``packing.pack_arrays``) feed SMLAD as
they are. The helper is static inline and its asm not volatile: gcc shares one operand's
loads and SXTB16s across the calls of a register block (2 pixels x 2 channels: 4 loads,
8 SXTB16, 8 SMLAD per 16 MACs).
"""

from __future__ import annotations

DOT4 = "slicert_nn_dot4"
INTRIN = "slicert_dot4_s8"

#: The helper's C, put after the includes of a kernel that calls it.
DOT4_C = r"""/* slicert_nn_dot4(acc, a, b): acc + the dot product of the four int8 values at a and b
 * (slicert_ops/network/simd.py). Unaligned words are fine: the loads are __builtin_memcpy,
 * inlined even under -ffreestanding (where a plain memcpy is a call). */
#ifndef SLICERT_NN_DOT4_DEFINED   /* once in a network's kernel.c of many kernels */
#define SLICERT_NN_DOT4_DEFINED
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
static inline __attribute__((always_inline)) uint32_t slicert_nn_sxtb16_ror8(uint32_t v)
{
    uint32_t r;

    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* void pointers: TVM declares the extern as int32_t (int32_t, void*, void*) */
static inline __attribute__((always_inline)) int32_t slicert_nn_dot4(int32_t acc, void *a,
                                                                      void *b)
{
    uint32_t wa, wb;

    __builtin_memcpy(&wa, a, sizeof(wa));
    __builtin_memcpy(&wb, b, sizeof(wb));
    acc = __smlad(__sxtb16(wa), __sxtb16(wb), acc);
    return __smlad(slicert_nn_sxtb16_ror8(wa), slicert_nn_sxtb16_ror8(wb), acc);
}
#else
static inline __attribute__((always_inline)) int32_t slicert_nn_dot4(int32_t acc, void *a,
                                                                      void *b)
{
    const int8_t *x = (const int8_t *)a, *w = (const int8_t *)b;

    return acc + (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2]
        + (int32_t)x[3] * w[3];
}
#endif
#endif
"""


def with_helper(src: str, after: str) -> str:
    """``src`` with :data:`DOT4_C` after the line ``after`` (an include), if it calls it."""
    if DOT4 + "(" not in src:
        return src
    return src.replace(after, after + "\n" + DOT4_C, 1)
