"""Cycle model cm4-v1 (board mps2-an386, Cortex-M4F) against the Cortex-M4 TRM, one
microbenchmark per rule family, through `slicert cycles --board mps2-an386`.

The method is tests/test_cycle_model.py's: a hand-written pattern repeated R times in
straight line; its cost is ``(cycles(R2) - cycles(R1)) / (R2 - R1)``. The expected values
are ARM DDI 0439 (Cortex-M4 TRM) Table 3-1 (integer and DSP instructions) and Table 7-1
(FPU); qemu/cycle_model.md ("cm4-v1") lists every rule with its source. The exception
patterns pend PendSV by software once per repetition and compare handlers, to show the
lazy FP stacking rules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SLICERT = [sys.executable, "-m", "slicert_ops.cli"]
BOARD = "mps2-an386"
R1, R2 = 8, 24

# FPU on (CPACR CP10/CP11), FPCCR = ASPEN | LSPEN (lazy stacking, the M4's reset value);
# r4 -> RAM, r5 = 4, r0-r3 = 0, s0-s31 = 1.0.
HARNESS = """\
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb
    .section .vectors, "a"
    .word 0x20010000
    .word Reset_Handler
    .rept 12
    .word Fault
    .endr
    .word PendSV_Handler
    .word SysTick_Handler
    .text
    .thumb_func
Fault:
    b Fault
    .thumb_func
PendSV_Handler:
{handler}
    bx lr
    .thumb_func
SysTick_Handler:
{systick}
    bx lr
    .thumb_func
    .global Reset_Handler
Reset_Handler:
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    ldr r0, =0xE000EF34
    mov r1, #0xC0000000
    str r1, [r0]
    dsb
    isb
    ldr r4, =0x20001000
    movs r5, #4
    ldr r6, =0xE000ED04     @ ICSR
    mov r7, #(1 << 28)      @ PENDSVSET
    movs r0, #0
    movs r1, #0
    movs r2, #0
    movs r3, #0
{fp_init}
    .align 2
    .rept {reps}
{body}
    .endr
    movs r0, #0x18          @ SYS_EXIT, ADP_Stopped_ApplicationExit
    ldr r1, =0x20026
    bkpt 0xab
9:  b 9b
    .ltorg
"""

FP_INIT = "    vmov.f32 s0, #1.0\n" + "".join(f"    vmov.f32 s{i}, s0\n" for i in range(1, 32))

LINK = """\
ENTRY(Reset_Handler)
MEMORY { FLASH (rx) : ORIGIN = 0x0, LENGTH = 0x3FF000
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
SECTIONS { .text : { KEEP(*(.vectors)) *(.text .text.*) } > FLASH }
"""

# name: (pattern, TRM cycles per repetition, rule)
PATTERNS: dict[str, tuple[str, int, str]] = {
    "alu": ("adds r2, #1", 1, "Table 3-1: data processing 1 (as cm3-v2)"),
    "mul_mla_mls": ("muls r0, r1\nmla r2, r0, r1, r2\nmls r2, r0, r1, r2", 3,
                    "Table 3-1: MUL, MLA, MLS 1"),
    "long_multiply": ("smull r0, r1, r2, r3\numull r0, r1, r2, r3", 2,
                      "Table 3-1: SMULL, UMULL 1"),
    "long_multiply_accumulate": ("smlal r0, r1, r2, r3\numlal r0, r1, r2, r3", 2,
                                 "Table 3-1: SMLAL, UMLAL 1"),
    "divide": ("sdiv r0, r1, r5\nudiv r0, r1, r5", 14,
               "Table 3-1: SDIV, UDIV 2-12: the model's constant 7"),
    "dual_multiply": ("smlad r0, r1, r2, r0\nsmladx r0, r1, r2, r0\nsmuad r0, r1, r2\n"
                      "smusd r0, r1, r2\nsmlsd r0, r1, r2, r0", 5,
                      "Table 3-1: SMLAD, SMLADX, SMUAD, SMUSD, SMLSD 1"),
    "halfword_multiply": ("smulbb r0, r1, r2\nsmultt r0, r1, r2\nsmlabb r0, r1, r2, r0\n"
                          "smulwb r0, r1, r2\nsmlawt r0, r1, r2, r0\nsmmul r0, r1, r2\n"
                          "smmla r0, r1, r2, r0", 7,
                          "Table 3-1: SMULxy, SMLAxy, SMULWy, SMLAWy, SMMUL, SMMLA 1"),
    "long_halfword_multiply": ("smlalbb r0, r1, r2, r3\nsmlaltt r0, r1, r2, r3\n"
                               "smlald r0, r1, r2, r3\nsmlsld r0, r1, r2, r3\n"
                               "umaal r0, r1, r2, r3", 5,
                               "Table 3-1: SMLALxy, SMLALD, SMLSLD, UMAAL 1"),
    "extend_16": ("sxtb16 r0, r1\nuxtb16 r0, r1\nsxtab16 r0, r1, r2\nuxtab16 r0, r1, r2\n"
                  "sxtab r0, r1, r2\nuxtah r0, r1, r2", 6,
                  "Table 3-1: SXTB16, UXTB16, SXTAB16, UXTAB16, SXTAB, UXTAH 1"),
    "simd_add": ("sadd16 r0, r1, r2\nssub16 r0, r1, r2\nsadd8 r0, r1, r2\n"
                 "qadd8 r0, r1, r2\nuhadd16 r0, r1, r2\nusub8 r0, r1, r2\nsasx r0, r1, r2",
                 7, "Table 3-1: parallel add/subtract (S, Q, SH, U, UQ, UH forms) 1"),
    "saturate": ("ssat r0, #8, r1\nusat r0, #8, r1\nssat16 r0, #8, r1\nusat16 r0, #8, r1\n"
                 "qadd r0, r1, r2\nqsub r0, r1, r2\nqdadd r0, r1, r2", 7,
                 "Table 3-1: SSAT, USAT, SSAT16, USAT16, QADD, QSUB, QDADD 1"),
    "pack_select": ("pkhbt r0, r1, r2, lsl #16\npkhtb r0, r1, r2, asr #16\n"
                    "sel r0, r1, r2\nusad8 r0, r1, r2", 4,
                    "Table 3-1: PKHBT, PKHTB, SEL, USAD8 1"),
    "dsp_to_address": ("uxtab r6, r4, r3\nldr r0, [r6]\nnop", 5,
                       "3.3.2 (as cm3-v2 rule 11): a DSP result used as the next address +1"),
    "fp_arith": ("vadd.f32 s0, s1, s2\nvsub.f32 s0, s1, s2\nvmul.f32 s0, s1, s2\n"
                 "vnmul.f32 s0, s1, s2\nvabs.f32 s0, s1\nvneg.f32 s0, s1", 6,
                 "Table 7-1: VADD, VSUB, VMUL, VNMUL, VABS, VNEG 1"),
    "fp_compare_convert": ("vcmp.f32 s0, s1\nvcmp.f32 s0, #0\nvcvt.s32.f32 s0, s1\n"
                           "vcvt.f32.s32 s0, s1\nvcvt.f32.s32 s0, s0, #16", 5,
                           "Table 7-1: VCMP, VCVT 1"),
    "fp_multiply_accumulate": ("vmla.f32 s0, s1, s2\nvmls.f32 s0, s1, s2\n"
                               "vnmla.f32 s0, s1, s2\nvfma.f32 s0, s1, s2\n"
                               "vfms.f32 s0, s1, s2", 15,
                               "Table 7-1: VMLA, VMLS, VNMLA, VFMA, VFMS 3"),
    "fp_divide_sqrt": ("vdiv.f32 s0, s1, s2\nvsqrt.f32 s0, s1", 28,
                       "Table 7-1: VDIV, VSQRT 14"),
    "fp_load_store": ("vldr s0, [r4]\nvstr s1, [r4, #4]", 4, "Table 7-1: VLDR, VSTR .32 2"),
    "fp_load_store_double": ("vldr d0, [r4]\nvstr d1, [r4, #8]", 6,
                             "Table 7-1: VLDR, VSTR .64 3"),
    "fp_load_store_multiple": ("vldm r4, {s0-s3}\nvstm r4, {s0-s3}", 10,
                               "Table 7-1: VLDM, VSTM 1 + N"),
    "fp_push_pop": ("vpush {s16-s19}\nvpop {d8-d9}", 10,
                    "Table 7-1: VPUSH, VPOP 1 + N (.64: 1 + 2N)"),
    "fp_move": ("vmov.f32 s0, #1.0\nvmov.f32 s1, s2\nvmov s3, r0\nvmov r0, s3", 4,
                "Table 7-1: VMOV immediate, register, one core register 1"),
    "fp_move_two": ("vmov s4, s5, r0, r1\nvmov r0, r1, s4, s5\nvmov d3, r0, r1", 6,
                    "Table 7-1: VMOV two core registers 2"),
    "fp_status": ("vmrs r0, fpscr\nvmsr fpscr, r0", 2, "Table 7-1: VMRS, VMSR 1"),
}


def _assemble(tmp: Path, name: str, text: str) -> Path:
    ld = tmp / f"{name}.ld"
    ld.write_text(LINK)
    src = tmp / f"{name}.S"
    src.write_text(text)
    elf = src.with_suffix(".elf")
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                    "-mfpu=fpv4-sp-d16", "-nostdlib", "-T", str(ld), "-o", str(elf),
                    str(src)], check=True)
    return elf


def _cycles(tmp: Path, name: str, body: str, reps: int, *, handler: str = "    nop",
            fp_init: bool = True, systick: str = "    nop") -> dict:
    text = HARNESS.format(reps=reps, body=body, handler=handler, systick=systick,
                          fp_init=FP_INIT if fp_init else "")
    elf = _assemble(tmp, f"{name}_{reps}", text)
    proc = subprocess.run([*SLICERT, "cycles", str(elf), "--json", "--board", BOARD],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _cost(tmp: Path, name: str, body: str, **kw: object) -> float:
    a = _cycles(tmp, name, body, R1, **kw)      # type: ignore[arg-type]
    b = _cycles(tmp, name, body, R2, **kw)      # type: ignore[arg-type]
    return (b["cycles"] - a["cycles"]) / (R2 - R1)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_trm_microbenchmark_m4(name: str, tmp_path: Path) -> None:
    body, trm, rule = PATTERNS[name]
    assert _cost(tmp_path, name, body) == trm, rule


def test_m4_classes_and_model(tmp_path: Path) -> None:
    """`slicert cycles --board mps2-an386` reports cm4-v1, and the M4 encodings are
    classified (nothing unclassified)."""
    res = _cycles(tmp_path, "cls", PATTERNS["dual_multiply"][0] + "\n"
                  + PATTERNS["fp_multiply_accumulate"][0], 4)
    assert res["cycle_model"] == "cm4-v1" and res["board"] == BOARD
    assert res["classes"]["dmul"] == 20 and res["classes"]["vmla"] == 20
    assert "unknown" not in res["classes"]


# One software-pended PendSV per repetition (set PENDSVSET in ICSR; the handler is
# `<handler>; bx lr`). Thread FP context: a VFP instruction in the thread before it.
PEND = "str r7, [r6]"
FP_THREAD = "vmov.f32 s0, s1\n" + PEND


def test_exception_entry_and_return_m4_integer(tmp_path: Path) -> None:
    """No FP context: the entry (12) and return (10) of cm3-v2, on the M4 as on the M3."""
    base = _cost(tmp_path, "pend_nop", "nop")
    pend = _cost(tmp_path, "pend", PEND)
    # the store (1) + entry 12 + handler nop 1 + bx lr 1 + return 10, less the nop
    assert pend - base == 1 + 12 + 1 + 1 + 10 - 1


def test_lazy_fp_stacking(tmp_path: Path) -> None:
    """FP context active at entry (FPCCR.LSPEN = 1): the entry costs what an integer
    frame costs; the handler's first FP instruction stacks s0-s15 + FPSCR (17 cycles)
    and the return unstacks them (17). A handler without FP instructions pays neither,
    and a handler's FP use without a thread FP context costs nothing extra."""
    int_handler = _cost(tmp_path, "fp_int", FP_THREAD)
    fp_handler = _cost(tmp_path, "fp_fp", FP_THREAD, handler="    vmov.f32 s2, s3")
    no_ctx = _cost(tmp_path, "nofp_int", PEND, fp_init=False)
    no_ctx_fp = _cost(tmp_path, "nofp_fp", PEND, fp_init=False,
                      handler="    vmov.f32 s2, s3")
    plain = _cost(tmp_path, "plain", PEND)
    assert int_handler == plain + 1                 # the thread's vmov; lazy: no stacking
    assert fp_handler == int_handler + 17 + 17      # lazy stacking + FP unstacking
    assert no_ctx_fp == no_ctx                      # handler FP, thread none: free


def test_lazy_fp_state_survives_a_tail_chain(tmp_path: Path) -> None:
    """PendSV (FP instruction: lazy save done) pends SysTick (same priority): SysTick
    tail-chains at PendSV's return. The frame stays stacked, so SysTick's own FP
    instruction stacks nothing again: it costs what a `nop` costs."""
    pend_systick = ("    vmov.f32 s2, s3\n    ldr r0, =0xE000ED04\n"
                    "    mov r1, #(1 << 26)\n    str r1, [r0]")
    nop = _cost(tmp_path, "tc_nop", FP_THREAD, handler=pend_systick)
    fp = _cost(tmp_path, "tc_fp", FP_THREAD, handler=pend_systick,
               systick="    vmov.f32 s4, s5")
    assert fp == nop
    # and with the lazy save still pending at the chain (PendSV without FP), SysTick's
    # FP instruction does it: 17 more than its nop
    lazy = _cost(tmp_path, "tc_lazy_nop", FP_THREAD, handler=pend_systick.replace(
        "vmov.f32 s2, s3", "nop"))
    lazy_fp = _cost(tmp_path, "tc_lazy_fp", FP_THREAD, handler=pend_systick.replace(
        "vmov.f32 s2, s3", "nop"), systick="    vmov.f32 s4, s5")
    assert lazy_fp == lazy + 17 + 17
