"""runner.board: mps2-an386 (issue 18, first part: a Cortex-M4F board) on the real
toolchain: arm-none-eabi-gcc for the M4 with the hard-float ABI, the patched QEMU's
mps2-an386 and the cycle plugin's model cm4-v1. The build flags and the command line, the
versions recorded per board (the M3 boards' unchanged), an FP kernel switched by PendSV
with FP frames under IRQ load and slicing (bit-exact), and a conv2d candidate through the
pipeline. The cycle rules themselves: tests/test_cycle_model_m4.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slicert_ops.firmware import RuntimeOptions, build_firmware
from slicert_ops.firmware.boards import BOARDS
from slicert_ops.paths import PLUGIN_SO
from slicert_ops.sim import events as ev
from slicert_ops.sim.qemu import build_command, run_firmware

pytestmark = [pytest.mark.integration]

BOARD = "mps2-an386"
M, K, N = 12, 32, 16

# The kernel of test_board_an385 in int8 (gcc emits SMLABB for it on the M4) and in
# float32 (VFP multiply-accumulates, an FP context in the kernel thread).
KERNEL_SRC = r"""
#include <stdint.h>
#include "slicert/yield.h"
int32_t slicert_yield_check(void);

void slicert_kernel(%(T)s* data, %(T)s* weight, %(A)s* out)
{
  for (int32_t m = 0; m < %(M)d; ++m) {
    for (int32_t n0 = 0; n0 < %(N)d; n0 += 4) {
      for (int32_t n = n0; n < n0 + 4; ++n) {
        %(A)s acc = 0;
        for (int32_t k = 0; k < %(K)d; ++k) {
          acc += (%(A)s)data[m * %(K)d + k] * (%(A)s)weight[n * %(K)d + k];
        }
        out[m * %(N)d + n] = acc;
      }
      (void)slicert_yield_check();
    }
  }
}
"""


class _Kernel:
    def __init__(self, dtype: str = "int8") -> None:
        t, a = ("int8_t", "int32_t") if dtype == "int8" else ("float", "float")
        self.c_source = KERNEL_SRC % {"M": M, "K": K, "N": N, "T": t, "A": a}
        self.entry = "slicert_kernel"
        self.args = [("data", t, (M, K)), ("weight", t, (N, K)), ("out", a, (M, N))]


def _inputs(dtype: str = "int8") -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    if dtype == "int8":
        return [rng.integers(-128, 128, (M, K), dtype=np.int8),
                rng.integers(-128, 128, (N, K), dtype=np.int8)]
    # small integers: every product and partial sum is exact in float32, so the result
    # is bit-exact whatever the order or fusing (VFMA) of the operations
    return [rng.integers(-8, 9, (M, K)).astype(np.float32),
            rng.integers(-8, 9, (N, K)).astype(np.float32)]


@pytest.fixture(scope="module", autouse=True)
def runtime_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SLICERT_CACHE_DIR", str(tmp_path_factory.mktemp("slicert-cache")))
    yield
    mp.undo()


def test_build_flags_command_line_and_versions(tmp_path: Path) -> None:
    """No QEMU: the M4 firmware is built for the Cortex-M4F with the hard-float ABI and
    the an386 port; the QEMU line names mps2-an386 and passes core=cm4; the M3 boards'
    lines and versions have no trace of it."""
    from slicert_ops.versions import toolchain_versions

    res = build_firmware(_Kernel(), _inputs(), RuntimeOptions(irq_load=True, slice_us=40),
                         tmp_path / "fw", board=BOARD)
    log = res.log_path.read_text()
    assert "-mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16 -mthumb" in log
    assert "ports/baremetal-an386" in log and "-mcpu=cortex-m3" not in log
    assert set(res.handlers) == set(BOARDS[BOARD].handler_symbols)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(res.elf)], capture_output=True,
                         text=True, check=True).stdout
    assert "vstmdb\tr0!, {s16-s31}" in dis                   # the FP-aware PendSV
    assert "vldmia\tr0!, {s16-s31}" in dis
    assert "smlabb" in dis                                    # the M4's DSP multiply

    cmd = build_command("fw.elf", seed=1, plugin="p.so", plugin_out="o.txt", board=BOARD)
    assert cmd[cmd.index("-M") + 1] == "mps2-an386"
    assert cmd[-1] == "p.so,trace_base=0x3ff000,out=o.txt,core=cm4"
    for m3 in ("lm3s6965evb", "mps2-an385"):
        line = build_command("fw.elf", seed=1, plugin="p.so", plugin_out="o.txt", board=m3)
        assert "core=" not in line[-1]
        assert ev.cycle_model(m3) == "cm3-v2"

    m3, m4 = toolchain_versions(), toolchain_versions(BOARD)
    assert toolchain_versions("mps2-an385") == toolchain_versions("lm3s6965evb") == m3
    assert m3["cycle_model"] == "cm3-v2" and m4["cycle_model"] == "cm4-v1"
    assert {k for k in m3 if m3[k] != m4[k]} == {"cycle_model", "runtime"}


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_kernel_under_irq_load_and_slices_is_bit_exact(tmp_path: Path, dtype: str) -> None:
    """Slices (SysTick) and the dual timer's IRQ load preempt the kernel thread; PendSV
    switches it with the RT task. In float32 the kernel thread has an FP context: its
    frames are FP frames (lazily stacked, s16-s31 saved by PendSV) and the result stays
    bit-exact. The IRQ-load assertions are exactly irq_period_us x cpu_mhz cycles apart
    and the plugin file says cm4-v1."""
    from slicert_ops.sim.trace import compute_metrics, read_plugin_output

    a, w = _inputs(dtype)
    acc = np.int32 if dtype == "int8" else np.float32
    want = a.astype(acc) @ w.astype(acc).T
    mhz = 80
    opts = RuntimeOptions(slice_us=20, irq_load=True, irq_period_us=15, rt_work_iters=10,
                          cpu_mhz=mhz)
    res = build_firmware(_Kernel(dtype), [a, w], opts, tmp_path / "fw", board=BOARD)
    sim = run_firmware(res.elf, seed=2, out_dir=tmp_path / "run", timeout_s=60,
                       plugin=PLUGIN_SO, board=BOARD, classes=True).raise_for_status()
    assert sim.output is not None
    got = np.frombuffer(sim.output, dtype="<i4" if dtype == "int8" else "<f4")
    assert np.array_equal(got.reshape(want.shape), want)
    assert sim.plugin_file is not None
    out = read_plugin_output(sim.plugin_file)
    assert out.cycle_model == "cm4-v1"
    classes = dict(w.split("=") for c in out.comments if c.startswith("classes ")
                   for w in c.split()[1:])
    if dtype == "float32":
        # PendSV saved and restored s16-s31 (vstmdb/vldmia): FP frames were switched
        assert int(classes["vldm"]) >= 2 and int(classes["vmla"]) > 0
    exc = ev.irq_load_exception(BOARD)
    pend = [e.pend for e in sim.events if e.id == ev.EXC_ENTRY and e.payload == exc]
    assert len(pend) >= 5
    assert {b - a for a, b in zip(pend, pend[1:], strict=False)} == {15 * mhz}
    m = compute_metrics(sim.events, sim.totals, {"text": 0, "data": 0, "bss": 0}, True,
                        deadline_cycles=500 * mhz, irq_exception=exc)
    assert m["irq_count"] > 0 and m["rt_jobs"] > 0 and m["slices"] > 0
    assert m["pendsv_count"] > 0 and m["irq_latency_min_cycles"] >= 6
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(res.elf)], capture_output=True,
                         text=True, check=True).stdout
    if dtype == "float32":
        assert "vfma.f32" in dis or "vmla.f32" in dis


CONV = """experiment:
  name: conv_an386
  repeat: 1
  operator: {type: conv2d, input: [1, 12, 12, 3], kernel: [3, 3], out_channels: 4,
             stride: 1, padding: 0, dtype: int8}
  parameters:
    tile_size: [8]
    unroll: [2]
    slice: [20]
  runner:
    board: mps2-an386
    simulate_irq_load: true
    irq_period_us: 50
    irq_jitter_us: 10
    cpu_mhz: 120
"""


def test_conv2d_candidate_on_an386_through_the_pipeline(tmp_path: Path) -> None:
    """A generated conv2d kernel through the pipeline on mps2-an386 with IRQ load and
    slicing at 120 MHz: correct; cm4-v1 in the candidate's versions (so in its id) and in
    the trace; the board's id differs from mps2-an385's."""
    from slicert_ops.manifest import expand, load_manifest
    from slicert_ops.sweep import run_sweep

    path = tmp_path / "conv.yaml"
    path.write_text(CONV)
    exp = load_manifest(path)
    cands = expand(exp).candidates
    assert len(cands) == 1 and cands[0].versions["cycle_model"] == "cm4-v1"
    an385 = expand(load_manifest(path, overrides=["runner.board=mps2-an385"])).candidates[0]
    assert an385.versions["cycle_model"] == "cm3-v2" and an385.id != cands[0].id
    res = run_sweep(exp, cands, tmp_path / "out", progress=False)
    run = tmp_path / "out" / "conv_an386" / "run_0001"
    man = json.loads((run / "manifest.json").read_text())
    assert [o.status for o in res.outcomes] == ["ok"], man.get("error")
    assert man["versions"]["cycle_model"] == "cm4-v1"
    trace = json.loads((run / "qemu_trace.json").read_text())
    assert trace["board"] == BOARD and trace["cycle_model"] == "cm4-v1"
    assert trace["cpu_mhz"] == 120
    mt = trace["metrics"]
    assert mt["correct"] == 1 and mt["irq_count"] > 0 and mt["slices"] > 0
    assert mt["rt_jobs"] > 0 and mt["yield_checks"] > 0
    assert "board: mps2-an386" in (run / "zephyr_build.log").read_text()


def test_trace_names_the_core_of_the_board() -> None:
    """A trace says whose cycles it counts: the M3 boards' text is unchanged (stored runs),
    mps2-an386 says Cortex-M4 and cm4-v1."""
    from slicert_ops.sim.trace import UNITS, build_trace

    totals = {"cycles": 10, "instructions": 5}
    kw = {"candidate_id": "c", "repeat": 0, "seed": 0, "exit_code": 0, "sizes": {},
          "metrics": {}}
    m3 = build_trace([], totals, board="mps2-an385", **kw)
    m4 = build_trace([], totals, board="mps2-an386", **kw)
    assert m3["units"] == UNITS and m3["cycle_model"] == "cm3-v2"
    assert m4["units"]["cycles"].startswith("modelled Cortex-M4 cycles")
    assert m4["cycle_model"] == "cm4-v1"
