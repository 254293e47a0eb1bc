"""Firmware build stage + SliceRT runtime, in real arm-none-eabi-gcc and real QEMU.

No cycle plugin here: the output frame and the runtime's stats line (semihosting
stderr) are checked, and the event sequence is read from QEMU's own TB execution log
(`-d exec,nochain`: every stub call is a one-instruction TB at its marker address).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slicert_ops.errors import InputError, StageError
from slicert_ops.firmware import HANDLER_SYMBOLS, RuntimeOptions, build_firmware
from slicert_ops.paths import PLUGIN_SO
from slicert_ops.sim import events as ev
from slicert_ops.sim.plugin_file import read_plugin_output
from slicert_ops.sim.qemu import build_command

pytestmark = [pytest.mark.integration]

QEMU_TIMEOUT = 60
EVENTS = ["kernel_start", "kernel_end", "tile_end", "slice_expire", "pendsv_enter",
          "pendsv_exit", "irq_enter", "irq_exit", "rt_release", "rt_start", "rt_end",
          "yield", "cal_start", "cal_end", "boot", "output_ready", "tick_enter", "tick_exit"]
TRACE_BASE = 0x3E000

M, K, N = 16, 64, 24

# Hand-written stand-in for a generated kernel: same shape as KernelSource.c_source
# (includes yield.h, then a TVM-style extern declaration of the yield check).
MATMUL_SRC = r"""
#include <stdint.h>
#include "slicert/yield.h"
int32_t slicert_yield_check(void);

void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out)
{
  for (int32_t m = 0; m < %(M)d; ++m) {
    for (int32_t n0 = 0; n0 < %(N)d; n0 += 4) {
      for (int32_t n = n0; n < n0 + 4; ++n) {
        int32_t acc = 0;
        for (int32_t k = 0; k < %(K)d; ++k) {
          acc += (int32_t)data[m * %(K)d + k] * (int32_t)weight[n * %(K)d + k];
        }
        out[m * %(N)d + n] = acc;
      }
      (void)slicert_yield_check();  /* one micro-tile = 4 outputs */
    }
  }
}
"""


def matmul_kernel(m: int = M, k: int = K, n: int = N, src: str = MATMUL_SRC):
    return SimpleNamespace(
        c_source=src % {"M": m, "K": k, "N": n}, entry="slicert_kernel",
        args=[("data", "int8_t", (m, k)), ("weight", "int8_t", (n, k)),
              ("out", "int32_t", (m, n))])


def matmul_inputs(m: int = M, k: int = K, n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (m, k), dtype=np.int8),
            rng.integers(-128, 128, (n, k), dtype=np.int8)]


def reference(inputs):
    a, w = inputs
    return a.astype(np.int32) @ w.astype(np.int32).T


def plugin_out(elf: Path, seed: int = 0, extra: tuple[str, ...] = ()) -> Path:
    return elf.with_name(f"plugin-{seed}-{len(extra)}.txt")


def qemu_cmd(elf: Path, seed: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    """The run configuration: the patched QEMU with the cycle plugin as its clock."""
    return build_command(elf, seed=seed, plugin=PLUGIN_SO,
                         plugin_out=plugin_out(elf, seed, extra), extra_args=extra)


def run_qemu(elf: Path, seed: int = 0, extra: tuple[str, ...] = ()):
    return subprocess.run(qemu_cmd(elf, seed, extra), capture_output=True,
                          timeout=QEMU_TIMEOUT)


def parse_frame(stdout: bytes, dtype: str, shape) -> np.ndarray:
    m = re.match(rb"SLICERT-OUT ([0-9a-fA-F]{8})\n", stdout)
    assert m, f"no output frame in {stdout[:80]!r}"
    n = int(m.group(1), 16)
    payload = stdout[m.end():]
    assert len(payload) == n, f"frame says {n} bytes, got {len(payload)}"
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def parse_stats(stderr: bytes) -> dict[str, int]:
    line = next(ln for ln in stderr.decode().splitlines() if ln.startswith("SLICERT-STATS"))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def trace_events(elf: Path, seed: int = 0) -> list[tuple[str, int]]:
    """Event sequence as the cycle plugin records it: (name, payload) of its trace events.
    (QEMU's exec log is no substitute: it shows a block start even when the block is left
    before its first instruction, to take an interrupt there, and then again when it runs.)"""
    assert run_qemu(elf, seed).returncode == 0
    events = read_plugin_output(plugin_out(elf, seed)).events
    return [(EVENTS[int(i)], int(p)) for i, p in zip(events.id, events.payload, strict=True)
            if i != ev.EXC_ENTRY]


@pytest.fixture(scope="module", autouse=True)
def runtime_cache(tmp_path_factory):
    """A fresh runtime-object cache: the first build of each option set compiles the
    runtime (cold path), later ones reuse it (warm path)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SLICERT_CACHE_DIR", str(tmp_path_factory.mktemp("slicert-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def inputs():
    return matmul_inputs()


def build(tmp_path: Path, name: str, inputs, **opts):
    return build_firmware(matmul_kernel(), inputs, RuntimeOptions(**opts), tmp_path / name)


def test_build_result_and_log(tmp_path, inputs):
    res = build(tmp_path, "a", inputs, slice_us=50)
    assert res.elf.is_file() and res.elf.name == "firmware.elf"
    assert res.text_bytes > 2304 and res.bss_bytes >= M * N * 4 + 6 * 1024
    assert set(res.handlers) == set(HANDLER_SYMBOLS)
    assert all(addr % 2 == 0 and addr < 0x3E000 for addr in res.handlers.values())
    assert res.gcc_version.startswith("arm-none-eabi-gcc") and "12.2" in res.gcc_version
    log = res.log_path.read_text()
    assert res.log_path.name == "zephyr_build.log"
    assert "$ arm-none-eabi-gcc" in log and "-DSLICERT_SLICE_US=50" in log
    assert "arm-none-eabi-size" in log and "slicert_trace" in log
    assert f"text={res.text_bytes} data={res.data_bytes} bss={res.bss_bytes}" in log
    assert (tmp_path / "a" / "build" / "slicert_data.c").is_file()


def test_trace_stubs_at_contract_addresses(tmp_path, inputs):
    res = build(tmp_path, "a", inputs)
    nm = subprocess.run(["arm-none-eabi-nm", str(res.elf)], capture_output=True, text=True)
    syms = {p[2]: int(p[0], 16) for p in (ln.split() for ln in nm.stdout.splitlines())
            if len(p) == 3}
    assert syms["slicert_trace_base"] == TRACE_BASE
    dump = subprocess.run(["arm-none-eabi-objdump", "-s", "-j", ".slicert_trace",
                           str(res.elf)], capture_output=True, text=True).stdout
    words = re.findall(r"^ ([0-9a-f]{5}) ((?:[0-9a-f]{8} ?){1,4})", dump, re.M)
    body = "".join(w[1].replace(" ", "") for w in words)
    assert int(words[0][0], 16) == TRACE_BASE and len(body) == 0x900 * 2
    assert body == "7047" * 0x480  # every halfword is `bx lr`


@pytest.mark.parametrize("opts", [
    dict(slice_us=0),
    dict(slice_us=20),
    dict(slice_us=20, irq_load=True, irq_period_us=200, irq_jitter_us=50,
         rt_work_iters=200, rt_deadline_us=300),
], ids=["no-slicing", "small-slice", "small-slice+irq-load"])
def test_output_matches_reference(tmp_path, inputs, opts):
    res = build(tmp_path, "fw", inputs, **opts)
    proc = run_qemu(res.elf)
    assert proc.returncode == 0, proc.stderr.decode()
    assert np.array_equal(parse_frame(proc.stdout, "<i4", (M, N)), reference(inputs))
    st = parse_stats(proc.stderr)
    assert st["tick_ns"] == 20
    if opts.get("slice_us"):
        # at 50 MHz a 20 µs slice (1000 cycles) is shorter than a micro-tile: several
        # slices can expire before the next yield check
        assert st["slices"] >= 3 and 3 <= st["yields"] <= st["slices"]
    else:
        assert st["slices"] == 0 and st["switches"] == 0
    if opts.get("irq_load"):
        assert st["irqs"] >= 3 and st["rt_releases"] == st["irqs"]
        assert st["rt_jobs"] == st["rt_releases"] and st["rt_dropped"] == 0
        assert st["deadline_misses"] == 0
        assert st["stack_rt"] > 64  # the RT task really ran on its own stack
    else:
        assert st["irqs"] == 0 and st["rt_jobs"] == 0


def test_deterministic_runs_and_builds(tmp_path, inputs):
    opts = dict(slice_us=20, irq_load=True, irq_period_us=25, irq_jitter_us=20)
    a = build(tmp_path, "a", inputs, **opts)  # compiles the runtime (cold cache)
    b = build(tmp_path, "other/dir/b", inputs, **opts)  # reuses it
    assert "runtime objects: compiled into" in a.log_path.read_text()
    assert "runtime objects: cached in" in b.log_path.read_text()
    assert a.elf.read_bytes() == b.elf.read_bytes()
    r1, r2 = run_qemu(a.elf, seed=3), run_qemu(a.elf, seed=3)
    assert r1.returncode == r2.returncode == 0
    assert r1.stdout == r2.stdout and r1.stderr == r2.stderr


def test_seed_drives_the_jitter(tmp_path, inputs):
    res = build(tmp_path, "fw", inputs, slice_us=20, irq_load=True, irq_period_us=25,
                irq_jitter_us=20)
    ev0, ev1 = trace_events(res.elf, 0), trace_events(res.elf, 1)
    assert ev0 != ev1  # releases land between different micro-tiles
    r0, r1 = run_qemu(res.elf, seed=0), run_qemu(res.elf, seed=1)
    assert r0.stdout == r1.stdout  # ...but the kernel output is the same


def test_event_sequence_follows_the_contract(tmp_path, inputs):
    res = build(tmp_path, "fw", inputs, slice_us=20, irq_load=True, irq_period_us=100,
                irq_jitter_us=20, rt_work_iters=50, cal_checks=32)
    all_ev = trace_events(res.elf)
    # the SysTick ISR is bracketed by tick_enter/tick_exit; slice_expire happens inside it
    depth = 0
    for name, _ in all_ev:
        depth += {"tick_enter": 1, "tick_exit": -1}.get(name, 0)
        assert depth in (0, 1)
        if name == "slice_expire":
            assert depth == 1
    ev = [e for e in all_ev if e[0] not in ("tick_enter", "tick_exit")]
    names = [e[0] for e in ev]
    assert names[0] == "boot" and ev[1] == ("cal_start", 32)
    assert names[2:34] == ["tile_end"] * 32 and names[34] == "cal_end"
    assert names[35] == "kernel_start" and names[-1] == "output_ready"
    ks, ke = names.index("kernel_start"), names.index("kernel_end")
    assert names[ks:ke].count("tile_end") == M * N // 4
    for i, (name, payload) in enumerate(ev):
        if name == "yield":  # decided at a tile boundary, then PendSV
            # (a SysTick / IRQ-load ISR may come in between: they preempt thread mode,
            # and PendSV has the lowest priority)
            isr = {"slice_expire", "irq_enter", "rt_release", "irq_exit"}
            assert next(n for n in reversed(names[:i]) if n not in isr) == "tile_end"
            assert payload in (1, 2, 3)
            assert next(n for n in names[i + 1:] if n not in isr) == "pendsv_enter"
        if name == "pendsv_exit":
            assert payload in (0, 1)
        if name == "irq_enter":
            assert names[i + 1] == "rt_release" and names[i + 2] == "irq_exit"
        if name == "slice_expire":
            assert ks < i < ke
    releases = [p for n, p in ev if n == "rt_release"]
    starts = [p for n, p in ev if n == "rt_start"]
    ends = [p for n, p in ev if n == "rt_end"]
    assert releases == starts == ends == list(range(len(releases))) and releases
    # an RT job runs right after a switch to task 1, never inside the kernel's tile
    for i, name in enumerate(names):
        if name == "rt_start" and ks < i < ke:
            assert ev[i - 1] == ("pendsv_exit", 1) or names[i - 1] == "rt_end" \
                or names[i - 1] == "irq_exit"


@pytest.mark.parametrize("period_us", [20, 60, 200])
def test_irq_load_fires_with_the_programmed_period(tmp_path, period_us):
    """No jitter, no slicing: the k-th IRQ enters (k+1) periods after the load started,
    to the tick (latency 0 when nothing masks interrupts)."""
    m = 64  # ~0.5 ms of kernel
    res = build_firmware(matmul_kernel(m=m), matmul_inputs(m=m),
                         RuntimeOptions(slice_us=0, irq_load=True, irq_period_us=period_us,
                                        rt_work_iters=10), tmp_path / "fw")
    proc = run_qemu(res.elf)
    assert proc.returncode == 0
    st = parse_stats(proc.stderr)
    ticks = period_us * 50
    assert st["irqs"] >= 2
    # the ISR reads the cycle counter after the 12-cycle entry and its prologue; at
    # most it waits for a masked PendSV (~130 cycles) as well
    assert 12 < st["irq_lat_min"] <= st["irq_lat_max"] <= 300
    span = st["irq_last"] - st["irq_first"]
    assert abs(span - (st["irqs"] - 1) * ticks) <= st["irq_lat_max"] - st["irq_lat_min"]


def test_deadline_misses_are_counted(tmp_path, inputs):
    res = build(tmp_path, "fw", inputs, slice_us=0, irq_load=True, irq_period_us=400,
                rt_work_iters=2000, rt_deadline_us=1)
    proc = run_qemu(res.elf)
    assert proc.returncode == 0
    st = parse_stats(proc.stderr)
    assert st["rt_jobs"] >= 1 and st["deadline_misses"] == st["rt_jobs"]


def test_too_large_output_fails_with_a_clear_message(tmp_path):
    kern = matmul_kernel(m=128, k=8, n=160)  # 128*160 int32 = 80 KiB > 64 KiB SRAM
    with pytest.raises(StageError) as exc:
        build_firmware(kern, matmul_inputs(128, 8, 160), RuntimeOptions(), tmp_path / "big")
    msg = str(exc.value)
    assert exc.value.stage == "build"
    assert "does not fit" in msg and "RAM" in msg and "overflowed by" in msg
    assert "output buffer needs 81920 bytes" in msg
    overflow = int(re.search(r"overflowed by (\d+) bytes", msg).group(1))
    assert 81920 - 64 * 1024 < overflow < 81920
    assert "region `RAM' overflowed" in (tmp_path / "big" / "zephyr_build.log").read_text()


def test_bad_inputs_and_options_are_rejected(tmp_path, inputs):
    with pytest.raises(StageError, match="shape"):
        build_firmware(matmul_kernel(), [inputs[0].T, inputs[1]], RuntimeOptions(),
                       tmp_path / "x")
    with pytest.raises(StageError, match="takes 2 input"):
        build_firmware(matmul_kernel(), inputs[:1], RuntimeOptions(), tmp_path / "x")
    with pytest.raises(InputError, match="irq_jitter_us"):
        RuntimeOptions(irq_load=True, irq_period_us=10, irq_jitter_us=10)
    with pytest.raises(InputError, match="slice_us"):
        RuntimeOptions(slice_us=400_000)


FAULT_SRC = r"""
#include <stdint.h>
#include "slicert/yield.h"
void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out)
{
  (void)slicert_yield_check();
  if (data[0] != 127) __asm__ volatile(".short 0xde00");  /* udf: UsageFault */
  out[0] = weight[0];
}
"""

STACK_SRC = r"""
#include <stdint.h>
#include "slicert/yield.h"
static int32_t deep(volatile int8_t* p, int32_t n)
{
  volatile int8_t buf[512];
  buf[0] = p[0]; buf[511] = (int8_t)n;
  (void)slicert_yield_check();
  return n ? deep(buf, n - 1) + buf[511] : buf[0];
}
void slicert_kernel(int8_t* data, int8_t* weight, int32_t* out)
{
  out[0] = deep(data, 64) + weight[0];  /* ~33 KiB of stack: far beyond 4 KiB */
}
"""


@pytest.mark.parametrize("src,code", [(FAULT_SRC, 2), (STACK_SRC, 3)],
                         ids=["hardfault", "stack-overflow"])
def test_fault_exit_codes(tmp_path, src, code):
    kern = SimpleNamespace(c_source=src, entry="slicert_kernel",
                           args=[("data", "int8_t", (4,)), ("weight", "int8_t", (4,)),
                                 ("out", "int32_t", (1,))])
    data = [np.zeros(4, np.int8), np.zeros(4, np.int8)]
    res = build_firmware(kern, data, RuntimeOptions(), tmp_path / "fw")
    proc = run_qemu(res.elf)
    assert proc.returncode == code
    assert b"SLICERT-OUT" not in proc.stdout


def test_timers_and_cycle_counter_run_on_modelled_cycles(tmp_path):
    """SysTick, the GPTM and DWT_CYCCNT all count modelled cycles (virtual time = cycles):
    with no jitter, the k-th IRQ-load assertion is exactly k periods of cpu_mhz cycles
    after the first, whatever the kernel's instruction mix."""
    from slicert_ops.sim.trace import parse_plugin_output

    for mhz in (50, 80):
        res = build_firmware(matmul_kernel(m=32), matmul_inputs(m=32),
                             RuntimeOptions(slice_us=40, irq_load=True, irq_period_us=30,
                                            rt_work_iters=10, cpu_mhz=mhz),
                             tmp_path / f"fw{mhz}")
        proc = run_qemu(res.elf)
        assert proc.returncode == 0, proc.stderr.decode()[-500:]
        events, _ = parse_plugin_output(res.elf.with_name("plugin-0-0.txt"))
        pend = [e.pend for e in events
                if e.id == ev.EXC_ENTRY and e.payload == ev.IRQ_LOAD_EXCEPTION]
        ticks = [e.pend for e in events if e.id == ev.EXC_ENTRY and e.payload == 15]
        assert len(pend) >= 5 and len(ticks) >= 5
        assert {b - a for a, b in zip(pend, pend[1:], strict=False)} == {30 * mhz}
        assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {40 * mhz}
        st = parse_stats(proc.stderr)
        # the ISR's own latency (cycle counter at its entry) is the exact latency plus
        # its prologue: never less than the 12-cycle entry
        assert st["irq_lat_min"] > 12


def test_handler_addresses_are_the_symbol_table_s(tmp_path, inputs):
    """The build reads the handler addresses from the ELF itself (slicert_ops.elf, not a
    binutils subprocess): the same addresses as arm-none-eabi-nm's, every global symbol."""
    from slicert_ops.elf import elf_symbols

    res = build(tmp_path, "a", inputs)
    nm = subprocess.run(["arm-none-eabi-nm", str(res.elf)], capture_output=True, text=True)
    # global symbols (a local name, e.g. a static, may be defined in several files)
    listed = {p[2]: int(p[0], 16) for p in (ln.split() for ln in nm.stdout.splitlines())
              if len(p) == 3 and p[1].isupper()}
    syms = elf_symbols(res.elf)
    # nm prints Thumb functions without their Thumb bit; the symbol table stores it
    assert listed and all(syms[name] & ~1 == addr for name, addr in listed.items())
    assert res.handlers and all(res.handlers[h] == listed[h] & ~1 for h in res.handlers)
    with pytest.raises(StageError, match="not a 32-bit little-endian ELF"):
        elf_symbols(res.log_path, stage="build")
