"""`slicert cycles ELF [--board B]`: modelled cycles of any ELF: Cortex-M3 (cm3-v2) on
lm3s6965evb (default) and mps2-an385, Cortex-M4 (cm4-v1) on mps2-an386.

The ELF runs under the patched QEMU and the cycle plugin until it exits by semihosting
(SYS_EXIT / SYS_EXIT_EXTENDED), so a user can check their own code (e.g. CoreMark)
against the model (qemu/cycle_model.md). Exit status: 0 when the guest exits 0; 1 on a
guest fault, a non-zero guest exit or a timeout; 2 for bad arguments or a missing file.

What the program prints (UART0, the semihosting console, ":tt" stdout/stderr) is kept
(``guest_output``) and shown with ``--show-output``. Flash is reserved for the plugin's
trace stubs (0x3E000-0x3E8FF) only when the ELF links them (symbol ``slicert_trace_base``,
the SliceRT runtime's); any other program may use all 256 KiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from slicert_ops.errors import InputError, SliceRTError, StageError
from slicert_ops.sim import events as ev

#: where the plugin looks for trace stubs when the ELF has none: the Cortex-M system region
#: (execute-never), so no instruction of the program is ever taken for a stub
NO_TRACE_BASE = 0xF0000000
GUEST_FILE = "guest_output.txt"
MAX_OUTPUT = 1 << 20  # bytes of guest output kept
QEMU_MESSAGE = (b"qemu-system-", b"slicert_cycles:")  # stderr lines that are not the guest's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cycles", help="measure modelled Cortex-M cycles of an ELF (lm3s6965evb by default)",
        description="Run an ELF that ends by semihosting exit under the cycle model of its "
                    "board (lm3s6965evb / mps2-an385: Cortex-M3, cm3-v2; mps2-an386: "
                    "Cortex-M4F, cm4-v1) and print its instructions, cycles and instruction "
                    "classes.")
    p.add_argument("elf", help="the firmware ELF (exits by semihosting SYS_EXIT)")
    p.add_argument("--board", default="lm3s6965evb", choices=sorted(ev.BOARD_CORE),
                   help="QEMU machine and cycle model (default lm3s6965evb)")
    p.add_argument("--ws", type=_nonneg_int, default=0, metavar="N",
                   help="flash wait states (default 0)")
    p.add_argument("--cpu-mhz", type=_pos_float, default=50.0, metavar="F",
                   help="core clock for the time in µs (default 50)")
    p.add_argument("--timeout", type=_pos_float, default=60.0, metavar="S",
                   help="wall-clock limit in seconds (default 60)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the program's output in guest_output)")
    p.add_argument("--show-output", action=argparse.BooleanOptionalAction, default=None,
                   help="print what the program wrote (UART0, semihosting) to stderr "
                        "(default: when stdout is a terminal)")
    p.set_defaults(func=_cmd)


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be between 0 and 64, got {value}")
    return value


def _pos_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def measure(elf: Path, *, ws: int = 0, cpu_mhz: float = 50.0,
            timeout_s: float = 60.0, board: str = "lm3s6965evb") -> dict[str, Any]:
    """Run ``elf`` on ``board`` and return its figures; raises SliceRTError when the run
    failed."""
    from slicert_ops.elf import elf_symbols
    from slicert_ops.sim.qemu import run_firmware
    from slicert_ops.sim.trace import read_plugin_output

    if not elf.is_file():
        raise InputError("no such file", file=str(elf), fix="give the path of an ELF")
    if elf.read_bytes()[:4] != b"\x7fELF":
        raise InputError("not an ELF file", file=str(elf))
    try:
        stubs = elf_symbols(elf).get("slicert_trace_base")
    except StageError as exc:
        raise InputError(str(exc).removeprefix("run: ")) from None
    with tempfile.TemporaryDirectory(prefix="slicert-cycles-") as tmp:
        guest_file = Path(tmp) / GUEST_FILE
        sim = run_firmware(elf, seed=0, out_dir=tmp, timeout_s=timeout_s, ws=ws,
                           classes=True, guest_output=guest_file, board=board,
                           trace_base=NO_TRACE_BASE if stubs is None else stubs & ~1)
        guest = _guest_text(guest_file, sim.stdout, sim.stderr)
        seen = f"; its output ends: {' | '.join(guest.splitlines()[-3:])}" if guest else ""
        if sim.timed_out:
            raise SliceRTError(f"{elf}: no semihosting exit within {timeout_s:g} s (the "
                               "program hangs, faulted into a loop, or needs --timeout)"
                               f"{seen}")
        if sim.exit_code is None or sim.plugin_file is None or not sim.plugin_file.is_file():
            tail = sim.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SliceRTError(f"{elf}: QEMU stopped abnormally (a guest fault?): "
                               + (" | ".join(tail) or "no message") + seen)
        out = read_plugin_output(sim.plugin_file)
    classes: dict[str, int] = {}
    for comment in out.comments:
        words = comment.split()
        if words and words[0] == "classes":
            classes = {k: int(v) for k, v in (w.split("=") for w in words[1:] if "=" in w)}
    cycles, insns = out.totals["cycles"], out.totals["instructions"]
    result = {
        "elf": str(elf), "exit_code": sim.exit_code, "instructions": insns,
        "cycles": cycles, "cpi": round(cycles / insns, 4) if insns else 0.0,
        "cpu_mhz": cpu_mhz, "time_us": round(cycles / cpu_mhz, 3), "ws": ws,
        "cycle_model": out.cycle_model, "classes": classes, "guest_output": guest,
        "board": board,
        "trace_events": out.dropped_events + sum(1 for e in out.events
                                                 if e.id != ev.EXC_ENTRY),
    }
    if out.cycle_model != ev.cycle_model(board):
        raise StageError("run", f"plugin cycle model {out.cycle_model}, expected "
                                f"{ev.cycle_model(board)} (rebuild: qemu/build.sh --force)")
    return result


def _guest_text(chardev: Path, stdout: bytes, stderr: bytes) -> str:
    """UART0 + semihosting console (interleaved), then ":tt" stdout, then the guest's
    ":tt" stderr (QEMU's own messages on stderr left out)."""
    own = b"".join(ln for ln in stderr.splitlines(keepends=True)
                   if not ln.startswith(QEMU_MESSAGE))
    data = (chardev.read_bytes() if chardev.is_file() else b"") + stdout + own
    text = data[:MAX_OUTPUT].decode("utf-8", "replace")
    if len(data) > MAX_OUTPUT:
        text += f"\n[slicert: guest output truncated: {len(data):,} bytes, first " \
                f"{MAX_OUTPUT:,} kept]\n"
    return text


def _cmd(args: argparse.Namespace) -> int:
    res = measure(Path(args.elf), ws=args.ws, cpu_mhz=args.cpu_mhz, timeout_s=args.timeout,
                  board=args.board)
    show = sys.stdout.isatty() if args.show_output is None else args.show_output
    if show and res["guest_output"]:
        text = res["guest_output"]
        end = "" if text.endswith("\n") else "\n"
        sys.stderr.write(f"--- guest output of {res['elf']} (UART0, semihosting) ---\n"
                         f"{text}{end}--- end of guest output ---\n")
        sys.stderr.flush()
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(f"{res['elf']}: cycle model {res['cycle_model']}, ws {res['ws']}")
        print(f"  instructions  {res['instructions']}")
        print(f"  cycles        {res['cycles']}  (CPI {res['cpi']:.3f}; "
              f"{res['time_us']:.3f} us at {res['cpu_mhz']:g} MHz)")
        if res["trace_events"]:
            print(f"  trace events  {res['trace_events']}  (SliceRT trace stubs called)")
        width = max((len(k) for k in res["classes"]), default=0)
        for name, count in sorted(res["classes"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<{width}}  {count}")
    if res["exit_code"] != 0:
        print(f"slicert: error: {res['elf']}: the program exited with code "
              f"{res['exit_code']}", file=sys.stderr)
        return 1
    return 0
