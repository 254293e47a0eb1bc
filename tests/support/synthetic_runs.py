"""Synthetic but realistic run folders (the layout the pipeline writes; see docs/contracts.md).

Cycles are a deterministic function of the schedule (no randomness at all: the "IRQ seed"
of a repeat only shifts the phase of the simulated interrupts, through a hash):

- kernel cycles = MACs x cycles-per-MAC(unroll, micro_tile) + per-macro-tile setup
  + yield checks x check cost, with a register-spill penalty when unroll x micro_tile
  outgrows the Cortex-M3's registers;
- worst preemption latency ~ one micro-tile of work + PendSV switch + a phase term;
- IRQ latency: entry cost + PendSV masking windows, larger with longer slices.

    write_sweep(tmp_path / "results", "conv2d_5x5_latency", repeat=3) -> [run folders]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CONV2D = {"type": "conv2d", "input": [1, 36, 36, 3], "kernel": [5, 5], "out_channels": 8,
          "stride": 1, "padding": 0, "dtype": "int8"}
DENSE = {"type": "dense", "input": [1, 256], "units": 64, "dtype": "int8"}
VERSIONS = {"tvm": "0.27.0.post1", "gcc": "12.2.1", "qemu": "7.2.19", "runtime": "0.1.0",
            "cycle_model": "cm3-v1", "plugin": "0.1.0"}
RUNNER = {"simulate_irq_load": True, "irq_period_us": 200, "irq_jitter_us": 20,
          "rt_work_iters": 50, "rt_deadline_us": 100}
TRACE_SCHEMA = "slicert-trace/1"
RUN_SCHEMA = "slicert-run/1"
PENDSV_CYCLES = 38
YIELD_CHECK_CYCLES = 9
CYCLES_PER_US = 50  # 50 MHz board clock


def candidate_id(operator: dict, schedule: dict, runner: dict, versions: dict) -> str:
    blob = json.dumps({"operator": operator, "schedule": schedule, "runner": runner,
                       "versions": versions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _phase(cid: str, repeat: int) -> float:
    """Deterministic value in [0, 1) standing in for the seeded IRQ phase."""
    h = hashlib.sha256(f"{cid}:{repeat}".encode()).digest()
    return int.from_bytes(h[:4], "little") / 2**32


def op_shape(op: dict) -> tuple[int, int]:
    """(outputs, MACs per output)."""
    if op["type"] == "conv2d":
        _, h, w, c = op["input"]
        kh, kw = op["kernel"]
        oh = (h + 2 * op["padding"] - kh) // op["stride"] + 1
        ow = (w + 2 * op["padding"] - kw) // op["stride"] + 1
        return oh * ow * op["out_channels"], kh * kw * c
    n, k = op["input"]
    return n * op["units"], k


def model_cycles(op: dict, sched: dict) -> dict[str, float]:
    """The noise-free cost of a schedule (what the 'firmware' would measure)."""
    outputs, macs_per_out = op_shape(op)
    macs = outputs * macs_per_out
    tile, micro, unroll = sched["tile_size"], sched["micro_tile"], sched["unroll"]
    cpm = 2.2 + 3.0 / (1.0 + 0.9 * math.log2(unroll)) + 0.6 / micro
    live = unroll * micro
    if live > 16:  # register pressure: spills to the stack
        cpm += 0.45 * math.log2(live / 16)
    macro_tiles = math.ceil(outputs / (tile * micro))
    setup = macro_tiles * (60 + 4 * tile)
    locality = 0.15 * abs(math.log2(tile / 16)) * macs / 16
    yield_checks = math.ceil(outputs / micro)
    kernel = macs * cpm + setup + locality + yield_checks * YIELD_CHECK_CYCLES
    micro_cycles = micro * macs_per_out * cpm + YIELD_CHECK_CYCLES
    code = 900 + 22 * unroll * (1 + micro) + 6 * tile
    return {"kernel_cycles": kernel, "yield_checks": yield_checks, "macs": macs,
            "micro_tile_cycles": micro_cycles, "text_bytes": code}


def run_metrics(op: dict, sched: dict, runner: dict, cid: str, repeat: int) -> dict[str, Any]:
    m = model_cycles(op, sched)
    kernel = int(round(m["kernel_cycles"]))
    insns = int(round(kernel * 0.82))
    slice_cycles = sched["slice"] * CYCLES_PER_US
    slices = max(1, math.ceil(kernel / slice_cycles))
    phase = _phase(cid, repeat)
    irq = bool(runner.get("simulate_irq_load"))
    out: dict[str, Any] = {
        "kernel_cycles": kernel, "instructions": insns, "kernel_instructions": insns,
        "yield_checks": m["yield_checks"], "yield_check_cycles": YIELD_CHECK_CYCLES,
        "yield_overhead_cycles": m["yield_checks"] * YIELD_CHECK_CYCLES, "slices": slices,
        "text_bytes": int(m["text_bytes"]), "data_bytes": 64, "bss_bytes": 6144, "correct": 1,
    }
    if irq:
        period = runner["irq_period_us"] * CYCLES_PER_US
        releases = max(1, int(kernel / period))
        rt_cycles = releases * (runner.get("rt_work_iters", 50) * 6 + 2 * PENDSV_CYCLES)
        isr = releases * 70
        pendsv_count = slices + 2 * releases
        worst = int(round(m["micro_tile_cycles"] * (0.9 + 0.1 * phase) + PENDSV_CYCLES + 24))
        mean = round(0.5 * m["micro_tile_cycles"] + PENDSV_CYCLES + 12 * phase, 3)
        lat_min = 12
        lat_mean = round(12 + 6 * phase + 0.02 * sched["slice"], 3)
        lat_p99 = int(12 + PENDSV_CYCLES * 0.8 + 10 * phase)
        lat_max = int(12 + PENDSV_CYCLES + 14 * phase)
        deadline = runner.get("rt_deadline_us", 100) * CYCLES_PER_US
        out.update({
            "wall_cycles": kernel + rt_cycles + isr + pendsv_count * PENDSV_CYCLES,
            "pendsv_count": pendsv_count, "pendsv_overhead_mean_cycles": float(PENDSV_CYCLES),
            "pendsv_overhead_max_cycles": PENDSV_CYCLES + 6, "irq_count": releases,
            "irq_latency_min_cycles": lat_min, "irq_latency_mean_cycles": lat_mean,
            "irq_latency_p99_cycles": lat_p99, "irq_latency_max_cycles": lat_max,
            "rt_releases": releases, "rt_jobs": releases,
            "max_preemption_latency_cycles": worst, "mean_preemption_latency_cycles": mean,
            "deadline_misses": int(worst > deadline) * max(1, releases // 10),
        })
    else:
        out.update({
            "wall_cycles": kernel + slices * PENDSV_CYCLES, "pendsv_count": slices,
            "pendsv_overhead_mean_cycles": float(PENDSV_CYCLES),
            "pendsv_overhead_max_cycles": PENDSV_CYCLES, "irq_count": 0,
            "irq_latency_min_cycles": 0, "irq_latency_mean_cycles": 0.0,
            "irq_latency_p99_cycles": 0, "irq_latency_max_cycles": 0, "rt_releases": 0,
            "rt_jobs": 0, "max_preemption_latency_cycles": 0,
            "mean_preemption_latency_cycles": 0.0, "deadline_misses": 0,
        })
    return out


def tvm_config(op: dict, sched: dict) -> dict[str, Any]:
    outputs, macs_per_out = op_shape(op)
    tile, micro, unroll = sched["tile_size"], sched["micro_tile"], sched["unroll"]
    features = {
        "outputs": outputs, "macs_per_output": macs_per_out, "macs": outputs * macs_per_out,
        "tile_size": tile, "micro_tile": micro, "unroll": unroll,
        "macro_tiles": math.ceil(outputs / (tile * micro)),
        "micro_tiles": math.ceil(outputs / micro),
        "yield_checks": math.ceil(outputs / micro),
        "inner_extent": macs_per_out, "unrolled_body_ops": unroll * 4,
        "live_accumulators": unroll * micro,
        "loads_per_mac": round(2.0 / unroll + 1.0 / micro, 4),
        "stores": outputs, "loop_depth": 6 if op["type"] == "conv2d" else 3,
        "est_code_bytes": 22 * unroll * (1 + micro) + 6 * tile,
        "arith_intensity": round(macs_per_out * micro / (macs_per_out + micro), 4),
    }
    return {"schedule_trace": [
                {"kind": "split", "loop": "oh_ow", "factors": [None, tile]},
                {"kind": "split", "loop": "tile", "factors": [None, micro]},
                {"kind": "unroll", "loop": "k", "factor": unroll},
                {"kind": "yield_hook", "loop": "micro"}],
            "lowering": {"target": "c", "unpacked_api": True, "link_params": False},
            "features": features}


def _events(metrics: dict[str, Any]) -> list[dict[str, int]]:
    ev, cyc, ins = [], 1000, 800

    def add(kind, dc, payload=0):
        nonlocal cyc, ins
        cyc += dc
        ins += int(dc * 0.82)
        ev.append({"type": kind, "cycles": cyc, "insns": ins, "payload": payload})

    add("boot", 0)
    add("cal_start", 10, 16)
    add("cal_end", 16 * YIELD_CHECK_CYCLES)
    add("kernel_start", 20)
    step = max(1, metrics["wall_cycles"] // max(1, metrics["rt_releases"] + 1))
    for r in range(min(metrics["rt_releases"], 5)):
        add("irq_enter", step, metrics["irq_latency_min_cycles"] // 20)
        add("rt_release", 20, r)
        add("irq_exit", 30)
        add("pendsv_enter", 10)
        add("pendsv_exit", PENDSV_CYCLES, 1)
        add("rt_start", 5, r)
        add("rt_end", 300, r)
    add("kernel_end", max(1, metrics["wall_cycles"] - (cyc - 1030)))
    add("output_ready", 50)
    return ev


def write_run(root: Path, experiment: str, run_index: int, cand_index: int, repeat: int,
              op: dict, sched: dict, runner: dict, *, status: str = "ok",
              correct: int = 1, trace_schema: str = TRACE_SCHEMA,
              validation: bool | None = None, versions: dict | None = None,
              prediction_version: str | None = None) -> Path:
    versions = versions or VERSIONS
    cid = candidate_id(op, sched, runner, versions)
    run_dir = root / experiment / f"run_{run_index:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = run_metrics(op, sched, runner, cid, repeat)
    metrics["correct"] = correct
    manifest = {
        "schema": RUN_SCHEMA, "experiment": experiment, "run": run_dir.name,
        "run_index": run_index, "candidate_id": cid, "candidate_index": cand_index,
        "repeat": repeat, "seed": repeat, "operator": op, "schedule": sched, "runner": runner,
        "logging": {"raw": True, "compress": False}, "versions": versions, "status": status,
        "error": None if status == "ok" else "qemu: exit code 2 (hard fault)",
        "host_timings_s": {"codegen": 0.41, "build": 0.22, "run": 0.35, "parse": 0.01},
    }
    if prediction_version is not None and status == "ok":
        # what the pipeline records when a champion model ranked the batch (a biased guess)
        manifest["prediction"] = {
            "model": "slicert-cost-model", "version": prediction_version,
            "predicted_kernel_cycles": round(metrics["kernel_cycles"] * 1.07 + 5000, 1),
            "predicted_max_preemption_latency_cycles":
                round(metrics.get("max_preemption_latency_cycles", 0) * 0.95, 1),
            "measured_kernel_cycles": metrics["kernel_cycles"],
            "measured_max_preemption_latency_cycles":
                metrics.get("max_preemption_latency_cycles", 0)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    (run_dir / "tvm_config.json").write_text(json.dumps(tvm_config(op, sched), indent=1))
    (run_dir / "zephyr_build.log").write_text(
        f"arm-none-eabi-gcc -mcpu=cortex-m3 -mthumb -O2 ...\n"
        f"   text    data     bss\n {metrics['text_bytes']:6d} {metrics['data_bytes']:7d} "
        f"{metrics['bss_bytes']:7d}\n")
    if status == "ok":
        trace = {"schema": trace_schema, "cycle_model": versions["cycle_model"],
                 "board": "lm3s6965evb", "candidate_id": cid, "repeat": repeat, "seed": repeat,
                 "exit_code": 0,
                 "totals": {"cycles": metrics["wall_cycles"] + 5000,
                            "instructions": metrics["instructions"] + 4000},
                 "events": _events(metrics), "metrics": metrics}
        (run_dir / "qemu_trace.json").write_text(json.dumps(trace))
        (run_dir / "cycles.txt").write_text(
            "".join(f"{k} {v}\n" for k, v in metrics.items()))
    if validation is not None:
        (run_dir / "validation.json").write_text(json.dumps({"success": validation}))
    return run_dir


def write_sweep(root: Path, experiment: str = "conv2d_5x5_latency", *,
                tile_sizes: Sequence[int] = (4, 8, 16, 32), micro_tiles: Sequence[int] = (1, 2, 4),
                unrolls: Sequence[int] = (1, 2, 4, 8), slices: Sequence[int] = (32, 64),
                repeat: int = 3, operator: dict | None = None, runner: dict | None = None,
                failed: Callable[[int, int], bool] | None = None,
                incorrect: Callable[[int, int], bool] | None = None,
                validation: Callable[[int, int], bool | None] | None = None,
                trace_schema: str = TRACE_SCHEMA, limit: int | None = None,
                prediction_version: str | None = None) -> list[Path]:
    """All candidates x repeats of a grid; callbacks (cand_index, repeat) inject faults."""
    op = operator or CONV2D
    runner = runner or RUNNER
    grid = list(itertools.product(tile_sizes, micro_tiles, unrolls, slices))
    if limit is not None:
        grid = grid[:limit]
    dirs = []
    for ci, (tile, micro, unroll, sl) in enumerate(grid):
        sched = {"tile_size": tile, "micro_tile": micro, "unroll": unroll, "slice": sl}
        for r in range(repeat):
            bad = bool(failed and failed(ci, r))
            dirs.append(write_run(
                Path(root), experiment, ci * repeat + r + 1, ci, r, op, sched, runner,
                status="failed" if bad else "ok",
                correct=0 if (incorrect and incorrect(ci, r)) else 1,
                trace_schema=trace_schema,
                validation=validation(ci, r) if validation else None,
                prediction_version=prediction_version))
    return dirs
