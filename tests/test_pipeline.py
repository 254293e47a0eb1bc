"""End to end on the real toolchain: TVM codegen, arm-none-eabi-gcc, QEMU + cycle plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slicert_ops.manifest import expand, load_manifest
from slicert_ops.rundir import RUN_FILES
from slicert_ops.sweep import run_sweep

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "slicert_ops.cli"]

CONV = """experiment:
  name: conv_e2e
  repeat: 2
  parameters:
    tile_size: [8, 16]
    unroll: [1, 4]
    slice: [48]
  runner:
    simulate_irq_load: true
    irq_period_us: 300
  logging: {raw: true, compress: true}
"""


def slicert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def runs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.glob("run_[0-9][0-9][0-9][0-9]") if p.is_dir())


def read_cycles(run: Path) -> dict[str, float]:
    return {k: float(v) for k, v in
            (line.split() for line in (run / "cycles.txt").read_text().splitlines())}


@pytest.fixture(scope="module")
def conv_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("conv")
    manifest = base / "conv.yaml"
    manifest.write_text(CONV)
    res = slicert("run", str(manifest), "--out", str(base / "j1"), "--jobs", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    return manifest, base / "j1" / "conv_e2e"


def test_every_run_folder_is_complete_and_correct(conv_sweep: tuple[Path, Path]) -> None:
    _, exp_dir = conv_sweep
    folders = runs(exp_dir)
    assert [p.name for p in folders] == [f"run_{i:04d}" for i in range(1, 9)]
    for run in folders:
        for name in RUN_FILES:
            assert (run / name).is_file(), f"{run.name} lacks {name}"
        cyc = read_cycles(run)
        for key in ("kernel_cycles", "wall_cycles", "instructions",
                    "max_preemption_latency_cycles", "irq_count", "correct"):
            assert key in cyc
        assert cyc["correct"] == 1
        assert cyc["irq_count"] > 0 and cyc["wall_cycles"] >= cyc["kernel_cycles"] > 0
        man = json.loads((run / "manifest.json").read_text())
        assert man["status"] == "ok" and man["versions"]["cycle_model"] == "cm3-v2"
        trace = json.loads((run / "qemu_trace.json").read_text())
        assert trace["schema"] == "slicert-trace/1"
        assert trace["metrics"]["kernel_cycles"] == cyc["kernel_cycles"]
        # logging.raw + compress: raw logs kept, gzipped
        assert any(p.suffix == ".gz" for p in (run / "raw").iterdir())
    build_log = (folders[0] / "zephyr_build.log").read_text()
    assert "arm-none-eabi-gcc" in build_log and "text" in build_log


def test_schedules_change_the_figures_sensibly(conv_sweep: tuple[Path, Path]) -> None:
    _, exp_dir = conv_sweep
    by_sched: dict[tuple[int, int], dict[str, float]] = {}
    for run in runs(exp_dir):
        man = json.loads((run / "manifest.json").read_text())
        s = man["schedule"]
        by_sched[(s["tile_size"], s["unroll"])] = read_cycles(run)
    for tile in (8, 16):
        # unrolling the output channels shares each input load: fewer instructions
        assert by_sched[(tile, 4)]["kernel_instructions"] < \
            0.9 * by_sched[(tile, 1)]["kernel_instructions"]
    # micro-tiles (yield checks) follow the tiling: 32x32 output, 4x4 micro-tiles
    assert by_sched[(8, 1)]["yield_checks"] == 64
    # repeats differ only by the IRQ seed: the kernel thread's work is the same, up to the
    # few ISR prologue instructions before each handler's first marker (see sim/trace.py),
    # counted as kernel time only for an IRQ taken while the kernel runs (where each IRQ
    # lands, kernel or RT task, depends on the seed)
    folders = runs(exp_dir)
    a, b = read_cycles(folders[0]), read_cycles(folders[1])
    assert abs(a["kernel_instructions"] - b["kernel_instructions"]) <= \
        40 * (1 + abs(a["irq_count"] - b["irq_count"]) + abs(a["pendsv_count"] - b["pendsv_count"])
              + abs(a["slices"] - b["slices"])) + 4 * max(a["irq_count"], b["irq_count"])
    assert a["max_preemption_latency_cycles"] != b["max_preemption_latency_cycles"]


def test_same_manifest_is_byte_identical_across_jobs(conv_sweep: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    manifest, exp_dir = conv_sweep
    res = slicert("run", str(manifest), "--out", str(tmp_path), "--jobs", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    other = tmp_path / "conv_e2e"
    for run in runs(exp_dir):
        for name in ("cycles.txt", "qemu_trace.json", "tvm_config.json"):
            assert (run / name).read_bytes() == (other / run.name / name).read_bytes(), \
                f"{run.name}/{name} differs between --jobs 1 and --jobs 2"


def test_rerun_reuses_finished_runs(conv_sweep: tuple[Path, Path]) -> None:
    manifest, exp_dir = conv_sweep
    before = {p.name: (p / "manifest.json").read_bytes() for p in runs(exp_dir)}
    res = slicert("run", str(manifest), "--out", str(exp_dir.parent), "--jobs", "1")
    assert res.returncode == 0
    assert "reused 8" in res.stderr
    after = {p.name: (p / "manifest.json").read_bytes() for p in runs(exp_dir)}
    assert before == after


def test_index_and_report_written(conv_sweep: tuple[Path, Path]) -> None:
    _, exp_dir = conv_sweep
    import pandas as pd

    df = pd.read_parquet(exp_dir / "index.parquet")
    assert len(df) == 8 and set(df["status"]) == {"ok"}
    assert (exp_dir / "report" / "pareto_kernel_vs_preemption.png").stat().st_size > 1000


def _micro_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text("""experiment:
  name: micro_latency
  repeat: 1
  parameters:
    tile_size: [16]
    micro_tile: [1, 2, 4, 8]
    unroll: [2]
    slice: [64]
  runner:
    simulate_irq_load: true
    irq_period_us: 250
    irq_jitter_us: 40
""")
    return path


def test_preemption_only_at_micro_tile_boundaries_and_latency_grows(tmp_path: Path) -> None:
    res = slicert("run", str(_micro_manifest(tmp_path)), "--out", str(tmp_path), "--jobs", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    worst = {}
    for run in runs(tmp_path / "micro_latency"):
        trace = json.loads((run / "qemu_trace.json").read_text())
        micro = json.loads((run / "manifest.json").read_text())["schedule"]["micro_tile"]
        worst[micro] = trace["metrics"]["max_preemption_latency_cycles"]
        types = [e["type"] for e in trace["events"]]
        assert "irq_enter" in types and "rt_release" in types and "rt_start" in types
        start, end = types.index("kernel_start"), types.index("kernel_end")
        # Within the kernel window, the kernel thread gives the CPU away only through a
        # yield check (tile_end -> yield -> PendSV); interrupts in between do not preempt.
        thread = [e for e in trace["events"][start:end] if e["type"] not in
                  ("irq_enter", "irq_exit", "rt_release", "slice_expire", "tick_enter",
                   "tick_exit", "exc_entry")]
        task = 0  # pendsv_exit's payload: the task switched to (0 kernel, 1 rt)
        switches = 0
        for i, e in enumerate(thread):
            if e["type"] == "pendsv_enter" and task == 0:
                assert [thread[i - 2]["type"], thread[i - 1]["type"]] == ["tile_end", "yield"], \
                    f"{run.name}: preempted outside a micro-tile boundary at event {i}"
                switches += 1
            if e["type"] == "pendsv_exit":
                task = e["payload"]
        assert switches > 0
    assert worst[1] < worst[2] < worst[4] < worst[8], worst


def test_dense_operator_end_to_end(tmp_path: Path) -> None:
    res = slicert("run", str(ROOT / "experiments" / "dense_small.yaml"), "--out", str(tmp_path),
                  "--set", "experiment.repeat=1", "--set", "parameters.tile_size=[16]",
                  "--set", "parameters.micro_tile=[4]", "--set", "parameters.unroll=[4]")
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = runs(tmp_path / "dense_256x64")
    cyc = read_cycles(run)
    assert cyc["correct"] == 1 and cyc["yield_checks"] == 64 / 4


def test_float32_conv_with_padding_and_stride(tmp_path: Path) -> None:
    path = tmp_path / "f32.yaml"
    path.write_text("""experiment:
  name: conv_f32
  operator: {type: conv2d, input: [1, 15, 15, 2], kernel: [3, 3], out_channels: 4,
             stride: 2, padding: 1, dtype: float32}
  parameters: {tile_size: [4], unroll: [2]}
""")
    res = slicert("run", str(path), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = runs(tmp_path / "conv_f32")
    assert read_cycles(run)["correct"] == 1


def test_hung_qemu_is_killed_and_the_sweep_goes_on(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import slicert_ops.sim.qemu as qemu

    real = qemu.build_command
    calls = {"n": 0}

    def freeze_second_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        cmd = real(*args, **kwargs)
        calls["n"] += 1
        return [*cmd, "-S"] if calls["n"] == 2 else cmd  # -S: the CPU never starts

    monkeypatch.setattr(qemu, "build_command", freeze_second_run)
    path = tmp_path / "hang.yaml"
    path.write_text("experiment:\n  name: hang\n  parameters: {tile_size: [8, 16, 32]}\n"
                    "  runner: {timeout_s: 3}\n")
    exp = load_manifest(path)
    result = run_sweep(exp, expand(exp).candidates, tmp_path, jobs=1, progress=False)
    assert [o.status for o in result.outcomes] == ["ok", "failed", "ok"]
    assert "timed out after 3s" in (result.outcomes[1].error or "")
    assert result.exit_code == 1
    hung = tmp_path / "hang" / "run_0002"
    man = json.loads((hung / "manifest.json").read_text())
    assert man["status"] == "failed" and not (hung / "cycles.txt").exists()


def test_wrong_kernel_output_fails_the_run(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import slicert_ops.codegen as codegen

    real = codegen.reference
    monkeypatch.setattr(codegen, "reference", lambda op, inputs: real(op, inputs) + 1)
    path = tmp_path / "wrong.yaml"
    path.write_text("experiment:\n  name: wrong\n  parameters: {tile_size: [16]}\n")
    exp = load_manifest(path)
    result = run_sweep(exp, expand(exp).candidates, tmp_path, jobs=1, progress=False)
    (o,) = result.outcomes
    assert o.status == "failed" and "differ from the numpy reference" in (o.error or "")
    cyc = read_cycles(tmp_path / "wrong" / "run_0001")
    assert cyc["correct"] == 0


def test_exit_code_one_when_a_candidate_fails(tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    # An overloaded RT task (jobs far longer than the period) starves the kernel: the run
    # hits its timeout, the command reports it and exits 1, with no traceback.
    path.write_text("experiment:\n  name: slow\n  parameters: {tile_size: [16]}\n"
                    "  runner: {timeout_s: 1, simulate_irq_load: true, irq_period_us: 10,"
                    " irq_jitter_us: 0, rt_work_iters: 100000}\n")
    res = slicert("run", str(path), "--out", str(tmp_path))
    assert res.returncode == 1, res.stderr[-2000:]
    assert "failed" in res.stdout and "Traceback" not in res.stderr


IRQ_MIX = """experiment:
  name: irq_period_{name}
  repeat: 1
  operator: {operator}
  parameters: {{tile_size: [4], unroll: [2], slice: [40]}}
  runner:
    simulate_irq_load: true
    irq_period_us: 60
    irq_jitter_us: 0
    rt_work_iters: 20
    cpu_mhz: {mhz}
"""


@pytest.mark.parametrize("name, operator, mhz", [
    ("conv_i8", "{type: conv2d, input: [1, 10, 10, 2], kernel: [3, 3], out_channels: 4}", 50),
    ("conv_f32", "{type: conv2d, input: [1, 8, 8, 2], kernel: [3, 3], out_channels: 2, "
                 "dtype: float32}", 50),
    ("dense_i8", "{type: dense, input: [4, 64], units: 16}", 80),
    ("dense_f32", "{type: dense, input: [2, 32], units: 8, dtype: float32}", 50),
])
def test_irq_interarrival_is_the_period_in_modelled_cycles(tmp_path: Path, name: str,
                                                           operator: str, mhz: int) -> None:
    """Virtual time is modelled cycles: with no jitter the IRQ load asserts every
    irq_period_us x cpu_mhz cycles exactly, whatever the kernel's instruction mix."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(IRQ_MIX.format(name=name, operator=operator, mhz=mhz))
    res = slicert("run", str(path), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = runs(tmp_path / f"irq_period_{name}")
    trace = json.loads((run / "qemu_trace.json").read_text())
    assert trace["cpu_mhz"] == mhz and trace["metrics"]["correct"] == 1
    pend = [e["pend_cycles"] for e in trace["events"]
            if e["type"] == "exc_entry" and e["payload"] == 35]
    gaps = [b - a for a, b in zip(pend, pend[1:], strict=False)]
    assert len(gaps) >= 3
    mean = sum(gaps) / len(gaps)
    assert abs(mean - 60 * mhz) <= 0.01 * 60 * mhz
    assert set(gaps) == {60 * mhz}                  # in fact exact
    lat = trace["metrics"]
    assert 6 <= lat["irq_latency_min_cycles"] <= lat["irq_latency_max_cycles"]
