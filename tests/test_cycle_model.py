"""Cycle model cm3-v2 against the Cortex-M3 TRM, rule by rule, through `slicert cycles`.

Each microbenchmark is a hand-written instruction pattern repeated R times in straight
line between a fixed prologue and a semihosting exit. The pattern's cost is
``(cycles(R2) - cycles(R1)) / (R2 - R1)`` of two builds, as one measures a core: the
prologue, the exit and the last repetition's context cancel out. The expected value is
the TRM's (qemu/cycle_model.md cites each rule).
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
R1, R2 = 8, 24

HARNESS = """\
    .syntax unified
    .cpu cortex-m3
    .thumb
    .section .vectors, "a"
    .word 0x20010000
    .word Reset_Handler
    .text
    .thumb_func
    .global Reset_Handler
Reset_Handler:
    ldr r4, =0x20001000
    movs r5, #4
    movs r0, #0
    movs r1, #0
    movs r2, #0
    movs r3, #0
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

LINK = """\
ENTRY(Reset_Handler)
MEMORY { FLASH (rx) : ORIGIN = 0x0, LENGTH = 0x3E000
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 64K }
SECTIONS { .text : { KEEP(*(.vectors)) *(.text .text.*) } > FLASH }
"""

# name: (pattern, TRM cycles per repetition at ws=0, rule)
PATTERNS: dict[str, tuple[str, int, str]] = {
    "alu": ("adds r2, #1", 1, "Table 3-1: data processing 1"),
    "two_loads_alu": ("ldr r0, [r4]\nldr r1, [r4, #4]\nadds r2, #1", 4,
                      "3.3.2: neighbouring loads pipeline (N loads = N + 1)"),
    "three_loads": ("ldr r0, [r4, r5]\nldr r1, [r4]\nldr r2, [r4, #4]\nadds r3, #1", 5,
                    "3.3.2: LDR R0,[R1,R5]; LDR R1,[R2]; LDR R2,[R3,#4] = 4"),
    "str_imm_alu": ("str r0, [r4, #8]\nadds r2, #1", 2, "3.3.2: STR Rx,[Ry,#imm] is 1"),
    "str_reg_alu": ("str r0, [r4, r5]\nadds r2, #1", 3, "Table 3-1: STR 2"),
    "ldr_str_reg": ("ldr r0, [r4]\nstr r1, [r4, r5]", 3,
                    "3.3.2: LDR R0,[R1,R2]; STR R1,[R3,R2] = 3"),
    "str_then_ldr": ("str r0, [r4, r5]\nldr r1, [r4]\nadds r2, #1", 5,
                     "3.3.2: nothing pipelines after a store"),
    "load_use_address": ("ldr r6, [r4]\nldr r0, [r6, #0]\nmov r6, r4", 5,
                         "3.3.2: pipelined only if the address does not use the loaded value"),
    "alu_to_address": ("adds r6, r4, #0\nldr r0, [r6]", 4,
                       "3.3.2: address from the previous data-processing result: +1"),
    "cmp_bne_not_taken": ("cmp r0, r0\nbne 9f", 2, "Table 3-1: B<cc> not taken 1"),
    "cmp_beq_taken_aligned": ("cmp r0, r0\nbeq.n 1f\nnop\nnop\n1: adds r2, #1\nnop", 5,
                              "Table 3-1: B<cc> taken 1 + P, P = 1 (aligned target)"),
    "b_aligned": ("b.n 1f\nnop\n1: adds r2, #1\nnop", 4, "Table 3-1: B 1 + P, P = 1"),
    "b_unaligned_wide": ("b.n 1f\nnop\nnop\n1: adds.w r2, r2, #1\nnop", 5,
                         "P = 2 for a 32-bit target at a halfword address"),
    "it_folded": ("adds r2, #0\nit eq\nmoveq r1, r1", 2,
                  "3.3.1: IT folds onto a preceding 16-bit instruction"),
    "it_after_wide": ("adds.w r2, r2, #0\nit eq\nmoveq r1, r1", 3, "IT not folded: 1"),
    "ldrd": ("ldrd r0, r1, [r4]\nadds r2, #1", 4, "3.3.2: LDRD 3, not pipelined"),
    "ldm4": ("ldm r4, {r0, r1, r2, r3}\nadds r6, #1", 6, "Table 3-1: LDM 1 + N"),
    "push_pop": ("push {r0, r1}\npop {r0, r1}", 6, "Table 3-1: PUSH/POP 1 + N"),
    "mul_mla": ("muls r0, r1\nmla r2, r0, r1, r2", 3, "Table 3-1: MUL 1, MLA 2"),
    "bl_bx": ("bl 1f\nb 2f\n.align 2\n1: bx lr\nnop\n2: nop\nnop", 8,
              "Table 3-1: BL 1 + P, BX 1 + P, B 1 + P (P = 1: aligned targets)"),
}


def _assemble(tmp: Path, name: str, text: str, link: str = LINK) -> Path:
    """tmp/name.S assembled and linked (code from 0x0) into tmp/name.elf."""
    ld = tmp / f"{name}.ld"
    ld.write_text(link)
    src = tmp / f"{name}.S"
    src.write_text(text)
    elf = src.with_suffix(".elf")
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-nostdlib",
                    "-T", str(ld), "-o", str(elf), str(src)], check=True)
    return elf


def _cycles(tmp: Path, name: str, body: str, reps: int, ws: int = 0) -> dict:
    elf = _assemble(tmp, f"{name}_{reps}", HARNESS.format(reps=reps, body=body))
    args = [*SLICERT, "cycles", str(elf), "--json"] + (["--ws", str(ws)] if ws else [])
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _pattern_cost(tmp: Path, name: str, body: str, ws: int = 0) -> float:
    a = _cycles(tmp, name, body, R1, ws)
    b = _cycles(tmp, name, body, R2, ws)
    return (b["cycles"] - a["cycles"]) / (R2 - R1)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_trm_microbenchmark(name: str, tmp_path: Path) -> None:
    body, trm, rule = PATTERNS[name]
    assert _pattern_cost(tmp_path, name, body) == trm, rule


def test_flash_wait_states_stall_refills_and_fetches(tmp_path: Path) -> None:
    """ws = 2: a refill from flash costs P + ws, and straight-line code waits for its
    fetches (32-bit words at 1 + ws cycles each)."""
    b0 = _pattern_cost(tmp_path, "b0", PATTERNS["b_aligned"][0], ws=0)
    b2 = _pattern_cost(tmp_path, "b2", PATTERNS["b_aligned"][0], ws=2)
    # b: 1 + (1 + 2) refill; adds, nop: 2; the b's word arrives 3 cycles into the block,
    # one after the adds and nop could have issued it: 1 stall
    assert (b0, b2) == (4, 7)
    alu32 = "adds.w r2, r2, #1"                      # one 32-bit word per instruction
    assert _pattern_cost(tmp_path, "w0", alu32, ws=0) == 1
    assert _pattern_cost(tmp_path, "w2", alu32, ws=2) == 3


def test_cycles_cli_reports_classes_and_errors(tmp_path: Path) -> None:
    res = _cycles(tmp_path, "cls", PATTERNS["two_loads_alu"][0], 10)
    assert set(res) >= {"instructions", "cycles", "classes", "cycle_model"}
    assert res["cycle_model"] == "cm3-v2"
    assert res["classes"]["ldr"] >= 20 and res["classes"]["alu"] >= 10
    assert sum(res["classes"].values()) == res["instructions"]
    text = subprocess.run([*SLICERT, "cycles", str(tmp_path / "cls_10.elf")],
                          capture_output=True, text=True, cwd=ROOT)
    assert text.returncode == 0 and "cycles" in text.stdout and "ldr" in text.stdout
    missing = subprocess.run([*SLICERT, "cycles", str(tmp_path / "nope.elf")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "nope.elf" in missing.stderr
    bad = subprocess.run([*SLICERT, "cycles", str(tmp_path / "cls_10.elf"), "--ws", "x"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2


def test_cycles_cli_nonzero_exit_and_hang(tmp_path: Path) -> None:
    exit3 = HARNESS.replace("ldr r1, =0x20026\n    bkpt 0xab",
                            "movs r0, #0x20\n    ldr r1, =args\n    bkpt 0xab").replace(
        "    .ltorg", "    .ltorg\n    .align 2\nargs: .word 0x20026, 3")
    hang = HARNESS.replace("movs r0, #0x18", "8: b 8b")
    for name, text in (("exit3", exit3), ("hang", hang)):
        _assemble(tmp_path, name, text.format(reps=1, body="nop"))
    proc = subprocess.run([*SLICERT, "cycles", str(tmp_path / "exit3.elf")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "exited with code 3" in proc.stderr
    proc = subprocess.run([*SLICERT, "cycles", str(tmp_path / "hang.elf"), "--timeout", "2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "no semihosting exit within 2 s" in proc.stderr


IRQ_HARNESS = """\
    .syntax unified
    .cpu cortex-m3
    .thumb
    .section .vectors, "a"
    .word 0x20010000
    .word Reset_Handler
    .rept 13
    .word Fault
    .endr
    .word SysTick_Handler
    .text
    .thumb_func
Fault:
    b Fault
    .thumb_func
SysTick_Handler:
    ldr r0, =0x20002000
    ldr r1, [r0]
    adds r1, #1
    str r1, [r0]
    bx lr
    .thumb_func
    .global Reset_Handler
Reset_Handler:
    ldr r4, =0x20002000
    movs r0, #0
    str r0, [r4]
{setup}
loop:
{body}
    ldr r0, [r4]
    cmp r0, #{ticks}
    blo loop
    movs r0, #0x18
    ldr r1, =0x20026
    bkpt 0xab
    .ltorg
"""

SYSTICK_ON = """\
    ldr r0, =0xE000E010
    ldr r1, ={reload}
    str r1, [r0, #4]
    movs r1, #0
    str r1, [r0, #8]
    movs r1, #7             @ processor clock, interrupt, enable
    str r1, [r0]
"""


def _irq_run(tmp: Path, name: str, body: str, *, reload: int, ticks: int) -> list:
    from slicert_ops.sim import events as ev
    from slicert_ops.sim.qemu import run_firmware

    elf = _assemble(tmp, name, IRQ_HARNESS.format(setup=SYSTICK_ON.format(reload=reload),
                                                  body=body, ticks=ticks))
    res = run_firmware(elf, seed=0, out_dir=tmp / name, timeout_s=30)
    assert res.exit_code == 0, res.stderr
    return [e for e in res.events if e.id == ev.EXC_ENTRY and e.payload == 15]


def test_irq_latency_is_the_entry_and_shows_masked_windows(tmp_path: Path) -> None:
    """SysTick every 1000 cycles. In a loop of 1-cycle ALU instructions the interrupt is
    taken at the next instruction boundary: assertion to handler = the 12-cycle entry (13
    when it lands on the 2-cycle loop branch). With interrupts masked (PRIMASK) for 200
    cycles of every ~500, latencies up to the rest of the masked window show."""
    alu = "    .rept 400\n    adds r2, #1\n    .endr"
    entries = _irq_run(tmp_path, "alu", alu, reload=999, ticks=20)
    assert len(entries) == 20
    pend = [e.pend for e in entries]
    assert {b - a for a, b in zip(pend, pend[1:], strict=False)} == {1000}
    lat = [e.cycles - e.pend for e in entries]
    assert min(lat) == 12 and set(lat) <= {12, 13, 14, 15}, lat
    masked = ("    .rept 300\n    adds r2, #1\n    .endr\n    cpsid i\n"
              "    .rept 200\n    adds r2, #1\n    .endr\n    cpsie i")
    lat = [e.cycles - e.pend for e in _irq_run(tmp_path, "masked", masked, reload=999,
                                                ticks=30)]
    assert min(lat) == 12 and max(lat) > 100
    assert sum(1 for x in lat if x > 20) >= 5       # the masked window is in the spread


# DWT_CYCCNT enabled as on silicon (r0 = DWT base after it), and an exit with code r6
DWT_ENABLE = """\
    ldr r0, =0xE000EDFC
    ldr r1, =0x01000000
    str r1, [r0]                @ DEMCR.TRCENA
    ldr r0, =0xE0001000
    movs r1, #1
    str r1, [r0]                @ DWT_CTRL.CYCCNTENA
"""
EXIT_WITH_R6 = """\
    ldr r1, =0x20003000         @ SYS_EXIT_EXTENDED block: reason, code
    ldr r2, =0x20026
    str r2, [r1]
    str r6, [r1, #4]
    movs r0, #0x20
    bkpt 0xab
    .ltorg
"""


def test_dwt_cycle_counter_reads_modelled_cycles(tmp_path: Path) -> None:
    """DWT_CYCCNT, enabled as on silicon (DEMCR.TRCENA, DWT_CTRL.CYCCNTENA), counts
    modelled cycles: two reads around 100 one-cycle instructions differ by 100 plus the
    second read's own 2 cycles. The program exits with that difference - 100."""
    from slicert_ops.sim.qemu import run_firmware

    body = DWT_ENABLE + """\
    ldr r5, [r0, #4]            @ CYCCNT
    .rept 100
    adds r2, #1
    .endr
    ldr r6, [r0, #4]            @ CYCCNT
    subs r6, r6, r5
    subs r6, #100
""" + EXIT_WITH_R6
    elf = _assemble(tmp_path, "dwt", HARNESS.split("    .align 2\n    .rept")[0] + body)
    res = run_firmware(elf, seed=0, out_dir=tmp_path / "run", timeout_s=30)
    assert res.exit_code == 2, (res.exit_code, res.stderr)


MASKED_LOADS = IRQ_HARNESS.split("{setup}")[0] + "{setup}\n" + DWT_ENABLE + """\
    cpsid i
    ldr r5, [r0, #4]            @ CYCCNT
    .rept 300
    ldr r1, [r4]
    .endr
    ldr r6, [r0, #4]            @ CYCCNT
    cpsie i
    subs r6, r6, r5
    subs r6, #250
""" + EXIT_WITH_R6


def test_a_masked_interrupt_does_not_change_instruction_costs(tmp_path: Path) -> None:
    """300 pipelined loads (rule 7: 1 cycle each after the first) with PRIMASK set, timed by
    DWT_CYCCNT, while SysTick expires every 38 cycles: the pended interrupt cannot be taken,
    so the loads cost what they cost without SysTick (an exit from the block at each expiry
    used to restart it at that load, which then lost its pipelining: +1 per expiry). The
    program exits with the count difference - 250 (300 loads + the second read's 1 = 301,
    and 1 more wherever QEMU starts a new block inside the loads)."""
    from slicert_ops.sim import events as ev
    from slicert_ops.sim.qemu import run_firmware

    codes, entries = {}, {}
    systick_off = SYSTICK_ON.replace("movs r1, #7 ", "movs r1, #0 ")  # same code, same layout
    assert systick_off != SYSTICK_ON
    for name, setup in (("quiet", systick_off.format(reload=37)),
                        ("systick", SYSTICK_ON.format(reload=37))):
        elf = _assemble(tmp_path, name, MASKED_LOADS.format(setup=setup))
        res = run_firmware(elf, seed=0, out_dir=tmp_path / name, timeout_s=30)
        codes[name] = res.exit_code
        entries[name] = [e for e in res.events if e.id == ev.EXC_ENTRY and e.payload == 15]
    assert codes["systick"] == codes["quiet"], codes
    assert 51 <= codes["quiet"] <= 60, codes     # 301, + 1 per block boundary in the loads
    assert not entries["quiet"]
    # SysTick did expire inside the masked window, and was taken only after it
    window = [e for e in entries["systick"] if e.cycles - e.pend > 30]
    assert window, entries["systick"]
