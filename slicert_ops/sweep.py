"""A sweep: candidates fanned out over local worker processes, runs collected as they finish.

Every finished run goes through the validation stage (validate/stage.py: validation.json
in each run folder, tracked or not), then through the other sinks (tracking). A sink that is
a ``ValidationStage`` (the tracking's, which forwards the verdicts to MLflow) stands in for
the sweep's own one, which is waited for before ``run_sweep`` returns.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.pipeline import RunOutcome, SweepContext, run_candidate
from slicert_ops.progress import Progress
from slicert_ops.rundir import clean_stale_tmp, dumps, run_name, run_number
from slicert_ops.validate.stage import VERDICT_FILE, ValidationStage, Verdict

# Called in the parent for every finished run (validation + tracking hook in).
RunSink = Callable[[RunOutcome, Path], None]


@dataclass
class SweepResult:
    experiment: str
    exp_dir: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    verdicts: dict[Path, Verdict] = field(default_factory=dict)  # run folder -> verdict

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _warm_worker() -> None:
    """Import the heavy stages once per worker process, not once per candidate."""
    import slicert_ops.codegen  # noqa: F401
    import slicert_ops.firmware  # noqa: F401
    import slicert_ops.sim.trace  # noqa: F401


def run_sweep(exp: Experiment, candidates: list[Candidate], out_root: Path, *, jobs: int = 1,
              sinks: Iterable[RunSink] = (), progress: bool = True,
              cost_model: dict[str, Any] | None = None) -> SweepResult:
    """Measure `candidates` (all repeats each) into out_root/<experiment>/run_NNNN/."""
    exp_dir = Path(out_root) / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    numbers = [run_number(c.index, r, exp.repeat) for c in candidates for r in range(exp.repeat)]
    clean_stale_tmp(exp_dir, numbers)
    (exp_dir / "experiment.json").write_text(dumps(exp.to_dict()))
    ctx = SweepContext(experiment=exp.name, exp_dir=exp_dir, repeat=exp.repeat,
                       logging=dict(exp.logging), manifest_file=exp.source,
                       cost_model=cost_model)
    result = SweepResult(exp.name, exp_dir)
    bar = Progress(len(candidates) * exp.repeat, exp.name, enabled=progress)
    sinks = list(sinks)
    stage = next((s for s in sinks if isinstance(s, ValidationStage)), None)
    own_stage = stage is None
    if stage is None:
        stage = ValidationStage()
        sinks.insert(0, stage)
    if any(not (exp_dir / run_name(n) / VERDICT_FILE).is_file() for n in numbers):
        stage.warm()  # GX loads in the validation process while the first runs measure

    def collect(outcomes: list[RunOutcome]) -> None:
        for o in outcomes:
            result.outcomes.append(o)
            run_dir = exp_dir / f"run_{o.number:04d}"
            for sink in sinks:
                sink(o, run_dir)
            bar.update(ok=o.status == "ok", failed=o.status != "ok", reused=o.reused)
            if o.status != "ok" and progress:
                print(f"\n  run_{o.number:04d} failed: {o.error}", file=sys.stderr)

    finished = False
    try:
        if jobs <= 1 or len(candidates) <= 1:
            for cand in candidates:
                collect(run_candidate(cand, ctx))
        else:
            _run_parallel(candidates, ctx, jobs, collect)
        finished = True
    finally:
        bar.close()
        if own_stage:  # an interrupted sweep does not wait for the verdicts
            stage.close(wait=finished)
    result.verdicts = dict(stage.verdicts)
    result.outcomes.sort(key=lambda o: o.number)
    return result


def _run_parallel(candidates: list[Candidate], ctx: SweepContext, jobs: int,
                  collect: Callable[[list[RunOutcome]], None]) -> None:
    # spawn: TVM's thread pool does not survive fork; workers import the stages once.
    mp = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp, initializer=_warm_worker) as pool:
        pending: set[Future[list[RunOutcome]]] = {
            pool.submit(run_candidate, cand, ctx) for cand in candidates}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                collect(fut.result())


def summarize(result: SweepResult, top: int = 5) -> str:
    """The end-of-sweep table: best candidates by kernel cycles and by worst preemption."""
    per_cand: dict[str, dict[str, Any]] = {}
    for o in result.outcomes:
        if o.status != "ok" or not o.metrics:
            continue
        row = per_cand.setdefault(o.candidate_id, {
            "cand": o.candidate_id, "first_run": f"run_{o.number:04d}", **o.schedule,
            "kernel": [], "wall": [], "preempt": [], "irq": 0})
        row["kernel"].append(o.metrics.get("kernel_cycles", 0))
        row["wall"].append(o.metrics.get("wall_cycles", 0))
        row["preempt"].append(o.metrics.get("max_preemption_latency_cycles", 0))
        row["irq"] += o.metrics.get("irq_count", 0)
    lines = [f"{result.experiment}: {len(result.outcomes)} runs, "
             f"{len(result.outcomes) - len(result.failed)} ok, {len(result.failed)} failed; "
             f"results in {result.exp_dir}"]
    if not per_cand:
        return "\n".join(lines)
    rows = list(per_cand.values())
    for row in rows:
        row["kernel_mean"] = sum(row["kernel"]) / len(row["kernel"])
        row["wall_mean"] = sum(row["wall"]) / len(row["wall"])
        row["preempt_max"] = max(row["preempt"])
    header = (f"{'run':<9} {'candidate':<16} {'tile':>4} {'micro':>5} {'unroll':>6} "
              f"{'slice':>5} {'kernel_cycles':>13} {'wall_cycles':>12} {'max_preempt_lat':>15}")

    def table(title: str, key: str) -> None:
        lines.extend(["", title, header])
        for row in sorted(rows, key=lambda r: (r[key], r["kernel_mean"], r["cand"]))[:top]:
            lines.append(
                f"{row['first_run']:<9} {row['cand']:<16} {row['tile_size']:>4} "
                f"{row['micro_tile']:>5} {row['unroll']:>6} {row['slice']:>5} "
                f"{row['kernel_mean']:>13.0f} {row['wall_mean']:>12.0f} {row['preempt_max']:>15}")

    table(f"best {min(top, len(rows))} by kernel cycles (mean over repeats)", "kernel_mean")
    if any(r["irq"] for r in rows):
        table(f"best {min(top, len(rows))} by worst preemption latency (cycles, max over "
              "repeats)", "preempt_max")
    else:
        lines.append("\n(no IRQ load in this sweep: preemption latency not measured; set "
                     "experiment.runner.simulate_irq_load: true)")
    return "\n".join(lines)
