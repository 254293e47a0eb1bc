"""Trace event ids and names: the Python mirror of docs/contracts.md ("Trace events").

The firmware marks an event by calling a one-instruction stub (``bx lr``) at
``TRACE_BASE + 2*id``; a payload is sent first, byte by byte, by calling lane stubs at
``TRACE_BASE + 0x100 + lane*0x200 + 2*byte`` (lane 0..3 = payload bits 0-7 .. 24-31).
The C side is ``zephyr/include/slicert/trace.h``; keep both in step with the contract.
"""

from __future__ import annotations

TRACE_BASE = 0x0003E000
TRACE_SPAN = 0x900          # events 0x000-0x0ff, payload lanes 0x100-0x8ff
LANES_OFFSET = 0x100
LANE_SPAN = 0x200
MAX_EVENT_ID = 127

CYCLE_MODEL_VERSION = "cm3-v2"   # qemu/cycle_model.md; must match the plugin header line
PLUGIN_VERSION = "2.1.0"         # SLICERT_PLUGIN_VERSION in qemu/slicert_cycles.c

#: Exception entries, recorded by the plugin itself (QEMU reports them), not by a stub:
#: the payload is the exception number, ``pend`` its assertion cycle (-1 when unknown).
EXC_ENTRY = 200
#: Exception number of the IRQ-load timer (LM3S6965 GPTM Timer0A = IRQ 19).
IRQ_LOAD_EXCEPTION = 16 + 19

#: Per board (``runner.board``): the IRQ-load timer's exception number and the trace base
#: (zephyr/ports/<port>/*.ld). mps2-an385: CMSDK dual timer = IRQ 10; its 4 MiB code RAM
#: has the trace stubs at its top (docs/contracts.md, "Boards").
BOARD_IRQ_LOAD_EXCEPTION: dict[str, int] = {"lm3s6965evb": IRQ_LOAD_EXCEPTION,
                                            "mps2-an385": 16 + 10, "mps2-an386": 16 + 10}
BOARD_TRACE_BASE: dict[str, int] = {"lm3s6965evb": TRACE_BASE, "mps2-an385": 0x003FF000,
                                    "mps2-an386": 0x003FF000}

#: The core of each board and the cycle model the plugin applies to it (plugin argument
#: ``core=``; qemu/cycle_model.md). mps2-an386 is a Cortex-M4 with FPU: model cm4-v1.
BOARD_CORE: dict[str, str] = {"lm3s6965evb": "cm3", "mps2-an385": "cm3", "mps2-an386": "cm4"}
CORE_CYCLE_MODEL: dict[str, str] = {"cm3": CYCLE_MODEL_VERSION, "cm4": "cm4-v1"}
CORE_NAME: dict[str, str] = {"cm3": "Cortex-M3", "cm4": "Cortex-M4"}


def core(board: str) -> str:
    """The core (``cm3`` or ``cm4``) of ``board``: the plugin's ``core=`` argument."""
    try:
        return BOARD_CORE[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r} (known: {', '.join(BOARD_CORE)})") from None


def cycle_model(board: str) -> str:
    """The cycle model version the plugin applies on ``board`` (cm3-v2 on the M3 boards)."""
    return CORE_CYCLE_MODEL[core(board)]


def irq_load_exception(board: str) -> int:
    """Exception number of the IRQ-load timer on ``board``."""
    try:
        return BOARD_IRQ_LOAD_EXCEPTION[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r} (known: "
                         f"{', '.join(BOARD_IRQ_LOAD_EXCEPTION)})") from None


def trace_base(board: str) -> int:
    """Address of the trace stubs (event 0) on ``board``."""
    try:
        return BOARD_TRACE_BASE[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r} (known: "
                         f"{', '.join(BOARD_TRACE_BASE)})") from None

KERNEL_START = 0
KERNEL_END = 1
TILE_END = 2
SLICE_EXPIRE = 3
PENDSV_ENTER = 4
PENDSV_EXIT = 5
IRQ_ENTER = 6
IRQ_EXIT = 7
RT_RELEASE = 8
RT_START = 9
RT_END = 10
YIELD = 11
CAL_START = 12
CAL_END = 13
BOOT = 14
OUTPUT_READY = 15
TICK_ENTER = 16
TICK_EXIT = 17
# network firmware (zephyr/include/slicert/network.h): payload = op index
LAYER_START = 32
LAYER_END = 33

EVENT_NAMES: dict[int, str] = {
    KERNEL_START: "kernel_start",
    KERNEL_END: "kernel_end",
    TILE_END: "tile_end",
    SLICE_EXPIRE: "slice_expire",
    PENDSV_ENTER: "pendsv_enter",
    PENDSV_EXIT: "pendsv_exit",
    IRQ_ENTER: "irq_enter",
    IRQ_EXIT: "irq_exit",
    RT_RELEASE: "rt_release",
    RT_START: "rt_start",
    RT_END: "rt_end",
    YIELD: "yield",
    CAL_START: "cal_start",
    CAL_END: "cal_end",
    BOOT: "boot",
    OUTPUT_READY: "output_ready",
    TICK_ENTER: "tick_enter",
    TICK_EXIT: "tick_exit",
    LAYER_START: "layer_start",
    LAYER_END: "layer_end",
    EXC_ENTRY: "exc_entry",
}
EVENT_IDS: dict[str, int] = {name: eid for eid, name in EVENT_NAMES.items()}

# Payload meanings (documentation; the plugin does not interpret payloads).
PAYLOADS: dict[str, str] = {
    "pendsv_exit": "task id switched to (0 kernel, 1 rt)",
    "irq_enter": "latency as the ISR measured it (DWT cycles, prologue included)",
    "exc_entry": "exception number (16 + IRQ); pend_cycles = its assertion",
    "rt_release": "release index",
    "rt_start": "release index",
    "rt_end": "release index",
    "yield": "reason bits (1 slice, 2 rt ready)",
    "cal_start": "N (number of calibration yield checks)",
}
YIELD_REASON_SLICE = 1
YIELD_REASON_RT = 2
TASK_KERNEL = 0
TASK_RT = 1


def event_name(event_id: int) -> str:
    """Name of an event id; ids outside the contract table are named ``event_<id>``."""
    return EVENT_NAMES.get(event_id, f"event_{event_id}")


def event_id(name: str) -> int:
    """Id of an event name (inverse of :func:`event_name`)."""
    if name in EVENT_IDS:
        return EVENT_IDS[name]
    if name.startswith("event_") and name[6:].isdigit():
        eid = int(name[6:])
        if 0 <= eid <= MAX_EVENT_ID:
            return eid
    raise KeyError(f"unknown trace event name {name!r}")


def stub_address(event: int | str, base: int = TRACE_BASE) -> int:
    """Flash address of an event stub (thumb bit clear)."""
    eid = event_id(event) if isinstance(event, str) else event
    if not 0 <= eid <= MAX_EVENT_ID:
        raise ValueError(f"event id {eid} outside 0..{MAX_EVENT_ID}")
    return base + 2 * eid


def lane_address(lane: int, byte: int, base: int = TRACE_BASE) -> int:
    """Flash address of the payload stub for ``byte`` in ``lane`` (thumb bit clear)."""
    if not (0 <= lane <= 3 and 0 <= byte <= 0xFF):
        raise ValueError(f"bad payload lane/byte {lane}/{byte}")
    return base + LANES_OFFSET + lane * LANE_SPAN + 2 * byte
