"""Firmware build stage: generated kernel + SliceRT runtime + harness -> firmware.elf.

One arm-none-eabi-gcc invocation compiles and links everything (-O2, Cortex-M3 or, on
mps2-an386, Cortex-M4 with the FPU and the hard-float ABI: ``Board.cpu_flags``; Thumb,
freestanding, -Wall -Werror, libgcc for division / soft float). The ELF holds no path
or time stamp (no debug info; file symbols are base names; -ffile-prefix-map for
__FILE__), so identical inputs give a byte-identical ELF in any output folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slicert_ops.elf import elf_symbols
from slicert_ops.errors import StageError
from slicert_ops.firmware.boards import DEFAULT_BOARD, Board, get_board
from slicert_ops.firmware.options import RuntimeOptions
from slicert_ops.paths import ZEPHYR_DIR  # the SliceRT runtime (C) of this checkout

PORT = "baremetal-cm3"

GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"

CFLAGS = [
    "-O2", "-mcpu=cortex-m3", "-mthumb", "-std=gnu11", "-ffreestanding", "-fno-common",
    "-fno-unwind-tables", "-fno-asynchronous-unwind-tables", "-ffunction-sections",
    "-fdata-sections", "-Wall", "-Werror",
]


def cflags(brd: Board) -> list[str]:
    """CFLAGS with the board's core flags in place of ``-mcpu=cortex-m3`` (the Cortex-M3
    boards: CFLAGS itself, so their command lines and ELFs are unchanged)."""
    i = CFLAGS.index("-mcpu=cortex-m3")
    return CFLAGS[:i] + list(brd.cpu_flags) + CFLAGS[i + 1:]


LDFLAGS = ["-nostdlib", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments"]

#: Exception / interrupt handlers of the lm3s6965evb firmware (every board:
#: ``boards.BOARDS[name].handler_symbols``; the IRQ-load handler's name is the board's).
HANDLER_SYMBOLS = get_board(DEFAULT_BOARD).handler_symbols

#: C type -> numpy dtype (little-endian, as on the Cortex-M3).
CTYPES: dict[str, np.dtype] = {
    "int8_t": np.dtype("<i1"), "uint8_t": np.dtype("<u1"),
    "int16_t": np.dtype("<i2"), "uint16_t": np.dtype("<u2"),
    "int32_t": np.dtype("<i4"), "uint32_t": np.dtype("<u4"),
    "int64_t": np.dtype("<i8"), "uint64_t": np.dtype("<u8"),
    "float": np.dtype("<f4"), "double": np.dtype("<f8"),
}

#: Regions of the lm3s6965evb memory map (zephyr/ports/baremetal-cm3/lm3s6965.ld); other
#: boards: ``boards.BOARDS[name].regions``.
REGIONS = get_board(DEFAULT_BOARD).regions


@dataclass(frozen=True)
class BuildResult:
    """What the build produced. Sizes are from arm-none-eabi-size (Berkeley format):
    text = code + constants (inputs, weights) + vectors + trace stubs, data = initialised
    RAM, bss = zeroed RAM + stacks (output buffer included)."""

    elf: Path
    log_path: Path
    text_bytes: int
    data_bytes: int
    bss_bytes: int
    handlers: dict[str, int] = field(default_factory=dict)  # name -> address, Thumb bit clear
    gcc_version: str = ""
    seconds: float = 0.0


def ctype_dtype(ctype: str) -> np.dtype:
    name = ctype.strip().replace("*", "").strip()
    if name in CTYPES:
        return CTYPES[name]
    if name + "_t" in CTYPES:  # numpy-style "int8"
        return CTYPES[name + "_t"]
    if name in ("float32",):
        return CTYPES["float"]
    raise StageError("build", f"unsupported C type {ctype!r} in kernel.args "
                              f"(supported: {', '.join(CTYPES)})")


def _c_type_name(ctype: str) -> str:
    dt = ctype_dtype(ctype)
    for name, d in CTYPES.items():
        if d == dt:
            return name
    raise AssertionError(ctype)


@functools.lru_cache(maxsize=1)
def gcc_version() -> str:
    """First line of `arm-none-eabi-gcc --version`, e.g.
    'arm-none-eabi-gcc (15:12.2.rel1-1) 12.2.1 20221205'."""
    if shutil.which(GCC) is None:
        raise StageError("build", f"{GCC} not found on PATH (install the Debian package "
                                  "gcc-arm-none-eabi)")
    out = subprocess.run([GCC, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def _format_values(arr: np.ndarray) -> str:
    flat = arr.ravel()
    if flat.dtype.kind == "f":
        if not np.all(np.isfinite(flat)):
            raise StageError("build", "input arrays must be finite (no NaN or inf)")
        suffix = "f" if flat.dtype == np.float32 else ""
        items = [f"{float(v)!r}{suffix}" for v in flat.tolist()]
    elif flat.dtype == np.int64:
        items = [f"{v}LL" if v != -(2**63) else "(-9223372036854775807LL-1)"
                 for v in flat.tolist()]
    elif flat.dtype == np.uint64:
        items = [f"{v}ULL" for v in flat.tolist()]
    elif flat.dtype == np.int32:
        items = [str(v) if v != -(2**31) else "(-2147483647-1)" for v in flat.tolist()]
    elif flat.dtype == np.uint32:
        items = [f"{v}u" for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.tolist()]
    lines = [",".join(items[i:i + 32]) for i in range(0, len(items), 32)]
    return ",\n".join(lines)


def write_data_sources(kernel: Any, inputs: Sequence[np.ndarray], build_dir: Path) -> int:
    """Write slicert_data.h / slicert_data.c (inputs and weights as const arrays in
    flash, the output buffer in .bss). Returns the output size in bytes. ``inputs`` are the
    operator's; a kernel that reads them in another layout (a blocked form's packed weights)
    converts them (``kernel.kernel_inputs``)."""
    convert = getattr(kernel, "kernel_inputs", None)
    if convert is not None and len(inputs) == len(kernel.args) - 1:
        inputs = convert([np.asarray(a) for a in inputs])
    args = list(kernel.args)
    if len(args) < 1:
        raise StageError("build", "kernel.args is empty: the last argument must be the output")
    if len(inputs) != len(args) - 1:
        raise StageError("build", f"kernel {kernel.entry} takes {len(args) - 1} input(s) "
                                  f"({', '.join(a[0] for a in args[:-1])}) but "
                                  f"{len(inputs)} array(s) were given")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kernel.entry or ""):
        raise StageError("build", f"kernel entry {kernel.entry!r} is not a C identifier")

    head = ["/* Generated by slicert_ops.firmware: do not edit. */",
            "#ifndef SLICERT_DATA_H_", "#define SLICERT_DATA_H_", "#include <stdint.h>", ""]
    body = ["/* Generated by slicert_ops.firmware: do not edit. */",
            '#include "slicert_data.h"', ""]
    params, call = [], []
    for i, ((name, ctype, shape), arr) in enumerate(zip(args[:-1], inputs, strict=True)):
        dt = ctype_dtype(ctype)
        cname = _c_type_name(ctype)
        a = np.asarray(arr)
        if tuple(a.shape) != tuple(shape):
            raise StageError("build", f"input {i} ({name}) has shape {tuple(a.shape)}, "
                                      f"kernel.args says {tuple(shape)}")
        if a.dtype.kind != dt.kind or a.dtype.itemsize != dt.itemsize:
            raise StageError("build", f"input {i} ({name}) has dtype {a.dtype}, "
                                      f"kernel.args says {ctype}")
        n = int(np.prod(shape)) if len(shape) else 1
        head.append(f"/* {name}: {cname}{list(shape)} */")
        head.append(f"extern const {cname} slicert_in{i}[{n}];")
        body.append(f"const {cname} slicert_in{i}[{n}] __attribute__((aligned(8))) = {{")
        body.append(_format_values(a.astype(dt, copy=False)))
        body.append("};")
        params.append(f"{cname} *{name}")
        call.append(f"({cname} *)slicert_in{i}")
    oname, octype, oshape = args[-1]
    ocname = _c_type_name(octype)
    on = int(np.prod(oshape)) if len(oshape) else 1
    nbytes = on * ctype_dtype(octype).itemsize
    head.append(f"/* {oname}: {ocname}{list(oshape)} */")
    head.append(f"#define SLICERT_OUTPUT_BYTES {nbytes}u")
    head.append(f"extern {ocname} slicert_output[{on}];")
    body.append(f"{ocname} slicert_output[{on}] __attribute__((aligned(8)));")
    params.append(f"{ocname} *{oname}")
    call.append("slicert_output")
    head += ["", f"void {kernel.entry}({', '.join(params)});",
             f"#define SLICERT_KERNEL_INVOKE() {kernel.entry}({', '.join(call)})",
             "", "#endif", ""]
    body.append("")
    (build_dir / "slicert_data.h").write_text("\n".join(head))
    (build_dir / "slicert_data.c").write_text("\n".join(body))
    return nbytes


def _run(cmd: list[str], log: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    log.append("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.stdout:
        log.append(proc.stdout.rstrip("\n"))
    if proc.stderr:
        log.append(proc.stderr.rstrip("\n"))
    log.append(f"[exit {proc.returncode}]")
    return proc


_OVERFLOW_RE = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")
_NOFIT_RE = re.compile(r"section `([^']+)' will not fit in region `(\w+)'")


def _explain_link_failure(stderr: str, out_bytes: int, stack_bytes: int,
                          regions: dict[str, str] = REGIONS, board: str = DEFAULT_BOARD
                          ) -> str | None:
    over = _OVERFLOW_RE.findall(stderr)
    if not over:
        return None
    sections = {}
    for sec, region in _NOFIT_RE.findall(stderr):
        sections.setdefault(region, []).append(sec)
    parts = []
    for region, nbytes in over:
        what = regions.get(region, region)
        secs = sections.get(region)
        text = (f"the program does not fit on {board}: region {region} ({what}) "
                f"overflowed by {int(nbytes)} bytes")
        if secs:
            text += f" (section(s) {', '.join(secs)})"
        if region == "RAM":
            text += (f"; the output buffer needs {out_bytes} bytes and the stacks "
                     f"{stack_bytes} bytes; use a smaller output or split the operator"
                     + (" (or runner.board: mps2-an385, 4 MiB)"
                        if board == DEFAULT_BOARD else ""))
        elif region == "FLASH":
            text += "; the code, inputs and weights are too big: use smaller inputs/weights " \
                    "or less unrolling" + (" (or runner.board: mps2-an385, 4 MiB)"
                                           if board == DEFAULT_BOARD else "")
        parts.append(text)
    return "; ".join(parts)


def runtime_sources(port: str = PORT) -> tuple[str, ...]:
    """Runtime sources of a port, compiled once per (options, toolchain, source content)
    and cached. libc_min.c is the Cortex-M3 port's on every board."""
    return ("core/slicert_core.c", "ports/common/semihost.c", f"ports/{port}/port.c",
            f"ports/{PORT}/libc_min.c", f"ports/{port}/startup.S",
            "ports/common/trace_stubs.S")


#: Runtime sources of the lm3s6965evb port.
RUNTIME_SOURCES = runtime_sources()


def cache_dir() -> Path:
    """Where compiled runtime objects are cached: $SLICERT_CACHE_DIR or
    ~/.cache/slicert-farm (safe to delete at any time)."""
    env = os.environ.get("SLICERT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "slicert-farm"


def _runtime_objects(zdir: Path, port: Path, flags: list[str], log: list[str],
                     sources: Sequence[str] = RUNTIME_SOURCES,
                     base_flags: Sequence[str] = CFLAGS) -> list[Path]:
    """Compile the runtime (core + port) with these defines, or reuse the cached objects
    of an identical earlier compile. The key covers gcc, flags and every runtime file
    (the sources, every header, the shared port fragments in ports/common)."""
    srcs = tuple(sources)
    h = hashlib.sha256()
    h.update(gcc_version().encode())
    h.update("\0".join(list(base_flags) + flags).encode())
    files = sorted(p for p in (zdir / "include").rglob("*") if p.is_file())
    files += sorted(p for p in (port / "include").rglob("*") if p.is_file())
    files += sorted(p for p in (zdir / "ports" / "common").glob("*") if p.is_file()
                    and str(p.relative_to(zdir)) not in srcs)
    files += [zdir / rel for rel in srcs]
    for f in files:
        h.update(str(f.relative_to(zdir)).encode() + b"\0" + f.read_bytes() + b"\0")
    key = h.hexdigest()[:20]
    final = cache_dir() / "runtime" / key
    names = [Path(rel).name.rsplit(".", 1)[0] + ".o" for rel in srcs]
    objs = [final / n for n in names]
    log_file = final / "compile.log"
    if all(o.exists() for o in objs) and log_file.exists():
        log.append(f"# runtime objects: cached in {final}; they were compiled by:")
        log.extend("#   " + ln for ln in log_file.read_text().splitlines())
        return objs
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=final.parent))
    sub: list[str] = []
    try:
        procs = []
        for rel, name in zip(srcs, names, strict=True):
            cmd = [GCC, *base_flags, f"-ffile-prefix-map={zdir}=zephyr", *flags, "-c",
                   str(zdir / rel), "-o", name]
            procs.append((cmd, subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)))
        failed = []
        for rel, (cmd, p) in zip(srcs, procs, strict=True):
            o, e = p.communicate()
            sub.append("$ " + " ".join(cmd))
            for text in (o, e):
                if text:
                    sub.append(text.rstrip("\n"))
            sub.append(f"[exit {p.returncode}]")
            if p.returncode != 0:
                first = next((ln for ln in e.splitlines() if "error" in ln), e.strip())
                failed.append(f"{rel}: {first}")
        log.append(f"# runtime objects: compiled into {final}")
        log.extend(sub)
        if failed:
            raise StageError("build", "the SliceRT runtime does not compile with these "
                                      "options: " + "; ".join(failed))
        (tmp / "compile.log").write_text("\n".join(sub) + "\n")
        try:
            tmp.rename(final)
        except OSError:  # another worker finished first: use its identical objects
            if not all(o.exists() for o in objs):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return objs


def _check_timer_limits(brd: Board, opts: RuntimeOptions, fail: Any) -> None:
    """Reject timer intervals the board's QEMU timers cannot time exactly (QEMU stretches
    a ptimer period below 10 us of virtual time; mps2-an385: 250 cycles)."""
    low = brd.min_timer_cycles
    if not low:
        return
    if opts.slice_us and opts.cycles(opts.slice_us) < low:
        raise fail(f"runtime_options.slice_us: {opts.slice_us} us = "
                   f"{opts.cycles(opts.slice_us)} cycles is shorter than the {low} cycles "
                   f"QEMU's {brd.name} SysTick times exactly; use a longer slice")
    if opts.irq_load:
        shortest = opts.cycles(opts.irq_period_us - opts.irq_jitter_us)
        if shortest < low:
            raise fail(f"runtime_options.irq_period_us - irq_jitter_us: the shortest IRQ-load "
                       f"interval is {shortest} cycles, below the {low} cycles QEMU's "
                       f"{brd.name} timer times exactly; use a longer period or less jitter")


def build_firmware(kernel: Any, inputs: Sequence[np.ndarray],
                   runtime_options: RuntimeOptions | None, out_dir: str | Path, *,
                   kernel_stack_bytes: int = 4096, runtime_dir: str | Path | None = None,
                   board: str | None = None) -> BuildResult:
    """Build `out_dir/firmware.elf` from a KernelSource-like `kernel` (`.c_source`,
    `.entry`, `.args` = [(name, ctype, shape), ...], output last), the input arrays
    (`args[:-1]` order) and the runtime options. Writes `out_dir/zephyr_build.log`
    (commands, compiler output, gcc version, size report) and the generated sources
    under `out_dir/build/`. ``board`` (``runner.board``, default lm3s6965evb) selects the
    port, the linker script and the memory limits (slicert_ops.firmware.boards).
    Raises StageError("build", ...) on any failure."""
    t0 = time.perf_counter()
    opts = runtime_options if runtime_options is not None else RuntimeOptions()
    brd = get_board(board)
    zdir = Path(runtime_dir).resolve() if runtime_dir else ZEPHYR_DIR
    out = Path(out_dir).resolve()
    build_dir = out / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    elf = out / "firmware.elf"
    log_path = out / "zephyr_build.log"
    if elf.exists():
        elf.unlink()
    if kernel_stack_bytes % 8 or not 1024 <= kernel_stack_bytes <= 48 * 1024:
        raise StageError("build", "kernel_stack_bytes must be a multiple of 8 in 1024..49152")

    log: list[str] = ["# SliceRT firmware build", f"# gcc: {gcc_version()}",
                      f"# runtime: {zdir} (port {brd.port})",
                      f"# options: {opts.to_dict()} kernel_stack_bytes={kernel_stack_bytes}"]

    def fail(msg: str) -> StageError:
        log_path.write_text("\n".join(log + [f"# FAILED: {msg}", ""]))
        return StageError("build", f"{msg} (build log: {log_path})")

    if brd.name != DEFAULT_BOARD:
        log.insert(1, f"# board: {brd.name}")
    _check_timer_limits(brd, opts, fail)

    c_source = getattr(kernel, "c_source", None)
    if not isinstance(c_source, str) or not c_source.strip():
        raise fail("kernel.c_source is empty")
    try:
        out_bytes = write_data_sources(kernel, inputs, build_dir)
    except StageError as exc:
        raise fail(str(exc).removeprefix("build: ")) from None
    (build_dir / "kernel.c").write_text(c_source)

    port = zdir / "ports" / brd.port
    defines: dict[str, Any] = dict(opts.defines())
    defines["SLICERT_KERNEL_STACK_SIZE"] = kernel_stack_bytes
    defines.update(brd.defines)
    dflags = [f"-D{k}={v}" for k, v in defines.items()]
    incs = [f"-I{zdir / 'include'}", f"-I{port / 'include'}"]
    try:
        objs = _runtime_objects(zdir, port, dflags + incs, log, runtime_sources(brd.port),
                                cflags(brd))
    except StageError as exc:
        raise fail(str(exc).removeprefix("build: ")) from None
    sources = ["build/kernel.c", "build/slicert_data.c",
               str(zdir / "apps" / "microbench" / "main.c")]
    cmd = [GCC, *cflags(brd),
           f"-ffile-prefix-map={out}=.", f"-ffile-prefix-map={zdir}=zephyr",
           *dflags, *incs, "-Ibuild", *sources, *map(str, objs),
           f"-L{zdir / 'ports' / 'common'}", "-T", str(port / brd.linker_script), *LDFLAGS,
           "-Wl,-Map=build/firmware.map", "-o", "firmware.elf", "-lgcc"]
    try:
        proc = _run(cmd, log, cwd=out)
    except OSError as exc:
        raise fail(f"could not run {GCC}: {exc}") from None
    if proc.returncode != 0:
        stack_bytes = kernel_stack_bytes + 1024 + 1024
        why = _explain_link_failure(proc.stderr, out_bytes, stack_bytes, brd.regions,
                                    brd.name)
        if why is None:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln),
                         proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "")
            why = f"{GCC} failed (exit {proc.returncode}): {first}"
        raise fail(why)

    size = _run([SIZE, "-B", "firmware.elf"], log, cwd=out)
    sizes = size.stdout.splitlines()[-1].split() if size.returncode == 0 else []
    if len(sizes) < 3:
        raise fail("arm-none-eabi-size gave no size line")
    text_b, data_b, bss_b = (int(x) for x in sizes[:3])
    sec = _run([SIZE, "-A", "firmware.elf"], log, cwd=out)
    if sec.returncode != 0:
        raise fail("arm-none-eabi-size -A failed")
    log.append("# handler addresses: the ELF's symbol table (slicert_ops.elf)")
    try:
        symbols = elf_symbols(elf, stage="build")
    except StageError as exc:
        raise fail(str(exc).removeprefix("build: ")) from None
    handlers = {name: symbols[name] & ~1 for name in brd.handler_symbols if name in symbols}
    missing = [h for h in brd.handler_symbols if h not in handlers]
    if missing:
        raise fail(f"handler symbols missing from the ELF: {', '.join(missing)}")
    log.append(f"# size: text={text_b} data={data_b} bss={bss_b} "
               f"(output buffer {out_bytes} bytes)")
    log.append("# handlers: " + " ".join(f"{k}=0x{v:08x}" for k, v in handlers.items()))
    seconds = time.perf_counter() - t0
    log.append(f"# build time: {seconds:.3f} s")
    log_path.write_text("\n".join(log) + "\n")
    return BuildResult(elf=elf, log_path=log_path, text_bytes=text_b, data_bytes=data_b,
                       bss_bytes=bss_b, handlers=handlers, gcc_version=gcc_version(),
                       seconds=seconds)
