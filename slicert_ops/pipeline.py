"""One candidate end to end: codegen -> build -> QEMU run per repeat -> trace -> run folders.

Stages are imported lazily so that the parent process of a sweep stays light (TVM,
numpy and friends load once per worker process).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slicert_ops.errors import StageError
from slicert_ops.manifest.expand import Candidate
from slicert_ops.rundir import (
    RUN_SCHEMA,
    RunWriter,
    dumps,
    dumps_trace,
    finished_run,
    run_name,
    run_number,
    trace_metrics,
)
from slicert_ops.stages import (  # noqa: F401 - the stage types, re-exported
    CAL_CHECKS,
    CandidateBuild,
    Firmware,
    Measurement,
    board_of,
    runtime_options,
)

if TYPE_CHECKING:
    import numpy as np

    from slicert_ops.codegen.spec import KernelSource
    from slicert_ops.firmware import BuildResult as FirmwareBuild


@dataclass
class SweepContext:
    """What every candidate of a sweep shares (picklable: sent to worker processes)."""

    experiment: str
    exp_dir: Path
    repeat: int
    logging: dict[str, bool]
    manifest_file: str
    cost_model: dict[str, Any] | None = None  # champion version + predictions per candidate


@dataclass
class RunOutcome:
    """The result of one (candidate, repeat) run, as the parent process needs it."""

    number: int
    candidate_id: str
    candidate_index: int
    repeat: int
    status: str  # ok | failed
    reused: bool = False
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run_candidate(cand: Candidate, ctx: SweepContext) -> list[RunOutcome]:
    """All repeats of one candidate: :func:`build` once, :func:`run` per repeat. Finished
    runs are reused; failures are recorded as failed runs."""
    numbers = [run_number(cand.index, r, ctx.repeat) for r in range(ctx.repeat)]
    outcomes: dict[int, RunOutcome] = {}
    todo = []
    for r, n in enumerate(numbers):
        man = finished_run(ctx.exp_dir / run_name(n), cand.id, r)
        if man is not None:
            outcomes[r] = RunOutcome(n, cand.id, cand.index, r, "ok", reused=True,
                                     metrics=trace_metrics(ctx.exp_dir / run_name(n)),
                                     schedule=cand.schedule)
        else:
            todo.append(r)
    if not todo:
        return [outcomes[r] for r in range(ctx.repeat)]

    work = Path(tempfile.mkdtemp(prefix=f"slicert-{cand.id}-"))
    timings: dict[str, float] = {}
    try:
        try:
            built = build(cand, work, timings)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed run
            err = describe_error(exc)
            log = work / "build" / "zephyr_build.log"
            texts = {"zephyr_build.log": log.read_text()} if log.is_file() else {}
            for r in todo:
                outcomes[r] = _publish_failed(RunWriter(ctx.exp_dir, numbers[r]), cand, ctx,
                                              r, err, timings, texts)
            return [outcomes[r] for r in range(ctx.repeat)]
        for r in todo:
            outcomes[r] = run(built, r, ctx, dict(timings))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [outcomes[r] for r in range(ctx.repeat)]


@dataclass
class OperatorFirmware:
    """A single operator's firmware (the microbench harness) and its numpy reference."""

    kernel: KernelSource
    build: FirmwareBuild
    reference: np.ndarray

    def measure(self, cand: Candidate, repeat: int, sim_dir: Path) -> Measurement:
        from slicert_ops.paths import PLUGIN_SO
        from slicert_ops.sim import events as ev
        from slicert_ops.sim.qemu import run_firmware
        from slicert_ops.sim.trace import build_trace, compute_metrics

        board = board_of(cand)
        sizes = {"text_bytes": self.build.text_bytes, "data_bytes": self.build.data_bytes,
                 "bss_bytes": self.build.bss_bytes}
        t = time.perf_counter()
        sim = run_firmware(self.build.elf, seed=repeat, out_dir=sim_dir,
                           timeout_s=cand.runner["timeout_s"], plugin=PLUGIN_SO,
                           ws=cand.runner["flash_wait_states"], board=board)
        sim.raise_for_status()  # the sim package's one description of a failed run
        correct, mismatch = check_output(sim.output, self.reference)
        cpu_mhz = cand.runner["cpu_mhz"]
        metrics = compute_metrics(sim.events, sim.totals, sizes, correct,
                                  deadline_cycles=cand.runner["rt_deadline_us"] * cpu_mhz,
                                  irq_exception=ev.irq_load_exception(board))
        trace = build_trace(sim.events, sim.totals, candidate_id=cand.id, repeat=repeat,
                            seed=repeat, exit_code=sim.exit_code, sizes=sizes,
                            metrics=metrics, cpu_mhz=cpu_mhz, board=board)
        # QEMU's own wall time; parse: the plugin file, the output check, metrics and trace
        return Measurement(sim, trace, metrics, correct, mismatch,
                           seconds={"qemu": sim.wall_s,
                                    "parse": time.perf_counter() - t - sim.wall_s})


def build(cand: Candidate, work: Path, timings: dict[str, float] | None = None
          ) -> CandidateBuild:
    """The build stage: codegen (TVM) and firmware (gcc) of one candidate. Raises
    StageError naming the stage; ``timings`` collects host seconds per step."""
    timings = {} if timings is None else timings
    if is_network_candidate(cand):
        from slicert_ops.network.stage import build_network_candidate

        return build_network_candidate(cand, work, timings)
    from slicert_ops.codegen import generate_kernel, make_inputs, reference
    from slicert_ops.codegen.spec import ScheduleParams
    from slicert_ops.firmware import build_firmware
    from slicert_ops.manifest.expand import operator_spec_from_dict

    op = operator_spec_from_dict(cand.operator)
    sched = ScheduleParams(**cand.schedule)
    t = time.perf_counter()
    try:
        kernel = generate_kernel(op, sched)
    except StageError:
        raise
    except Exception as exc:  # TVM raises its own types
        raise StageError("codegen", f"{type(exc).__name__}: {exc}") from exc
    timings["codegen"] = time.perf_counter() - t
    inputs = make_inputs(op, seed=0)
    ref = reference(op, inputs)
    t = time.perf_counter()
    fw = build_firmware(kernel, inputs, runtime_options(cand), work / "build",
                        board=board_of(cand))
    timings["build"] = time.perf_counter() - t
    return operator_build(cand, work, kernel, fw, ref)


def operator_build(cand: Candidate, work: Path, kernel: KernelSource, fw: FirmwareBuild,
                   ref: np.ndarray) -> CandidateBuild:
    """A CandidateBuild from an operator kernel already generated and linked (the
    meta_schedule builder makes its own kernels)."""
    return CandidateBuild(cand, work, OperatorFirmware(kernel, fw, ref),
                          tvm_config_text=dumps(kernel.tvm_config),
                          build_log_text=fw.log_path.read_text())


def is_network_candidate(cand: Candidate) -> bool:
    return cand.operator.get("type") in ("network", "network_task")


def run(built: CandidateBuild, repeat: int, ctx: SweepContext,
        timings: dict[str, float] | None = None) -> RunOutcome:
    """The run stage: one repeat of a built candidate in QEMU, checked, published as
    ``run_NNNN/`` (failures too: a failed run folder says why)."""
    cand = built.candidate
    number = run_number(cand.index, repeat, ctx.repeat)
    timings = {} if timings is None else timings
    writer = RunWriter(ctx.exp_dir, number)
    sim_dir = built.work / f"sim_{repeat}"
    sim_dir.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        try:
            m = built.firmware.measure(cand, repeat, sim_dir)
            timings.update(m.seconds)  # the firmware's own split (QEMU, parsing)
        finally:
            timings["run"] = time.perf_counter() - t
            t = time.perf_counter()
            _keep_raw(writer, sim_dir, ctx.logging)
            timings["write"] = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the sweep goes on
        return _publish_failed(writer, cand, ctx, repeat, describe_error(exc), timings,
                               {"zephyr_build.log": built.build_log_text,
                                "tvm_config.json": built.tvm_config_text})
    from slicert_ops.sim.cycles_txt import format_cycles_txt

    t = time.perf_counter()
    writer.write_text("tvm_config.json", built.tvm_config_text)
    writer.write_text("zephyr_build.log", built.build_log_text)
    writer.write_text("qemu_trace.json", dumps_trace(m.trace))
    writer.write_text("cycles.txt", format_cycles_txt(m.metrics))
    timings["write"] += time.perf_counter() - t
    status = "ok" if m.correct else "failed"
    err = None if m.correct else f"wrong kernel output: {m.mismatch}"
    man = _manifest(cand, ctx, repeat, number, status, err, timings)
    prediction = _prediction(ctx, cand)
    if prediction:
        man["cost_model"] = prediction
    writer.publish(man)
    return RunOutcome(number, cand.id, cand.index, repeat, status, error=err,
                      metrics=m.metrics, schedule=cand.schedule, timings=timings)


def check_output(output: bytes | None, ref: np.ndarray) -> tuple[bool, str]:
    """Compare the firmware's output frame with the numpy reference (integers: exact)."""
    import numpy as np

    if output is None:
        return False, "the firmware sent no output frame"
    if len(output) != ref.nbytes:
        return False, f"{len(output)} bytes received, {ref.nbytes} expected"
    got = np.frombuffer(output, dtype=ref.dtype).reshape(ref.shape)
    if np.issubdtype(ref.dtype, np.integer):
        bad = int(np.count_nonzero(got != ref))
    else:
        bad = int(np.count_nonzero(~np.isclose(got, ref, rtol=1e-4, atol=1e-4)))
    if bad:
        idx = tuple(int(i) for i in np.argwhere(got != ref)[0]) if np.issubdtype(
            ref.dtype, np.integer) else ()
        where = f", first at index {idx}: got {got[idx]}, want {ref[idx]}" if idx else ""
        return False, f"{bad} of {ref.size} output values differ from the numpy reference{where}"
    return True, ""


def _keep_raw(writer: RunWriter, sim_dir: Path, logging: dict[str, bool]) -> None:
    """With logging.raw: QEMU's and the plugin's output of this repeat (failed ones too)."""
    from slicert_ops.sim.qemu import raw_files

    if not logging.get("raw"):
        return
    compress = bool(logging.get("compress"))
    for name, path in sorted(raw_files(sim_dir).items()):
        writer.add_raw(path, name, compress)


def _manifest(cand: Candidate, ctx: SweepContext, r: int, number: int, status: str,
              error: str | None, timings: dict[str, float]) -> dict[str, Any]:
    return {
        "schema": RUN_SCHEMA,
        "experiment": ctx.experiment,
        "manifest_file": ctx.manifest_file,
        "run": run_name(number),
        "run_index": number,
        "candidate_id": cand.id,
        "candidate_index": cand.index,
        "repeat": r,
        "seed": r,
        "operator": cand.operator,
        "schedule": cand.schedule,
        "runner": cand.runner,
        "logging": ctx.logging,
        "versions": cand.versions,
        **({"network": cand.network} if cand.network is not None else {}),
        "status": status,
        "error": error,
        # Host timings vary run to run: they live here, never in the trace or cycles.txt.
        "host_timings_s": {k: round(v, 4) for k, v in timings.items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _prediction(ctx: SweepContext, cand: Candidate) -> dict[str, Any] | None:
    """The champion cost model's prediction (made before the run) and the model version."""
    cm = ctx.cost_model
    pred = (cm or {}).get("predictions", {}).get(cand.id)
    if not cm or pred is None:
        return None
    return {"name": cm.get("name"), "version": cm.get("version"), **pred}


def _publish_failed(writer: RunWriter, cand: Candidate, ctx: SweepContext, r: int, err: str,
                    timings: dict[str, float], texts: dict[str, str]) -> RunOutcome:
    """A failed run's folder: what was built (``texts``: file name -> content) and a
    manifest that says why."""
    for name, text in texts.items():
        writer.write_text(name, text)
    number = run_number(cand.index, r, ctx.repeat)
    writer.publish(_manifest(cand, ctx, r, number, "failed", err, timings))
    return RunOutcome(number, cand.id, cand.index, r, "failed", error=err,
                      schedule=cand.schedule, timings=timings)


def describe_error(exc: BaseException) -> str:
    """One line for a failed stage: a StageError's own message, else where it broke."""
    if isinstance(exc, StageError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"internal error {type(exc).__name__}: {exc}{where}"


__all__ = ["CandidateBuild", "Firmware", "Measurement", "OperatorFirmware", "RunOutcome",
           "SweepContext", "build", "check_output", "describe_error", "dumps",
           "operator_build", "run", "run_candidate", "runtime_options"]
