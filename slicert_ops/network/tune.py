"""Per-task grid tuning of a network, then one end-to-end run (a simple, complete search).

For every tuning task, every schedule of its space (``task_spaces``) is measured alone
(``measure_task``: the task's first op in its own firmware, on the input it sees in the
network, no IRQ load: deterministic), giving its kernel cycles and its longest non-preemptible
granule. Per task the fastest schedule whose granule is within ``max_granule_cycles`` (if
given) wins (none within: the smallest granule); the network is then built with the winners
and run once under the requested runtime options (IRQ load): the network result is the sum
of the tasks (weighted by how often each runs) and the measured end-to-end figures.

This is the shape the search strategies of ``slicert_ops/search`` (grid, random, cost model,
meta_schedule) need per task; it is deliberately a plain grid here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .network import Network
from .spec import NetworkError
from .tasks import LayerSchedule, Task, task_spaces


@dataclass
class TaskTrial:
    task: str
    layers: list[str]
    schedule: LayerSchedule
    correct: bool
    kernel_cycles: int = 0
    yield_checks: int = 0
    max_granule_cycles: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "layers": self.layers, "schedule": self.schedule.to_dict(),
                "correct": self.correct, "kernel_cycles": self.kernel_cycles,
                "yield_checks": self.yield_checks,
                "max_granule_cycles": self.max_granule_cycles, "error": self.error}


@dataclass
class TuneResult:
    tasks: list[Task]
    schedules: dict[str, LayerSchedule]
    trials: list[TaskTrial]
    predicted_cycles: int                 # sum over tasks of best kernel cycles x weight
    run: Any = None                       # NetworkRun of the final build (or None)
    notes: list[str] = field(default_factory=list)


def select_schedule(trials: list[TaskTrial], max_granule_cycles: int | None = None
                    ) -> tuple[TaskTrial | None, bool]:
    """The fastest correct trial whose granule is within the bound; when none is, the one
    with the smallest granule (then the fastest). The flag tells whether the bound was met."""
    ok = [r for r in trials if r.correct]
    fits = [r for r in ok if max_granule_cycles is None
            or r.max_granule_cycles <= max_granule_cycles]
    if fits:
        return min(fits, key=lambda r: r.kernel_cycles), True
    pick = min(ok, key=lambda r: (r.max_granule_cycles, r.kernel_cycles), default=None)
    return pick, False


def tune_network(net: Network, out_dir: str | Path, *, parameters: dict[str, Any] | None = None,
                 max_granule_cycles: int | None = None, runtime_options: Any = None,
                 deadline_us: int | None = None, final_run: bool = True,
                 timeout_s: float = 300.0, board: str = "lm3s6965evb") -> TuneResult:
    from slicert_ops.firmware import RuntimeOptions

    from .firmware import build_network_firmware, measure_task, run_network

    tasks, spaces, probs = task_spaces(net, parameters)
    if probs:
        raise NetworkError(probs)
    out = Path(out_dir)
    trials: list[TaskTrial] = []
    best: dict[str, LayerSchedule] = {}
    notes: list[str] = []
    predicted = 0
    quiet = RuntimeOptions(slice_us=0, cpu_mhz=int(getattr(runtime_options, "cpu_mhz", 50)))
    for ti, task in enumerate(tasks):
        rows = []
        for si, sched in enumerate(spaces[task.key]):
            trial = TaskTrial(task.key, list(task.layer_names), sched, False)
            try:
                run = measure_task(net, task, out / f"t{ti:02d}_s{si:03d}", schedule=sched,
                                   runtime_options=quiet, timeout_s=timeout_s, board=board)
                row = run.layers[0]
                trial.correct = run.correct
                trial.kernel_cycles = row["kernel_cycles"]
                trial.yield_checks = row["yield_checks"]
                trial.max_granule_cycles = row["max_granule_cycles"]
                if not run.correct:
                    trial.error = run.mismatch
            except Exception as exc:  # noqa: BLE001 - one failed schedule must not stop tuning
                trial.error = f"{type(exc).__name__}: {exc}"
            trials.append(trial)
            rows.append(trial)
        pick, fits = select_schedule(rows, max_granule_cycles)
        if pick is None:
            raise RuntimeError(f"task {task.key} ({', '.join(task.layer_names)}): no schedule "
                               "ran correctly: " + "; ".join(str(r.error) for r in rows))
        if not fits:
            notes.append(f"{', '.join(task.layer_names)}: no schedule keeps the granule within "
                         f"{max_granule_cycles} cycles; took the smallest granule "
                         f"({pick.max_granule_cycles})")
        best[task.key] = pick.schedule
        predicted += pick.kernel_cycles * task.weight
    run = None
    if final_run:
        nb = build_network_firmware(net, out / "final" / "fw", tasks=tasks, schedules=best,
                                    runtime_options=runtime_options, board=board)
        run = run_network(nb, out / "final" / "run", deadline_us=deadline_us,
                          timeout_s=timeout_s)
    return TuneResult(tasks=tasks, schedules=best, trials=trials, predicted_cycles=predicted,
                      run=run, notes=notes)
