"""A sweep: every candidate measured once on the local farm (farm.py: worker processes,
validation of every run, tracking sinks, progress), and its end-of-sweep summary."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.farm import LocalFarm, RunSink
from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.manifest.schema import FORM_NAMES
from slicert_ops.pipeline import RunOutcome
from slicert_ops.progress import Progress
from slicert_ops.validate.stage import Verdict


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


def run_sweep(exp: Experiment, candidates: list[Candidate], out_root: Path, *, jobs: int = 1,
              sinks: Iterable[RunSink] = (), progress: bool = True,
              cost_model: dict[str, Any] | None = None) -> SweepResult:
    """Measure `candidates` (all repeats each) into out_root/<experiment>/run_NNNN/."""
    bar = Progress(len(candidates) * exp.repeat, exp.name, enabled=progress)
    farm = LocalFarm(exp, out_root, jobs=jobs, sinks=sinks, progress=bar,
                     cost_model=cost_model)
    farm.clean(candidates)
    result = SweepResult(exp.name, farm.exp_dir)
    finished = False
    try:
        result.outcomes = farm.measure(candidates)
        finished = True
    finally:
        bar.close()
        result.verdicts = farm.close(wait_verdicts=finished)  # not after an interruption
    result.outcomes.sort(key=lambda o: o.number)
    return result


def summarize(result: SweepResult, top: int = 5, macs: int | None = None) -> str:
    """The end-of-sweep table: best candidates by kernel cycles and by worst preemption,
    with each one's kernel form and (``macs``: the operator's) MACs per kernel cycle beside
    its granule (``micro``)."""
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
              f"{'slice':>5} {'form':<9} {'kernel_cycles':>13} {'MACs/cyc':>8} "
              f"{'wall_cycles':>12} {'max_preempt_lat':>15}")

    def form(row: dict[str, Any]) -> str:
        f = row.get("form")
        name = FORM_NAMES[f] if isinstance(f, int) and 0 <= f < len(FORM_NAMES) else "direct"
        px = row.get("pixel_block")
        return f"{name}/{px}" if px and name != "direct" else name

    def table(title: str, key: str) -> None:
        lines.extend(["", title, header])
        for row in sorted(rows, key=lambda r: (r[key], r["kernel_mean"], r["cand"]))[:top]:
            lines.append(
                f"{row['first_run']:<9} {row['cand']:<16} {row['tile_size']:>4} "
                f"{row['micro_tile']:>5} {row['unroll']:>6} {row['slice']:>5} {form(row):<9} "
                f"{row['kernel_mean']:>13.0f} "
                f"{(macs / row['kernel_mean'] if macs and row['kernel_mean'] else 0):>8.3f} "
                f"{row['wall_mean']:>12.0f} {row['preempt_max']:>15}")

    table(f"best {min(top, len(rows))} by kernel cycles (mean over repeats)", "kernel_mean")
    if any(r["irq"] for r in rows):
        table(f"best {min(top, len(rows))} by worst preemption latency (cycles, max over "
              "repeats)", "preempt_max")
    else:
        lines.append("\n(no IRQ load in this sweep: preemption latency not measured; set "
                     "experiment.runner.simulate_irq_load: true)")
    return "\n".join(lines)
