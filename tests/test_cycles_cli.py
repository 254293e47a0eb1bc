"""`slicert cycles` on a user's own program: its output (semihosting, UART0) is shown and
kept in --json, and its flash is its own up to 256 KiB (the trace-stub region from 0x3E000
is reserved only for ELFs that link the SliceRT stubs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_cycle_model import HARNESS, ROOT, SLICERT, _assemble

pytestmark = pytest.mark.integration

PRINT = """\
    movs r0, #4                 @ SYS_WRITE0
    ldr r1, =msg
    bkpt 0xab
    movs r0, #3                 @ SYS_WRITEC
    ldr r1, =bang
    bkpt 0xab
    ldr r2, =0x4000C000         @ UART0 data register
    ldr r3, =umsg
1:  ldrb r0, [r3], #1
    cbz r0, 2f
    str r0, [r2]
    b 1b
msg: .asciz "semihosting: hello\\n"
bang: .asciz "!"
umsg: .asciz "\\nuart0: hello\\n"
    .align 1
2:
"""

# a user's linker script for the whole 256 KiB of flash; `far` lands at FAR
LINK_256K = """\
ENTRY(Reset_Handler)
MEMORY {{ FLASH (rx) : ORIGIN = 0x0, LENGTH = 256K
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 64K }}
SECTIONS {{ .text : {{ KEEP(*(.vectors)) *(.text) . = {far:#x}; *(.text.far) }} > FLASH }}
"""
FAR_LOOP = """\
    movs r4, #200
    bl far
    .section .text.far, "ax"
    .thumb_func
far:
{stub}
1:  adds r2, #1
    subs r4, #1
    bne 1b
    bx lr
    .text
"""
# the SliceRT runtime's stubs (zephyr/ports/common/trace_stubs.S): event 0 at the base
STUB = """\
    .section .text.stubs, "ax"
    .global slicert_trace_base
    .thumb_func
slicert_trace_base:
    bx lr
"""


def _cycles(elf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLICERT, "cycles", str(elf), *extra], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_guest_output_in_json_and_shown(tmp_path: Path) -> None:
    elf = _assemble(tmp_path, "hello", HARNESS.format(reps=1, body=PRINT))
    want = "semihosting: hello\n!\nuart0: hello\n"
    res = _cycles(elf, "--json")                  # stdout not a terminal: not shown
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    assert figures["guest_output"] == want and figures["trace_events"] == 0
    assert "uart0: hello" not in res.stderr

    shown = _cycles(elf, "--show-output")
    assert shown.returncode == 0, shown.stderr
    assert f"(UART0, semihosting) ---\n{want}--- end of guest output ---\n" in shown.stderr
    assert f"cycles        {figures['cycles']}" in shown.stdout
    assert "uart0: hello" not in shown.stdout
    with_json = _cycles(elf, "--json", "--show-output")
    assert json.loads(with_json.stdout) == figures and want in with_json.stderr
    assert _cycles(elf, "--no-show-output").stderr == ""


def test_flash_up_to_256k_is_the_programs_own(tmp_path: Path) -> None:
    """Code in the trace-stub region (0x3E000..0x3E8FF) costs what it costs elsewhere and
    marks no events; an ELF with the SliceRT stubs keeps the region (its events count)."""
    runs = {}
    for name, far in (("low", 0x20000), ("overlap", 0x3E000)):
        elf = _assemble(tmp_path, name, HARNESS.format(reps=1, body=FAR_LOOP.format(stub="")),
                        LINK_256K.format(far=far))
        res = _cycles(elf, "--json")
        assert res.returncode == 0, res.stderr
        runs[name] = json.loads(res.stdout)
    assert runs["overlap"]["trace_events"] == 0
    assert runs["overlap"]["cycles"] == runs["low"]["cycles"]
    assert runs["overlap"]["instructions"] == runs["low"]["instructions"]

    elf = _assemble(tmp_path, "stubs", HARNESS.format(reps=1, body=FAR_LOOP.format(
        stub="    push {lr}\n    bl slicert_trace_base\n    pop {lr}\n")) + STUB,
        LINK_256K.format(far=0x20000).replace("*(.text.far)", "*(.text.far) . = 0x3E000;"
                                              " *(.text.stubs)"))
    res = _cycles(elf, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["trace_events"] == 1
