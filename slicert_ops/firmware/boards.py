"""The boards the firmware build supports (``runner.board``): port, linker script,
memory regions, handlers and board-specific defines.

- lm3s6965evb: QEMU ``-M lm3s6965evb``, port baremetal-cm3, 248 KiB flash / 64 KiB SRAM,
  IRQ load GPTM Timer0A (IRQ 19), trace base 0x3E000;
- mps2-an385: QEMU ``-M mps2-an385``, port baremetal-an385, 4 MiB - 4 KiB code RAM / 4 MiB
  SRAM, IRQ load CMSDK dual timer 1 (IRQ 10), trace base 0x3FF000;
- mps2-an386: QEMU ``-M mps2-an386`` (Cortex-M4 with FPU, the AN385's CMSDK peripherals and
  memory map), port baremetal-an386 (the an385 port plus the FPU: CPACR at reset, lazy
  stacking, an FP-aware PendSV), ``-mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16``,
  cycle model cm4-v1.

Both ports share ``zephyr/ports/common`` (handlers, linker sections, the C half in
``cm3_baremetal.h``); the host-side facts (IRQ-load exception, trace base) are in
:mod:`slicert_ops.sim.events`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from slicert_ops.errors import StageError
from slicert_ops.sim import events as ev

DEFAULT_BOARD = "lm3s6965evb"


@dataclass(frozen=True)
class Board:
    name: str                       # runner.board
    machine: str                    # QEMU -M
    port: str                       # zephyr/ports/<port>
    linker_script: str              # in the port folder
    irq_load_handler: str           # the IRQ-load timer's handler symbol
    flash_bytes: int                # region FLASH (code, constants, .data image)
    ram_bytes: int                  # region RAM (stacks, .data, .bss)
    regions: dict[str, str]         # linker region -> plain words (for "does not fit")
    board_clock_ns: int             # QEMU's CPU clock period (one modelled cycle)
    #: QEMU stretches a ptimer period below 10 us of virtual time to 10 us: the shortest
    #: exact timer interval, in cycles (0 = no limit checked on this board).
    min_timer_cycles: int = 0
    defines: dict[str, str] = field(default_factory=dict)
    #: gcc's core flags (the build's other flags are every board's)
    cpu_flags: tuple[str, ...] = ("-mcpu=cortex-m3",)

    @property
    def trace_base(self) -> int:
        return ev.trace_base(self.name)

    @property
    def irq_load_exception(self) -> int:
        return ev.irq_load_exception(self.name)

    @property
    def handler_symbols(self) -> tuple[str, ...]:
        return ("Reset_Handler", "NMI_Handler", "HardFault_Handler", "PendSV_Handler",
                "SysTick_Handler", self.irq_load_handler, "Default_Handler")


_AN385 = Board(
    name="mps2-an385", machine="mps2-an385", port="baremetal-an385",
    linker_script="an385.ld", irq_load_handler="DualTimer_Handler",
    flash_bytes=0x3FF000, ram_bytes=4 * 1024 * 1024,
    regions={
        "FLASH": "code RAM for code and constant data (inputs, weights): 4 MiB - 4 KiB "
                 "at 0x00000000",
        "RAM": "SRAM for stacks, output buffer and variables: 4 MiB at 0x20000000",
        "TRACE": "trace stubs: 2.25 KiB at 0x003FF000",
    },
    board_clock_ns=40, min_timer_cycles=250,
    defines={"SLICERT_TRACE_BASE": "0x003FF000u"})

BOARDS: dict[str, Board] = {
    "lm3s6965evb": Board(
        name="lm3s6965evb", machine="lm3s6965evb", port="baremetal-cm3",
        linker_script="lm3s6965.ld", irq_load_handler="Timer0A_Handler",
        flash_bytes=0x3E000, ram_bytes=64 * 1024,
        regions={
            "FLASH": "flash for code and constant data (inputs, weights): 248 KiB at "
                     "0x00000000",
            "RAM": "SRAM for stacks, output buffer and variables: 64 KiB at 0x20000000",
            "TRACE": "trace stubs: 2.25 KiB at 0x0003E000",
        },
        board_clock_ns=20),
    "mps2-an385": _AN385,
    # the AN385's memory map and peripherals on a Cortex-M4F: another port, M4 build flags
    "mps2-an386": replace(_AN385, name="mps2-an386", machine="mps2-an386",
                          port="baremetal-an386", linker_script="an386.ld",
                          cpu_flags=("-mcpu=cortex-m4", "-mfloat-abi=hard",
                                     "-mfpu=fpv4-sp-d16")),
}


def get_board(name: str | None) -> Board:
    """The board called ``name`` (None: lm3s6965evb); StageError("build") if unknown."""
    key = DEFAULT_BOARD if name is None else name
    if key not in BOARDS:
        raise StageError("build", f"unknown board {key!r} (supported: {', '.join(BOARDS)})")
    return BOARDS[key]
