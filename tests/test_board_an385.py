"""runner.board: mps2-an385 (issue 9, item 4) on the real toolchain: arm-none-eabi-gcc,
the patched QEMU and the cycle plugin. A conv2d kernel through the pipeline with IRQ load
and slicing, the dual timer's IRQ-load schedule exact to the cycle, and a network that does
not fit lm3s6965evb running bit-exact on mps2-an385. The lm3s6965evb side is covered by
test_firmware / test_pipeline / test_trace (its ELFs are byte-identical to the unsplit port).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slicert_ops.errors import StageError
from slicert_ops.firmware import RuntimeOptions, build_firmware
from slicert_ops.firmware.boards import BOARDS
from slicert_ops.paths import PLUGIN_SO
from slicert_ops.sim import events as ev
from slicert_ops.sim.qemu import build_command, run_firmware

pytestmark = [pytest.mark.integration]

BOARD = "mps2-an385"
M, K, N = 16, 64, 24
KERNEL_SRC = r"""
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
      (void)slicert_yield_check();
    }
  }
}
"""


class _Kernel:
    def __init__(self, m: int = M) -> None:
        self.c_source = KERNEL_SRC % {"M": m, "K": K, "N": N}
        self.entry = "slicert_kernel"
        self.args = [("data", "int8_t", (m, K)), ("weight", "int8_t", (N, K)),
                     ("out", "int32_t", (m, N))]


def _inputs(m: int = M) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(-128, 128, (m, K), dtype=np.int8),
            rng.integers(-128, 128, (N, K), dtype=np.int8)]


@pytest.fixture(scope="module", autouse=True)
def runtime_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SLICERT_CACHE_DIR", str(tmp_path_factory.mktemp("slicert-cache")))
    yield
    mp.undo()


def _run(elf: Path, out: Path, seed: int = 0):
    return run_firmware(elf, seed=seed, out_dir=out, timeout_s=60, plugin=PLUGIN_SO,
                        board=BOARD)


@pytest.fixture(scope="module")
def qemu_an385(tmp_path_factory):
    """The cycle plugin runs mps2-an385 (its LAN9118 pends IRQ 13 at machine reset,
    before the vCPU exists: the plugin must not touch its counters then)."""
    base = tmp_path_factory.mktemp("probe")
    res = build_firmware(_Kernel(), _inputs(), RuntimeOptions(), base / "fw", board=BOARD)
    _run(res.elf, base / "run").raise_for_status()


def test_memory_map_handlers_and_command_line(tmp_path):
    """No QEMU: the an385 ELF has its trace stubs at the board's base, its IRQ-load
    handler in vector 16 + 10, and the QEMU line names the machine and trace base; the
    lm3s6965evb line is unchanged."""
    res = build_firmware(_Kernel(), _inputs(), RuntimeOptions(irq_load=True, slice_us=40),
                         tmp_path / "fw", board=BOARD)
    board = BOARDS[BOARD]
    assert set(res.handlers) == set(board.handler_symbols)
    assert "DualTimer_Handler" in res.handlers and "Timer0A_Handler" not in res.handlers
    nm = subprocess.run(["arm-none-eabi-nm", str(res.elf)], capture_output=True, text=True,
                        check=True).stdout
    syms = {ln.split()[2]: int(ln.split()[0], 16) for ln in nm.splitlines()
            if len(ln.split()) == 3}
    assert syms["slicert_trace_base"] == board.trace_base == 0x3FF000
    vec = subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".text", str(res.elf),
                          str(tmp_path / "text.bin")], check=True)
    assert vec.returncode == 0
    words = [int(w) for w in np.frombuffer((tmp_path / "text.bin").read_bytes()[:4 * 48],
                                           dtype="<u4")]
    assert words[ev.irq_load_exception(BOARD)] & ~1 == res.handlers["DualTimer_Handler"]
    assert words[15] & ~1 == res.handlers["SysTick_Handler"]
    assert words[0] >= 0x20000000  # initial MSP in SRAM
    assert "board: mps2-an385" in res.log_path.read_text()

    cmd = build_command("fw.elf", seed=3, plugin="p.so", plugin_out="o.txt", board=BOARD)
    assert cmd[cmd.index("-M") + 1] == "mps2-an385"
    assert cmd[-1] == "p.so,trace_base=0x3ff000,out=o.txt"
    assert build_command("fw.elf", seed=3, plugin="p.so", plugin_out="o.txt") == [
        os.fspath(cmd[0]), "-M", "lm3s6965evb", "-display", "none", "-serial", "null",
        "-monitor", "none", "-no-reboot", "-accel", "tcg,thread=single",
        "-semihosting-config", "enable=on,target=native", "-append", "seed=3",
        "-kernel", "fw.elf", "-plugin", "p.so,trace_base=0x3e000,out=o.txt"]


def test_timer_intervals_qemu_cannot_time_are_rejected(tmp_path):
    """QEMU stretches a ptimer period below 10 us of virtual time (250 cycles at 40 ns)."""
    with pytest.raises(StageError, match="irq_period_us - irq_jitter_us"):
        build_firmware(_Kernel(), _inputs(), RuntimeOptions(irq_load=True, irq_period_us=10,
                                                            irq_jitter_us=6),
                       tmp_path / "a", board=BOARD)
    with pytest.raises(StageError, match="slice_us"):
        build_firmware(_Kernel(), _inputs(), RuntimeOptions(slice_us=4), tmp_path / "b",
                       board=BOARD)
    with pytest.raises(StageError, match="unknown board"):
        build_firmware(_Kernel(), _inputs(), None, tmp_path / "c", board="stm32")


def test_irq_load_and_slices_run_on_modelled_cycles(tmp_path, qemu_an385):
    """The dual timer's assertions are exactly irq_period_us x cpu_mhz cycles apart (the
    SysTick's slice_us x cpu_mhz), at 50 and 80 MHz; with jitter, assertion k is at
    a_0 + k*P + J_k - J_0 with the runtime's xorshift32 draws; the output is right."""
    from slicert_ops.sim.trace import compute_metrics

    exc = ev.irq_load_exception(BOARD)
    a, w = _inputs(32)
    want = a.astype(np.int32) @ w.astype(np.int32).T
    for mhz, jitter in ((50, 0), (80, 0), (50, 7)):
        opts = RuntimeOptions(slice_us=40, irq_load=True, irq_period_us=30, irq_jitter_us=jitter,
                              rt_work_iters=10, cpu_mhz=mhz)
        res = build_firmware(_Kernel(32), [a, w], opts, tmp_path / f"fw{mhz}_{jitter}",
                             board=BOARD)
        sim = _run(res.elf, tmp_path / f"run{mhz}_{jitter}", seed=5).raise_for_status()
        assert np.array_equal(np.frombuffer(sim.output, dtype="<i4").reshape(want.shape), want)
        pend = [e.pend for e in sim.events if e.id == ev.EXC_ENTRY and e.payload == exc]
        ticks = [e.pend for e in sim.events if e.id == ev.EXC_ENTRY and e.payload == 15]
        assert len(pend) >= 5 and len(ticks) >= 5
        assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {40 * mhz}
        period = 30 * mhz
        if not jitter:
            assert {b - a for a, b in zip(pend, pend[1:], strict=False)} == {period}
        else:
            draws = _xorshift_jitter(5, jitter * mhz, len(pend))
            assert [p - pend[0] for p in pend] == [
                k * period + draws[k] - draws[0] for k in range(len(pend))]
        m = compute_metrics(sim.events, sim.totals, {"text": 0, "data": 0, "bss": 0}, True,
                            deadline_cycles=500 * mhz, irq_exception=exc)
        assert m["irq_count"] > 0 and m["irq_latency_min_cycles"] >= 6
        assert m["rt_jobs"] > 0 and m["slices"] > 0


def _xorshift_jitter(seed: int, jitter_ticks: int, n: int) -> list[int]:
    """J_k of zephyr/README.md ("Seeded jitter")."""
    state = ((seed + 1) * 0x9E3779B1) & 0xFFFFFFFF or 0x9E3779B1
    out = []
    for _ in range(n):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        out.append(state % (jitter_ticks + 1))
    return out


CONV = """experiment:
  name: conv_an385
  repeat: 1
  operator: {type: conv2d, input: [1, 12, 12, 3], kernel: [3, 3], out_channels: 4,
             stride: 1, padding: 0, dtype: int8}
  parameters:
    tile_size: [8]
    unroll: [2]
    slice: [20]
  runner:
    board: mps2-an385
    simulate_irq_load: true
    irq_period_us: 50
    irq_jitter_us: 10
"""


def test_conv2d_candidate_on_an385_through_the_pipeline(tmp_path, qemu_an385):
    """A generated conv2d kernel, built and run by the pipeline for runner.board
    mps2-an385 with IRQ load and slicing: correct, the board in the trace and the
    candidate id, IRQ metrics from the dual timer's exception."""
    from slicert_ops.manifest import expand, load_manifest
    from slicert_ops.sweep import run_sweep

    path = tmp_path / "conv.yaml"
    path.write_text(CONV)
    exp = load_manifest(path)
    cands = expand(exp).candidates
    assert len(cands) == 1 and cands[0].runner["board"] == BOARD
    lm3s = load_manifest(path, overrides=["runner.board=lm3s6965evb"])
    assert expand(lm3s).candidates[0].id != cands[0].id
    res = run_sweep(exp, cands, tmp_path / "out", progress=False)
    run = tmp_path / "out" / "conv_an385" / "run_0001"
    man = json.loads((run / "manifest.json").read_text())
    assert [o.status for o in res.outcomes] == ["ok"], man.get("error")
    trace = json.loads((run / "qemu_trace.json").read_text())
    assert trace["board"] == BOARD and trace["candidate_id"] == cands[0].id
    mt = trace["metrics"]
    assert mt["correct"] == 1 and mt["irq_count"] > 0 and mt["slices"] > 0
    assert mt["irq_latency_max_cycles"] >= mt["irq_latency_min_cycles"] >= 6
    assert mt["rt_jobs"] > 0 and mt["yield_checks"] > 0
    assert "board: mps2-an385" in (run / "zephyr_build.log").read_text()


def test_network_too_big_for_lm3s6965evb_runs_bit_exact_on_an385(tmp_path, qemu_an385):
    """The FC autoencoder (~284 KB of int8 weights) does not fit lm3s6965evb's 248 KiB
    flash; on mps2-an385 it runs under IRQ load, bit-exact against numpy."""
    from slicert_ops.network import build_network_firmware, load_network, run_network
    from slicert_ops.network.memory import check_board, plan_memory
    from slicert_ops.network.models import fc_autoencoder

    net = load_network({"experiment": {"name": "fc", "model": fc_autoencoder(),
                                       "runner": {"board": BOARD}}})
    plan = plan_memory(net)
    assert plan.weight_bytes > 248 * 1024
    assert check_board(net, plan, "lm3s6965evb") and not check_board(net, plan, BOARD)
    opts = RuntimeOptions(slice_us=50, irq_load=True, irq_period_us=200, irq_jitter_us=50,
                          rt_work_iters=50, rt_deadline_us=200)
    nb = build_network_firmware(net, tmp_path / "fw", runtime_options=opts, board=BOARD)
    assert nb.build.text_bytes > 248 * 1024
    run = run_network(nb, tmp_path / "run", deadline_us=200)
    assert run.correct, run.mismatch
    assert run.metrics["irq_count"] > 0 and run.metrics["rt_jobs"] > 0
    assert sum(row["irq_count"] for row in run.layers) > 0
