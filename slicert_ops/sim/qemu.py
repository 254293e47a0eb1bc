"""Run a firmware ELF in the patched QEMU (lm3s6965evb, or mps2-an385 / mps2-an386 with
``board=``) under the cycle plugin (model cm3-v2, or cm4-v1 on the Cortex-M4 mps2-an386).

With the plugin, QEMU's virtual clock is the plugin's modelled cycle count (one period
of the board's CPU clock per cycle, whatever the guest programs it to): no
``-icount``, one TCG thread; runs are deterministic because every timer fires at its
exact modelled deadline in the vCPU thread. Without the plugin (``raw``, the overhead
baseline) QEMU runs with ``-icount shift=0`` as before.

``run_firmware`` returns a :class:`SimResult` for every outcome of the *guest* (normal
exit, non-zero exit code, no output frame, timeout); it raises
:class:`~slicert_ops.errors.StageError` (stage ``run``) only when it cannot run at all
(missing ELF, plugin or QEMU binary) and (stage ``parse``) when a run that exited
normally left a corrupt plugin file. Call :meth:`SimResult.raise_for_status` to turn a
failed run into a ``StageError("run", ...)`` naming the cause.

On timeout the whole QEMU process group gets SIGTERM (QEMU shuts down cleanly, so the
plugin still writes the events recorded so far: useful to see where it hung), then
SIGKILL after a grace period; the result has ``timed_out=True`` and ``exit_code=None``.

The command line is built as a list (no shell). Plugin options: see docs/contracts.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slicert_ops.errors import StageError
from slicert_ops.paths import PLUGIN_SO, QEMU_BIN
from slicert_ops.sim import events as ev
from slicert_ops.sim.trace import EventTable, parse_plugin_output

DEFAULT_PLUGIN = PLUGIN_SO          # build/qemu/libslicert_cycles.so or $SLICERT_PLUGIN
DEFAULT_QEMU = str(QEMU_BIN)        # build/qemu/qemu-system-arm or $SLICERT_QEMU
MACHINE = "lm3s6965evb"
#: runner.board -> QEMU machine (-M); the trace base per board is ev.trace_base(board).
MACHINES = {"lm3s6965evb": "lm3s6965evb", "mps2-an385": "mps2-an385",
            "mps2-an386": "mps2-an386"}
ICOUNT = "shift=0,align=off,sleep=off"
PLUGIN_FILE = "plugin_events.txt"
STDOUT_FILE = "qemu_stdout.bin"
STDERR_FILE = "qemu_stderr.txt"
FRAME_MAGIC = b"SLICERT-OUT "
TERM_GRACE_S = 3.0

EXIT_MEANINGS = {1: "runtime assertion", 2: "hard fault", 3: "stack overflow guard"}


@dataclass
class SimResult:
    """Outcome of one QEMU run."""

    exit_code: int | None               # None when timed out / killed by a signal
    events: EventTable                  # empty without a plugin file
    totals: dict[str, int] | None       # {"cycles", "instructions"}; None if raw / no file
    output: bytes | None                # payload of the SLICERT-OUT frame
    stdout: bytes
    stderr: bytes
    timed_out: bool
    command: list[str]
    wall_s: float = 0.0
    plugin_file: Path | None = None
    frame_error: str | None = None      # why ``output`` is None
    plugin_error: str | None = None     # plugin file unreadable after a failed run
    timeout_s: float | None = None
    raw_files: dict[str, Path] = field(default_factory=dict)   # artifact name -> file

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0 and self.output is not None

    def describe_failure(self) -> str | None:
        """Why the run failed, or None when it succeeded."""
        tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        hint = f"; QEMU stderr: {' | '.join(tail)}" if tail else ""
        where = ""
        if self.events:
            last = self.events[-1]
            where = f"; last event {last.type} at {last.insns} instructions"
        if self.timed_out:
            return (f"QEMU timed out after {self.timeout_s:g}s and was killed (a hung kernel "
                    "or runtime; raise experiment.runner.timeout_s if the kernel is just "
                    f"slow){where}{hint}")
        if self.exit_code is None:
            return f"QEMU was killed by a signal{where}{hint}"
        if self.exit_code != 0:
            meaning = EXIT_MEANINGS.get(self.exit_code, "unknown")
            return f"firmware exited with code {self.exit_code} ({meaning}){where}{hint}"
        if self.output is None:
            return f"no output: {self.frame_error}{where}{hint}"
        return None

    def raise_for_status(self) -> SimResult:
        """Raise ``StageError("run", ...)`` if the run failed; return self otherwise."""
        msg = self.describe_failure()
        if msg:
            raise StageError("run", msg)
        return self


def raw_files(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The raw files a run left in ``out_dir`` (also after a timeout or a crash)."""
    out = Path(out_dir)
    return {name: out / name for name in (PLUGIN_FILE, STDOUT_FILE, STDERR_FILE)
            if (out / name).is_file()}


def parse_output_frame(stdout: bytes) -> bytes:
    """The bytes of the first ``SLICERT-OUT <8 hex>\\n<bytes>`` frame in ``stdout``.

    Raises ValueError describing what is wrong (missing, bad header, truncated).
    """
    pos = stdout.find(FRAME_MAGIC)
    if pos < 0:
        raise ValueError("no 'SLICERT-OUT' frame on stdout")
    head_end = pos + len(FRAME_MAGIC) + 9
    head = stdout[pos + len(FRAME_MAGIC):head_end]
    if len(head) < 9 or head[8:9] != b"\n":
        raise ValueError(f"bad SLICERT-OUT header {stdout[pos:head_end]!r}")
    try:
        n = int(head[:8].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"bad SLICERT-OUT length {head[:8]!r}") from None
    data = stdout[head_end:head_end + n]
    if len(data) != n:
        raise ValueError(f"truncated SLICERT-OUT frame: {len(data)} of {n} bytes")
    return data


def _opt(value: str | os.PathLike[str]) -> str:
    """Escape a value for a QEMU option list (',' is doubled)."""
    return os.fspath(value).replace(",", ",,")


def build_command(elf: str | os.PathLike[str], *, seed: int,
                  plugin: str | os.PathLike[str] | None = DEFAULT_PLUGIN,
                  plugin_out: str | os.PathLike[str] | None = None, ws: int = 0,
                  trace_base: int | None = None, qemu: str = DEFAULT_QEMU,
                  classes: bool = False, extra_args: Sequence[str] = (),
                  board: str = MACHINE,
                  guest_output: str | os.PathLike[str] | None = None) -> list[str]:
    """The QEMU argv. ``plugin=None`` gives the plain ``-icount`` baseline.

    ``guest_output`` (``slicert cycles``): a file that receives UART0 and the semihosting
    console (SYS_WRITEC / SYS_WRITE0), interleaved, instead of ``-serial null`` and QEMU's
    stderr; without it the command line is the farm's, unchanged.

    ``board`` (``runner.board``) selects the machine (``-M``) and, unless ``trace_base``
    is given, the plugin's ``trace_base`` (lm3s6965evb 0x3e000, mps2-an385/6 0x3ff000), and
    the plugin's cycle model: ``core=cm4`` (cm4-v1) on mps2-an386; on the Cortex-M3 boards
    no ``core=`` argument (the plugin's default, cm3-v2: their command line is unchanged).

    Exception entries need no handler addresses: QEMU reports them to the plugin.
    """
    if board not in MACHINES:
        raise ValueError(f"unknown board {board!r} (known: {', '.join(MACHINES)})")
    if trace_base is None:
        trace_base = ev.trace_base(board)
    serial, semihosting = ["-serial", "null"], "enable=on,target=native"
    if guest_output is not None:
        serial = ["-chardev", f"file,id=guest,path={_opt(guest_output)},mux=on",
                  "-serial", "chardev:guest"]
        semihosting += ",chardev=guest"
    cmd = [
        qemu, "-M", MACHINES[board], "-display", "none", *serial, "-monitor", "none",
        "-no-reboot",
        *(["-icount", ICOUNT] if plugin is None else ["-accel", "tcg,thread=single"]),
        "-semihosting-config", semihosting,
        "-append", f"seed={int(seed)}",
        "-kernel", os.fspath(elf),
    ]
    if plugin is not None:
        if plugin_out is None:
            raise ValueError("build_command: plugin_out is required with a plugin")
        parts = [_opt(plugin), f"trace_base={trace_base:#x}", f"out={_opt(plugin_out)}"]
        if ws:
            parts.append(f"ws={int(ws)}")
        if ev.core(board) != "cm3":
            parts.append(f"core={ev.core(board)}")
        if classes:
            parts.append("classes=1")
        cmd += ["-plugin", ",".join(parts)]
    cmd += list(extra_args)
    return cmd


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_firmware(elf: str | os.PathLike[str], *, seed: int,
                 out_dir: str | os.PathLike[str], timeout_s: float,
                 plugin: str | os.PathLike[str] = DEFAULT_PLUGIN, raw: bool = False,
                 ws: int = 0, qemu: str | None = None, classes: bool = False,
                 extra_args: Sequence[str] = (), board: str = MACHINE,
                 trace_base: int | None = None,
                 guest_output: str | os.PathLike[str] | None = None) -> SimResult:
    """Run ``elf`` once and collect events, totals and the output frame.

    ``out_dir`` receives the plugin
    file (``plugin_events.txt``) and QEMU's stdout/stderr (``qemu_stdout.bin``,
    ``qemu_stderr.txt``), listed in ``SimResult.raw_files``. ``raw=True`` runs plain
    QEMU without the plugin (the overhead baseline): no events, ``totals=None``.
    ``qemu`` defaults to ``$SLICERT_QEMU`` or the patched ``build/qemu/qemu-system-arm``.
    ``board`` (``runner.board``) selects the QEMU machine and the plugin's trace base
    (``trace_base`` overrides it); ``guest_output``: see :func:`build_command`.
    """
    elf_path = Path(elf)
    if not elf_path.is_file():
        raise StageError("run", f"{elf_path}: firmware ELF not found")
    qemu_bin = qemu or os.environ.get("SLICERT_QEMU", DEFAULT_QEMU)
    if shutil.which(qemu_bin) is None:
        raise StageError("run", f"QEMU binary {qemu_bin!r} not found (run make setup: "
                                "qemu/build_qemu.sh builds the patched QEMU; or set "
                                "SLICERT_QEMU)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plugin_file: Path | None = None
    if not raw:
        if not Path(plugin).is_file():
            raise StageError("run", f"{plugin}: cycle plugin not built (run qemu/build.sh "
                                    "or make setup)")
        plugin_file = out / PLUGIN_FILE
        for stale in (plugin_file, plugin_file.with_name(plugin_file.name + ".part")):
            stale.unlink(missing_ok=True)
    cmd = build_command(elf_path, seed=seed,
                        plugin=None if raw else plugin, plugin_out=plugin_file, ws=ws,
                        qemu=qemu_bin, classes=classes, extra_args=extra_args,
                        board=board, trace_base=trace_base, guest_output=guest_output)

    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise StageError("run", f"cannot start {qemu_bin}: {exc}") from None
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            stdout, stderr = proc.communicate()
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.monotonic() - t0
    rc = proc.returncode
    raw_files = {STDOUT_FILE: out / STDOUT_FILE, STDERR_FILE: out / STDERR_FILE}
    raw_files[STDOUT_FILE].write_bytes(stdout)
    raw_files[STDERR_FILE].write_bytes(stderr)
    if plugin_file is not None and plugin_file.is_file():
        raw_files[PLUGIN_FILE] = plugin_file
    exit_code = None if (timed_out or rc is None or rc < 0) else rc

    output: bytes | None = None
    frame_error: str | None = None
    try:
        output = parse_output_frame(stdout)
    except ValueError as exc:
        frame_error = str(exc)

    events = EventTable.empty()
    totals: dict[str, int] | None = None
    plugin_error: str | None = None
    if plugin_file is not None:
        try:
            events, totals = parse_plugin_output(plugin_file, allow_overflow=timed_out,
                                                 cycle_model=ev.cycle_model(board))
        except StageError as exc:
            if exit_code == 0:
                raise
            plugin_error = str(exc)
    return SimResult(exit_code=exit_code, events=events, totals=totals, output=output,
                     stdout=stdout, stderr=stderr, timed_out=timed_out, command=cmd,
                     wall_s=wall, plugin_file=plugin_file, frame_error=frame_error,
                     plugin_error=plugin_error, timeout_s=timeout_s, raw_files=raw_files)
